"""Regenerate target_noojee/data/sample_leads.singer, deterministically.

Run: python tests/data_files/make_sample.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "target_noojee" / "data" / "sample_leads.singer"
FIRST = ["Olivia", "Jack", "Charlotte", "Noah", "Amelia", "William", "Isla", "Oliver", "Mia", "Leo"]
LAST = ["Smith", "Nguyen", "Williams", "Brown", "Wilson", "Taylor", "Johnson", "White", "Martin"]
CITIES = [
    ("Melbourne", "VIC", "3000"),
    ("Sydney", "NSW", "2000"),
    ("Brisbane", "QLD", "4000"),
    ("Perth", "WA", "6000"),
    ("Adelaide", "SA", "5000"),
    ("Hobart", "TAS", "7000"),
]
SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "full_name": {"type": "string"},
        "address": {
            "type": ["object", "null"],
            "properties": {
                "street": {"type": ["string", "null"]},
                "city": {"type": ["string", "null"]},
                "state": {"type": ["string", "null"]},
                "postcode": {"type": ["string", "null"]},
            },
        },
        "phones": {
            "type": "object",
            "properties": {
                "mobile": {"type": ["string", "null"]},
                "home": {"type": ["string", "null"]},
            },
        },
        "email": {"type": ["string", "null"]},
        "callback_at": {"type": ["string", "null"], "format": "date-time"},
        "priority": {"type": ["integer", "null"]},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}


def mobile(n: int, style: int) -> str:
    digits = f"4{n:08d}"
    return [
        f"+61 {digits[0]} {digits[1:5]} {digits[5:]}",
        f"0{digits[:3]} {digits[3:6]} {digits[6:]}",
        f"+61{digits}",
        f"(0{digits[:3]}) {digits[3:]}",
    ][style % 4]


def landline(n: int, style: int) -> str:
    digits = f"3{9100_0000 + n:08d}"
    return [
        f"(0{digits[0]}) {digits[1:5]} {digits[5:]}",
        f"0{digits[0]}-{digits[1:5]}-{digits[5:]}",
        f"+61 {digits[0]} {digits[1:5]} {digits[5:]}",
    ][style % 3]


def main() -> None:
    rng = random.Random(41)
    lines = [{"type": "SCHEMA", "stream": "contacts", "schema": SCHEMA, "key_properties": ["id"]}]
    for i in range(1, 241):
        city, state, postcode = CITIES[i % len(CITIES)]
        offset = rng.choice(["+11:00", "+10:00", "Z", "+08:00"])
        record = {
            "id": f"C{i:04d}",
            "full_name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            "address": {
                "street": f"{i} {rng.choice(['George', 'Collins', 'King'])} St",
                "city": city,
                "state": state,
                "postcode": postcode,
            },
            "phones": {"mobile": mobile(1000 + i, i), "home": landline(i, i) if i % 3 else None},
            "email": f"lead{i}@example.com.au" if i % 4 else None,
            "callback_at": f"2026-12-{1 + i % 28:02d}T{9 + i % 8:02d}:{(i * 7) % 60:02d}:00{offset}"
            if i % 5 == 0
            else None,
            "priority": i % 20 if i % 2 else None,
            "updated_at": "2026-11-20T10:00:00+11:00",
        }
        if i == 17:
            record["phones"] = {"mobile": "0390000000", "home": None}  # on the DNC list: 104
        if i == 33:
            record["phones"] = {"mobile": "call me maybe", "home": None}  # local reject
        if i == 58:
            record["phones"] = {"mobile": mobile(1000 + 57, 57), "home": None}  # 105 duplicate
        lines.append({"type": "RECORD", "stream": "contacts", "record": record})
        if i % 50 == 0:
            lines.append(
                {"type": "STATE", "value": {"bookmarks": {"contacts": {"id": f"C{i:04d}"}}}}
            )
    lines.append({"type": "STATE", "value": {"bookmarks": {"contacts": {"id": "C0240"}}}})
    OUT.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


if __name__ == "__main__":
    main()
