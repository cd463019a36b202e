"""Conditional writes and deletes with boto3, on the embedded network and over a lambnet node.

``If-None-Match: *`` and ``If-Match`` are checked by the network in the step that writes, so
they hold against concurrent writers; headers the gateway does not act upon are refused.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

import tests.test_e2e_lambnet as lambnet
from tests.gateway import ClientTests, GatewayCase, MiB


class _ConditionalTests(ClientTests):
    """The conditional write tests, run against each network."""

    def client(self) -> Any:
        """A boto3 client of the gateway."""
        return self.gateway.s3_client()

    def assertClientError(self, call: Any, status: int, code: str, **params: Any) -> ClientError:
        """``call(**params)`` fails with ``status`` and ``code``; the error."""
        with self.assertRaises(ClientError) as caught:
            call(Bucket=self.bucket, **params)
        error = caught.exception.response
        self.assertEqual(
            (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]), (status, code)
        )
        return caught.exception

    def put(self, key: str, body: bytes, **params: Any) -> str:
        """Put ``body`` at ``key``; its etag, quoted."""
        etag: str = self.client().put_object(Bucket=self.bucket, Key=key, Body=body, **params)[
            "ETag"
        ]
        return etag

    def body(self, key: str) -> bytes:
        """The bytes stored at ``key``."""
        got: bytes = self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return got

    def test_if_none_match_creates_once(self) -> None:
        """``If-None-Match: *`` stores a new key, then refuses to replace it (412)."""
        key = self.key("once")
        self.put(key, b"first", IfNoneMatch="*")
        self.assertClientError(
            self.client().put_object,
            412,
            "PreconditionFailed",
            Key=key,
            Body=b"second",
            IfNoneMatch="*",
        )
        self.assertEqual(self.body(key), b"first")

    def test_if_match_replaces_that_version(self) -> None:
        """``If-Match`` with the stored etag replaces it; with an old etag it is 412."""
        key = self.key("versioned")
        old = self.put(key, b"one")
        new = self.put(key, b"two", IfMatch=old)
        self.assertEqual(self.body(key), b"two")
        self.assertClientError(
            self.client().put_object, 412, "PreconditionFailed", Key=key, Body=b"3", IfMatch=old
        )
        self.assertEqual(self.body(key), b"two")
        self.put(key, b"four", IfMatch=new)
        self.assertEqual(self.body(key), b"four")

    def test_if_match_absent_key(self) -> None:
        """``If-Match`` where no object is stored is 404 NoSuchKey, and stores nothing."""
        key = self.key("absent")
        self.assertClientError(
            self.client().put_object, 404, "NoSuchKey", Key=key, Body=b"x", IfMatch='"abc"'
        )
        self.assertClientError(self.client().head_object, 404, "404", Key=key)

    def test_if_match_large_body(self) -> None:
        """A body streamed to the network obeys ``If-Match`` as a small one does."""
        key = self.key("large")
        self.put(key, b"small")
        with open(self.new_file(3 * MiB), "rb") as f:
            self.assertClientError(
                self.client().put_object,
                412,
                "PreconditionFailed",
                Key=key,
                Body=f.read(),
                IfMatch='"0123456789abcdef0123456789abcdef"',
            )
        self.assertEqual(self.body(key), b"small")

    def test_complete_multipart_conditions(self) -> None:
        """CompleteMultipartUpload obeys both conditions; a refused one leaves the upload open."""
        s3, key = self.client(), self.key("multipart")
        etag = self.put(key, b"before")
        upload_id = s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        part = s3.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"after"
        )
        parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
        common = {"Key": key, "UploadId": upload_id, "MultipartUpload": parts}
        self.assertClientError(
            s3.complete_multipart_upload, 412, "PreconditionFailed", IfNoneMatch="*", **common
        )
        self.assertClientError(
            s3.complete_multipart_upload, 412, "PreconditionFailed", IfMatch='"0"', **common
        )
        self.assertEqual(self.body(key), b"before")
        s3.complete_multipart_upload(Bucket=self.bucket, IfMatch=etag, **common)
        self.assertEqual(self.body(key), b"after")

    def test_delete_if_match(self) -> None:
        """DeleteObject with ``If-Match``: 412 for another etag, 404 with no object."""
        s3, key = self.client(), self.key("delete")
        etag = self.put(key, b"x")
        self.assertClientError(s3.delete_object, 412, "PreconditionFailed", Key=key, IfMatch='"0"')
        self.assertEqual(self.body(key), b"x")
        s3.delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
        self.assertClientError(s3.delete_object, 404, "NoSuchKey", Key=key, IfMatch=etag)

    def test_delete_objects_etags(self) -> None:
        """DeleteObjects deletes an object named with its ETag, and reports the others."""
        s3 = self.client()
        keys = [self.key(name) for name in ("same", "other", "absent")]
        etag = self.put(keys[0], b"x")
        self.put(keys[1], b"y")
        answer = s3.delete_objects(
            Bucket=self.bucket,
            Delete={
                "Objects": [
                    {"Key": keys[0], "ETag": etag},
                    {"Key": keys[1], "ETag": etag},
                    {"Key": keys[2], "ETag": etag},
                ]
            },
        )
        self.assertEqual([d["Key"] for d in answer["Deleted"]], [keys[0]])
        self.assertEqual(
            [(e["Key"], e["Code"]) for e in answer["Errors"]],
            [(keys[1], "PreconditionFailed"), (keys[2], "NoSuchKey")],
        )
        self.assertEqual(self.body(keys[1]), b"y")

    def test_unsupported_headers_refused(self) -> None:
        """Headers the gateway does not act upon are 501 NotImplemented, naming them."""
        s3, key = self.client(), self.key("refused")
        for params, named in (
            ({"ServerSideEncryption": "AES256"}, "x-amz-server-side-encryption"),
            ({"StorageClass": "GLACIER"}, "GLACIER"),
            ({"WebsiteRedirectLocation": "/x"}, "x-amz-website-redirect-location"),
        ):
            error = self.assertClientError(
                s3.put_object, 501, "NotImplemented", Key=key, Body=b"x", **params
            )
            self.assertIn(named, error.response["Error"]["Message"])
        self.assertClientError(s3.head_object, 404, "404", Key=key)
        self.put(key, b"x")
        self.assertClientError(
            s3.copy_object,
            501,
            "NotImplemented",
            Key=key + "-copy",
            CopySource={"Bucket": self.bucket, "Key": key},
            IfNoneMatch="*",
        )


class ConditionalLambgwTests(_ConditionalTests, GatewayCase):
    """Conditional writes on the embedded network."""

    mode = "lambgw"


class ConditionalOverLambnetTests(_ConditionalTests, lambnet.LambnetCase):
    """Conditional writes checked by a lambnet node."""

    mode = "lambgw"
