"""Tests for request authentication, with requests signed by botocore itself."""

from __future__ import annotations

import calendar
import hashlib
import time
from collections.abc import Callable
from functools import cache, partial
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.awsrequest import AWSPreparedRequest
from botocore.config import Config
from botocore.handlers import validate_ascii_metadata
from twisted.trial.unittest import SynchronousTestCase

from lambgw.protocol import sigv4
from lambgw.protocol.auth import AuthResult, PayloadMode, RequestView, authenticate
from lambgw.protocol.errors import S3Error

ACCESS = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_EXAMPLE_TIME = calendar.timegm((2013, 5, 24, 0, 0, 0))
SCOPE = "20130524/us-east-1/s3/aws4_request"
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

#: Keys that are easy to get wrong: spaces, unicode, ``//``, ``+``, ``~``, ``..``.
TRICKY_KEYS = ("a b/c", "ünï/cødé ☃", "x//y/../z", "1+1=2", "~tilde~", "q?&=#%", "end/")


def lookup(access_key: str) -> str | None:
    """Know the one example key pair."""
    return SECRET if access_key == ACCESS else None


class Captured(Exception):
    """Stops a botocore request before it is sent, carrying it."""

    def __init__(self, request: AWSPreparedRequest) -> None:
        super().__init__("captured")
        self.request = request


def _stop(request: AWSPreparedRequest, **kwargs: Any) -> None:
    raise Captured(request)


@cache
def client(signature_version: str = "s3v4", scheme: str = "https") -> Any:
    """Make a boto3 S3 client that captures requests instead of sending them."""
    s3 = boto3.client(
        "s3",
        endpoint_url=f"{scheme}://gw.example:9002",
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(
            signature_version=signature_version,
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
        ),
    )
    s3.meta.events.register("before-send.s3", _stop)
    return s3


def capture(call: Callable[[], object]) -> AWSPreparedRequest:
    """Run a boto3 call and return the request it would have sent."""
    try:
        call()
    except Captured as e:
        return e.request
    raise AssertionError("no request was made")


def view_of(method: str, url: str, headers: dict[str, object] | None = None) -> RequestView:
    """Build the RequestView of a request as the HTTP layer would see it."""
    split = urlsplit(url)
    lowered: dict[str, list[str]] = {"host": [split.netloc]}
    for name, value in (headers or {}).items():
        text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        lowered[name.lower()] = [text]
    return RequestView(method, split.path, split.query, lowered)


def view_of_request(request: AWSPreparedRequest) -> RequestView:
    """Build the RequestView of a captured botocore request."""
    return view_of(request.method, request.url, dict(request.headers))


def replace_header(view: RequestView, name: str, value: str | None) -> RequestView:
    """Return ``view`` with header ``name`` set to ``value`` (or removed if None)."""
    headers = {k: v for k, v in view.headers.items() if k != name}
    if value is not None:
        headers[name] = [value]
    return RequestView(view.method, view.raw_path, view.raw_query, headers)


def auth(view: RequestView, now: float | None = None) -> AuthResult:
    """Authenticate ``view`` against the example key pair."""
    return authenticate(view, lookup, time.time() if now is None else now)


