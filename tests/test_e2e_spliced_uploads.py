"""End-to-end tests of large uploads spliced from the client's socket to a lambnet node's.

A gateway over a real ``twistd -n lambnet`` node, both on plain TCP: a PUT or UploadPart of
at least 1 MiB that is not aws-chunked is relayed by the kernel, and the node computes its
MD5 (the ETag) and checksums and checks those the client declared.  The requests are made
by hand (signed here), so that each header the client declares is exactly the one tested;
``/metrics`` shows how many bytes went by splice.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import time
import urllib.request
from typing import ClassVar

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SkipTest

from bench.client import Endpoint, Signer, connect, crc32_base64, object_path
from lambgw.network import splice
from tests.gateway import (
    ACCESS_KEY,
    SECRET_KEY,
    MiB,
    free_port,
)
from tests.test_e2e_lambnet import LambnetCase, _incoming

#: A size that is not a multiple of any buffer: the last piece is a partial one.
SIZE = 8 * MiB + 12_345
UNSIGNED = "UNSIGNED-PAYLOAD"
#: The gateway's window for a body's pace, and the least rate over it (bytes a second).
HEADER_TIMEOUT = 3
MIN_BODY_RATE = 200_000


class SplicedUploadTests(LambnetCase):
    """Large PUTs and parts over a node, relayed by the kernel."""

    admin: ClassVar[str]
    mode = "lambgw"

    @classmethod
    def gateway_flags(cls) -> tuple[str, ...]:
        """Short bounds on a body's pace, and the admin pages on a known port."""
        port = free_port()
        cls.admin = f"http://127.0.0.1:{port}"
        return (
            *("--gateway.header_timeout", str(HEADER_TIMEOUT)),
            *("--gateway.min_body_rate", str(MIN_BODY_RATE)),
            *("--admin-listen", f"tcp:{port}:interface=127.0.0.1"),
        )

    @classmethod
    def setUpClass(cls) -> None:
        """Start the node and the gateway over it, where splice(2) is."""
        if not splice.available():
            raise SkipTest("splice(2) is Linux's")
        super().setUpClass()

    def setUp(self) -> None:
        super().setUp()
        self.signer = Signer(Endpoint("127.0.0.1", self.gateway.port, ACCESS_KEY, SECRET_KEY))

    # -- helpers -------------------------------------------------------------------------

    def spliced(self) -> float:
        """Bytes spliced to the network so far, from ``/metrics``."""
        with urllib.request.urlopen(self.admin + "/metrics", timeout=30) as response:  # noqa: S310
            text = response.read().decode("utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "lambgw_upload_spliced_bytes_total":
                    return float(sample.value)
        return 0.0

    def used(self) -> int:
        """The bytes the order uses, as the network counts them."""
        (order,) = [o for o in self.gateway.orders() if o["order_id"] == self.bucket]
        return int(order["used"])

    def send(
        self,
        method: str,
        key: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        sha256: str = UNSIGNED,
        query: tuple[tuple[str, str], ...] = (),
        conn: http.client.HTTPConnection | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send a request signed with ``headers`` and ``sha256``; status, headers, body."""
        path = object_path(self.bucket, key)
        signed = self.signer.sign(method, path, query, sha256, headers)
        if body or method == "PUT":
            signed["content-length"] = str(len(body))
        target = path + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
        own = conn is None
        conn = conn or connect(self.signer.endpoint, timeout=120)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in signed.items():
                conn.putheader(name, value)
            conn.endheaders()
            assert conn.sock is not None
            conn.sock.sendall(body)
            response = conn.getresponse()
            answer = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, answer
        finally:
            if own:
                conn.close()

    def raw_head(self, key: str, size: int) -> bytes:
        """The head of an unsigned-payload PUT of ``size`` bytes to ``key``, as bytes."""
        path = object_path(self.bucket, key)
        signed = self.signer.sign("PUT", path, (), UNSIGNED)
        signed["content-length"] = str(size)
        lines = [f"PUT {path} HTTP/1.1", *(f"{k}: {v}" for k, v in signed.items()), "", ""]
        return "\r\n".join(lines).encode()

    def head_status(self, key: str) -> int:
        return self.send("HEAD", key, sha256=hashlib.sha256(b"").hexdigest())[0]

    def get(self, key: str) -> bytes:
        status, _, body = self.send("GET", key, sha256=hashlib.sha256(b"").hexdigest())
        self.assertEqual(status, 200, body[:300])
        return body

    def assertNothingLeft(self, used: int) -> None:
        """The order's use is ``used`` and the node's incoming directory ends up empty."""
        self.assertEqual(self.used(), used)
        deadline = time.monotonic() + 30
        while _incoming(self.gateway.home) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(_incoming(self.gateway.home), [])

    # -- PUT -----------------------------------------------------------------------------

    def test_unsigned_put_spliced_with_declared_digests(self) -> None:
        """Content-MD5 and a CRC32 declared and right: stored whole, with both, by splice."""
        body = os.urandom(SIZE)
        md5 = hashlib.md5(body).digest()
        before = self.spliced()
        status, headers, answer = self.send(
            "PUT",
            self.key("a"),
            body,
            {
                "content-md5": base64.b64encode(md5).decode(),
                "x-amz-checksum-crc32": crc32_base64(body),
            },
        )
        self.assertEqual(status, 200, answer[:300])
        self.assertEqual(headers["etag"], f'"{md5.hex()}"')
        self.assertEqual(headers["x-amz-checksum-crc32"], crc32_base64(body))
        moved = self.spliced() - before
        # What came with the head, or before the node's connection was ready, went by hand.
        self.assertGreater(moved, SIZE - 2 * MiB)
        self.assertLessEqual(moved, SIZE)
        self.assertEqual(hashlib.md5(self.get(self.key("a"))).digest(), md5)

    def test_signed_put_spliced(self) -> None:
        """A body whose SHA-256 the client signed is checked by the node against it."""
        body = os.urandom(SIZE)
        sha = hashlib.sha256(body).hexdigest()
        status, headers, answer = self.send("PUT", self.key("a"), body, sha256=sha)
        self.assertEqual(status, 200, answer[:300])
        self.assertEqual(headers["etag"], f'"{hashlib.md5(body).hexdigest()}"')
        used = self.used()
        other = hashlib.sha256(body + b"x").hexdigest()
        status, _, answer = self.send("PUT", self.key("b"), body, sha256=other)
        self.assertEqual(status, 400)
        self.assertIn(b"<Code>XAmzContentSHA256Mismatch</Code>", answer)
        self.assertEqual(self.head_status(self.key("b")), 404)
        self.assertNothingLeft(used)

    def test_wrong_content_md5_refused(self) -> None:
        """A Content-MD5 the bytes do not have: BadDigest, nothing stored or charged."""
        body = os.urandom(SIZE)
        used = self.used()
        wrong = base64.b64encode(hashlib.md5(body + b"x").digest()).decode()
        status, _, answer = self.send("PUT", self.key("a"), body, {"content-md5": wrong})
        self.assertEqual(status, 400)
        self.assertIn(b"<Code>BadDigest</Code>", answer)
        self.assertIn(b"The Content-MD5 you specified did not match what we received.", answer)
        self.assertEqual(self.head_status(self.key("a")), 404)
        self.assertNothingLeft(used)

    def test_wrong_crc32_refused(self) -> None:
        """A CRC32 the bytes do not have: BadDigest naming it, nothing stored."""
        body = os.urandom(SIZE)
        used = self.used()
        wrong = crc32_base64(body + b"x")
        status, _, answer = self.send("PUT", self.key("a"), body, {"x-amz-checksum-crc32": wrong})
        self.assertEqual(status, 400)
        self.assertIn(b"<Code>BadDigest</Code>", answer)
        self.assertIn(b"The CRC32 you specified did not match the calculated checksum.", answer)
        self.assertEqual(self.head_status(self.key("a")), 404)
        self.assertNothingLeft(used)

    def test_malformed_content_md5_refused(self) -> None:
        """A Content-MD5 that is not one: InvalidDigest, nothing stored."""
        body = os.urandom(2 * MiB)
        status, _, answer = self.send("PUT", self.key("a"), body, {"content-md5": "bm90IGFuIG1k"})
        self.assertEqual(status, 400)
        self.assertIn(b"<Code>InvalidDigest</Code>", answer)
        self.assertEqual(self.head_status(self.key("a")), 404)

    def test_connection_kept_after_spliced_puts(self) -> None:
        """Two spliced PUTs and a GET on one connection: the channel reads on after a relay."""
        bodies = [os.urandom(SIZE), os.urandom(3 * MiB + 1)]
        conn = connect(self.signer.endpoint, timeout=120)
        self.addCleanup(conn.close)
        for i, body in enumerate(bodies):
            status, _, answer = self.send("PUT", self.key(f"{i}"), body, conn=conn)
            self.assertEqual(status, 200, answer[:300])
        status, _, got = self.send(
            "GET", self.key("1"), sha256=hashlib.sha256(b"").hexdigest(), conn=conn
        )
        self.assertEqual(status, 200)
        self.assertEqual(got, bodies[1])
        self.assertEqual(self.get(self.key("0")), bodies[0])

    def test_client_leaving_mid_body_leaves_nothing(self) -> None:
        """A client that closes after a quarter of its body: no object, no charge, no file."""
        used = self.used()
        size = 32 * MiB
        head = self.raw_head(self.key("a"), size)
        with socket.create_connection(("127.0.0.1", self.gateway.port)) as sock:
            sock.sendall(head)
            sock.sendall(os.urandom(size // 4))
            time.sleep(0.5)
        self.assertNothingLeft(used)
        self.assertEqual(self.head_status(self.key("a")), 404)
        body = os.urandom(2 * MiB)
        self.assertEqual(self.send("PUT", self.key("b"), body)[0], 200)
        self.assertEqual(self.get(self.key("b")), body)

    def test_stalled_body_cut(self) -> None:
        """A client that stops mid-body is answered RequestTimeout in time; nothing is left."""
        used = self.used()
        before = self.spliced()
        head = self.raw_head(self.key("a"), 16 * MiB)
        with socket.create_connection(("127.0.0.1", self.gateway.port)) as sock:
            sock.sendall(head + os.urandom(4 * MiB))
            began = time.monotonic()
            sock.settimeout(4 * HEADER_TIMEOUT)
            received = b""
            while more := sock.recv(65536):
                received += more
            took = time.monotonic() - began
        self.assertTrue(received.startswith(b"HTTP/1.1 400 "), received[:200])
        self.assertIn(b"<Code>RequestTimeout</Code>", received)
        # Spliced bytes count for the pace: the first window passes, the next one cuts.
        self.assertLess(took, 2 * HEADER_TIMEOUT + 2)
        self.assertGreater(self.spliced() - before, 2 * MiB)
        self.assertNothingLeft(used)
        self.assertEqual(self.head_status(self.key("a")), 404)

    def test_steady_relayed_body_kept(self) -> None:
        """A body spliced at twice the least rate, over several windows, is not cut."""
        body = os.urandom(3 * MiB)
        before = self.spliced()
        head = self.raw_head(self.key("a"), len(body))
        piece = 64 * 1024
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.gateway.port)) as sock:
            sock.sendall(head)
            for offset in range(0, len(body), piece):
                sock.sendall(body[offset : offset + piece])
                time.sleep(piece / (2 * MIN_BODY_RATE))
            sock.settimeout(30)
            answer = sock.recv(65536)
        self.assertGreater(time.monotonic() - began, 2 * HEADER_TIMEOUT)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:300])
        self.assertGreater(self.spliced() - before, 2 * MiB)
        self.assertEqual(self.get(self.key("a")), body)

    # -- parts ---------------------------------------------------------------------------

    def test_parts_spliced_and_checked(self) -> None:
        """Parts relayed by splice: a wrong Content-MD5 refused, the right ones completed."""
        s3 = self.gateway.s3_client()
        key = self.key("mp")
        upload_id = s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        parts = [os.urandom(6 * MiB), os.urandom(2 * MiB + 7)]
        before = self.spliced()
        used = self.used()
        wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
        status, _, answer = self.send(
            "PUT",
            key,
            parts[1],
            {"content-md5": wrong},
            query=(("partNumber", "2"), ("uploadId", upload_id)),
        )
        self.assertEqual(status, 400)
        self.assertIn(b"<Code>BadDigest</Code>", answer)
        self.assertEqual(self.used(), used)
        etags = []
        for number, part in enumerate(parts, 1):
            md5 = base64.b64encode(hashlib.md5(part).digest()).decode()
            status, headers, answer = self.send(
                "PUT",
                key,
                part,
                {"content-md5": md5, "x-amz-checksum-crc32": crc32_base64(part)},
                query=(("partNumber", str(number)), ("uploadId", upload_id)),
            )
            self.assertEqual(status, 200, answer[:300])
            self.assertEqual(headers["etag"], f'"{hashlib.md5(part).hexdigest()}"')
            self.assertEqual(headers["x-amz-checksum-crc32"], crc32_base64(part))
            etags.append(headers["etag"])
        self.assertGreater(self.spliced() - before, sum(map(len, parts)) - 4 * MiB)
        listed = s3.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id)["Parts"]
        self.assertEqual([p["ETag"] for p in listed], etags)
        self.assertEqual([p["Size"] for p in listed], [len(p) for p in parts])
        s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]
            },
        )
        joined = b"".join(hashlib.md5(p).digest() for p in parts)
        info = s3.head_object(Bucket=self.bucket, Key=key)
        self.assertEqual(info["ETag"], f'"{hashlib.md5(joined).hexdigest()}-2"')
        self.assertEqual(self.get(key), b"".join(parts))
