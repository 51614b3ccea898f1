"""`noojee-list`: the templates, campaigns and allocations of a PBX, to fill in the ids.

    noojee-list --config config.json [--format text|json] [--wait 10]
    noojee-list --base-url https://pbx.example.com.au          # key from TARGET_NOOJEE_API_KEY

The PBX and key come from `--base-url` / `--api-key`, else the environment
(`TARGET_NOOJEE_BASE_URL`, `TARGET_NOOJEE_API_KEY`), else the config file (the target's own).
Without --config the other settings (`ca_bundle`, `tls_verify`) come from the target's
`TARGET_NOOJEE_*` environment too, as under `meltano invoke target-noojee:list`.
Prefer the environment or the file for the key: a command line is visible to every user of the
machine (`ps`). Exit status: 0 listed; 1 the PBX did not answer within `--wait` seconds; 2 the
key was refused or the URL is wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from target_noojee.cli_config import (
    EXIT_CONFIG,
    config_arg,
    text_streams_escape_what_utf8_cannot_hold,
)
from target_noojee.client import NoojeeClient, client_from_config
from target_noojee.preflight import PreflightError, RetryBound, catalogue, fetch, pbx_host
from target_noojee.settings import ConfigError

EXIT_UNREACHABLE = 1
ENV_PREFIX = "TARGET_NOOJEE_"


def pbx_tree(client: NoojeeClient, host: str, wait_s: float) -> list[dict[str, Any]]:
    """Every template with its campaigns, each campaign with its allocations (ids and names)."""
    bound = RetryBound(wait_s, knob="--wait")

    def listed(call: Callable[[], list[dict[str, Any]]], what: str) -> list[dict[str, Any]]:
        found = catalogue(fetch(call, host=host, what=what, bound=bound))
        return [{"id": ident, "name": name} for ident, name in sorted(found.items())]

    templates = listed(client.templates, "getCampaignTemplateList")
    for template in templates:
        template["campaigns"] = listed(
            partial(client.campaigns, template["id"]), f"getCampaignList for {template['id']}"
        )
        for campaign in template["campaigns"]:
            campaign["allocations"] = listed(
                partial(client.allocations, campaign["id"]),
                f"getAllocationList for {campaign['id']}",
            )
    return templates


def render_text(host: str, templates: list[dict[str, Any]]) -> str:
    """An indented tree: template, its campaigns, their allocations."""
    lines = [f"PBX {host}: {len(templates)} template(s)"]
    for template in templates:
        lines.append(f"template {template['id']}  {template['name']}")
        if not template["campaigns"]:
            lines.append("  (no campaigns)")
        for campaign in template["campaigns"]:
            lines.append(f"  campaign {campaign['id']}  {campaign['name']}")
            if not campaign["allocations"]:
                lines.append("    (no allocations)")
            for allocation in campaign["allocations"]:
                lines.append(f"    allocation {allocation['id']}  {allocation['name']}")
    return "\n".join(lines)


def _setting(args: argparse.Namespace, config: dict[str, Any], name: str) -> str:
    """A flag, else TARGET_NOOJEE_<NAME>, else the config file; '' when none is set."""
    value = getattr(args, name) or os.environ.get(ENV_PREFIX + name.upper()) or config.get(name)
    return str(value).strip() if value else ""


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status. Failures are one line on stderr."""
    text_streams_escape_what_utf8_cannot_hold()
    parser = argparse.ArgumentParser(
        prog="noojee-list", description="List the templates, campaigns and allocations of a PBX."
    )
    parser.add_argument("--config", type=Path, help="the target's config file")
    parser.add_argument("--base-url", dest="base_url", help="PBX root (overrides the config)")
    parser.add_argument(
        "--api-key",
        dest="api_key",
        help="API key; prefer TARGET_NOOJEE_API_KEY or the config (argv is visible in ps)",
    )
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="seconds to keep retrying a PBX that does not answer (default 10)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(message)s", stream=sys.stderr)
    config = config_arg(args.config, "noojee-list")
    if config is None:
        return EXIT_CONFIG
    base_url, api_key = _setting(args, config, "base_url"), _setting(args, config, "api_key")
    if not base_url:
        print(
            "noojee-list: no PBX: set TARGET_NOOJEE_BASE_URL, --base-url, or base_url in --config",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if not api_key:
        print(
            "noojee-list: no API key: set TARGET_NOOJEE_API_KEY, or api_key in --config",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    client: NoojeeClient | None = None
    try:
        host = pbx_host(base_url)
        client = client_from_config(
            {**config, "base_url": base_url, "api_key": api_key}, timeout_s=30.0, pool_size=1
        )
        templates = pbx_tree(client, host, max(0.0, args.wait))
    except ConfigError as exc:
        print(f"noojee-list: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except PreflightError as exc:
        print(f"noojee-list: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130
    finally:
        if client is not None:
            client.close()
    if args.format == "json":
        print(json.dumps({"pbx": host, "templates": templates}, ensure_ascii=False, indent=2))
    else:
        print(render_text(host, templates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
