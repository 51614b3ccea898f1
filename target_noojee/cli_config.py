"""Exit codes shared by the target and its helper commands, and reading a helper command's
--config (`noojee-list`, `noojee-rejects`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from target_noojee.settings import ConfigError

EXIT_FAILED = 1  # delivery failed (transient errors beyond max_retry_time_s, PBX refused)
EXIT_CONFIG = 2  # a setting is wrong: fix it and run again


def load_config_file(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; a ConfigError (never echoing the content) otherwise."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError("config", f"cannot read --config: {type(exc).__name__}") from None
    if not isinstance(loaded, dict):
        raise ConfigError("config", "--config must hold a JSON object")
    return loaded


def config_arg(path: Path | None, prog: str) -> dict[str, Any] | None:
    """The --config file's object ({} without one); None once the reason is on stderr."""
    try:
        return load_config_file(path) if path is not None else {}
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
