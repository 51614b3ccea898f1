"""The decision after each answer, for every code and operation (policy.next_step)."""

from __future__ import annotations

import pytest

from target_noojee.client import (
    classify,
    describe_page,
    https_proxy,
    tls_trust,
    transport_warnings,
)
from target_noojee.codes import CODES, Kind
from target_noojee.policy import INSERT, UPDATE, Attempt, next_step


def answer(code: int):
    row = CODES[code]
    return classify(row.http_status, {"code": code, "message": row.name}, 0.1)


def attempt(operation: str = "update", endpoint: str = UPDATE, **kw) -> Attempt:
    base = {"has_fallback_disposition": False, "fallback_used": False, "lost_insert": False}
    base.update(kw)
    return Attempt(operation=operation, endpoint=endpoint, **base)


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_has_one_outcome(code: int) -> None:
    step = next_step(attempt(), answer(code))
    expected = {
        Kind.OK: "delivered",
        Kind.TRANSIENT: "retry",
        Kind.CONFIG: "stop",
        Kind.PERMANENT: "reject",
    }[CODES[code].kind]
    assert step.action == expected


def test_upsert_inserts_after_101_and_updates_after_112() -> None:
    assert next_step(attempt("upsert"), answer(101)).endpoint == INSERT
    assert next_step(attempt("upsert", INSERT), answer(112)).endpoint == UPDATE
    assert next_step(attempt("insert", INSERT), answer(112)).action == "reject"


def test_lost_insert_reply_resolves_112_and_105_by_update() -> None:
    lost = attempt("insert", INSERT, lost_insert=True)
    assert next_step(lost, answer(112)).endpoint == UPDATE
    assert next_step(lost, answer(105)).endpoint == UPDATE
    assert next_step(attempt("insert", INSERT), answer(105)).action == "reject"


def test_107_resends_once_with_the_fallback_disposition() -> None:
    step = next_step(attempt(has_fallback_disposition=True), answer(107))
    assert step.action == "resend" and step.use_fallback_disposition
    again = attempt(has_fallback_disposition=True, fallback_used=True)
    assert next_step(again, answer(107)).action == "reject"
    assert next_step(attempt(), answer(107)).action == "reject"


def test_110_is_never_retried() -> None:
    assert next_step(attempt("upsert", has_fallback_disposition=True), answer(110)).action == (
        "reject"
    )


@pytest.mark.parametrize(
    ("status", "payload", "kind", "setting"),
    [
        (401, None, Kind.CONFIG, "api_key"),
        (403, {"code": 5}, Kind.CONFIG, "api_key"),
        (404, None, Kind.CONFIG, "base_url"),
        (429, None, Kind.TRANSIENT, None),
        (502, "<html>", Kind.TRANSIENT, None),
        (500, {"code": 103, "message": "EXCEPTION"}, Kind.TRANSIENT, None),
        (400, {"code": 115, "message": "ALLOCATIN_ID_REQUIRED"}, Kind.CONFIG, "allocation_id"),
        (400, {"code": 999}, Kind.PERMANENT, None),
        (503, {"code": 999}, Kind.TRANSIENT, None),
        (500, {"code": 101}, Kind.TRANSIENT, None),
        (400, {"code": 103, "message": "EXCEPTION"}, Kind.TRANSIENT, None),  # older builds
        (400, None, Kind.FOREIGN, None),
        (400, {"error": "blocked"}, Kind.FOREIGN, None),
        (400, {"code": "101"}, Kind.FOREIGN, None),
        (400, {"code": True}, Kind.FOREIGN, None),
        (200, None, Kind.FOREIGN, None),
        (302, None, Kind.FOREIGN, None),
    ],
)
def test_http_answers_are_classified(status, payload, kind, setting) -> None:
    outcome = classify(status, payload, 0.1, "7")
    assert outcome.kind is kind
    assert outcome.setting == setting
    assert outcome.retry_after_s == 7.0


def test_107_after_a_lost_insert_confirms_the_insert() -> None:
    lost = attempt("insert", UPDATE, lost_insert=True)
    assert next_step(lost, answer(107)).action == "delivered"


def test_a_foreign_answer_is_described_without_the_key_or_the_markup() -> None:
    key = "s3cr3t-key"
    page = (
        "<html><head><title>400 Bad Request</title><style>h1 {color: red}</style></head>"
        f"<body><h1>Request blocked</h1><p>/servicemanager/rest/CampaignAPI/updateLeadFast"
        f"?apiKey={key}&fTemplateId=41</p><p>{'word ' * 50}</p></body></html>"
    )
    text = describe_page("text/html; charset=utf-8", page, key)
    assert text.startswith("text/html: '400 Bad Request Request blocked")
    assert key not in text and "color" not in text and "<" not in text
    assert len(text) < 160
    assert describe_page(None, "", key) == "no content type, empty body"
    other = describe_page("text/plain", "denied apiKey=abc123&x=1", key)
    assert "abc123" not in other and "apiKey=***" in other
    odd = "k/y+z=="
    encoded = describe_page(
        "text/html", "url: /x%3FapiKey%3Dk%2Fy%2Bz%3D%3D or k%2Fy%2Bz%3D%3D", odd
    )
    assert "k%2Fy" not in encoded and odd not in encoded
    outcome = classify(400, None, 0.1, page=lambda: text)
    assert (
        outcome.kind is Kind.FOREIGN
        and "HTTP 400" in outcome.message
        and key not in outcome.message
    )


def test_403_names_both_fixes() -> None:
    outcome = classify(403, None, 0.1)
    assert outcome.setting == "api_key"
    assert "API key" in outcome.message and "whitelist" in outcome.message


@pytest.mark.parametrize(
    ("url", "warned"),
    [
        ("http://127.0.0.1:8099", False),
        ("http://localhost:8099", False),
        ("http://[::1]:8099", False),
        ("https://pbx.example.com.au", False),
        ("http://pbx.example.com.au", True),
        ("http://10.1.2.3", True),
    ],
)
def test_plain_http_to_another_host_is_warned_about(url: str, warned: bool) -> None:
    warnings = transport_warnings(url, tls_verify=True)
    assert bool(warnings) is warned
    if warned:
        assert "unencrypted" in warnings[0]


def test_tls_verify_false_is_warned_about() -> None:
    assert any("tls_verify" in w for w in transport_warnings("https://pbx.example.com.au", False))


def test_only_an_https_proxy_is_taken_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://plain.corp:3128")
    monkeypatch.setenv("ALL_PROXY", "http://all.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.corp")
    assert https_proxy("https://pbx.example.com.au/x") == {"https": "http://proxy.corp:3128"}
    assert https_proxy("https://pbx.internal.corp/x") == {}


def test_the_ca_bundle_setting_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/env-ca.pem")
    assert tls_trust("/etc/mine.pem", True) == "/etc/mine.pem"
    assert tls_trust(None, True) == "/etc/env-ca.pem"
    assert tls_trust("/etc/mine.pem", False) is False
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    assert tls_trust(None, True) is True
