"""A throwaway PostgreSQL server for the end-to-end tests, on 127.0.0.1 only.

    with postgres_server() as pg:
        psycopg.connect(host=pg.host, port=pg.port, user=pg.user, password=pg.password,
                        dbname=pg.dbname)

The server binaries come from the `pgserver` wheel (PyPI; it ships PostgreSQL's binaries, so a
machine with only python3 can run this): `make e2e` installs it into the project's venv through
the `e2e` extra. Only its binaries are used, not its Python API (which listens on a Unix socket
only and keeps state in the user's runtime dir). `E2E_PG_BIN` may name another directory holding
`initdb` and `postgres` (e.g. Debian's /usr/lib/postgresql/15/bin); without it and without
pgserver, a Debian `postgresql` install is used if there is one.

What the server is: a fresh cluster in a temp dir (removed afterwards), a random free TCP port on
127.0.0.1 (`listen_addresses` is that address alone, no Unix socket), a superuser with a random
password and scram-sha-256 authentication, durability off (fsync) since the data is thrown away.
Run as root, the binaries run as an unprivileged user (PostgreSQL refuses root): `nobody`, or
`E2E_PG_OS_USER`.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class PostgresError(RuntimeError):
    """The server could not be set up; the message carries the server's log."""


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    dbname: str
    bin_dir: Path
    log: Path

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no server log: {exc})"


def find_bin_dir() -> Path:
    """Where initdb and postgres are: $E2E_PG_BIN, the pgserver wheel, or Debian's package."""
    candidates: list[Path] = []
    if os.environ.get("E2E_PG_BIN"):
        candidates.append(Path(os.environ["E2E_PG_BIN"]))
    spec = importlib.util.find_spec("pgserver")  # located, not imported: no side effects
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "pginstall" / "bin" for p in spec.submodule_search_locations]
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise PostgresError(
        "no PostgreSQL server binaries: install the e2e extra (`make e2e` does: "
        "pip install -e '.[e2e]', which brings the pgserver wheel) or set E2E_PG_BIN"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _os_user() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this one) unless we are root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("E2E_PG_OS_USER", "nobody")
    try:
        return pwd.getpwnam(name)
    except KeyError as exc:
        raise PostgresError(
            f"running as root, PostgreSQL needs an unprivileged account: {name!r} does not "
            "exist (set E2E_PG_OS_USER to one that does)"
        ) from exc


def _runs_as(bin_dir: Path, account: pwd.struct_passwd) -> str | None:
    """None if `postgres --version` runs as the account, else why not."""
    try:
        proc = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            user=account.pw_uid,
            group=account.pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError as exc:  # the exec itself refused: a folder above it is private
        return str(exc)
    return None if proc.returncode == 0 else proc.stderr.strip() or f"exit {proc.returncode}"


def _reachable_bin_dir(bin_dir: Path, account: pwd.struct_passwd | None, base: Path) -> Path:
    """As root, the binaries must be readable by the account, every folder above them too. If
    they are not (a checkout under a private home, say), a copy of the installation in `base`
    (the account's own temp dir) is used: PostgreSQL finds its lib/ and share/ relative to
    bin/, and nothing outside `base` has its permissions changed."""
    if account is None or _runs_as(bin_dir, account) is None:
        return bin_dir
    install = bin_dir.parent  # .../site-packages/pgserver/pginstall
    copy = base / "pg" / install.parent.name / install.name
    shutil.copytree(install, copy, symlinks=True)
    libs = install.parent.parent / f"{install.parent.name}.libs"  # the wheel's libpq: RPATH
    if libs.is_dir():  # $ORIGIN/../../../pgserver.libs
        shutil.copytree(libs, base / "pg" / libs.name, symlinks=True)
    why = _runs_as(copy / "bin", account)
    if why is not None:
        raise PostgresError(
            f"{bin_dir}/postgres does not run as {account.pw_name!r}, not even copied to "
            f"{copy}: {why}"
        )
    return copy / "bin"


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path, deadline: float) -> None:
    """Until the server accepts TCP connections and says it is ready (its log line)."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PostgresError(
                f"postgres exited {proc.returncode} at start; its log:\n"
                + log.read_text(errors="replace")[-4000:]
            )
        text = log.read_text(errors="replace") if log.exists() else ""
        if "ready to accept connections" in text:
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=2):
                return
        time.sleep(0.1)
    raise PostgresError(
        f"postgres not ready after {START_TIMEOUT_S:.0f}s; its log:\n"
        + (log.read_text(errors="replace")[-4000:] if log.exists() else "(none)")
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)  # "fast shutdown": disconnects clients, exits cleanly
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def postgres_server(dbname: str = "crm", user: str = "crm_owner") -> Iterator[Postgres]:
    """A new cluster on 127.0.0.1:<free port> with database `dbname`; stopped and removed after."""
    bin_dir = find_bin_dir()
    account = _os_user()
    base = Path(tempfile.mkdtemp(prefix="noojee-pg-"))
    uid: int | None = None  # subprocess's user/group: None runs as this process does
    gid: int | None = None
    groups: list[int] | None = None
    if account is not None:
        uid, gid, groups = account.pw_uid, account.pw_gid, []
        os.chown(base, uid, gid)
    data, log = base / "data", base / "server.log"
    password = secrets.token_urlsafe(18)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"LC_ALL": "C", "TZ": "UTC"})
    if account is not None:
        env["HOME"] = str(base)
    proc: subprocess.Popen[bytes] | None = None
    try:
        bin_dir = _reachable_bin_dir(bin_dir, account, base)
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        if uid is not None and gid is not None:
            os.chown(pwfile, uid, gid)
        init = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=base,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise PostgresError(f"initdb exited {init.returncode}:\n{init.stdout}\n{init.stderr}")
        for attempt in range(3):  # the free port may be taken between probe and bind
            port = free_port()
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    [
                        str(bin_dir / "postgres"),
                        "-D",
                        str(data),
                        "-p",
                        str(port),
                        "-c",
                        f"listen_addresses={HOST}",
                        "-c",
                        "unix_socket_directories=",
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "dynamic_shared_memory_type=mmap",
                        "-c",
                        "max_connections=40",
                    ],
                    cwd=base,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,  # a Ctrl-C of pytest is ours to pass on
                    user=uid,
                    group=gid,
                    extra_groups=groups,
                )
            try:
                _wait_ready(proc, port, log, time.monotonic() + START_TIMEOUT_S)
                break
            except PostgresError:
                _stop(proc)
                if attempt == 2 or "could not bind" not in log.read_text(errors="replace"):
                    raise
        server = Postgres(HOST, port, user, password, "postgres", bin_dir, log)
        _create_database(server, dbname, env)
        yield Postgres(HOST, port, user, password, dbname, bin_dir, log)
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(base, ignore_errors=True)


def _create_database(server: Postgres, dbname: str, env: dict[str, str]) -> None:
    """With the cluster's own psql (no client library needed for this step)."""
    proc = subprocess.run(
        [
            str(server.bin_dir / "psql"),
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            server.host,
            "-p",
            str(server.port),
            "-U",
            server.user,
            "-d",
            server.dbname,
            "-c",
            f'CREATE DATABASE "{dbname}"',
        ],
        env={**env, "PGPASSWORD": server.password},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise PostgresError(f"CREATE DATABASE failed: {proc.stderr}\n{server.log_tail()}")
