"""The SDK's standard target suite, run in-process against noojee-sim over loopback.

Its streams have arbitrary names and fields (none of them a phone number), so with the top-level
mapping below every record is mapped and rejected locally with a reason: the suite checks that
the target reads every kind of Singer input without crashing and relays STATE correctly.
One deviation, on purpose: a record missing its key properties is rejected with a reason
instead of aborting the run (`test_record_missing_key_property_is_rejected` below).
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from singer_sdk.testing import get_target_test_class

from target_noojee.simulator import Simulator
from target_noojee.target import TargetNoojee

from conftest import API_KEY

_SIM = Simulator(api_key=API_KEY, slots=4, service_ms=0)
_TMP = Path(tempfile.mkdtemp(prefix="noojee-sdk-suite-"))
SUITE_CONFIG = {
    "base_url": "http://127.0.0.1:1",  # replaced once the simulator has a port
    "api_key": API_KEY,
    "template_id": 41,
    "campaign_id": 41,
    "allocation_id": 38,
    "operation": "insert",
    "mapping": {"Name": "name", "FirstPhone": "phone", "Email": "id"},
    "reject_file": str(_TMP / "rejects.jsonl"),
    "ledger_path": str(_TMP / "ledger.sqlite"),
}


@pytest.fixture(scope="module", autouse=True)
def _simulator() -> Iterator[Simulator]:
    _SIM.start()
    SUITE_CONFIG["base_url"] = _SIM.url
    yield _SIM
    _SIM.stop()


_Base = get_target_test_class(TargetNoojee, config=SUITE_CONFIG)


class TestTargetNoojeeStandard(_Base):  # type: ignore[misc,valid-type]
    """The SDK's standard target tests."""

    @pytest.mark.skip(reason="deviation: rejected with a reason, see module docstring")
    def test_target_record_missing_key_property(self) -> None:  # pragma: no cover
        """Replaced by test_record_missing_key_property_is_rejected."""


def test_record_missing_key_property_is_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {
        **SUITE_CONFIG,
        "reject_file": str(tmp_path / "r.jsonl"),
        "ledger_path": str(tmp_path / "l.sqlite"),
    }
    lines = [
        {
            "type": "SCHEMA",
            "stream": "s",
            "key_properties": ["id"],
            "schema": {"type": "object", "properties": {"id": {"type": "integer"}}},
        },
        {"type": "RECORD", "stream": "s", "record": {"metric": 1}},
        {"type": "STATE", "value": {"s": 1}},
    ]
    target = TargetNoojee(config=config)
    target.listen(io.StringIO("".join(json.dumps(x) + "\n" for x in lines)))
    rejects = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["code"] for r in rejects] == ["local"]
    assert "key properties" in rejects[0]["message"]
    assert capsys.readouterr().out == '{"s":1}\n'
