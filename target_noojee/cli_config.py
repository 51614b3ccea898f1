"""Reading a config file for the helper commands (`noojee-list`, `noojee-rejects`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from target_noojee.settings import ConfigError


def load_config_file(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; a ConfigError (never echoing the content) otherwise."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError("config", f"cannot read --config: {type(exc).__name__}") from None
    if not isinstance(loaded, dict):
        raise ConfigError("config", "--config must hold a JSON object")
    return loaded
