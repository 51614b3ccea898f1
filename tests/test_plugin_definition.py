"""The Meltano plugin definition (plugin/loaders/target-noojee--noojee.yml, the Hub's format)
and the root meltano.yml's loader agree with `target-noojee --about`, the one declaration of
the settings; the helper commands read the loader's TARGET_NOOJEE_* environment."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from target_noojee.cli_config import config_arg, config_from_env
from target_noojee.settings import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DEFINITION = ROOT / "plugin" / "loaders" / "target-noojee--noojee.yml"

# What the Hub's schemas allow (meltano/hub schemas/plugin_definitions/loaders.schema.json and
# schemas/common/base_setting.schema.json).
HUB_LOADER_KEYS = {
    "capabilities", "name", "pip_url", "variant", "description", "executable", "repo",
    "namespace", "logo_url", "label", "settings", "docs", "python", "settings_group_validation",
    "commands", "dialect", "target_schema", "hidden", "requires", "maintenance_status",
    "quality", "domain_url", "keywords", "definition", "next_steps", "settings_preamble",
    "usage", "prereq", "supported_python_versions", "log_parser",
}  # fmt: skip
HUB_SETTING_KEYS = {
    "aliases", "description", "docs", "documentation", "env", "hidden", "kind", "label", "name",
    "oauth", "options", "placeholder", "sensitive", "tooltip", "value", "value_post_processor",
    "value_processor",
}  # fmt: skip
HUB_KINDS = {
    "oauth", "hidden", "password", "date_iso8601", "file", "email", "integer", "options",
    "object", "array", "boolean", "string", "decimal",
}  # fmt: skip
REQUIRED = {
    "name", "namespace", "variant", "label", "description", "pip_url", "executable",
    "capabilities", "keywords", "settings_group_validation", "settings", "repo", "docs",
    "commands",
}  # fmt: skip


@pytest.fixture(scope="module")
def about() -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "target_noojee", "--about", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    data: dict[str, Any] = json.loads(out)
    return data


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFINITION.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def loader() -> dict[str, Any]:
    project = yaml.safe_load((ROOT / "meltano.yml").read_text(encoding="utf-8"))
    found: dict[str, Any] = next(
        p for p in project["plugins"]["loaders"] if p["name"] == "target-noojee"
    )
    return found


def expected_kind(schema: dict[str, Any]) -> str:
    if schema.get("enum"):
        return "options"
    types = schema.get("type", ["string"])
    types = [types] if isinstance(types, str) else types
    first = next((t for t in types if t != "null"), "string")
    # number: string, read back as a number by the target; Meltano's decimal kind fails on an
    # environment variable (a Decimal it cannot write to the config file)
    return {"number": "string"}.get(first, first)


def test_the_definition_is_in_the_hubs_format(definition: dict[str, Any]) -> None:
    assert set(definition) >= REQUIRED, sorted(REQUIRED - set(definition))
    assert set(definition) <= HUB_LOADER_KEYS, sorted(set(definition) - HUB_LOADER_KEYS)
    assert (definition["name"], definition["namespace"], definition["variant"]) == (
        "target-noojee",
        "target_noojee",
        "noojee",
    )
    assert DEFINITION.name == f"{definition['name']}--{definition['variant']}.yml"
    assert "meltano_sdk" in definition["keywords"]
    for entry in definition["settings"]:
        assert set(entry) <= HUB_SETTING_KEYS, (entry["name"], set(entry) - HUB_SETTING_KEYS)
        assert entry["kind"] in HUB_KINDS, entry
        assert entry["kind"] != "password", f"{entry['name']}: use sensitive: true, kind string"
        assert entry.get("label") and entry.get("description"), entry["name"]


def test_every_setting_of_about_with_its_kind_description_and_default(
    about: dict[str, Any], definition: dict[str, Any]
) -> None:
    properties = about["settings"]["properties"]
    declared = {s["name"]: s for s in definition["settings"]}
    assert list(declared) == list(properties)  # every one, no extra, in --about's order
    for name, schema in properties.items():
        entry = declared[name]
        assert entry["kind"] == expected_kind(schema), name
        assert entry["description"] == schema["description"], name
        secret = bool(schema.get("secret") or schema.get("writeOnly"))
        assert entry.get("sensitive", False) is secret, name
        assert entry.get("value") == schema.get("default"), name
        if schema.get("enum"):
            assert [o["value"] for o in entry["options"]] == schema["enum"], name
    assert declared["api_key"]["sensitive"] is True
    assert declared["ledger_url"]["sensitive"] is True
    assert {n for n, s in declared.items() if s.get("sensitive")} == {"api_key", "ledger_url"}


def test_capabilities_required_settings_and_pythons(
    about: dict[str, Any], definition: dict[str, Any]
) -> None:
    assert sorted(definition["capabilities"]) == sorted(about["capabilities"])
    assert definition["settings_group_validation"] == [sorted(about["settings"]["required"])]
    assert definition["supported_python_versions"] == about["supported_python_versions"]
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    claimed = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', pyproject)
    assert claimed == definition["supported_python_versions"]


def test_commands_run_the_helper_scripts(definition: dict[str, Any]) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    scripts = set(re.findall(r'^([a-z-]+) = "target_noojee\.', pyproject, flags=re.M))
    assert {c["executable"] for c in definition["commands"].values()} <= scripts
    assert definition["commands"]["list"]["executable"] == "noojee-list"
    assert definition["commands"]["rejects"]["executable"] == "noojee-rejects"


def test_meltano_yml_loader_is_the_definition_installed_from_the_checkout(
    definition: dict[str, Any], loader: dict[str, Any]
) -> None:
    assert loader["pip_url"] == "-e ."
    for key in (
        "namespace",
        "variant",
        "label",
        "description",
        "executable",
        "capabilities",
        "settings_group_validation",
        "commands",
        "settings",
    ):
        assert loader[key] == definition[key], key


def test_the_generator_has_nothing_to_change() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "plugin" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the helpers under `meltano invoke`: the TARGET_NOOJEE_* environment ---------------------


def test_settings_from_the_environment_are_typed_by_the_schema() -> None:
    env = {
        "TARGET_NOOJEE_BASE_URL": "https://pbx.example.com.au",
        "TARGET_NOOJEE_API_KEY": "k-123",
        "TARGET_NOOJEE_REJECT_FILE": "/data/rejects.jsonl",
        "TARGET_NOOJEE_LEDGER_URL": "postgresql://u:p@db/ledger",
        "TARGET_NOOJEE_CA_BUNDLE": "/etc/ca.pem",
        "TARGET_NOOJEE_TLS_VERIFY": "false",
        "TARGET_NOOJEE_CAMPAIGN_ID": "41",
        "TARGET_NOOJEE_MAX_REJECT_RATIO": "0.25",
        "TARGET_NOOJEE_MAPPING": '{"njExternalLeadId": "id"}',
        "TARGET_NOOJEE_PHONE_FIELDS": '["FirstPhone"]',
        "TARGET_NOOJEE_OPERATION": "upsert",
        "TARGET_NOOJEE_LEDGER_PATH": "",  # empty: unset
        "TARGET_NOOJEE_LOGLEVEL": "DEBUG",  # not a setting
        "MELTANO_LOAD_API_KEY": "other",  # Meltano's alias: not read
    }
    assert config_from_env(env) == {
        "base_url": "https://pbx.example.com.au",
        "api_key": "k-123",
        "reject_file": "/data/rejects.jsonl",
        "ledger_url": "postgresql://u:p@db/ledger",
        "ca_bundle": "/etc/ca.pem",
        "tls_verify": False,
        "campaign_id": 41,
        "max_reject_ratio": 0.25,
        "mapping": {"njExternalLeadId": "id"},
        "phone_fields": ["FirstPhone"],
        "operation": "upsert",
    }
    assert config_from_env({"TARGET_NOOJEE_TLS_VERIFY": "true"}) == {"tls_verify": True}


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("TARGET_NOOJEE_MAPPING", '["not", "an object"]', "JSON object"),
        ("TARGET_NOOJEE_MAPPING", "{broken secret-ish", "JSON object"),
        ("TARGET_NOOJEE_TLS_VERIFY", "maybe", "a boolean"),
        ("TARGET_NOOJEE_CAMPAIGN_ID", "forty-one", "an integer"),
    ],
)
def test_a_wrongly_typed_variable_names_it_without_its_value(
    var: str, value: str, says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_env({var: value})
    assert var in str(caught.value) and says in str(caught.value)
    assert value not in str(caught.value)


def test_without_config_the_helpers_read_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TARGET_NOOJEE_REJECT_FILE", str(tmp_path / "r.jsonl"))
    monkeypatch.setenv("TARGET_NOOJEE_TLS_VERIFY", "no")
    assert config_arg(None, "noojee-list") == {
        "reject_file": str(tmp_path / "r.jsonl"),
        "tls_verify": False,
    }
    config = tmp_path / "config.json"
    config.write_text('{"reject_file": "from-file.jsonl"}', encoding="utf-8")
    assert config_arg(config, "noojee-list") == {"reject_file": "from-file.jsonl"}  # the file only
    monkeypatch.setenv("TARGET_NOOJEE_MAX_CONCURRENCY", "lots")
    assert config_arg(None, "noojee-rejects") is None
    assert "TARGET_NOOJEE_MAX_CONCURRENCY must hold an integer" in capsys.readouterr().err


def test_the_targets_own_logs_are_under_one_namespace() -> None:
    """Every logger a module of the target names is `target_noojee` or a child of it (the
    metrics go to the SDK's metrics logger, through singer_sdk.metrics)."""
    names = set()
    for source in (ROOT / "target_noojee").rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        names |= set(re.findall(r'getLogger\(\s*"([^"]+)"', text))
    assert names, "no logger found"
    outside = sorted(
        n for n in names if n != "target_noojee" and not n.startswith("target_noojee.")
    )
    assert not outside, outside
