"""TLS helpers for tests: a self-signed certificate for 127.0.0.1, made with the openssl CLI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import requests


def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """Write cert.pem and key.pem (CN and SAN 127.0.0.1, 2 days) into `directory`.

    Skips the test when the openssl CLI is missing.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def trust_cert(session: requests.Session, cert: Path) -> requests.Session:
    """Make `session` verify servers against `cert` alone; returns it.

    ``trust_env`` goes off: requests lets ``REQUESTS_CA_BUNDLE`` override ``session.verify``.
    """
    session.verify = str(cert)
    session.trust_env = False
    return session
