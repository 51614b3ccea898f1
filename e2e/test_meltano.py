"""End to end under Meltano: tap-spreadsheets -> target-noojee -> noojee-sim, twice.

Run by `make e2e` (not by the unit suite: pytest's testpaths is tests/). It builds a Meltano
project in a temp dir as a user would: the project's meltano.yml without its target-noojee
entry, then `meltano add --plugin-type loader target-noojee --from-ref
plugin/loaders/target-noojee--noojee.yml` (the Hub-format definition; no hub.meltano.com
needed), `pip_url` pointed at this checkout and the loader's `config` of meltano.yml. Only what
must differ per run comes from the environment:

* Meltano's system dir (plugin venvs, the systemdb holding STATE) goes to a temp dir
  (MELTANO_SYS_DIR_ROOT), so every run starts from no state and the repo is left as it was;
* the CSV read is a temp copy of e2e/leads.csv (the committed file is never modified): the
  `files` setting of meltano.yml with only its path replaced (TAP_SPREADSHEETS_FILES);
* the PBX is a fresh noojee-sim on 127.0.0.1 and the API key a random one, passed to both
  through the environment only, and looked for afterwards in every output and file;
* the ledger and the reject file go to the temp dir.

It also runs the loader's commands, `meltano invoke target-noojee:list` and
`target-noojee:rejects list`, with the loader's configuration. The only network used is PyPI
(`meltano install`) and 127.0.0.1. E2E_KEEP=1 keeps the temp dir.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the project's venv: target-noojee, noojee-sim
MELTANO = os.environ.get("MELTANO_BIN") or str(ROOT / "e2e" / ".venv-meltano" / "bin" / "meltano")
LEADS_CSV = ROOT / "e2e" / "leads.csv"
DEFINITION = ROOT / "plugin" / "loaders" / "target-noojee--noojee.yml"
STATE_ID = "dev:tap-spreadsheets-to-target-noojee"
STREAM = "leads"
CAMPAIGN = 41
CHANGED_ID = "C1002"  # has a disposition, so its update is one call (no 107 round trip)
CHANGED_CITY = "Parramatta"
# Variables of the caller that would change what this test runs against.
FOREIGN_ENV = ("MELTANO_", "TARGET_NOOJEE_", "TAP_SPREADSHEETS_", "NOOJEE_")


@dataclass
class Project:
    """Everything the steps share: where things are, the simulator, what was printed."""

    work: Path
    root: Path  # the Meltano project: meltano.yml built by `build_project`
    csv_path: Path
    api_key: str
    sim_url: str
    env: dict[str, str]
    outputs: list[str] = field(default_factory=list)

    def meltano(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run meltano in the project (where meltano.yml is); output kept for the key check."""
        proc = subprocess.run(
            [MELTANO, *args],
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def run_pipeline(self) -> subprocess.CompletedProcess[str]:
        proc = self.meltano("run", "tap-spreadsheets", "target-noojee")
        assert proc.returncode == 0, f"meltano run exited {proc.returncode}:\n{tail(proc)}"
        return proc

    def sim_state(self) -> dict[str, Any]:
        url = f"{self.sim_url}/__admin/state?apiKey={self.api_key}&campaign_id={CAMPAIGN}"
        with urllib.request.urlopen(url, timeout=10) as reply:
            data: dict[str, Any] = json.load(reply)
        return data

    def stored_state(self) -> dict[str, Any]:
        proc = self.meltano("state", "get", STATE_ID)
        assert proc.returncode == 0, f"meltano state get exited {proc.returncode}:\n{tail(proc)}"
        state: dict[str, Any] = json.loads(proc.stdout)
        return state


def tail(proc: subprocess.CompletedProcess[str], lines: int = 40) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-lines:])


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def meltano_yml() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "meltano.yml").read_text(encoding="utf-8"))
    return data


def plugin(kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in meltano_yml()["plugins"][kind] if p["name"] == name)
    return found


def definition() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFINITION.read_text(encoding="utf-8"))
    return data


