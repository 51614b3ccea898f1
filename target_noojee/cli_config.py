"""Exit codes shared by the target and its helper commands, and the configuration of a helper
command (`noojee-list`, `noojee-rejects`): its --config file, or without one the target's
`TARGET_NOOJEE_*` environment (what `meltano invoke target-noojee:list` provides)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from target_noojee.settings import ConfigError

EXIT_FAILED = 1  # delivery failed (transient errors beyond max_retry_time_s, PBX refused)
EXIT_CONFIG = 2  # a setting is wrong: fix it and run again
ENV_PREFIX = "TARGET_NOOJEE_"
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def text_streams_escape_what_utf8_cannot_hold() -> None:
    """A record's text in a message (a cut emoji: a lone surrogate) is written escaped rather
    than failing the write; stdout stays JSON either way."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def _not_json(constant: str) -> Any:
    """NaN and Infinity: Python reads them, JSON (and the SDK) does not."""
    raise ValueError(f"{constant} is not JSON")


def load_config_file(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; a ConfigError (never echoing the content) otherwise."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"), parse_constant=_not_json)
    except OSError as exc:
        raise ConfigError("config", f"cannot read --config {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:  # its position, never its text
        raise ConfigError(
            "config", f"--config {path} is not JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:  # NaN (`_not_json`), or not UTF-8: says where, not the content
        raise ConfigError("config", f"--config {path} is not JSON ({exc})") from None
    if not isinstance(loaded, dict):
        raise ConfigError("config", f"--config {path} must hold a JSON object")
    return loaded


def _env_value(name: str, schema: Mapping[str, Any], raw: str) -> Any:
    """One variable's value, typed by the setting's JSON Schema (objects and arrays as JSON)."""
    var = ENV_PREFIX + name.upper()
    declared = schema.get("type", ["string"])
    types = [declared] if isinstance(declared, str) else list(declared)
    if "string" in types or schema.get("enum"):
        return raw
    text = raw.strip()
    try:
        if "object" in types or "array" in types:
            value = json.loads(text)
            wanted = dict if "object" in types else list
            if isinstance(value, wanted):
                return value
        elif "boolean" in types and text.lower() in (*_TRUE, *_FALSE):
            return text.lower() in _TRUE
        elif "integer" in types:
            return int(text)
        elif "number" in types:
            return float(text)
    except ValueError:
        pass
    kind = next((t for t in types if t != "null"), "string")
    what = {"object": "a JSON object", "array": "a JSON array", "integer": "an integer"}.get(
        kind, f"a {kind}"
    )
    raise ConfigError(name, f"{var} must hold {what} (setting `{name}`)")  # never the value


def config_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The target's settings found in TARGET_NOOJEE_<SETTING> variables, typed by its schema.

    Unset and empty variables are left out; a value of the wrong type is a ConfigError.
    """
    from target_noojee.target import TargetNoojee  # the one declaration of the settings

    environ = os.environ if environ is None else environ
    config: dict[str, Any] = {}
    for name, schema in TargetNoojee.config_jsonschema["properties"].items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw:
            config[name] = _env_value(name, schema, raw)
    return config


def check_config_args(argv: list[str]) -> None:
    """The target's --config arguments read as the SDK will read them, so a missing or
    malformed file, or a variable of the wrong type under `--config ENV`, is one ConfigError
    line rather than the SDK's traceback."""
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None
        if arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        if value == "ENV":
            # An empty variable is unset, as for the helper commands (the SDK would read ""
            # as false, or fail on it as a number): gone before the SDK reads them.
            for name in [k for k, v in os.environ.items() if k.startswith(ENV_PREFIX) and not v]:
                del os.environ[name]
            config_from_env()
        elif value is not None:
            load_config_file(Path(value))


def config_arg(path: Path | None, prog: str) -> dict[str, Any] | None:
    """The --config file's object, else the TARGET_NOOJEE_* environment's settings; None once
    the reason is on stderr."""
    try:
        return load_config_file(path) if path is not None else config_from_env()
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