class BotocoreHeaderTests(SynchronousTestCase):
    def test_put_object_tricky_keys(self) -> None:
        """PutObject as boto3 sends it authenticates for keys with special characters."""
        for key in TRICKY_KEYS:
            request = capture(partial(client().put_object, Bucket="b", Key=key, Body=b"x"))
            result = auth(view_of_request(request))
            self.assertEqual(result.access_key, ACCESS)
            self.assertEqual(result.payload, PayloadMode.STREAMING_UNSIGNED_TRAILER)
            self.assertIsNone(result.chunk_signer)

    def test_non_ascii_metadata(self) -> None:
        """Metadata that boto3 sends as UTF-8 authenticates, signed over those bytes."""
        s3 = boto3.client(
            "s3",
            endpoint_url="https://gw.example:9002",
            aws_access_key_id=ACCESS,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        s3.meta.events.register("before-send.s3", _stop)
        s3.meta.events.unregister("before-parameter-build.s3.PutObject", validate_ascii_metadata)
        request = capture(
            partial(s3.put_object, Bucket="b", Key="k", Body=b"x", Metadata={"a": "Hello Worldé"})
        )
        self.assertEqual(auth(view_of_request(request)).access_key, ACCESS)

    def test_put_object_over_http(self) -> None:
        """Over plain HTTP boto3 signs the body's SHA-256, which the result carries."""
        request = capture(lambda: client(scheme="http").put_object(Bucket="b", Key="k", Body=b"x"))
        result = auth(view_of_request(request))
        self.assertEqual(result.payload, PayloadMode.SIGNED)
        self.assertEqual(result.content_sha256, hashlib.sha256(b"x").hexdigest())

    def test_list_with_tricky_query(self) -> None:
        """A listing with ``+``, spaces and ``/`` in its query authenticates as SIGNED."""
        request = capture(
            lambda: client().list_objects_v2(Bucket="b", Prefix="a+b c/~ü", Delimiter="/")
        )
        result = auth(view_of_request(request))
        self.assertEqual(result.payload, PayloadMode.SIGNED)
        self.assertEqual(result.content_sha256, EMPTY)

    def test_tampered_path(self) -> None:
        """Changing the path after signing is SignatureDoesNotMatch."""
        request = capture(lambda: client().get_object(Bucket="b", Key="k"))
        view = view_of_request(request)
        tampered = RequestView(view.method, "/b/other", view.raw_query, view.headers)
        e = self.assertRaises(S3Error, auth, tampered)
        self.assertEqual((e.code, e.status), ("SignatureDoesNotMatch", 403))

    def test_unknown_access_key(self) -> None:
        """An access key we do not know is InvalidAccessKeyId."""
        view = view_of_request(capture(lambda: client().get_object(Bucket="b", Key="k")))
        e = self.assertRaises(S3Error, authenticate, view, lambda ak: None, time.time())
        self.assertEqual((e.code, e.status), ("InvalidAccessKeyId", 403))

    def test_wrong_secret(self) -> None:
        """A request signed with another secret is SignatureDoesNotMatch."""
        view = view_of_request(capture(lambda: client().get_object(Bucket="b", Key="k")))
        e = self.assertRaises(S3Error, authenticate, view, lambda ak: "other", time.time())
        self.assertEqual(e.code, "SignatureDoesNotMatch")

    def test_clock_skew(self) -> None:
        """A request more than 15 minutes away from our clock is RequestTimeTooSkewed."""
        view = view_of_request(capture(lambda: client().get_object(Bucket="b", Key="k")))
        auth(view, time.time() + 14 * 60)
        for offset in (16 * 60, -16 * 60):
            e = self.assertRaises(S3Error, auth, view, time.time() + offset)
            self.assertEqual((e.code, e.status), ("RequestTimeTooSkewed", 403))

    def test_missing_content_sha256(self) -> None:
        """SigV4 header auth without x-amz-content-sha256 is InvalidRequest."""
        view = view_of_request(capture(lambda: client().get_object(Bucket="b", Key="k")))
        e = self.assertRaises(S3Error, auth, replace_header(view, "x-amz-content-sha256", None))
        self.assertEqual((e.code, e.status), ("InvalidRequest", 400))

    def test_bad_content_sha256(self) -> None:
        """An x-amz-content-sha256 that is neither a hash nor a known mode is InvalidArgument."""
        view = view_of_request(capture(lambda: client().get_object(Bucket="b", Key="k")))
        for value in ("xyz", EMPTY.upper(), "STREAMING-SOMETHING"):
            e = self.assertRaises(
                S3Error, auth, replace_header(view, "x-amz-content-sha256", value)
            )
            self.assertEqual(e.code, "InvalidArgument")

    def test_content_sha256_with_newline(self) -> None:
        """A hash followed by a newline is not a hash: InvalidArgument."""
        view = view_of_request(capture(lambda: client().get_object(Bucket="b", Key="k")))
        e = self.assertRaises(
            S3Error, auth, replace_header(view, "x-amz-content-sha256", EMPTY + "\n")
        )
        self.assertEqual(e.code, "InvalidArgument")

    def test_malformed_amz_date(self) -> None:
        """An x-amz-date that is not a valid YYYYMMDDTHHMMSSZ time is AccessDenied."""
        view = view_of_request(capture(lambda: client().get_object(Bucket="b", Key="k")))
        for value in ("20130524T000000", "20131324T000000Z", "2013-05-24T00:00:00Z", "x"):
            e = self.assertRaises(S3Error, auth, replace_header(view, "x-amz-date", value))
            self.assertEqual((e.code, e.status), ("AccessDenied", 403))

    def test_missing_date(self) -> None:
        """A SigV4 request without any date is AccessDenied."""
        view = view_of_request(capture(lambda: client().get_object(Bucket="b", Key="k")))
        e = self.assertRaises(S3Error, auth, replace_header(view, "x-amz-date", None))
        self.assertEqual((e.code, e.status), ("AccessDenied", 403))


class AwsExampleTests(SynchronousTestCase):
    def _chunked_view(self, mode: str, signature: str, signed: str) -> RequestView:
        return RequestView(
            "PUT",
            "/examplebucket/chunkObject.txt",
            "",
            {
                "host": ["s3.amazonaws.com"],
                "x-amz-date": ["20130524T000000Z"],
                "x-amz-storage-class": ["REDUCED_REDUNDANCY"],
                "x-amz-content-sha256": [mode],
                "content-encoding": ["aws-chunked"],
                "x-amz-decoded-content-length": ["66560"],
                "content-length": ["66824"],
                "authorization": [
                    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
                    f"aws4_request,SignedHeaders={signed},Signature={signature}"
                ],
            },
        )

    def test_streaming_signed(self) -> None:
        """The published chunked upload authenticates and yields a chunk signer."""
        view = self._chunked_view(
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
            "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
            "x-amz-decoded-content-length;x-amz-storage-class",
        )
        result = auth(view, AWS_EXAMPLE_TIME)
        self.assertEqual(result.payload, PayloadMode.STREAMING_SIGNED)
        self.assertIsNotNone(result.chunk_signer)
        self.assertTrue(result.payload.is_chunked)
        self.assertFalse(result.payload.has_trailer)

    def test_date_header_instead_of_amz_date(self) -> None:
        """Without x-amz-date, the Date header dates the request and its signature."""
        payload = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
        headers = {
            "host": ["examplebucket.s3.amazonaws.com"],
            "date": ["Fri, 24 May 2013 00:00:00 GMT"],
            "x-amz-content-sha256": [payload],
        }
        signed = ("date", "host", "x-amz-content-sha256")
        canonical = sigv4.canonical_request(
            "PUT", "/test%24file.text", "", headers, signed, payload
        )
        key = sigv4.derive_signing_key(SECRET, "20130524", "us-east-1", "s3")
        signature = sigv4.sign(key, sigv4.string_to_sign("20130524T000000Z", SCOPE, canonical))
        headers["authorization"] = [
            f"AWS4-HMAC-SHA256 Credential={ACCESS}/{SCOPE}, "
            f"SignedHeaders={';'.join(signed)}, Signature={signature}"
        ]
        view = RequestView("PUT", "/test%24file.text", "", headers)
        result = auth(view, AWS_EXAMPLE_TIME)
        self.assertEqual((result.payload, result.content_sha256), (PayloadMode.SIGNED, payload))


class PresignedTests(SynchronousTestCase):
    def _url(self, key: str = "k", expires: int = 3600, **params: str) -> str:
        url: str = client().generate_presigned_url(
            "get_object", Params={"Bucket": "b", "Key": key, **params}, ExpiresIn=expires
        )
        return url

    def test_presigned_tricky_keys(self) -> None:
        """boto3's presigned GET URLs authenticate, with an unsigned payload."""
        for key in TRICKY_KEYS:
            url = self._url(key, ResponseContentType="text/plain; charset=utf-8")
            result = auth(view_of("GET", url))
            self.assertEqual((result.access_key, result.payload), (ACCESS, PayloadMode.UNSIGNED))

    def test_presigned_aws_example(self) -> None:
        """The published presigned URL authenticates during its validity."""
        url = (
            "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
            "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
            "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        )
        self.assertEqual(auth(view_of("GET", url), AWS_EXAMPLE_TIME + 3600).access_key, ACCESS)
        e = self.assertRaises(S3Error, auth, view_of("GET", url), AWS_EXAMPLE_TIME + 86401)
        self.assertEqual(
            (e.code, e.status, e.message), ("AccessDenied", 403, "Request has expired")
        )

    def test_presigned_tampered(self) -> None:
        """A presigned URL used for another key is SignatureDoesNotMatch."""
        url = self._url("k").replace("/b/k?", "/b/j?")
        e = self.assertRaises(S3Error, auth, view_of("GET", url))
        self.assertEqual(e.code, "SignatureDoesNotMatch")

    def test_presigned_other_method(self) -> None:
        """A presigned GET URL cannot be used to PUT."""
        e = self.assertRaises(S3Error, auth, view_of("PUT", self._url()))
        self.assertEqual(e.code, "SignatureDoesNotMatch")

    def test_presigned_expires_bounds(self) -> None:
        """X-Amz-Expires must be within 1..604800."""
        url = self._url(expires=10)
        for value in ("0", "604801", "abc"):
            bad = url.replace("X-Amz-Expires=10", f"X-Amz-Expires={value}")
            e = self.assertRaises(S3Error, auth, view_of("GET", bad))
            self.assertEqual((e.code, e.status), ("AuthorizationQueryParametersError", 400))

    def test_presigned_missing_parameter(self) -> None:
        """A presigned URL without X-Amz-Date is AuthorizationQueryParametersError."""
        url = self._url()
        split = urlsplit(url)
        query = "&".join(p for p in split.query.split("&") if not p.startswith("X-Amz-Date="))
        e = self.assertRaises(S3Error, auth, view_of("GET", url.replace(split.query, query)))
        self.assertEqual(e.code, "AuthorizationQueryParametersError")

    def test_presigned_not_yet_valid(self) -> None:
        """A presigned URL dated well in the future is AccessDenied."""
        e = self.assertRaises(S3Error, auth, view_of("GET", self._url()), time.time() - 3600)
        self.assertEqual(e.code, "AccessDenied")


class SigV2BucketPathTests(SynchronousTestCase):
    def test_bucket_listing_presigned_v2(self) -> None:
        """A SigV2 presigned bucket listing (signed as /b/, sent to /b) authenticates."""
        url = client("s3", "http").generate_presigned_url("list_objects", Params={"Bucket": "b"})
        self.assertEqual(auth(view_of("GET", url)).access_key, ACCESS)

    def test_bucket_slash_not_another_bucket(self) -> None:
        """The slash leniency does not let a bucket URL be replayed on another bucket."""
        url = client("s3", "http").generate_presigned_url("list_objects", Params={"Bucket": "b"})
        e = self.assertRaises(S3Error, auth, view_of("GET", url.replace("/b?", "/c?")))
        self.assertEqual(e.code, "SignatureDoesNotMatch")


class OtherAuthTests(SynchronousTestCase):
    def test_anonymous(self) -> None:
        """A request without any signature is AccessDenied."""
        e = self.assertRaises(S3Error, auth, view_of("GET", "https://gw.example/b/k?acl"))
        self.assertEqual((e.code, e.status), ("AccessDenied", 403))

    def test_unknown_scheme(self) -> None:
        """An Authorization header of an unknown scheme is InvalidArgument."""
        view = view_of("GET", "https://gw.example/b", {"Authorization": "Bearer xyz"})
        e = self.assertRaises(S3Error, auth, view)
        self.assertEqual(e.code, "InvalidArgument")
