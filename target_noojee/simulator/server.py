"""The HTTP side of noojee-sim: routing, keep-alive, connection tracking and connection faults.

The handler is thin: it parses the request, checks the route, the apiKey and the verb, and hands
the call to the `Backend` (the Simulator). Replies are written in one ``send`` with a
Content-Length so HTTP/1.1 keep-alive works and Nagle never delays them. Nothing is logged per
request (a logged URL would leak the apiKey).

Route errors: unknown path -> 404; a missing or wrong apiKey -> 401 (before the verb is looked at);
a wrong verb -> 405. All bodies are JSON ``{"code": ..., "message": ...}``, except a gateway's
answer (`RawReply`, sent as given): the backend is asked for one before the apiKey and the verb
are checked, on the API routes only (never on the admin routes).

With an `ssl.SSLContext` the listening socket is wrapped (again after a re-open); each connection's
TLS handshake runs in its handler thread, so a slow or failing client blocks no one else, and a
failed handshake just closes that connection.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import ssl
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl

from target_noojee import codes

LIST_ENDPOINTS = ("getCampaignTemplateList", "getCampaignList", "getAllocationList")
ADMIN_STATE = "/__admin/state"
ADMIN_CONTROL = "/__admin/control"

HANDSHAKE_TIMEOUT_S = 10.0

Reply = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class RawReply:
    """A reply that is not the CampaignAPI's JSON: status, Content-Type ("" for none) and bytes."""

    status: int
    content_type: str
    body: bytes


class Backend(Protocol):
    """What the handler needs from the simulator."""

    def authorized(self, query: dict[str, str]) -> bool: ...

    def count_unauthorized(self) -> None: ...

    def gateway_answer(
        self, method: str, path: str, query: dict[str, str], raw: bytes
    ) -> RawReply | None: ...

    def lead_call(self, method: str, query: dict[str, str], body: Any) -> Reply | None: ...

    def list_call(self, method: str, query: dict[str, str]) -> Reply: ...

    def admin_state(self, query: dict[str, str]) -> Reply: ...

    def admin_control(self, body: Any) -> tuple[Reply, Callable[[], None] | None]: ...


