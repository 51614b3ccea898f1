"""`noojee-sim` as a process: one line on stdout, serves, stops cleanly on SIGTERM / SIGINT."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from simfixtures import PREFIX, two_template_fixture
from tlsfixtures import make_self_signed_cert, trust_cert

KEY = "cli-secret-3c9d7e"
LINE = re.compile(r"^noojee-sim listening on http://127\.0\.0\.1:(\d+)\n$")
TLS_LINE = re.compile(r"^noojee-sim listening on https://127\.0\.0\.1:(\d+)\n$")
BIN = Path(sys.executable).parent


def launch(
    *args: str, env_key: bool = False, tls: bool = False
) -> tuple[subprocess.Popen[str], str]:
    """Start the CLI; return it and its base URL, read from the one line it prints."""
    script = shutil.which("noojee-sim", path=str(BIN))
    cmd = [script] if script else [sys.executable, "-m", "target_noojee.simulator.cli"]
    env = dict(os.environ)
    env.pop("NOOJEE_SIM_API_KEY", None)
    if env_key:
        env["NOOJEE_SIM_API_KEY"] = KEY
    else:
        args = ("--api-key", KEY, *args)
    proc = subprocess.Popen(
        [*cmd, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = (TLS_LINE if tls else LINE).match(line)
    if not match:
        proc.kill()
        pytest.fail(f"unexpected first line {line!r}; stderr: {proc.communicate()[1]!r}")
    return proc, f"{'https' if tls else 'http'}://127.0.0.1:{match.group(1)}"


def finish(proc: subprocess.Popen[str], sig: int) -> tuple[str, str]:
    """Send a signal; the process must exit 0; return the rest of stdout and stderr."""
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    return out, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_one_line_serves_and_stops(sig: int) -> None:
    proc, url = launch("--slots", "2", "--service-ms", "0", "--seed", "1")
    params = {"apiKey": KEY, "fTemplateId": "41", "fCampaignId": "41", "fAllocationId": "38"}
    r = requests.post(
        url + PREFIX + "insertLeadFast",
        params=params,
        json={"njExternalLeadId": "X", "FirstPhone": "0412345678"},
        timeout=5,
    )
    assert r.json() == {"code": 0, "message": "OK"}
    assert requests.get(url + PREFIX + "getCampaignTemplateList", timeout=5).status_code == 401
    state = requests.get(url + "/__admin/state", params={"apiKey": KEY}, timeout=5).json()
    assert state["slots"] == 2 and [lead["external_id"] for lead in state["leads"]] == ["X"]
    out, err = finish(proc, sig)
    assert out == ""  # exactly one line in all
    assert KEY not in out and KEY not in err


def test_cli_reads_the_key_from_the_environment_and_a_fixture(tmp_path: Path) -> None:
    path = tmp_path / "fixture.json"
    path.write_text(json.dumps(two_template_fixture()))
    proc, url = launch("--fixture", str(path), "--queue-timeout-s", "0.5", env_key=True)
    r = requests.get(
        url + PREFIX + "getCampaignList", params={"apiKey": KEY, "fTemplateId": "50"}, timeout=5
    )
    assert [e["id"] for e in r.json()["entities"]] == [50]
    state = requests.get(url + "/__admin/state", params={"apiKey": KEY}, timeout=5).json()
    assert state["queue_timeout_s"] == 0.5 and state["service_ms"] == 100.0
    out, err = finish(proc, signal.SIGTERM)
    assert out == "" and KEY not in err


def test_cli_without_a_key_fails() -> None:
    env = {k: v for k, v in os.environ.items() if k != "NOOJEE_SIM_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "target_noojee.simulator.cli", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=10,
    )
    assert done.returncode == 2 and done.stdout == "" and "API key" in done.stderr


def test_cli_serves_https_and_the_early_build(tmp_path: Path) -> None:
    cert, key = make_self_signed_cert(tmp_path)
    proc, url = launch(
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--id-in-query",
        "--service-ms",
        "0",
        tls=True,
    )
    session = trust_cert(requests.Session(), cert)
    state = session.get(url + "/__admin/state", params={"apiKey": KEY}, timeout=5).json()
    assert state["id_in_query"] is True and state["gateway"] is None
    params = {"apiKey": KEY, "fTemplateId": "41", "fCampaignId": "41", "fAllocationId": "38"}
    r = session.post(
        url + PREFIX + "updateLeadFast",
        params=params,
        json={"njExternalLeadId": "X", "FirstPhone": "0412345678", "njDisposition": "Sale"},
        timeout=5,
    )
    assert r.json()["code"] == 113  # the body's id is not read
    session.close()
    out, err = finish(proc, signal.SIGTERM)
    assert out == "" and KEY not in err


@pytest.mark.parametrize("flag", ["--tls-cert", "--tls-key"])
def test_cli_tls_cert_and_key_go_together(flag: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "target_noojee.simulator.cli", "--api-key", KEY, flag, "x.pem"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 2 and done.stdout == "" and "go together" in done.stderr


def test_cli_bad_cert_file_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    args = ["--api-key", KEY, "--tls-cert", str(bad), "--tls-key", str(bad)]
    done = subprocess.run(
        [sys.executable, "-m", "target_noojee.simulator.cli", *args],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 2 and done.stdout == "" and done.stderr.startswith("noojee-sim: ")
