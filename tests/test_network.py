"""How the target reaches the PBX: TLS with the operator's CAs, an HTTPS proxy, never a leak."""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from target_noojee.simulator import Simulator

from conftest import API_KEY, base_config, lead, record_msg, run_target, schema_msg, state_msg
from tlsfixtures import make_self_signed_cert

MESSAGES = [schema_msg(), record_msg(lead(1)), record_msg(lead(2)), state_msg(2)]


class _ConnectProxy(socketserver.ThreadingTCPServer):
    """A CONNECT-only HTTP proxy on loopback that remembers every request head it was sent."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.heads: list[str] = []
        super().__init__(("127.0.0.1", 0), _Tunnel)


class _Tunnel(socketserver.BaseRequestHandler):
    server: _ConnectProxy

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        self.server.heads.append(head.decode("latin-1"))
        verb, target = head.split(b" ", 2)[:2]
        if verb != b"CONNECT":
            self.request.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        host, port = target.decode().rsplit(":", 1)
        with socket.create_connection((host, int(port))) as upstream:
            self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            peers = [self.request, upstream]
            while True:
                ready, _, _ = select.select(peers, [], [], 10)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is self.request else self.request).sendall(data)


@contextlib.contextmanager
def connect_proxy() -> Iterator[_ConnectProxy]:
    proxy = _ConnectProxy()
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


@pytest.fixture
def tls_sim(tmp_path: Path) -> Iterator[tuple[Simulator, Path]]:
    (tmp_path / "tls").mkdir()
    cert, key = make_self_signed_cert(tmp_path / "tls")
    with Simulator(api_key=API_KEY, service_ms=0, tls_cert=cert, tls_key=key) as sim:
        yield sim, cert


def proxy_url(proxy: _ConnectProxy) -> str:
    return f"http://127.0.0.1:{proxy.server_address[1]}"


def test_a_certificate_that_fails_verification_names_it_and_ca_bundle(
    tls_sim: tuple[Simulator, Path], tmp_path: Path
) -> None:
    sim, _cert = tls_sim
    assert sim.url.startswith("https://")
    result = run_target(base_config(sim, tmp_path), MESSAGES, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "certificate" in result.stderr and "ca_bundle" in result.stderr
    assert "cannot reach" not in result.stderr and "Traceback" not in result.stderr
    assert result.states == [] and sim.lead_calls == 0


def test_ca_bundle_or_requests_ca_bundle_trusts_the_pbx(
    tls_sim: tuple[Simulator, Path], tmp_path: Path
) -> None:
    sim, cert = tls_sim
    result = run_target(base_config(sim, tmp_path, ca_bundle=str(cert)), MESSAGES, tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(sim.leads(campaign_id=41)) == 2
    changed = [schema_msg(), record_msg(lead(3)), state_msg(3)]
    env = {"REQUESTS_CA_BUNDLE": str(cert)}
    result = run_target(base_config(sim, tmp_path), changed, tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert len(sim.leads(campaign_id=41)) == 3


def test_a_missing_ca_bundle_file_is_a_config_error(sim: Simulator, tmp_path: Path) -> None:
    config = base_config(sim, tmp_path, ca_bundle=str(tmp_path / "nope.pem"))
    result = run_target(config, MESSAGES, tmp_path)
    assert result.returncode == 2 and "ca_bundle" in result.stderr


def test_tls_verify_false_connects_and_warns(
    tls_sim: tuple[Simulator, Path], tmp_path: Path
) -> None:
    sim, _cert = tls_sim
    result = run_target(base_config(sim, tmp_path, tls_verify=False), MESSAGES, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "tls_verify is false" in result.stderr
    assert "InsecureRequestWarning" not in result.stderr


def test_an_https_pbx_is_reached_through_https_proxy_which_sees_only_the_host(
    tls_sim: tuple[Simulator, Path], tmp_path: Path
) -> None:
    sim, cert = tls_sim
    with connect_proxy() as proxy:
        env = {"HTTPS_PROXY": proxy_url(proxy), "NO_PROXY": "", "no_proxy": ""}
        config = base_config(sim, tmp_path, ca_bundle=str(cert))
        result = run_target(config, MESSAGES, tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        assert proxy.heads, "the proxy was not used"
        assert all(h.startswith(f"CONNECT 127.0.0.1:{sim.port} ") for h in proxy.heads)
        assert not any(API_KEY in h or "apiKey" in h for h in proxy.heads)
        assert len(sim.leads(campaign_id=41)) == 2


def test_no_proxy_and_plain_http_never_go_through_a_proxy(
    tls_sim: tuple[Simulator, Path], sim: Simulator, tmp_path: Path
) -> None:
    tls, cert = tls_sim
    with connect_proxy() as proxy:
        env = {"HTTPS_PROXY": proxy_url(proxy), "NO_PROXY": "127.0.0.1"}
        result = run_target(
            base_config(tls, tmp_path, ca_bundle=str(cert)), MESSAGES, tmp_path, env=env
        )
        assert result.returncode == 0, result.stderr
        plain = {
            "HTTP_PROXY": proxy_url(proxy),
            "HTTPS_PROXY": proxy_url(proxy),
            "ALL_PROXY": proxy_url(proxy),
        }
        result = run_target(base_config(sim, tmp_path), MESSAGES, tmp_path, env=plain)
        assert result.returncode == 0, result.stderr
        assert proxy.heads == []


def test_netrc_is_never_read(sim: Simulator, tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    netrc.chmod(0o600)
    result = run_target(
        base_config(sim, tmp_path),
        MESSAGES,
        tmp_path,
        env={"NETRC": str(netrc), "LOGLEVEL": "DEBUG"},
    )
    assert result.returncode == 0, result.stderr
    assert "Authorization" not in result.stderr and "hunter2" not in result.stderr
