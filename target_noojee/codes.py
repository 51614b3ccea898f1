"""The Noojee CampaignAPI response codes as data: for client, simulator, README and tests."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(str, enum.Enum):
    """What a response code means for delivery."""

    OK = "ok"
    TRANSIENT = "transient"  # retry with backoff
    PERMANENT = "permanent"  # the record goes to the reject file
    CONFIG = "config"  # the run stops: a setting is wrong
    FOREIGN = "foreign"  # not the CampaignAPI's answer (a gateway, WAF or proxy): see delivery


@dataclass(frozen=True)
class Code:
    """One row of the vendor's response-code table."""

    code: int
    name: str
    http_status: int
    kind: Kind
    meaning: str
    advice: str
    setting: str | None = None  # the setting to fix, for configuration errors


_ROWS = (
    Code(0, "OK", 200, Kind.OK, "inserted or updated", "delivered"),
    Code(
        101,
        "COULDNT_FIND_THE_LEAD",
        400,
        Kind.PERMANENT,
        "update: no lead with that njExternalLeadId",
        "rejected in update mode; upsert inserts the lead instead",
    ),
    Code(
        102,
        "NO_PHONE_FIELDS",
        400,
        Kind.PERMANENT,
        "no phone field in the lead",
        "rejected: map at least one phone field of the template",
    ),
    Code(103, "EXCEPTION", 500, Kind.TRANSIENT, "server error", "retried with backoff and jitter"),
    Code(
        104,
        "DNC",
        400,
        Kind.PERMANENT,
        "a phone number is on the Do Not Call list",
        "rejected: never dialled; re-send once the DNC entry is removed",
    ),
    Code(
        105,
        "DUPLICATE",
        400,
        Kind.PERMANENT,
        "insert: another lead has this phone number",
        "rejected, unless allow_duplicates is set",
    ),
    Code(
        106,
        "INVALID_DISPOSTION",
        400,
        Kind.PERMANENT,
        "disposition does not exist",
        "rejected: use a disposition defined on the PBX",
    ),
    Code(
        107,
        "DISPOSTION_ISNT_SET_AND_NOCHANGE_SPECIFIED",
        400,
        Kind.PERMANENT,
        "<No Change> disposition on a never-dialed lead",
        "sent again with fallback_disposition if set, else rejected",
    ),
    Code(
        108,
        "IMPORT_BUT_NOCHANGE_SPECIFIED",
        400,
        Kind.PERMANENT,
        "insert carried <No Change>",
        "rejected (the target never sends <No Change> on insert)",
    ),
    Code(
        109,
        "TIMEOUT_TOO_MANY_CONCURRENT_REQUESTS",
        400,
        Kind.TRANSIENT,
        "queued longer than the server's limit",
        "retried after a pause; the pace is cut",
    ),
    Code(
        110,
        "LEAD_NOT_UPDATED_DUE_TO_CONFLICT",
        400,
        Kind.PERMANENT,
        "a person edited the lead at the same time",
        "rejected, never retried (it would overwrite their edit): a person must look",
    ),
    Code(
        111,
        "INVALID_TIMEZONE_SPECIFIED",
        400,
        Kind.PERMANENT,
        "unknown njContactHours",
        "rejected: use a contact-hours name defined on the PBX",
    ),
    Code(
        112,
        "DUPLICATE_EXTERNAL_ID",
        400,
        Kind.PERMANENT,
        "insert: njExternalLeadId already exists in the campaign",
        "rejected in insert mode; upsert updates the lead instead",
    ),
    Code(
        113,
        "EDIT_BUT_NO_EXTERNAL_ID_SUPPLIED",
        400,
        Kind.CONFIG,
        "update without njExternalLeadId",
        "the run stops: map njExternalLeadId",
        "mapping",
    ),
    Code(
        114,
        "INVALID_CALLBACK_DATE_FORMAT",
        400,
        Kind.PERMANENT,
        "njCallBackDate not yyyy/MM/dd HH:mm",
        "rejected",
    ),
    Code(
        115,
        "ALLOCATIN_ID_REQUIRED",
        400,
        Kind.CONFIG,
        "bad or missing fAllocationId",
        "the run stops: fix allocation_id",
        "allocation_id",
    ),
    Code(
        116,
        "TEMPLATE_ID_REQUIRED",
        400,
        Kind.CONFIG,
        "bad or missing fTemplateId",
        "the run stops: fix template_id",
        "template_id",
    ),
    Code(
        117,
        "CAMPAIGN_ID_REQUIRED",
        400,
        Kind.CONFIG,
        "bad or missing fCampaignId",
        "the run stops: fix campaign_id",
        "campaign_id",
    ),
)

CODES: dict[int, Code] = {row.code: row for row in _ROWS}

OK = 0
COULDNT_FIND_THE_LEAD = 101
NO_PHONE_FIELDS = 102
EXCEPTION = 103
DNC = 104
DUPLICATE = 105
INVALID_DISPOSITION = 106
NO_CHANGE_ON_UNSET_DISPOSITION = 107
IMPORT_BUT_NO_CHANGE = 108
TOO_MANY_CONCURRENT = 109
CONFLICT = 110
INVALID_TIMEZONE = 111
DUPLICATE_EXTERNAL_ID = 112
NO_EXTERNAL_ID = 113
INVALID_CALLBACK_DATE = 114
ALLOCATION_ID_REQUIRED = 115
TEMPLATE_ID_REQUIRED = 116
CAMPAIGN_ID_REQUIRED = 117

NO_CHANGE = "<No Change>"
CALLBACK_DATE_FORMAT = "%Y/%m/%d %H:%M"
LEAD_ENDPOINTS = ("updateLeadFast", "insertLeadFast")
EXTERNAL_ID_FIELD = "njExternalLeadId"
API_PREFIX = "/servicemanager/rest/CampaignAPI/"


def lookup(code: int) -> Code | None:
    """The table row of a code, or None for a code the vendor does not document."""
    return CODES.get(code)
