"""What real clients send that S3 answers in its own way: header bytes, listings, URIs, ACLs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from botocore.handlers import validate_ascii_metadata

import tests.test_e2e_errors as errors
from tests.gateway import GatewayCase

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def utf8_client(gateway: Any) -> Any:
    """A boto3 client that sends non-ASCII metadata as UTF-8 instead of refusing it."""
    s3 = gateway.s3_client()
    s3.meta.events.unregister("before-parameter-build.s3.PutObject", validate_ascii_metadata)
    return s3


class CompatTests(GatewayCase):
    """Header bytes, listing encodings and malformed URIs, against lambgw."""

    mode = "lambgw"

    sign = errors.ErrorTests.sign
    request = errors.ErrorTests.request
    signed = errors.ErrorTests.signed
    path = errors.ErrorTests.path
    assertError = errors.ErrorTests.assertError

    def test_non_ascii_metadata_round_trip(self) -> None:
        """UTF-8 metadata from boto3 is accepted and GET and HEAD return its very bytes."""
        key = self.key("meta")
        utf8_client(self.gateway).put_object(
            Bucket=self.bucket, Key=key, Body=b"x", Metadata={"greeting": "Hello Worldé"}
        )
        sent = "Hello Worldé".encode()
        for method in ("GET", "HEAD"):
            answer = self.signed(method, self.path(key))
            self.assertEqual(answer.status, 200)
            # http.client reads header bytes as Latin-1: encoding them back gives the bytes.
            self.assertEqual(answer.headers["x-amz-meta-greeting"].encode("latin-1"), sent)
        head = self.gateway.s3_client().head_object(Bucket=self.bucket, Key=key)
        self.assertEqual(head["Metadata"]["greeting"].encode("latin-1"), sent)

    def test_content_encoding_kept(self) -> None:
        """Content-Encoding comes back byte for byte, spaces included."""
        key = self.key("encoded")
        s3 = self.gateway.s3_client()
        s3.put_object(Bucket=self.bucket, Key=key, Body=b"x", ContentEncoding="deflate, gzip")
        self.assertEqual(
            s3.head_object(Bucket=self.bucket, Key=key)["ContentEncoding"], "deflate, gzip"
        )

    def test_content_encoding_aws_chunked_removed(self) -> None:
        """Only the aws-chunked token is taken out of a streamed upload's Content-Encoding."""
        key = self.key("chunked")
        s3 = self.gateway.s3_client()
        # boto3 streams a file-like body as aws-chunked and adds the token to the header.
        with open(self.new_file(1000), "rb") as body:
            s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentEncoding="gzip,  br")
        self.assertEqual(
            s3.head_object(Bucket=self.bucket, Key=key)["ContentEncoding"], "gzip,  br"
        )

    def test_url_encoded_listing_space(self) -> None:
        """encoding-type=url gives a space as %20, and boto3 decodes the key right."""
        key = self.key("a b+c")
        s3 = self.gateway.s3_client()
        s3.put_object(Bucket=self.bucket, Key=key, Body=b"x")
        prefix = self.key("")
        query = f"list-type=2&encoding-type=url&prefix={prefix.replace('/', '%2F')}"
        answer = self.signed("GET", f"/{self.bucket}?{query}")
        self.assertEqual(answer.status, 200)
        keys = [k.text for k in ET.fromstring(answer.body).iter(f"{NS}Key")]  # noqa: S314
        self.assertEqual(keys, [f"{prefix}a%20b%2Bc"])
        # boto3 asks for encoding-type=url itself, and decodes what it gets.
        listed = s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        self.assertEqual([o["Key"] for o in listed["Contents"]], [key])

    def test_invalid_utf8_key_message(self) -> None:
        """A key that is not UTF-8 once percent-decoded is 400 InvalidURI, S3's message."""
        for method in ("PUT", "GET", "DELETE"):
            answer = self.signed(method, f"/{self.bucket}/bad-%C3%28-key", body=b"")
            self.assertError(answer, 400, "InvalidURI")
            message = ET.fromstring(answer.body).findtext("Message")  # noqa: S314
            self.assertEqual(message, "Couldn't parse the specified URI.")