def reset_socket(sock: socket.socket) -> None:
    """Close a connection with a TCP RST, so the client sees 'connection reset by peer'."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _InvalidBody:
    """Marker for a request body that is not valid JSON."""


INVALID_BODY = _InvalidBody()


class Handler(BaseHTTPRequestHandler):
    """One client connection; serves requests on it until the client or a fault closes it."""

    protocol_version = "HTTP/1.1"
    server_version = "noojee-sim"
    disable_nagle_algorithm = True
    timeout = 300  # an idle keep-alive connection is closed after this many seconds
    server: PBXServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)
        self.tls_failed = False
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.settimeout(HANDSHAKE_TIMEOUT_S)
            try:
                self.connection.do_handshake()
            except (OSError, ValueError):  # ssl.SSLError is an OSError
                self.tls_failed = True
                self.close_connection = True
                return
            self.connection.settimeout(self.timeout)

    def handle(self) -> None:
        if not self.tls_failed:
            super().handle()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence: per-request logging costs time and would print the apiKey."""

    def handle_one_request(self) -> None:
        if self.server.outage is not None:
            self.close_connection = True
            reset_socket(self.connection)
            return
        super().handle_one_request()

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    # -- routing ----------------------------------------------------------------------------

    def _route(self, verb: str) -> None:
        path, _, qs = self.path.partition("?")
        query = dict(parse_qsl(qs, keep_blank_values=True))
        raw = self._read_body()
        backend = self.server.backend
        if path.startswith(codes.API_PREFIX):
            method = path[len(codes.API_PREFIX) :]
            if method in codes.LEAD_ENDPOINTS:
                expected = "POST"
            elif method in LIST_ENDPOINTS:
                expected = "GET"
            else:
                self._reply((404, {"code": 404, "message": "NOT_FOUND"}))
                return
            foreign = backend.gateway_answer(method, path, query, raw)
            if foreign is not None:
                self._reply(foreign)
                return
        elif path == ADMIN_STATE:
            method, expected = path, "GET"
        elif path == ADMIN_CONTROL:
            method, expected = path, "POST"
        else:
            self._reply((404, {"code": 404, "message": "NOT_FOUND"}))
            return
        if not backend.authorized(query):
            backend.count_unauthorized()
            self._reply((401, {"code": 401, "message": "UNAUTHORIZED"}))
            return
        if verb != expected:
            self._reply((405, {"code": 405, "message": "METHOD_NOT_ALLOWED"}))
            return

        if method in codes.LEAD_ENDPOINTS:
            reply = backend.lead_call(method, query, _parse_json(raw))
            if reply is None:  # the reply is lost: close without a response
                self.close_connection = True
                return
            self._reply(reply)
        elif method in LIST_ENDPOINTS:
            self._reply(backend.list_call(method, query))
        elif method == ADMIN_STATE:
            self._reply(backend.admin_state(query))
        else:
            reply, after = backend.admin_control(_parse_json(raw))
            self._reply(reply)
            if after is not None:
                after()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            return b""
        return self.rfile.read(n) if n > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        try:
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        except ValueError:
            self.close_connection = True
            return b""

    def _reply(self, reply: Reply | RawReply) -> None:
        if isinstance(reply, RawReply):
            self._send(reply.status, reply.content_type, reply.body)
        else:
            status, payload = reply
            self._send(
                status, "application/json", json.dumps(payload, separators=(",", ":")).encode()
            )

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Status"
        head = (
            f"HTTP/1.1 {status} {phrase}\r\n"
            f"Server: noojee-sim\r\n"
            + (f"Content-Type: {content_type}\r\n" if content_type else "")
            + f"Content-Length: {len(body)}\r\n"
        )
        if self.close_connection:
            head += "Connection: close\r\n"
        try:
            self.wfile.write(head.encode("latin-1") + b"\r\n" + body)
        except OSError:
            self.close_connection = True


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else INVALID_BODY
    except ValueError:
        return INVALID_BODY


class PBXServer(ThreadingHTTPServer):
    """A threaded HTTP/1.1 (or HTTPS) server that can drop, reset and re-open its connections."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        backend: Backend,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.backend = backend
        self.ssl_context = ssl_context
        self.outage: str | None = None
        self._connections: set[socket.socket] = set()
        self._idle = threading.Condition()
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup we neither need nor want.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def server_activate(self) -> None:
        super().server_activate()
        if self.ssl_context is not None:
            self.socket = self.ssl_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def reopen(self) -> None:
        """Listen again on the same address after `socket.close()` (end of a refuse outage)."""
        self.socket = socket.socket(self.address_family, self.socket_type)
        try:
            self.server_bind()
            self.server_activate()
        except OSError:
            self.socket.close()
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.outage == "reset":
            reset_socket(request)
            return
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return  # the client went away, or a fault closed the connection
        print(f"noojee-sim: internal error: {exc!r}", file=sys.stderr, flush=True)

    # -- connection tracking ----------------------------------------------------------------

    def track(self, conn: socket.socket) -> None:
        """Remember an open client connection."""
        with self._idle:
            self._connections.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        """Forget a client connection once its handler is done."""
        with self._idle:
            self._connections.discard(conn)
            if not self._connections:
                self._idle.notify_all()

    def drop_connections(self) -> None:
        """Shut every open client connection down; their handlers then see EOF and end."""
        with self._idle:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                # the plain socket's shutdown: SSLSocket.shutdown would drop its TLS state under
                # a handler thread that may be using it
                socket.socket.shutdown(conn, socket.SHUT_RDWR)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no handler is running; False if some still run after `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._connections, timeout)
