"""`Simulator`: the fake PBX in one object: lead store, capacity, faults, statistics, HTTP server.

A lead call goes through these steps (the first that applies decides the reply):

1. A gateway is set (`set_gateway`) and the raw body contains its ``match`` (any body when None)
   -> its status, Content-Type and exact body at once, whatever the apiKey: no slot, the store
   untouched; counted in ``gateway_answers`` only (not in `code_counts` nor `lead_calls`).
   With ``lists`` it answers the list endpoints too.
2. apiKey missing or wrong -> HTTP 401 (counted under code 401).
3. A manual import is running -> 109 at once, without taking a slot: the real PBX fails lead calls
   during an import; 109 (back off and retry) is the code a client must treat that way.
4. Wait for a slot (``queue``: "fifo", or "barging" as Java's non-fair `Semaphore`; slots the
   dialer holds, ``dialer_load``, are not available); still queued after ``queue_timeout_s`` ->
   109, not processed.
5. Holding the slot: an import that started meanwhile -> 109; otherwise sleep the service time
   (``service_ms`` + ``service_growth_ms_per_1000`` per 1000 leads held; with ``service_cv`` a
   lognormal draw of that mean and coefficient of variation).
6. ``fault_rate``: 103 EXCEPTION (HTTP 500), the lead untouched.
7. Validate and apply the call (`state.LeadStore`; its docstring gives the order of the codes).
   With ``id_in_query`` (an early PBX build) updateLeadFast takes njExternalLeadId from the query
   string only: the body's own is dropped and the query's, if any, put in its place (none: 113).
8. The slot is released; with probability ``drop_rate`` a committed call (code 0) loses its reply:
   the connection closes with no response.

``latency_ms`` is the network round trip, outside the slot: half of it (each half jittered by
+-20%) before the call reaches the queue, half after it leaves the slot.

Outages act on connections: "refuse" closes the listening socket (re-opened on the same port when
the outage ends) and drops open connections; "reset" accepts and resets every connection. List
endpoints use no slot and no fault, and are not counted in `code_counts` (only lead calls and every
401 are). `reset_stats` clears the counts, the peak, the queue integral, the problems and
``gateway_answers``. With ``tls_cert`` and ``tls_key`` the server speaks HTTPS (`url` says so);
outages work the same over TLS.
"""

from __future__ import annotations

import functools
import hmac
import math
import random
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from target_noojee import codes
from target_noojee.simulator.capacity import Capacity, parse_dialer_load
from target_noojee.simulator.fixture import Fixture, coerce_fixture
from target_noojee.simulator.gateway import DEFAULT_CONTENT_TYPE, Gateway
from target_noojee.simulator.server import INVALID_BODY, PBXServer, RawReply, Reply
from target_noojee.simulator.state import EXTERNAL_ID, LeadStore

OUTAGE_MODES = ("refuse", "reset")
MAX_PROBLEMS = 10_000
_POLL_INTERVAL_S = 0.05


def _message(code: int) -> Reply:
    row = codes.CODES[code]
    return row.http_status, {"code": code, "message": row.name}


