"""IpfsStore's ipfshttpclient transport against a scripted stand-in for the RPC API.

The stand-in answers like kubo (newline-delimited JSON, string sizes, "context deadline
exceeded", a version far beyond what ``ipfshttpclient.connect()`` accepts) and can fail in
ways a healthy daemon will not: transient 5xx answers, dropped connections, a body longer
than the ``length`` asked for, no answer at all.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import warnings
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from fleml_node.storage import (
    IpfsRequestError,
    IpfsStore,
    IpfsTimeout,
    IpfsUnavailable,
    PayloadTooLarge,
    content_hash,
)
from fleml_node.storage.ipfs import api_multiaddr

KUBO_VERSION = {"Version": "0.32.1", "Commit": "", "Repo": "16", "System": "amd64/linux"}


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    chunks: list[bytes] | None = None  # sent with chunked transfer encoding
    drop_after: int | None = None  # announce the whole body, send this many bytes, hang up
    stall: bool = False  # never answer (until the test ends)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    client_port: int
    body: bytes = field(repr=False, default=b"")


class QuietServer(ThreadingHTTPServer):
    """Threaded HTTP server that takes a client hanging up (as a capped ``get`` does) quietly."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeDaemon:
    """Queued answers per RPC path (``add``, ``cat``, ...); records every request."""

    def __init__(self) -> None:
        self.answers: dict[str, deque[Answer]] = defaultdict(deque)
        self.seen: list[Seen] = []
        self.release = threading.Event()
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so that connection reuse shows

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                url = urlsplit(self.path)
                path = url.path.removeprefix("/api/v0/")
                daemon.seen.append(
                    Seen(self.command, path, dict(parse_qsl(url.query)),
                         self.client_address[1], self.read_body())
                )
                queue = daemon.answers[path]
                answer = queue.popleft() if queue else Answer(404, b"404 page not found",
                                                              "text/plain")
                self.send(answer)

            do_GET = do_POST  # noqa: N815 (recorded, so a test can see it was not POST)

            def read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def send(self, answer: Answer) -> None:
                if answer.stall:
                    daemon.release.wait(30)
                    self.close_connection = True
                    return
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                if answer.chunks is not None:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for chunk in answer.chunks:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if answer.drop_after is not None:
                    self.wfile.write(answer.body[: answer.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(answer.body)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.addr = f"/ip4/127.0.0.1/tcp/{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def queue(self, path: str, *answers: Answer) -> None:
        self.answers[path].extend(answers)

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]


def json_answer(value: object, status: int = 200) -> Answer:
    return Answer(status, json.dumps(value).encode())


def rpc_error(message: str, status: int = 500) -> Answer:
    return json_answer({"Message": message, "Code": 0, "Type": "error"}, status)


def retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    daemon = FakeDaemon()
    daemon.thread.start()
    yield daemon
    daemon.release.set()
    daemon.server.shutdown()
    daemon.server.server_close()


@pytest.fixture
def connect(fake: FakeDaemon) -> Iterator[Callable[..., IpfsStore]]:
    stores: list[IpfsStore] = []

    def make(**kwargs: object) -> IpfsStore:
        options: dict[str, object] = {"timeout": 5.0, "retries": 0, "backoff": 0.01}
        options.update(kwargs)
        stores.append(IpfsStore(fake.addr, **options))  # type: ignore[arg-type]
        return stores[-1]

    yield make
    for store in stores:
        store.close()


def test_any_daemon_version_is_accepted_and_every_call_is_a_post_with_a_timeout(
    fake: FakeDaemon, connect: Callable[..., IpfsStore]
) -> None:
    fake.queue("version", json_answer(KUBO_VERSION), json_answer(KUBO_VERSION))
    store = connect(timeout=2.5)
    assert store.version() == "0.32.1"  # ipfshttpclient.connect() would refuse it
    assert store.is_available()
    assert [(s.method, s.query["timeout"]) for s in fake.seen] == [("POST", "2500ms")] * 2


def test_kubo_style_add_cat_and_pin_answers(
    fake: FakeDaemon, connect: Callable[..., IpfsStore], make_raw_cid: Callable[[bytes], str]
) -> None:
    data = b"kubo answers with newline-delimited JSON"
    cid = make_raw_cid(data)
    added = {"Name": "bytes", "Hash": cid, "Size": str(len(data))}
    fake.queue("add", Answer(body=json.dumps(added).encode() + b"\n"))
    fake.queue("cat", Answer(body=data, content_type="text/plain"))
    fake.queue("pin/ls", rpc_error(f"path '{cid}' is not pinned"))
    fake.queue("pin/add", json_answer({"Pins": [cid]}))
    fake.queue("pin/ls", json_answer({"Keys": {cid: {"Type": "recursive"}}}))
    store = connect()
    assert store.put(data) == cid
    assert store.get(cid, expected_hash=content_hash(data)) == data
    assert not store.is_pinned(cid)
    store.pin(cid)
    assert store.is_pinned(cid)

    add, cat, ls, pin, _ = fake.seen
    assert {k: add.query[k] for k in ("cid-version", "raw-leaves", "pin", "cid-base",
                                      "chunker")} == {
        "cid-version": "1", "raw-leaves": "true", "pin": "true", "cid-base": "base32",
        "chunker": "size-1048576"}
    assert data in add.body and b"Content-Type: application/octet-stream" in add.body
    assert cat.query["arg"] == cid and cat.query["length"] == str(store.max_bytes + 1)
    assert ls.query["type"] == "recursive" and ls.query["cid-base"] == "base32"
    assert pin.query["arg"] == cid and pin.query["recursive"].lower() == "true"
    assert all(s.method == "POST" and "timeout" in s.query for s in fake.seen)


def test_kubo_deadline_exceeded_is_a_timeout(
    fake: FakeDaemon, connect: Callable[..., IpfsStore], make_raw_cid: Callable[[bytes], str]
) -> None:
    fake.queue("cat", rpc_error("context deadline exceeded"))
    with pytest.raises(IpfsTimeout, match="deadline exceeded"):
        connect().get(make_raw_cid(b"nobody has this"))


def test_transient_status_is_retried_with_backoff(
    fake: FakeDaemon, connect: Callable[..., IpfsStore], caplog: pytest.LogCaptureFixture
) -> None:
    fake.queue(
        "version",
        Answer(503, b"busy", "text/plain"),
        Answer(502, b"<html>bad gateway</html>", "text/html"),
        json_answer(KUBO_VERSION),
    )
    with caplog.at_level(logging.WARNING):
        assert connect(retries=2).version() == "0.32.1"
    assert len(retry_warnings(caplog)) == 2 and fake.paths() == ["version"] * 3


def test_refusals_are_reported_with_status_and_not_retried(
    fake: FakeDaemon, connect: Callable[..., IpfsStore], caplog: pytest.LogCaptureFixture,
    make_raw_cid: Callable[[bytes], str],
) -> None:
    fake.queue("pin/add", rpc_error("pin: invalid path", 400))
    store = connect(retries=3)
    with caplog.at_level(logging.WARNING), pytest.raises(IpfsRequestError) as info:
        store.pin(make_raw_cid(b"x"))
    assert info.value.status == 400 and "pin: invalid path" in str(info.value)
    assert fake.addr in str(info.value) and "HTTP 400" in str(info.value)
    assert not retry_warnings(caplog) and fake.paths() == ["pin/add"]

    fake.queue("version", Answer(404, b"404 page not found", "text/plain"))
    with pytest.raises(IpfsRequestError) as info:
        store.version()
    assert info.value.status == 404


def test_invalid_json_is_a_request_error(
    fake: FakeDaemon, connect: Callable[..., IpfsStore]
) -> None:
    fake.queue("version", Answer(body=b"{not json"))
    with pytest.raises(IpfsRequestError, match="invalid JSON"):
        connect(retries=2).version()
    assert fake.paths() == ["version"]


def test_size_cap_holds_when_the_daemon_ignores_length(
    fake: FakeDaemon, connect: Callable[..., IpfsStore], make_raw_cid: Callable[[bytes], str]
) -> None:
    fake.queue("cat", Answer(chunks=[b"x" * 1000] * 8, content_type="text/plain"))
    with pytest.raises(PayloadTooLarge, match="larger than the cap of 2500 bytes"):
        connect(retries=2).get(make_raw_cid(b"big"), max_bytes=2500)
    assert fake.paths() == ["cat"]  # not retried


def test_connection_dropped_mid_transfer_is_retried(
    fake: FakeDaemon, connect: Callable[..., IpfsStore], caplog: pytest.LogCaptureFixture,
    make_raw_cid: Callable[[bytes], str],
) -> None:
    data = bytes(range(256)) * 40
    fake.queue(
        "cat",
        Answer(body=data, content_type="text/plain", drop_after=1000),
        Answer(body=data, content_type="text/plain"),
    )
    with caplog.at_level(logging.WARNING):
        assert connect(retries=1).get(make_raw_cid(data), expected_hash=content_hash(data)) == data
    assert len(retry_warnings(caplog)) == 1 and fake.paths() == ["cat", "cat"]

    fake.queue("cat", Answer(body=data, content_type="text/plain", drop_after=1000))
    with pytest.raises(IpfsUnavailable, match="connection dropped"):
        connect().get(make_raw_cid(data))


def test_a_daemon_that_never_answers_times_out_on_the_client_side(
    fake: FakeDaemon, connect: Callable[..., IpfsStore]
) -> None:
    fake.queue("version", Answer(stall=True))
    with pytest.raises(IpfsTimeout, match="did not answer in time"):
        connect(timeout=0.5).version()  # read timeout: 0.5 s + the 2 s grace


def test_one_pooled_session_per_store_closed_by_close(
    fake: FakeDaemon, connect: Callable[..., IpfsStore]
) -> None:
    fake.queue("version", *[json_answer(KUBO_VERSION)] * 3)
    store = connect()
    store.version()
    store.version()
    store.close()
    store.version()  # still usable after close, on a new connection
    first, second, third = (s.client_port for s in fake.seen)
    assert first == second != third


def test_urllib3_strict_warning_is_silenced_and_filters_restored(
    fake: FakeDaemon, connect: Callable[..., IpfsStore]
) -> None:
    fake.queue("version", json_answer(KUBO_VERSION))
    store = connect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        store.version()
        assert warnings.filters == before
    assert not [w for w in caught if "'strict' parameter" in str(w.message)], caught


@pytest.mark.parametrize(
    ("addr", "multiaddr"),
    [
        ("/ip4/127.0.0.1/tcp/5001", "/ip4/127.0.0.1/tcp/5001/http"),
        ("/dns/ipfs.local/tcp/443/https", "/dns/ipfs.local/tcp/443/https"),
        ("/ip6/::1/tcp/5001", "/ip6/::1/tcp/5001/http"),
        ("http://127.0.0.1:5001", "/ip4/127.0.0.1/tcp/5001/http"),
        ("http://[::1]:5001/api/v0", "/ip6/::1/tcp/5001/http"),
        ("https://ipfs.example.org:5443", "/dns/ipfs.example.org/tcp/5443/https"),
    ],
)
def test_addresses_become_multiaddrs_for_ipfshttpclient(addr: str, multiaddr: str) -> None:
    assert api_multiaddr(addr) == multiaddr
    IpfsStore(addr).close()  # ipfshttpclient accepts it


@pytest.mark.parametrize(
    "addr", ["/ip4/127.0.0.1/tcp/99999", "/ip4/999.1.1.1/tcp/5001", "http://127.0.0.1:99999"]
)
def test_addresses_ipfshttpclient_cannot_use_are_refused_up_front(addr: str) -> None:
    with pytest.raises(ValueError, match="IPFS API address"):
        IpfsStore(addr)
