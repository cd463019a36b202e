"""What real clients send that S3 answers in its own way: header bytes, listings, URIs, ACLs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from botocore.exceptions import ClientError
from botocore.handlers import validate_ascii_metadata

import tests.test_e2e_errors as errors
import tests.test_e2e_lambnet as lambnet
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

    def test_invalid_copy_source_encoding(self) -> None:
        """A copy source that is not UTF-8 once percent-decoded is 400 InvalidArgument."""
        headers = {"x-amz-copy-source": f"/{self.bucket}/bad-%FF-source"}
        answer = self.signed("PUT", self.path(self.key("copy")), headers)
        self.assertError(answer, 400, "InvalidArgument")
        message = ET.fromstring(answer.body).findtext("Message")  # noqa: S314
        self.assertEqual(message, "Invalid copy source encoding")

    def test_private_acls_accepted(self) -> None:
        """PutObjectAcl and PutBucketAcl accept private ACLs, canned, as grants or as a body."""
        s3, key = self.gateway.s3_client(), self.key("acl")
        s3.put_object(Bucket=self.bucket, Key=key, Body=b"x", ACL="private")
        s3.put_object_acl(Bucket=self.bucket, Key=key, ACL="private")
        s3.put_bucket_acl(Bucket=self.bucket, ACL="private")
        policy = s3.get_object_acl(Bucket=self.bucket, Key=key)
        owner = policy["Owner"]["ID"]
        self.assertEqual(
            [(g["Grantee"]["ID"], g["Permission"]) for g in policy["Grants"]],
            [(owner, "FULL_CONTROL")],
        )
        del policy["ResponseMetadata"]
        s3.put_object_acl(Bucket=self.bucket, Key=key, AccessControlPolicy=policy)
        s3.put_bucket_acl(Bucket=self.bucket, GrantFullControl=f'id="{owner}"')
        bucket_policy = s3.get_bucket_acl(Bucket=self.bucket)
        self.assertEqual(bucket_policy["Grants"][0]["Grantee"]["ID"], owner)

    def test_opening_acls_refused(self) -> None:
        """ACLs that would let others in are 501 NotImplemented, on the ACL calls and on PUT."""
        s3, key = self.gateway.s3_client(), self.key("public")
        s3.put_object(Bucket=self.bucket, Key=key, Body=b"x")
        everyone = 'uri="http://acs.amazonaws.com/groups/global/AllUsers"'
        for call in (
            lambda: s3.put_object_acl(Bucket=self.bucket, Key=key, ACL="public-read"),
            lambda: s3.put_bucket_acl(Bucket=self.bucket, GrantRead=everyone),
            lambda: s3.put_object(Bucket=self.bucket, Key=key, Body=b"y", ACL="public-read"),
        ):
            with self.assertRaises(ClientError) as caught:
                call()
            self.assertEqual(caught.exception.response["Error"]["Code"], "NotImplemented")
        self.assertEqual(s3.get_object(Bucket=self.bucket, Key=key)["Body"].read(), b"x")

    def test_list_buckets_pages(self) -> None:
        """ListBuckets pages the orders with max-buckets and continuation tokens, by name."""
        s3 = self.gateway.s3_client()
        for _ in range(2):
            self.gateway.buy_order()
        orders = sorted(o["order_id"] for o in self.gateway.orders())
        first = s3.list_buckets(MaxBuckets=2)
        self.assertEqual([b["Name"] for b in first["Buckets"]], orders[:2])
        rest = s3.list_buckets(MaxBuckets=2, ContinuationToken=first["ContinuationToken"])
        self.assertEqual([b["Name"] for b in rest["Buckets"]], orders[2:])
        self.assertNotIn("ContinuationToken", rest)
        pages = s3.get_paginator("list_buckets").paginate(PaginationConfig={"PageSize": 1})
        self.assertEqual([b["Name"] for page in pages for b in page["Buckets"]], orders)
        only = s3.list_buckets(Prefix=orders[1][:12])
        self.assertEqual(
            ([b["Name"] for b in only["Buckets"]], only["Prefix"]), ([orders[1]], orders[1][:12])
        )

    def test_list_buckets_bad_arguments(self) -> None:
        """A max-buckets outside 1..10000 or a made-up token is 400 InvalidArgument."""
        for query in (
            "max-buckets=0",
            "max-buckets=10001",
            "max-buckets=x",
            "continuation-token=%25",
        ):
            self.assertError(self.signed("GET", f"/?{query}"), 400, "InvalidArgument")


class CompatS3gwTests(GatewayCase):
    """ListBuckets of the buckets in s3gw's order."""

    mode = "s3gw"

    def test_list_buckets_pages(self) -> None:
        """Buckets are filtered by prefix and paged with max-buckets, by name."""
        s3 = self.gateway.s3_client()
        for name in ("page-c", "page-a", "other", "page-b"):
            s3.create_bucket(Bucket=name)
        first = s3.list_buckets(Prefix="page-", MaxBuckets=2)
        self.assertEqual([b["Name"] for b in first["Buckets"]], ["page-a", "page-b"])
        self.assertEqual(first["Prefix"], "page-")
        rest = s3.list_buckets(
            Prefix="page-", MaxBuckets=2, ContinuationToken=first["ContinuationToken"]
        )
        self.assertEqual([b["Name"] for b in rest["Buckets"]], ["page-c"])
        self.assertNotIn("ContinuationToken", rest)
        everything = [b["Name"] for b in s3.list_buckets()["Buckets"]]
        self.assertEqual(everything, sorted(everything))
        self.assertIn("other", everything)

    def test_create_bucket_acl(self) -> None:
        """CreateBucket takes a private ACL; one that opens the bucket is 501 NotImplemented."""
        s3 = self.gateway.s3_client()
        s3.create_bucket(Bucket="acl-private", ACL="private")
        with self.assertRaises(ClientError) as caught:
            s3.create_bucket(Bucket="acl-public", ACL="public-read")
        self.assertEqual(caught.exception.response["Error"]["Code"], "NotImplemented")
        self.assertNotIn("acl-public", [b["Name"] for b in s3.list_buckets()["Buckets"]])


class CompatOverLambnetTests(CompatTests, lambnet.LambnetCase):
    """The same, with a lambnet node storing the objects (metadata travels to it and back)."""

    mode = "lambgw"