def _parse_id(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _id_from_query(body: dict[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
    """The body an early build sees: njExternalLeadId from the query string, never the body's."""
    seen = {k: v for k, v in body.items() if k != EXTERNAL_ID}
    if EXTERNAL_ID in query:
        seen[EXTERNAL_ID] = query[EXTERNAL_ID]
    return seen


def _tls_context(cert: str | Path | None, key: str | Path | None) -> ssl.SSLContext | None:
    """A server-side TLS context for the cert chain and key (both or neither)."""
    if (cert is None) != (key is None):
        raise ValueError("tls_cert and tls_key must be given together")
    if cert is None or key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


class Simulator:
    """An in-process noojee-sim. `start()` it (or use it as a context manager), `stop()` it."""

    def __init__(
        self,
        api_key: str,
        slots: int = 4,
        service_ms: float = 0.0,
        queue_timeout_s: float = 60.0,
        fault_rate: float = 0.0,
        drop_rate: float = 0.0,
        fixture: Fixture | Mapping[str, Any] | str | Path | None = None,
        seed: int | None = None,
        service_growth_ms_per_1000: float = 0.0,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        id_in_query: bool = False,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        queue: str = "fifo",
        service_cv: float = 0.0,
        latency_ms: float = 0.0,
        dialer_load: str | Sequence[tuple[float, int]] | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self._tls = _tls_context(tls_cert, tls_key)
        self._id_in_query = bool(id_in_query)
        self._gateway: Gateway | None = None
        self._api_key = api_key.encode()
        self.fixture = coerce_fixture(fixture)
        self._store = LeadStore(self.fixture)
        self._capacity = Capacity(slots, queue=queue)
        self._service_cv = _non_negative("service_cv", service_cv)
        self._latency_ms = _non_negative("latency_ms", latency_ms)
        self._dialer_load = (
            parse_dialer_load(dialer_load)
            if isinstance(dialer_load, str)
            else list(dialer_load or [])
        )
        self._timing_rng = random.Random(None if seed is None else seed + 1)
        self._service_ms = float(service_ms)
        self._growth_ms = float(service_growth_ms_per_1000)
        self._queue_timeout_s = float(queue_timeout_s)
        self._fault_rate = _rate(fault_rate)
        self._drop_rate = _rate(drop_rate)
        self._rng = random.Random(seed)
        self._address = (host, port)

        self._stats_lock = threading.Lock()
        self._counts: Counter[int] = Counter()
        self._lead_calls = 0
        self._list_calls = 0
        self._dropped = 0
        self._gateway_answers = 0
        self._problems: list[str] = []

        self._lock = threading.RLock()  # guards the server's life cycle and outage switching
        self._server: PBXServer | None = None
        self._thread: threading.Thread | None = None
        self._serving = False
        self._stopped = False
        self._outage: str | None = None
        self._import = False
        self._timers: list[threading.Timer] = []
        self._stopping = threading.Event()

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> Simulator:
        """Bind and serve in a background thread; returns self."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("a stopped Simulator cannot be restarted")
            if self._server is None:
                self._server = PBXServer(self._address, self, self._tls)
                self._address = (self._address[0], self._server.server_port)
                self._serve()
                for at, held in self._dialer_load:
                    self._after(at, functools.partial(self.set_dialer_slots, held))
        return self

    def stop(self) -> None:
        """Stop serving and close every socket; in-flight calls are cut short."""
        with self._lock:
            if self._server is None or self._stopped:
                return
            self._stopped = True
            timers, self._timers = self._timers, []
        for timer in timers:
            timer.cancel()
            if timer is not threading.current_thread():
                timer.join()
        self._stopping.set()
        self._capacity.close()
        server = self._server
        with self._lock:
            self._halt_listener()
            server.server_close()
        server.drop_connections()
        server.wait_idle(2.0)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port served (known once started)."""
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        return self._address[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8080`` (``https://`` with TLS)."""
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{self._address[0]}:{self.port}"

    def _serve(self) -> None:
        assert self._server is not None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_S},
            name="noojee-sim",
            daemon=True,
        )
        self._serving = True
        self._thread.start()

    def _halt_listener(self) -> None:
        assert self._server is not None
        if self._serving:
            self._server.shutdown()
            if self._thread is not None:
                self._thread.join()
            self._serving = False
        self._server.socket.close()

    # -- inspection -------------------------------------------------------------------------

    def leads(self, campaign_id: int | None = None) -> list[dict[str, Any]]:
        """Leads held (of one campaign, or all): external_id, fields, disposition, writes, ..."""
        return self._store.leads(campaign_id)

    def lead(self, campaign_id: int, external_id: str) -> dict[str, Any] | None:
        """One lead, or None."""
        return self._store.lead(campaign_id, external_id)

    @property
    def code_counts(self) -> dict[int, int]:
        """Replies per code: lead-call codes, and 401 from any route."""
        with self._stats_lock:
            return dict(self._counts)

    @property
    def lead_calls(self) -> int:
        """Authorized lead calls received (whatever their outcome)."""
        return self._lead_calls

    @property
    def list_calls(self) -> int:
        """Authorized list-endpoint calls received."""
        return self._list_calls

    @property
    def dropped(self) -> int:
        """Committed lead calls whose reply was dropped."""
        return self._dropped

    @property
    def gateway_answers(self) -> int:
        """Calls answered by the gateway instead of the PBX."""
        return self._gateway_answers

    @property
    def peak_in_service(self) -> int:
        """Most lead calls in service at once."""
        return self._capacity.peak_in_service

    @property
    def in_service(self) -> int:
        """Lead calls holding a slot now."""
        return self._capacity.in_service

    @property
    def queue_length(self) -> int:
        """Lead calls waiting for a slot now."""
        return self._capacity.queue_length

    def mean_queue_length(self) -> float:
        """Time-weighted mean server-queue length since start or the last reset."""
        return self._capacity.mean_queue_length()

    @property
    def problems(self) -> list[str]:
        """What the real PBX would have choked on (unknown fields, non-string values, ...)."""
        with self._stats_lock:
            return list(self._problems)

    def reset_stats(self) -> None:
        """Clear counts, peak, queue integral, problems and gateway answers (the leads stay)."""
        with self._stats_lock:
            self._counts.clear()
            self._lead_calls = 0
            self._list_calls = 0
            self._dropped = 0
            self._gateway_answers = 0
            self._problems.clear()
        self._capacity.reset_stats()

    # -- control ----------------------------------------------------------------------------

    def set_outage(self, mode: str | None) -> None:
        """Start ("refuse" | "reset") or end (None) an outage."""
        if mode is not None and mode not in OUTAGE_MODES:
            raise ValueError(f"outage mode must be one of {OUTAGE_MODES} or None")
        with self._lock:
            if self._stopped or self._server is None or mode == self._outage:
                return
            server, previous = self._server, self._outage
            self._outage = mode
            server.outage = mode
            if mode == "refuse":
                self._halt_listener()
            elif previous == "refuse":
                server.reopen()
                self._serve()
            if mode is not None:
                server.drop_connections()

    def schedule_outage(self, mode: str, start_in_s: float, duration_s: float | None) -> None:
        """Start an outage in `start_in_s` seconds; end it `duration_s` later (None: never)."""
        if mode not in OUTAGE_MODES:
            raise ValueError(f"outage mode must be one of {OUTAGE_MODES}")
        self._after(start_in_s, lambda: self.set_outage(mode))
        if duration_s is not None:
            self._after(start_in_s + duration_s, lambda: self.set_outage(None))

    def set_import(self, on: bool) -> None:
        """Start or end a manual import (lead calls answer 109 meanwhile)."""
        self._import = bool(on)

    def schedule_import(self, start_in_s: float, duration_s: float) -> None:
        """Run a manual import from `start_in_s` for `duration_s` seconds."""
        self._after(start_in_s, lambda: self.set_import(True))
        self._after(start_in_s + duration_s, lambda: self.set_import(False))

    def set_editing(self, campaign_id: int, external_id: str, on: bool) -> None:
        """Mark a lead as being edited by a person (updates answer 110)."""
        self._store.set_editing(campaign_id, external_id, on)

    def set_slots(self, n: int) -> None:
        """Change the concurrency limit while running."""
        self._capacity.set_slots(int(n))

    def set_service_ms(self, ms: float) -> None:
        """Change the service time per lead call."""
        self._service_ms = max(0.0, float(ms))

    def set_service_growth(self, ms_per_1000: float) -> None:
        """Change the service-time growth per 1000 leads held."""
        self._growth_ms = max(0.0, float(ms_per_1000))

    def set_service_cv(self, cv: float) -> None:
        """Change the service times' coefficient of variation (0: every call takes the mean)."""
        self._service_cv = _non_negative("service_cv", cv)

    def set_latency_ms(self, ms: float) -> None:
        """Change the network round trip added outside the slot."""
        self._latency_ms = _non_negative("latency_ms", ms)

    def set_dialer_slots(self, held: int) -> None:
        """Let the PBX's own dialer work hold `held` slots (lead calls get the rest)."""
        self._capacity.set_reserved(int(held))

    def set_queue_timeout_s(self, seconds: float) -> None:
        """Change how long a call may queue before it fails with 109."""
        self._queue_timeout_s = max(0.0, float(seconds))

    def set_fault_rate(self, p: float) -> None:
        """Probability of a 103 EXCEPTION per lead call."""
        self._fault_rate = _rate(p)

    def set_drop_rate(self, p: float) -> None:
        """Probability that a committed lead call loses its reply."""
        self._drop_rate = _rate(p)

    def set_id_in_query(self, on: bool) -> None:
        """Model the early build whose updateLeadFast reads njExternalLeadId from the query only."""
        self._id_in_query = bool(on)

    def set_gateway(
        self,
        status: int,
        body: str | None = None,
        content_type: str = DEFAULT_CONTENT_TYPE,
        match: str | None = None,
        count: int | None = None,
        lists: bool = False,
    ) -> None:
        """Answer lead calls (list calls too with `lists`) as a gateway in front of the PBX.

        Body None: a WAF page echoing the request URL, apiKey included; `count`: answers, then off.
        """
        self._install_gateway(Gateway(status, body, content_type, match, count, lists))

    def clear_gateway(self) -> None:
        """Let every call through to the PBX again."""
        self._install_gateway(None)

    def _install_gateway(self, gateway: Gateway | None) -> None:
        with self._stats_lock:
            self._gateway = gateway

    def add_dnc(self, number: str) -> None:
        """Put a number on the Do Not Call list."""
        self._store.add_dnc(number)

    def remove_dnc(self, number: str) -> None:
        """Take a number off the Do Not Call list."""
        self._store.remove_dnc(number)

    def _after(self, delay_s: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(max(0.0, float(delay_s)), action)
        timer.daemon = True
        with self._lock:
            if self._stopped:
                return
            self._timers = [t for t in self._timers if t.is_alive()]
            self._timers.append(timer)
        timer.start()

    # -- the backend the HTTP handler calls ---------------------------------------------------

    def authorized(self, query: dict[str, str]) -> bool:
        """True when the apiKey query parameter is the configured key."""
        given = query.get("apiKey")
        return given is not None and hmac.compare_digest(given.encode(), self._api_key)

    def count_unauthorized(self) -> None:
        """Count a 401."""
        with self._stats_lock:
            self._counts[401] += 1

    def gateway_answer(
        self, method: str, path: str, query: dict[str, str], raw: bytes
    ) -> RawReply | None:
        """The gateway's answer to an API call, or None to let it through to the PBX."""
        if self._gateway is None:
            return None
        with self._stats_lock:
            gateway = self._gateway
            if gateway is None or not gateway.applies(method in codes.LEAD_ENDPOINTS, raw):
                return None
            self._gateway = gateway.used()
            self._gateway_answers += 1
        return gateway.answer(path, query)

    def lead_call(self, method: str, query: dict[str, str], body: Any) -> Reply | None:
        """insertLeadFast / updateLeadFast through capacity and faults; None: drop the reply."""
        self._network_delay()
        try:
            return self._lead_call(method, query, body)
        finally:
            self._network_delay()

    def _network_delay(self) -> None:
        """Half the network round trip, jittered: the way to or from the PBX, outside any slot."""
        if self._latency_ms > 0:
            self._stopping.wait(self._latency_ms / 2000.0 * self._timing_rng.uniform(0.8, 1.2))

    def _service_s(self) -> float:
        mean = (self._service_ms + self._growth_ms * len(self._store) / 1000.0) / 1000.0
        if self._service_cv <= 0 or mean <= 0:
            return mean
        sigma2 = math.log1p(self._service_cv**2)
        return self._timing_rng.lognormvariate(math.log(mean) - sigma2 / 2, math.sqrt(sigma2))

    def _lead_call(self, method: str, query: dict[str, str], body: Any) -> Reply | None:
        with self._stats_lock:
            self._lead_calls += 1
        if self._import or not self._capacity.acquire(self._queue_timeout_s):
            return self._finish(codes.TOO_MANY_CONCURRENT)
        try:
            if self._import:
                return self._finish(codes.TOO_MANY_CONCURRENT)
            service_s = self._service_s()
            if service_s > 0 and self._stopping.wait(service_s):
                return self._finish(codes.EXCEPTION)  # the server is going down mid-call
            if self._fault_rate and self._rng.random() < self._fault_rate:
                return self._finish(codes.EXCEPTION)
            if body is INVALID_BODY:
                body = None
            elif method == "updateLeadFast" and self._id_in_query and isinstance(body, dict):
                body = _id_from_query(body, query)
            store = self._store
            outcome = (store.insert if method == "insertLeadFast" else store.update)(query, body)
        finally:
            self._capacity.release()
        if outcome.problems:
            with self._stats_lock:
                room = MAX_PROBLEMS - len(self._problems)
                self._problems.extend(outcome.problems[: max(0, room)])
        if outcome.code == codes.OK and self._drop_rate and self._rng.random() < self._drop_rate:
            with self._stats_lock:
                self._counts[codes.OK] += 1
                self._dropped += 1
            return None
        return self._finish(outcome.code)

    def _finish(self, code: int) -> Reply:
        with self._stats_lock:
            self._counts[code] += 1
        return _message(code)

    def list_call(self, method: str, query: dict[str, str]) -> Reply:
        """getCampaignTemplateList / getCampaignList / getAllocationList."""
        with self._stats_lock:
            self._list_calls += 1
        fx = self.fixture
        if method == "getCampaignTemplateList":
            entities = [{"id": t.id, "name": t.name} for t in fx.templates.values()]
        elif method == "getCampaignList":
            template_id = _parse_id(query.get("fTemplateId"))
            if template_id not in fx.templates:
                return _message(codes.TEMPLATE_ID_REQUIRED)
            entities = [
                {"id": c.id, "name": c.name}
                for c in fx.campaigns.values()
                if c.template_id == template_id
            ]
        else:
            campaign_id = _parse_id(query.get("fCampaignId"))
            if campaign_id not in fx.campaigns:
                return _message(codes.CAMPAIGN_ID_REQUIRED)
            entities = [
                {"id": a.id, "name": a.name}
                for a in fx.allocations.values()
                if a.campaign_id == campaign_id
            ]
        return 200, {"code": 0, "message": "OK", "entities": entities}

    def state(self, include_leads: bool = True, campaign_id: int | None = None) -> dict[str, Any]:
        """Everything the admin route reports, as JSON-ready data."""
        with self._stats_lock:
            counts = {str(k): v for k, v in sorted(self._counts.items())}
            problems = list(self._problems)
            gateway = self._gateway
        data: dict[str, Any] = {
            "lead_count": len(self._store),
            "code_counts": counts,
            "lead_calls": self._lead_calls,
            "list_calls": self._list_calls,
            "dropped": self._dropped,
            "gateway_answers": self._gateway_answers,
            "peak_in_service": self.peak_in_service,
            "in_service": self.in_service,
            "queue_length": self.queue_length,
            "mean_queue_length": self.mean_queue_length(),
            "problems": problems,
            "slots": self._capacity.slots,
            "service_ms": self._service_ms,
            "service_growth_ms_per_1000": self._growth_ms,
            "service_cv": self._service_cv,
            "latency_ms": self._latency_ms,
            "queue": self._capacity.queue_kind,
            "dialer_slots": self._capacity.reserved,
            "queue_timeout_s": self._queue_timeout_s,
            "fault_rate": self._fault_rate,
            "drop_rate": self._drop_rate,
            "outage": self._outage,
            "import": self._import,
            "id_in_query": self._id_in_query,
            "gateway": None if gateway is None else gateway.as_dict(),
        }
        if include_leads:
            data["leads"] = self._store.leads(campaign_id)
        return data

    def admin_state(self, query: dict[str, str]) -> Reply:
        """GET /__admin/state[?leads=0][&campaign_id=41]."""
        include = query.get("leads", "1").lower() not in ("0", "false", "no")
        return 200, self.state(include, _parse_id(query.get("campaign_id")))

    def admin_control(self, body: Any) -> tuple[Reply, Callable[[], None] | None]:
        """POST /__admin/control: apply settings now; an outage starts after the reply is sent."""
        if not isinstance(body, dict):
            return (400, {"code": 400, "message": "the body must be a JSON object"}), None
        try:
            after = self._control(body)
        except (TypeError, ValueError, KeyError) as exc:
            return (400, {"code": 400, "message": str(exc)}), None
        return (200, {"code": 0, "message": "OK"}), after

    def _control(self, body: dict[str, Any]) -> Callable[[], None] | None:
        unknown = set(body) - _CONTROL_KEYS
        if unknown:
            raise ValueError(f"unknown control keys: {sorted(unknown)}")
        outage = body.get("outage")
        if "outage" in body and outage is not None and outage not in OUTAGE_MODES:
            raise ValueError(f"outage must be one of {OUTAGE_MODES} or null")
        editing = body.get("editing", [])
        edits = [editing] if isinstance(editing, dict) else list(editing)
        parsed_edits = [
            (int(e["campaign_id"]), str(e["external_id"]), bool(e["on"])) for e in edits
        ]
        id_in_query = body.get("id_in_query")
        if "id_in_query" in body and not isinstance(id_in_query, bool):
            raise TypeError("id_in_query must be true or false")
        gateway = body.get("gateway")
        parsed_gateway = None if gateway is None else Gateway.from_json(gateway)

        if body.get("reset_stats"):
            self.reset_stats()
        if "slots" in body:
            self.set_slots(int(body["slots"]))
        if "service_ms" in body:
            self.set_service_ms(float(body["service_ms"]))
        if "service_growth_ms_per_1000" in body:
            self.set_service_growth(float(body["service_growth_ms_per_1000"]))
        if "service_cv" in body:
            self.set_service_cv(float(body["service_cv"]))
        if "latency_ms" in body:
            self.set_latency_ms(float(body["latency_ms"]))
        if "dialer_slots" in body:
            self.set_dialer_slots(int(body["dialer_slots"]))
        if "queue_timeout_s" in body:
            self.set_queue_timeout_s(float(body["queue_timeout_s"]))
        if "fault_rate" in body:
            self.set_fault_rate(float(body["fault_rate"]))
        if "drop_rate" in body:
            self.set_drop_rate(float(body["drop_rate"]))
        if "id_in_query" in body:
            self.set_id_in_query(bool(id_in_query))
        if "gateway" in body:
            self._install_gateway(parsed_gateway)
        for key, action in (("dnc_add", self.add_dnc), ("dnc_remove", self.remove_dnc)):
            value = body.get(key)
            for number in [value] if isinstance(value, str) else list(value or []):
                action(str(number))
        for campaign_id, external_id, on in parsed_edits:
            self.set_editing(campaign_id, external_id, on)
        if "import" in body:
            if body.get("import_duration_s") is not None and body["import"]:
                self.schedule_import(0.0, float(body["import_duration_s"]))
            else:
                self.set_import(bool(body["import"]))
        if "outage" not in body:
            return None
        if outage is None:
            return lambda: self.set_outage(None)
        duration = body.get("outage_duration_s")
        if duration is None:
            return lambda: self.set_outage(outage)
        mode, seconds = str(outage), float(duration)
        return lambda: self.schedule_outage(mode, 0.0, seconds)


_CONTROL_KEYS = frozenset(
    {
        "outage",
        "outage_duration_s",
        "import",
        "import_duration_s",
        "editing",
        "slots",
        "service_ms",
        "service_growth_ms_per_1000",
        "service_cv",
        "latency_ms",
        "dialer_slots",
        "queue_timeout_s",
        "fault_rate",
        "drop_rate",
        "dnc_add",
        "dnc_remove",
        "reset_stats",
        "id_in_query",
        "gateway",
    }
)


def _non_negative(name: str, value: float) -> float:
    value = float(value)
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return value


def _rate(p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"a rate must be within 0..1, got {p}")
    return p
