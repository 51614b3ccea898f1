"""`make compat`: the unit suite on every Python interpreter pyenv has, one after the other.

For each `$PYENV_ROOT/versions/*/bin/python` (default root ~/.pyenv) inside pyproject's
`requires-python`: a venv under $COMPAT_DIR (default /tmp/target-noojee-compat, kept between
runs), `pip install -e '.[dev]'`, then `pytest -q -p no:cacheprovider tests`. Interpreters
outside `requires-python` are listed as not run. Exits 1 when any suite failed (or none ran).
About 4-5 minutes an interpreter on 2 cores.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent


def requires_python() -> SpecifierSet:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'^requires-python\s*=\s*"([^"]+)"', text, flags=re.M)
    return SpecifierSet(match.group(1) if match else "")


def version_of(python: Path) -> str | None:
    try:
        out = subprocess.run(
            [str(python), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run(args: list[str], log: Path) -> int:
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(args)}\n")
        out.flush()
        return subprocess.run(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode


def main() -> int:
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    work = Path(os.environ.get("COMPAT_DIR") or "/tmp/target-noojee-compat")
    work.mkdir(parents=True, exist_ok=True)
    spec = requires_python()
    results: list[tuple[str, str]] = []
    for python in sorted(pyenv.glob("versions/*/bin/python")):
        version = version_of(python)
        if version is None:
            results.append((str(python), "not run: does not start"))
            continue
        if version not in spec:
            results.append((version, f"not run: outside requires-python {spec}"))
            continue
        venv, log = work / f"venv-{version}", work / f"test-{version}.log"
        log.write_text("", encoding="utf-8")
        started = time.monotonic()
        print(f"compat: Python {version}: installing and testing (log: {log})", flush=True)
        vpy = str(venv / "bin" / "python")
        steps = [
            [str(python), "-m", "venv", str(venv)],
            [vpy, "-m", "pip", "install", "-q", "--upgrade", "pip"],
            [vpy, "-m", "pip", "install", "-q", "-e", f"{ROOT}[dev]"],
        ]
        failed = next((" ".join(s[-2:]) for s in steps if run(s, log) != 0), None)
        if failed:
            results.append((version, f"FAILED to install ({failed}): see {log}"))
            continue
        code = run([vpy, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], log)
        tail = log.read_text(encoding="utf-8").strip().splitlines()[-1:]
        verdict = "passed" if code == 0 else f"FAILED (exit {code})"
        took = time.monotonic() - started
        results.append((version, f"{verdict}: {tail[0] if tail else ''} [{took:.0f}s]"))
        print(f"compat: Python {version}: {results[-1][1]}", flush=True)
    print("\ncompat summary:")
    for version, outcome in results:
        print(f"  {version:>8}  {outcome}")
    ran = [o for _v, o in results if not o.startswith("not run")]
    return 0 if ran and all(o.startswith("passed") for o in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
