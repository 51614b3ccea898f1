"""The decision after each answer, for every code and operation (policy.next_step)."""

from __future__ import annotations

import pytest

from target_noojee.client import classify
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
