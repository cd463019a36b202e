"""A lightweight S3 client for benchmarking: raw ``http.client`` with SigV4 signing.

The requests carry the headers boto3 sends for ``put_object`` over plain HTTP
(``x-amz-content-sha256`` with the payload's SHA-256, ``x-amz-checksum-crc32``,
``x-amz-sdk-checksum-algorithm``) and are signed the same way (the tests check the
signature against botocore's ``S3SigV4Auth``).  Payload hashes and signatures are
computed before the timed part of a measurement, so the client spends its time moving
bytes, not hashing them: on a two-core machine the client competes with the server for
CPU, and boto3's per-request overhead would otherwise dominate small requests.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import socket
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from urllib.parse import quote

from attrs import define, field, frozen

#: Hash of an empty payload, as SigV4 writes it.
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

#: Seconds a socket may stay silent before a request fails: large objects, then small requests.
SOCKET_TIMEOUT = 300.0
SMALL_TIMEOUT = 30.0


class BenchError(Exception):
    """A request answered with an unexpected status, or a server misbehaved."""


def _uri_encode(text: str, safe: str) -> str:
    return quote(text, safe=safe)


def object_path(bucket: str, key: str = "") -> str:
    """Return the encoded path-style request path of ``key`` in ``bucket``."""
    return "/" + _uri_encode(bucket, "") + ("/" + _uri_encode(key, "/~") if key else "")


def crc32_base64(data: bytes | memoryview) -> str:
    """Return the CRC32 of ``data`` as the base64 ``x-amz-checksum-crc32`` carries it."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@frozen
class Payload:
    """A request body with the hashes boto3 would compute for it."""

    data: bytes
    sha256: str
    crc32: str

    @classmethod
    def of(cls, data: bytes) -> Payload:
        """Hash ``data`` once, ahead of any timed request."""
        return cls(data, hashlib.sha256(data).hexdigest(), crc32_base64(data))


@frozen
class Endpoint:
    """Where an S3 server listens and the credentials it accepts."""

    host: str
    port: int
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    @property
    def netloc(self) -> str:
        """The ``Host`` header value of requests to this endpoint."""
        return f"{self.host}:{self.port}"


