"""Tests for SigV2 authentication, with requests signed by botocore's HmacV1 signers."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from lambgw.protocol import sigv2
from lambgw.protocol.auth import PayloadMode, RequestView
from lambgw.protocol.errors import S3Error
from tests.test_auth import (
    ACCESS,
    SECRET,
    TRICKY_KEYS,
    auth,
    capture,
    client,
    replace_header,
    view_of,
    view_of_request,
)


def _v2() -> Any:
    return client(signature_version="s3")


class CanonicalResourceTests(SynchronousTestCase):
    def test_subresources_sorted_and_decoded(self) -> None:
        """Only signed sub-resources are kept, sorted, values decoded, bare names bare."""
        self.assertEqual(
            sigv2.canonical_resource(
                "/b/k%20x", "uploadId=a%2Bb&prefix=p&acl&response-content-type=text%2Fplain"
            ),
            "/b/k%20x?acl&response-content-type=text/plain&uploadId=a+b",
        )

    def test_virtual_host_bucket(self) -> None:
        """A bucket named by the host is part of the signed path."""
        self.assertEqual(sigv2.canonical_resource("/k", "", "bucket"), "/bucket/k")

    def test_string_to_sign(self) -> None:
        """The string to sign holds MD5, type, date, sorted x-amz headers and resource."""
        headers = {
            "content-type": ["text/plain"],
            "x-amz-meta-b": ["2"],
            "x-amz-meta-a": [" 1 ", "3"],
            "host": ["h"],
        }
        self.assertEqual(
            sigv2.string_to_sign("PUT", "/b/k", "", headers, "Tue, 27 Mar 2007 21:15:45 +0000"),
            "PUT\n\ntext/plain\nTue, 27 Mar 2007 21:15:45 +0000\n"
            "x-amz-meta-a:1,3\nx-amz-meta-b:2\n/b/k",
        )

    def test_aws_example(self) -> None:
        """The signature of AWS's SigV2 GET example (Access Key AKIAIOSFODNN7EXAMPLE)."""
        text = "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/awsexamplebucket1/photos/puppy.jpg"
        self.assertEqual(sigv2.sign(SECRET, text), "qgk2+6Sv9/oM7G3qLEjTH1a1l1g=")


class HeaderAuthTests(SynchronousTestCase):
    def test_botocore_requests(self) -> None:
        """Requests signed by botocore's HmacV1Auth authenticate, payload unsigned."""
        for key in TRICKY_KEYS:
            request = capture(
                partial(
                    _v2().put_object,
                    Bucket="b",
                    Key=key,
                    Body=b"x",
                    ContentType="a/b",
                    Metadata={"m": "v"},
                )
            )
            result = auth(view_of_request(request))
            self.assertEqual((result.access_key, result.payload), (ACCESS, PayloadMode.UNSIGNED))

    def test_subresource_request(self) -> None:
        """A request with signed sub-resources in its query authenticates."""
        request = capture(lambda: _v2().list_parts(Bucket="b", Key="k", UploadId="u+/="))
        self.assertEqual(auth(view_of_request(request)).access_key, ACCESS)

    def test_tampered(self) -> None:
        """Changing a signed header is SignatureDoesNotMatch."""
        request = capture(
            lambda: _v2().put_object(Bucket="b", Key="k", Body=b"x", ContentType="a/b")
        )
        view = replace_header(view_of_request(request), "content-type", "c/d")
        e = self.assertRaises(S3Error, auth, view)
        self.assertEqual((e.code, e.status), ("SignatureDoesNotMatch", 403))

    def test_skew(self) -> None:
        """A SigV2 request dated too far from our clock is RequestTimeTooSkewed."""
        request = capture(lambda: _v2().get_object(Bucket="b", Key="k"))
        e = self.assertRaises(S3Error, auth, view_of_request(request), time.time() + 3600)
        self.assertEqual(e.code, "RequestTimeTooSkewed")

    def test_amz_date_replaces_date(self) -> None:
        """With x-amz-date the Date line of the string to sign is empty."""
        date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
        headers = {"host": ["h"], "x-amz-date": [date]}
        text = f"GET\n\n\n\nx-amz-date:{date}\n/b/k"
        headers["authorization"] = [f"AWS {ACCESS}:{sigv2.sign(SECRET, text)}"]
        self.assertEqual(auth(RequestView("GET", "/b/k", "", headers)).access_key, ACCESS)

    def test_malformed(self) -> None:
        """An ``AWS`` header without ``key:signature`` is InvalidArgument."""
        view = view_of("GET", "https://h/b/k", {"Authorization": "AWS nocolon"})
        e = self.assertRaises(S3Error, auth, view)
        self.assertEqual(e.code, "InvalidArgument")


class PresignedTests(SynchronousTestCase):
    def _url(self, key: str = "k", expires: int = 3600, **params: str) -> str:
        url: str = _v2().generate_presigned_url(
            "get_object", Params={"Bucket": "b", "Key": key, **params}, ExpiresIn=expires
        )
        return url

    def test_botocore_urls(self) -> None:
        """Botocore's HmacV1QueryAuth URLs authenticate, including response overrides."""
        for key in TRICKY_KEYS:
            url = self._url(key, ResponseContentDisposition='attachment; filename="a b"')
            result = auth(view_of("GET", url))
            self.assertEqual((result.access_key, result.payload), (ACCESS, PayloadMode.UNSIGNED))

    def test_expired(self) -> None:
        """A SigV2 presigned URL past its Expires is AccessDenied."""
        e = self.assertRaises(
            S3Error, auth, view_of("GET", self._url(expires=10)), time.time() + 11
        )
        self.assertEqual((e.code, e.message), ("AccessDenied", "Request has expired"))

    def test_tampered(self) -> None:
        """A SigV2 presigned URL for another key is SignatureDoesNotMatch."""
        url = self._url().replace("/b/k?", "/b/j?")
        e = self.assertRaises(S3Error, auth, view_of("GET", url))
        self.assertEqual(e.code, "SignatureDoesNotMatch")