def build_project(proj: Project) -> None:
    """meltano.yml in proj.root: ours without the loader, then the loader by `meltano add
    --from-ref` (with no way to hub.meltano.com: a proxy and hub URL that refuse), installed
    from this checkout with our loader's config."""
    proj.root.mkdir()
    data = meltano_yml()
    ours = plugin("loaders", "target-noojee")
    data["plugins"]["loaders"] = [p for p in data["plugins"]["loaders"] if p is not ours]
    if not data["plugins"]["loaders"]:
        del data["plugins"]["loaders"]
    for utility in data["plugins"].get("utilities", []):
        if utility.get("pip_url") == "-e .":
            utility["pip_url"] = f"-e {ROOT}"
    (proj.root / "meltano.yml").write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    offline = {"MELTANO_HUB_URL": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    saved = proj.env
    proj.env = {**saved, **offline, "HTTP_PROXY": offline["HTTPS_PROXY"]}
    try:
        added = proj.meltano(
            "add", "--plugin-type", "loader", "target-noojee", "--from-ref", str(DEFINITION),
            "--no-install",
        )  # fmt: skip
    finally:
        proj.env = saved
    assert added.returncode == 0, (
        f"meltano add --from-ref exited {added.returncode}:\n{tail(added)}"
    )
    data = yaml.safe_load((proj.root / "meltano.yml").read_text(encoding="utf-8"))
    loader = next(p for p in data["plugins"]["loaders"] if p["name"] == "target-noojee")
    expected = definition()
    for key in ("namespace", "variant", "executable", "settings", "commands"):
        assert loader[key] == expected[key], f"meltano add changed {key}"
    assert loader["pip_url"] == expected["pip_url"]
    loader["pip_url"] = f"-e {ROOT}"  # this checkout, not the published repository
    loader["config"] = ours["config"]
    (proj.root / "meltano.yml").write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")


def bookmark(state: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = state["singer_state"]["bookmarks"][STREAM]
    return value


def mtime_of(path: Path) -> datetime:
    """What the tap bookmarks for a file: its mtime, to the second."""
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).replace(microsecond=0)


def bookmarked(state: dict[str, Any]) -> datetime:
    mark = bookmark(state)
    assert mark["replication_key"] == "_sdc_last_modified", mark
    value = datetime.fromisoformat(mark["replication_key_value"].replace("Z", "+00:00"))
    return value.replace(microsecond=0)


def start_sim(api_key: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """noojee-sim on a free port; its one stdout line gives the URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    env["NOOJEE_SIM_API_KEY"] = api_key  # not on the command line, where `ps` would show it
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [str(BIN / "noojee-sim"), "--port", "0", "--slots", "4", "--service-ms", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline().decode() if ready else ""
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not match:
        proc.kill()
        pytest.fail(f"noojee-sim did not start: {line!r} {log.read_text(errors='replace')}")
    return proc, match.group(0)


@pytest.fixture(scope="module")
def project() -> Iterator[Project]:
    """A temp dir, a fresh simulator, and `meltano install` of meltano.yml's plugins."""
    work = Path(tempfile.mkdtemp(prefix="noojee-e2e-"))
    api_key = f"e2e-{secrets.token_hex(16)}"
    sim, sim_url = start_sim(api_key, work / "noojee-sim.log")
    csv_path = work / "leads.csv"
    shutil.copy2(LEADS_CSV, csv_path)
    files = plugin("extractors", "tap-spreadsheets")["config"]["files"]
    files = [{**entry, "path": str(csv_path)} for entry in files]
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    env.update(
        {
            "MELTANO_SYS_DIR_ROOT": str(work / "meltano-sys"),
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "MELTANO_CLI_DISABLE_VERSION_CHECK": "true",
            "MELTANO_CLI_LOG_FORMAT": "plain",
            "UV_COMPILE_BYTECODE": "1",
            "NOOJEE_BASE_URL": sim_url,
            "TARGET_NOOJEE_API_KEY": api_key,
            "TARGET_NOOJEE_LEDGER_PATH": str(work / "ledger.sqlite"),
            "TARGET_NOOJEE_REJECT_FILE": str(work / "rejects.jsonl"),
            "TAP_SPREADSHEETS_FILES": json.dumps(files),
            # Number settings through Meltano's environment reach the target as numbers.
            "TARGET_NOOJEE_REQUEST_TIMEOUT_S": "30",
            "TARGET_NOOJEE_MAX_CLOSE_RATIO": "0.5",
        }
    )
    proj = Project(work, work / "project", csv_path, api_key, sim_url, env)
    try:
        build_project(proj)
        started = time.monotonic()
        proc = proj.meltano("install")
        assert proc.returncode == 0, f"meltano install exited {proc.returncode}:\n{tail(proc)}"
        print(f"\nmeltano install: {time.monotonic() - started:.1f}s", file=sys.stderr)
        yield proj
    finally:
        sim.terminate()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
        proj.outputs.append((work / "noojee-sim.log").read_text(errors="replace"))
        if os.environ.get("E2E_KEEP"):
            print(f"\ne2e work dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def first_run(project: Project) -> dict[str, Any]:
    project.run_pipeline()
    return project.sim_state()


@pytest.fixture(scope="module")
def second_run(project: Project, first_run: dict[str, Any]) -> dict[str, Any]:
    """One row of the CSV copy changed (and its mtime moved on, as an edit would)."""
    before = project.csv_path.stat().st_mtime
    text = project.csv_path.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    changed = [r for r in rows[1:] if r[header.index("id")] == CHANGED_ID]
    assert len(changed) == 1
    changed[0][header.index("city")] = CHANGED_CITY
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    project.csv_path.write_text(out.getvalue(), encoding="utf-8")
    os.utime(project.csv_path, (before + 10, before + 10))  # past the bookmark's second
    project.run_pipeline()
    return project.sim_state()


def leads_by_id(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {lead["external_id"]: lead for lead in state["leads"]}


# --- the steps, in order ---------------------------------------------------------------------


def test_meltano_yml_declares_every_setting_with_its_kind() -> None:
    """meltano.yml's loader matches `target-noojee --about` and the plugin definition."""
    about = json.loads(
        subprocess.run(
            [str(BIN / "target-noojee"), "--about", "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    loader = plugin("loaders", "target-noojee")
    assert loader["namespace"] == "target_noojee"
    assert loader["pip_url"] == "-e ."
    assert set(loader["capabilities"]) == set(about["capabilities"])
    declared = {s["name"]: s for s in loader["settings"]}
    expected = {}
    for name, schema in about["settings"]["properties"].items():
        types = [t for t in schema.get("type", ["string"]) if t != "null"]
        # number: string (Meltano's decimal kind fails on an environment variable)
        kind = {"number": "string"}.get(types[0], types[0]) if types else "string"
        if schema.get("enum"):
            kind = "options"
        expected[name] = (kind, bool(schema.get("secret") or schema.get("writeOnly")))
    missing = sorted(set(expected) - set(declared))
    assert not missing, f"settings of --about missing from meltano.yml: {missing}"
    extra = sorted(set(declared) - set(expected))
    assert not extra, f"settings in meltano.yml that --about does not have: {extra}"
    got = {n: (s.get("kind", "string"), bool(s.get("sensitive"))) for n, s in declared.items()}
    wrong = {n: (got[n], k) for n, k in expected.items() if got[n] != k}
    assert not wrong, f"wrong (kind, sensitive) in meltano.yml (declared, expected): {wrong}"
    assert got["api_key"] == ("string", True) and got["ledger_url"] == ("string", True)
    assert all(s.get("label") and s.get("description") for s in loader["settings"])
    assert loader["settings"] == definition()["settings"]


def test_first_run_delivers_every_lead(project: Project, first_run: dict[str, Any]) -> None:
    rows = csv_rows(LEADS_CSV)
    leads = leads_by_id(first_run)
    assert sorted(leads) == sorted(r["id"] for r in rows)
    assert first_run["code_counts"] == {"0": len(rows)}, first_run["code_counts"]
    assert first_run["lead_calls"] == len(rows)  # upsert with an empty ledger: one insert each
    assert first_run["problems"] == []
    assert all(lead["writes"] == 1 for lead in leads.values())
    for row in rows:
        fields = leads[row["id"]]["fields"]
        assert fields["Name"] == row["name"]
        assert fields["City"] == row["city"]
        assert fields["PostCode"] == row["postcode"]  # "0800" kept: every column is a string
        assert re.fullmatch(r"0[2-478]\d{8}|0011\d+", fields["FirstPhone"]), fields
    assert leads["C1001"]["fields"]["FirstPhone"] == "0412345601"  # "0412 345 601"
    assert leads["C1006"]["fields"]["FirstPhone"] == "0412345606"  # "+61 (0) 412 345 606"
    assert leads["C1001"]["fields"]["SecondPhone"] == "0383218101"  # "(03) 8321 8101"
    assert leads["C1018"]["fields"]["FirstPhone"] == "001164211234618"  # a NZ mobile
    assert leads["C1002"]["callback_date"] == "2027/02/03 12:30"  # 01:30Z in Melbourne (AEDT)
    assert leads["C1002"]["disposition"] == "Call Back"
    assert leads["C1002"]["priority"] == 80  # schema_overrides: priority is an integer
    assert not (project.work / "rejects.jsonl").exists()


def test_meltano_stored_the_state(project: Project, first_run: dict[str, Any]) -> None:
    listed = project.meltano("state", "list")
    assert listed.returncode == 0, tail(listed)
    assert STATE_ID in listed.stdout.split(), listed.stdout
    assert bookmarked(project.stored_state()) == mtime_of(project.csv_path)


def test_second_run_writes_only_the_changed_lead(
    project: Project, first_run: dict[str, Any], second_run: dict[str, Any]
) -> None:
    """The tap sends the whole file again; the target's ledger skips the 19 unchanged leads."""
    calls = second_run["lead_calls"] - first_run["lead_calls"]
    assert calls == 1, f"second run made {calls} lead calls, expected 1 (the changed lead)"
    leads = leads_by_id(second_run)
    assert leads[CHANGED_ID]["fields"]["City"] == CHANGED_CITY
    assert leads[CHANGED_ID]["writes"] == 2
    others = {k: v["writes"] for k, v in leads.items() if k != CHANGED_ID}
    assert set(others.values()) == {1}, others
    assert len(leads) == len(first_run["leads"])
    assert bookmarked(project.stored_state()) == mtime_of(project.csv_path)


def test_third_run_unchanged_file_sends_nothing(
    project: Project, second_run: dict[str, Any]
) -> None:
    """Meltano hands the stored state back: the tap skips the file, nothing reaches the PBX."""
    proc = project.run_pipeline()
    assert "Skipping" in proc.stdout + proc.stderr, tail(proc)
    assert project.sim_state()["lead_calls"] == second_run["lead_calls"]


def test_meltano_invoke_list_uses_the_loaders_configuration(
    project: Project, first_run: dict[str, Any]
) -> None:
    """`target-noojee:list` runs noojee-list with the loader's settings (base_url, api_key)."""
    proc = project.meltano("invoke", "target-noojee:list", "--format", "json")
    assert proc.returncode == 0, tail(proc)
    listed = json.loads(proc.stdout[proc.stdout.index("{") :])
    campaigns = [c for t in listed["templates"] for c in t["campaigns"]]
    assert [t["id"] for t in listed["templates"]] == [41]
    assert [c["id"] for c in campaigns] == [CAMPAIGN]
    assert [a["id"] for a in campaigns[0]["allocations"]] == [38]


def test_meltano_invoke_rejects_list_reads_the_loaders_rejects(
    project: Project, second_run: dict[str, Any]
) -> None:
    """`target-noojee:rejects list`: the loader's reject_file (and ledger); none were rejected."""
    proc = project.meltano("invoke", "target-noojee:rejects", "list", "--format", "json")
    assert proc.returncode == 0, tail(proc)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {}
    text = project.meltano("invoke", "target-noojee:rejects", "list")
    assert text.returncode == 0, tail(text)
    assert str(project.work / "rejects.jsonl") in text.stdout + text.stderr, tail(text)


def test_api_key_never_appears(project: Project, second_run: dict[str, Any]) -> None:
    """Not in any output of meltano, the plugins or the simulator; not in any file left."""
    assert project.outputs, "nothing was captured"
    leaked = [i for i, text in enumerate(project.outputs) if project.api_key in text]
    assert not leaked, f"the API key is in captured output(s) #{leaked}"
    needle = project.api_key.encode()
    files = []
    for folder, subfolders, names in os.walk(project.work):
        subfolders[:] = [d for d in subfolders if d != "venv"]  # the plugins' installs
        files += [Path(folder, name) for name in names]
    assert any(f.name == "meltano.db" for f in files), files
    holding = [str(f) for f in files if needle in f.read_bytes()]
    assert not holding, f"the API key is in: {holding}"