@frozen
class PreparedRequest:
    """A signed request, ready to be sent as is."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""


@define
class Signer:
    """Signs S3 requests with AWS Signature Version 4, caching the day's signing key."""

    endpoint: Endpoint
    _keys: dict[str, bytes] = field(factory=dict, init=False)

    def _signing_key(self, day: str) -> bytes:
        key = self._keys.get(day)
        if key is None:
            key = ("AWS4" + self.endpoint.secret_key).encode()
            for part in (day, self.endpoint.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys[day] = key
        return key

    def sign(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        payload_sha256: str = EMPTY_SHA256,
        headers: Mapping[str, str] | None = None,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """Return the headers of a signed request (``host`` included, ``Content-Length`` not).

        ``path`` is the encoded request path; every header given is signed.
        """
        stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        signed = {k.lower(): v.strip() for k, v in (headers or {}).items()}
        signed.update(
            {
                "host": self.endpoint.netloc,
                "x-amz-content-sha256": payload_sha256,
                "x-amz-date": stamp,
            }
        )
        names = sorted(signed)
        canonical_query = "&".join(
            f"{_uri_encode(k, '-_.~')}={_uri_encode(v, '-_.~')}" for k, v in sorted(query)
        )
        canonical = "\n".join(
            [
                method,
                path,
                canonical_query,
                "".join(f"{name}:{signed[name]}\n" for name in names),
                ";".join(names),
                payload_sha256,
            ]
        )
        scope = f"{day}/{self.endpoint.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        signed["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.endpoint.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return signed

    def prepare(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        payload: Payload | None = None,
    ) -> PreparedRequest:
        """Sign a request as boto3 would send it (a PUT body gets its CRC32 header)."""
        extra: dict[str, str] = {}
        sha = EMPTY_SHA256
        body = b""
        if payload is not None:
            extra = {"x-amz-checksum-crc32": payload.crc32, "x-amz-sdk-checksum-algorithm": "CRC32"}
            sha = payload.sha256
            body = payload.data
        headers = self.sign(method, path, query, sha, extra)
        if method in ("PUT", "POST"):
            headers["content-length"] = str(len(body))
        target = path
        if query:
            target += "?" + "&".join(
                f"{_uri_encode(k, '-_.~')}={_uri_encode(v, '-_.~')}" for k, v in query
            )
        return PreparedRequest(method, target, tuple(headers.items()), body)


def connect(endpoint: Endpoint, timeout: float = SOCKET_TIMEOUT) -> http.client.HTTPConnection:
    """Open a persistent connection with Nagle's algorithm off."""
    conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _send(conn: http.client.HTTPConnection, request: PreparedRequest, body: bytes) -> None:
    conn.putrequest(request.method, request.target, skip_host=True, skip_accept_encoding=True)
    for name, value in request.headers:
        conn.putheader(name, value)
    if isinstance(body, bytes) and len(body) <= 65536:
        conn.endheaders(message_body=body or None)
    else:
        conn.endheaders()
        assert conn.sock is not None
        conn.sock.sendall(memoryview(body))


def _check(request: PreparedRequest, response: http.client.HTTPResponse, body: bytes) -> None:
    if not 200 <= response.status < 300:
        raise BenchError(f"{request.method} {request.target}: {response.status} {body[:300]!r}")


def perform(conn: http.client.HTTPConnection, request: PreparedRequest) -> bytes:
    """Send ``request`` and return the response body, failing on a non-2xx status."""
    _send(conn, request, request.body)
    response = conn.getresponse()
    body = response.read()
    _check(request, response, body)
    return body


def upload(conn: http.client.HTTPConnection, request: PreparedRequest) -> float:
    """Send a PUT whose large body goes out in one ``sendall``; return seconds taken."""
    start = time.perf_counter()
    _send(conn, request, request.body)
    response = conn.getresponse()
    answer = response.read()
    elapsed = time.perf_counter() - start
    _check(request, response, answer)
    return elapsed


def download(
    conn: http.client.HTTPConnection, request: PreparedRequest, chunk: int = 4 << 20
) -> tuple[int, float]:
    """GET into a discarding sink with large reads; return bytes received and seconds."""
    buffer = bytearray(chunk)
    start = time.perf_counter()
    _send(conn, request, b"")
    response = conn.getresponse()
    if not 200 <= response.status < 300:
        _check(request, response, response.read())
    received = 0
    while True:
        got = response.readinto(buffer)
        if not got:
            break
        received += got
    return received, time.perf_counter() - start


def run_clients(
    endpoint: Endpoint,
    clients: int,
    count: int,
    make: Callable[[int, int], PreparedRequest],
    deadline: float,
) -> tuple[int, float]:
    """Run ``clients`` threads, each sending ``count`` requests over its own connection.

    ``make(client, index)`` gives each request; it is called inside the timed loop, so
    callers that measure precompute their requests and only look them up.  A client stops
    early at ``deadline`` (``time.monotonic()``).  Returns the requests completed and the
    seconds taken.
    """
    done = [0] * clients
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def work(client: int) -> None:
        try:
            conn = connect(endpoint, SMALL_TIMEOUT)
        except OSError as exc:
            errors.append(exc)
            barrier.abort()
            return
        try:
            barrier.wait()
            for index in range(count):
                if errors or time.monotonic() > deadline:
                    break
                perform(conn, make(client, index))
                done[client] += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join(max(1.0, deadline - time.monotonic() + SMALL_TIMEOUT))
    elapsed = time.perf_counter() - start
    if errors:
        raise BenchError(f"{len(errors)} client(s) failed, first: {errors[0]!r}") from errors[0]
    return sum(done), elapsed
