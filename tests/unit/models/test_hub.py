"""kneuron.models.hub: the one bounded probe of the hub (any answer is reachable; a refused connection or
silence is why not, within its bound) and the local cache check. Only loopback sockets: no network."""
from __future__ import annotations

import socket
import threading
import time

import pytest
from huggingface_hub import constants

from kneuron.models import hub


@pytest.fixture
def online(monkeypatch):
    """The hub client's offline switch off for this test (the suite runs with HF_HUB_OFFLINE=1)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    """A loopback server: ``server(answer=True)`` -> its URL; it answers every request 404 (any answer means
    reachable), or, with answer=False, accepts and never says a word."""
    socks = []

    def start(answer: bool = True) -> str:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        socks.append(s)

        def serve():
            while True:
                try:
                    conn, _ = s.accept()
                except OSError:
                    return
                socks.append(conn)
                if answer:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    conn.close()
        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{s.getsockname()[1]}"
    yield start
    for s in socks:
        s.close()


def test_a_refused_connection_is_the_reason_at_once(online):
    t = time.perf_counter()
    why = hub.reach(f"http://127.0.0.1:{closed_port()}", seconds=3)
    assert why is not None and "refused" in why.lower() and "\n" not in why
    assert time.perf_counter() - t < 2


def test_any_answer_is_reachable(online, server):
    assert hub.reach(server(answer=True), seconds=3) is None


def test_silence_is_bounded_by_the_probe_time(online, server):
    url = server(answer=False)
    t = time.perf_counter()
    why = hub.reach(url, seconds=0.5)
    took = time.perf_counter() - t
    assert why is not None and took < 1.5, (why, took)


def test_offline_mode_is_never_sent(server):
    """With the hub client offline (the suite's HF_HUB_OFFLINE=1) no request leaves: a reason, not None."""
    assert hub.reach(server(answer=True), seconds=3) is not None


def test_cached_reads_the_local_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert not hub.cached("some-org/model")
    commit = "a" * 40
    repo = tmp_path / "models--some-org--model"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert hub.cached("some-org/model") and not hub.cached("some-org/other")


def test_the_error_names_the_model_the_endpoint_and_the_ways_out():
    msg = str(hub.unreachable("some-org/m", "[Errno 111] Connection refused"))
    assert "\n" not in msg and "'some-org/m'" in msg and hub.endpoint() in msg and "Connection refused" in msg
    assert "hf download some-org/m" in msg and "local directory" in msg


def test_the_endpoints_answer_is_asked_once_per_command(online, monkeypatch, server):
    """The command line checks a hub id before torch is imported and load_model checks it again: the default
    endpoint's answer is reused for REUSE_SECONDS, then asked again; an explicit url is always asked."""
    monkeypatch.setattr(hub, "_asked", {})
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(hub, "endpoint", lambda: url)
    asked = []
    from huggingface_hub import utils                          # a spy on the hub client's session
    session = utils.get_session()
    original = session.head
    monkeypatch.setattr(session, "head", lambda *a, **k: asked.append(a[0]) or original(*a, **k))
    first = hub.reach()
    assert first is not None and "refused" in first.lower() and asked == [url]
    assert hub.reach() == first and asked == [url]             # reused: not asked again
    monkeypatch.setattr(hub, "REUSE_SECONDS", 0.0)
    hub.reach()
    assert asked == [url, url]                                 # stale: asked again
    hub.reach(url, seconds=3)
    assert asked == [url, url, url]                            # an explicit url is never reused
