"""What to do after each answer: one pure decision per (operation, endpoint, outcome).

This is the README's "behaviour per response code" as code:
- 0: delivered.
- transient (103, 109, HTTP 5xx/429, connection errors, timeouts): retry with backoff.
- configuration (113, 115, 116, 117, HTTP 401/403/404, a certificate that fails verification):
  the run stops, naming the setting.
- a foreign answer (HTTP below 500 whose body is not the CampaignAPI's JSON with a code): delivery
  decides, from the answers around it, whether the lead or the way to the PBX is at fault.
- 101 on update: upsert inserts instead; update mode rejects.
- 112 on insert: upsert updates instead, and so does any insert after an attempt whose reply was
  lost (the lost attempt created the lead); insert mode rejects otherwise.
- 105 after a lost insert reply: the lost attempt holds the phone number, so update the same body.
- 107: once more with `fallback_disposition` if set, else rejected; but after a lost insert reply
  (resolved by an update) a 107 proves the lead exists and was never dialed: our insert landed.
- 110: rejected, never retried (a person is editing the lead).
- any other permanent code: rejected.
- a close (operation `close`: an update setting close_disposition): 101 means the PBX does not
  hold the lead, which is what a close wants (`close_unknown`); 106 stops the run naming
  `close_disposition`; anything else as above (110 is a reject).
"""

from __future__ import annotations

from dataclasses import dataclass

from target_noojee import codes
from target_noojee.client import Outcome
from target_noojee.codes import Kind

UPDATE = "updateLeadFast"
INSERT = "insertLeadFast"
CLOSE = "close"  # the operation of a job that closes a lead


@dataclass(frozen=True)
class Attempt:
    """What delivery knows of a lead's attempts so far, for the decision."""

    operation: str  # update | insert | upsert
    endpoint: str
    has_fallback_disposition: bool
    fallback_used: bool
    lost_insert: bool  # an earlier insert of this lead may have been applied (reply lost)
    maybe_inserted: bool = False  # a run that died may have inserted another version of it


@dataclass(frozen=True)
class Step:
    """The decision: one of deliver / retry / resend / reject / stop."""

    action: str  # delivered | retry | resend | reject | stop | foreign | close_unknown
    endpoint: str | None = None  # for resend
    use_fallback_disposition: bool = False  # for resend after 107
    setting: str | None = None  # for stop: the setting to fix, when the code does not name one


DELIVERED = Step("delivered")
RETRY = Step("retry")
REJECT = Step("reject")
STOP = Step("stop")
FOREIGN = Step("foreign")


def next_step(attempt: Attempt, outcome: Outcome) -> Step:
    """Decide what follows one answer (see the module docstring for the table)."""
    if outcome.kind is Kind.OK:
        return DELIVERED
    if outcome.kind is Kind.TRANSIENT:
        return RETRY
    if outcome.kind is Kind.CONFIG:
        return STOP
    if outcome.kind is Kind.FOREIGN:
        return FOREIGN
    code = outcome.code
    if attempt.operation == CLOSE:
        if code == codes.COULDNT_FIND_THE_LEAD:
            return Step("close_unknown")
        if code == codes.INVALID_DISPOSITION:
            return Step("stop", setting="close_disposition")
        return REJECT
    if code == codes.COULDNT_FIND_THE_LEAD and attempt.operation == "upsert":
        return Step("resend", endpoint=INSERT)
    maybe_ours = attempt.lost_insert or attempt.maybe_inserted  # the PBX may hold our insert
    duplicate_id = code == codes.DUPLICATE_EXTERNAL_ID and attempt.endpoint == INSERT
    if duplicate_id and (attempt.operation == "upsert" or maybe_ours):
        return Step("resend", endpoint=UPDATE)
    if code == codes.DUPLICATE and attempt.endpoint == INSERT and maybe_ours:
        return Step("resend", endpoint=UPDATE)
    if code == codes.NO_CHANGE_ON_UNSET_DISPOSITION and attempt.lost_insert:
        # The lead exists (112) and was never dialed (107): it is the insert whose reply was lost.
        return DELIVERED
    if (
        code == codes.NO_CHANGE_ON_UNSET_DISPOSITION
        and attempt.has_fallback_disposition
        and not attempt.fallback_used
    ):
        return Step("resend", endpoint=attempt.endpoint, use_fallback_disposition=True)
    return REJECT
