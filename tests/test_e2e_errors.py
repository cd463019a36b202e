"""Bad input over raw HTTP against a listening gateway: the right S3 error, and nothing stored."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.client
import os
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from urllib.parse import quote

import botocore.auth
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from twisted.trial.unittest import SkipTest

from tests.gateway import GatewayCase, MiB

REGION = "us-east-1"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class Answer:
    """A gateway's HTTP answer: status, headers and body."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    def error_code(self) -> str:
        """Return the ``<Code>`` of an S3 error document (and check the document's shape)."""
        root = ET.fromstring(self.body)  # noqa: S314
        if root.tag != "Error":
            raise AssertionError(f"not an S3 error document: {self.body!r}")
        for element in ("Code", "Message", "Resource", "RequestId"):
            if root.find(element) is None:
                raise AssertionError(f"no <{element}> in {self.body!r}")
        return root.findtext("Code") or ""


class _PayloadAuth(S3SigV4Auth):
    """botocore's S3 SigV4 signer; signs ``payload_value``, if set, instead of the body's hash."""

    payload_value = ""

    def payload(self, request: AWSRequest) -> str:
        """Return the payload value to sign."""
        return self.payload_value or str(super().payload(request))


class ErrorTests(GatewayCase):
    """Bad requests to lambgw are refused with the S3 error AWS uses, and store nothing."""

    mode = "lambgw"

    def sign(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        access_key: str = "",
        secret_key: str = "",
        payload: str = "",
    ) -> dict[str, str]:
        """Return ``headers`` plus a SigV4 signature made as botocore makes it.

        ``payload`` replaces the body's SHA-256 as the signed payload (e.g. for aws-chunked).
        """
        credentials = Credentials(
            access_key or self.gateway.access_key, secret_key or self.gateway.secret_key
        )
        request = AWSRequest(method, self.gateway.endpoint + path, dict(headers or {}), body)
        auth = _PayloadAuth(credentials, "s3", REGION)
        auth.payload_value = payload
        auth.add_auth(request)
        return dict(request.headers.items())

    def request(
        self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> Answer:
        """Send a request as is (``path`` raw, query included); the answer."""
        conn = http.client.HTTPConnection("127.0.0.1", self.gateway.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            headers = dict(headers or {})
            headers.setdefault("Host", f"127.0.0.1:{self.gateway.port}")
            if body or method in ("PUT", "POST"):
                headers.setdefault("Content-Length", str(len(body)))
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders(body)
            response = conn.getresponse()
            return Answer(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()

    def signed(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        **keys: str,
    ) -> Answer:
        """Sign and send a request."""
        return self.request(method, path, self.sign(method, path, headers, body, **keys), body)

    def path(self, key: str) -> str:
        """Return the URI path of ``key`` in the bucket, percent-encoded as botocore does."""
        return f"/{self.bucket}/" + quote(key, safe="/~")

    def assertError(self, answer: Answer, status: int, *codes: str) -> None:
        """Assert an S3 error answer with ``status``, one of ``codes`` and a request id."""
        self.assertEqual(answer.status, status, answer.body)
        self.assertIn(answer.error_code(), codes)
        self.assertTrue(answer.headers.get("x-amz-request-id"))

    def assertNoObject(self, key: str) -> None:
        """Assert that no object is stored at ``key``."""
        self.assertEqual(self.signed("HEAD", self.path(key)).status, 404)

    def test_wrong_secret(self) -> None:
        """A request signed with the wrong secret is refused with SignatureDoesNotMatch."""
        answer = self.signed("GET", f"/{self.bucket}", secret_key="not-the-secret")
        self.assertError(answer, 403, "SignatureDoesNotMatch")

    def test_unknown_access_key(self) -> None:
        """A request signed with an unknown access key is refused with InvalidAccessKeyId."""
        answer = self.signed("GET", f"/{self.bucket}", access_key="nobody")
        self.assertError(answer, 403, "InvalidAccessKeyId")

    def test_clock_skew(self) -> None:
        """A request dated 20 minutes ago is refused with RequestTimeTooSkewed."""
        past = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        self.patch(
            botocore.auth, "get_current_datetime", lambda: past - datetime.timedelta(minutes=20)
        )
        self.assertError(self.signed("GET", f"/{self.bucket}"), 403, "RequestTimeTooSkewed")

    def test_expired_presigned_url(self) -> None:
        """A presigned URL used after its expiry is refused with AccessDenied."""
        self.signed("PUT", self.path(self.key("shared")), body=b"x")
        url = self.gateway.s3_client(signature_version="s3v4").generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key("shared")}, ExpiresIn=1
        )
        time.sleep(2)
        answer = self.request("GET", url[len(self.gateway.endpoint) :])
        self.assertError(answer, 403, "AccessDenied")

    def test_key_too_long(self) -> None:
        """A 1025-byte key is refused with KeyTooLongError and nothing is stored."""
        key = self.key("")
        key += "k" * (1025 - len(key))
        answer = self.signed("PUT", self.path(key), body=b"x")
        self.assertError(answer, 400, "KeyTooLongError")

    def test_key_of_1024_bytes(self) -> None:
        """A 1024-byte key is stored and read back."""
        key = self.key("")
        key += "k" * (1024 - len(key))
        self.assertEqual(self.signed("PUT", self.path(key), body=b"x").status, 200)
        self.assertEqual(self.signed("GET", self.path(key)).body, b"x")

    def test_invalid_utf8_key(self) -> None:
        """A key that is not UTF-8 once percent-decoded is refused with a 400."""
        answer = self.signed("PUT", f"/{self.bucket}/bad-%FF-key", body=b"x")
        self.assertError(answer, 400, "InvalidURI", "InvalidArgument")

    def test_malformed_delete_xml(self) -> None:
        """``POST ?delete`` with a body that is not XML is refused with MalformedXML."""
        body = b"<Delete><Object><Key>unclosed"
        md5 = hashlib.md5(body).digest()
        headers = {"Content-MD5": base64.b64encode(md5).decode()}
        answer = self.signed("POST", f"/{self.bucket}?delete", headers, body)
        self.assertError(answer, 400, "MalformedXML")

    def test_content_md5_mismatch(self) -> None:
        """A PUT whose Content-MD5 is not its body's is refused with BadDigest; no object."""
        wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
        key = self.key("digest")
        answer = self.signed("PUT", self.path(key), {"Content-MD5": wrong}, b"the body")
        self.assertError(answer, 400, "BadDigest")
        self.assertNoObject(key)

    def test_truncated_body(self) -> None:
        """A PUT whose connection closes before Content-Length bytes arrive stores nothing."""
        key = self.key("truncated")
        body = os.urandom(100_000)
        headers = self.sign("PUT", self.path(key), {}, body)
        headers["Content-Length"] = str(len(body))
        head = f"PUT {self.path(key)} HTTP/1.1\r\nHost: 127.0.0.1:{self.gateway.port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "host")
        with socket.create_connection(("127.0.0.1", self.gateway.port)) as sock:
            sock.sendall(head.encode() + b"\r\n" + body[:40_000])
        time.sleep(0.5)
        self.assertNoObject(key)

    def chunked_put(self, key: str, chunks: list[bytes], bad_chunk: int | None) -> Answer:
        """PUT ``chunks`` signed chunk by chunk, chunk number ``bad_chunk`` signed wrong."""
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        self.patch(botocore.auth, "get_current_datetime", lambda: now)
        timestamp = now.strftime("%Y%m%dT%H%M%SZ")
        scope = f"{now:%Y%m%d}/{REGION}/s3/aws4_request"
        size = sum(len(c) for c in chunks)
        framing = sum(len(f"{len(c):x};chunk-signature=") + 64 + 4 + len(c) for c in chunks)
        framing += len("0;chunk-signature=") + 64 + 4
        headers = self.sign(
            "PUT",
            self.path(key),
            {
                "Content-Encoding": "aws-chunked",
                "X-Amz-Decoded-Content-Length": str(size),
                "Content-Length": str(framing),
            },
            payload="STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        )
        previous = headers["Authorization"].rsplit("Signature=", 1)[1]
        key_bytes = ("AWS4" + self.gateway.secret_key).encode()
        for part in (f"{now:%Y%m%d}", REGION, "s3", "aws4_request"):
            key_bytes = hmac.new(key_bytes, part.encode(), hashlib.sha256).digest()
        body = b""
        for index, chunk in enumerate([*chunks, b""]):
            to_sign = "\n".join(
                [
                    "AWS4-HMAC-SHA256-PAYLOAD",
                    timestamp,
                    scope,
                    previous,
                    EMPTY_SHA256,
                    hashlib.sha256(chunk).hexdigest(),
                ]
            )
            signature = hmac.new(key_bytes, to_sign.encode(), hashlib.sha256).hexdigest()
            if index == bad_chunk:
                signature = "0" * 64
            body += f"{len(chunk):x};chunk-signature={signature}\r\n".encode() + chunk + b"\r\n"
            previous = signature
        self.assertEqual(len(body), framing)
        return self.request("PUT", self.path(key), headers, body)

    def test_streaming_signed_chunks(self) -> None:
        """A PUT with every chunk signature right stores the decoded bytes."""
        chunks = [os.urandom(65536), os.urandom(65536), os.urandom(100)]
        key = self.key("chunked")
        self.assertEqual(self.chunked_put(key, chunks, None).status, 200)
        self.assertEqual(self.signed("GET", self.path(key)).body, b"".join(chunks))

    def test_streaming_wrong_chunk_signature(self) -> None:
        """A wrong chunk signature mid-stream is refused with SignatureDoesNotMatch; no object."""
        if self.gateway.is_moto:
            raise SkipTest("moto does not check chunk signatures")
        key = self.key("chunked")
        answer = self.chunked_put(key, [os.urandom(65536), os.urandom(65536), os.urandom(100)], 1)
        self.assertError(answer, 403, "SignatureDoesNotMatch")
        self.assertNoObject(key)

    def test_put_into_expired_order(self) -> None:
        """A PUT into an expired order is refused with a 403 and stores nothing."""
        if self.gateway.is_moto:
            raise SkipTest("moto has no orders")
        order = self.gateway.buy_order(capacity="1GiB", days="0.00001")
        time.sleep(1.5)
        path = f"/{order}/late"
        answer = self.signed("PUT", path, body=b"too late")
        self.assertEqual(answer.status, 403, answer.body)
        self.assertTrue(answer.error_code())
        self.assertEqual(self.signed("HEAD", path).status, 404)

    def test_put_over_capacity_refused_before_body(self) -> None:
        """A PUT over the order's free space is refused with QuotaExceeded before its body."""
        if self.gateway.is_moto:
            raise SkipTest("moto has no orders")
        order = self.gateway.buy_order(capacity="1MiB", days="30")
        body = os.urandom(2 * MiB)
        path = f"/{order}/too-big"
        headers = self.sign("PUT", path, {"Expect": "100-continue"}, body)
        headers["Content-Length"] = str(len(body))
        head = f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.gateway.port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "host")
        with socket.create_connection(("127.0.0.1", self.gateway.port), timeout=10) as sock:
            sock.sendall(head.encode() + b"\r\n")
            response = http.client.HTTPResponse(sock, method="PUT")
            try:
                response.begin()
            except TimeoutError:
                self.fail("no final answer before the body was sent")
            answer = Answer(response.status, dict(response.getheaders()), response.read())
        self.assertError(answer, 403, "QuotaExceeded")
        self.assertEqual(self.signed("HEAD", path).status, 404)

    def test_space_freed_by_a_delete_is_usable_at_once(self) -> None:
        """After a DELETE, a PUT that fits only in the space it freed is stored at once."""
        if self.gateway.is_moto:
            raise SkipTest("moto has no orders")
        order = self.gateway.buy_order(capacity="1MiB", days="30")
        body = os.urandom(700 * 1024)
        for attempt in range(3):
            path = f"/{order}/round-{attempt}"
            self.assertEqual(self.signed("PUT", path, body=body).status, 200)
            self.assertEqual(self.signed("DELETE", path).status, 204)
        self.assertEqual(self.signed("PUT", f"/{order}/last", body=body).status, 200)
        self.assertEqual(self.signed("GET", f"/{order}/last").body, body)

    def test_put_over_capacity_refused_at_commit(self) -> None:
        """A PUT that the order cannot hold is refused with QuotaExceeded and leaves nothing."""
        if self.gateway.is_moto:
            raise SkipTest("moto has no orders")
        order = self.gateway.buy_order(capacity="1MiB", days="30")
        body = os.urandom(700 * 1024)
        self.assertEqual(self.signed("PUT", f"/{order}/first", body=body).status, 200)
        answer = self.signed("PUT", f"/{order}/second", body=body)
        self.assertError(answer, 403, "QuotaExceeded")
        self.assertEqual(self.signed("HEAD", f"/{order}/second").status, 404)
        self.assertEqual(self.signed("GET", f"/{order}/first").body, body)

    def test_dot_dot_keys_are_ordinary(self) -> None:
        """Keys with ``../`` are stored and read back as keys; no file appears outside HOME."""
        outside_before = sorted(os.listdir(self.root))
        keys = ["../x", "/../../x", "a/../../../x", "../../../../../../tmp/escape"]
        for index, key in enumerate(keys):
            body = f"body {index}".encode()
            self.assertEqual(self.signed("PUT", self.path(key), body=body).status, 200, key)
        for index, key in enumerate(keys):
            self.assertEqual(self.signed("GET", self.path(key)).body, f"body {index}".encode())
        self.assertEqual(sorted(os.listdir(self.root)), outside_before)
        stray = [
            os.path.join(top, name)
            for top, _, names in os.walk(self.root)
            for name in names
            if name in ("x", "escape")
        ]
        self.assertEqual(stray, [])
        self.assertFalse(os.path.exists("/tmp/escape"))
