"""End-to-end tests of GetObjectAttributes with boto3, on the embedded network and over lambnet."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

from botocore.exceptions import ClientError

from tests.gateway import ClientTests, GatewayCase, MiB
from tests.test_e2e_lambnet import LambnetCase

ALL = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]


class _AttributesTests(ClientTests):
    """GetObjectAttributes through boto3, in both modes."""

    def attributes(self, key: str, names: list[str], **extra: Any) -> dict[str, Any]:
        """GetObjectAttributes of ``key``, without the response's metadata."""
        answer = self.gateway.s3_client().get_object_attributes(
            Bucket=self.bucket, Key=key, ObjectAttributes=names, **extra
        )
        answer.pop("ResponseMetadata")
        return dict(answer)

    def error(self, key: str, names: list[str], client: Any = None) -> tuple[str, int]:
        """The S3 error code and status of a GetObjectAttributes that must fail."""
        s3 = client or self.gateway.s3_client()
        with self.assertRaises(ClientError) as caught:
            s3.get_object_attributes(Bucket=self.bucket, Key=key, ObjectAttributes=names)
        response = caught.exception.response
        return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]

    def test_single_part_object(self) -> None:
        """A simple object's ETag, checksum, storage class and size; it has no parts."""
        body = os.urandom(1000)
        key = self.key("simple")
        self.gateway.s3_client().put_object(
            Bucket=self.bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256"
        )
        got = self.attributes(key, ALL)
        self.assertEqual(got["ETag"], hashlib.md5(body).hexdigest())
        sha256 = base64.b64encode(hashlib.sha256(body).digest()).decode()
        self.assertEqual(got["Checksum"]["ChecksumSHA256"], sha256)
        self.assertEqual((got["StorageClass"], got["ObjectSize"]), ("STANDARD", 1000))
        self.assertNotIn("ObjectParts", got)
        self.assertIn("LastModified", got)

    def test_only_what_is_asked(self) -> None:
        """Only the attributes named in x-amz-object-attributes come back."""
        key = self.key("some")
        self.gateway.s3_client().put_object(Bucket=self.bucket, Key=key, Body=b"abc")
        got = self.attributes(key, ["ObjectSize"])
        self.assertEqual(got["ObjectSize"], 3)
        self.assertFalse({"ETag", "StorageClass", "Checksum"} & set(got))

    def test_parts_in_pages(self) -> None:
        """A multipart object's parts are listed in pages of x-amz-max-parts."""
        s3 = self.gateway.s3_client()
        key = self.key("multipart")
        upload_id = s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        parts = []
        for number, size in ((1, 5 * MiB), (2, 5 * MiB), (3, 1234)):
            etag = s3.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=os.urandom(size),
            )["ETag"]
            parts.append({"PartNumber": number, "ETag": etag})
        s3.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        first = self.attributes(key, ["ObjectParts", "ObjectSize"], MaxParts=2)
        self.assertEqual(first["ObjectSize"], 10 * MiB + 1234)
        listed = first["ObjectParts"]
        self.assertEqual((listed["TotalPartsCount"], listed["IsTruncated"]), (3, True))
        self.assertEqual(
            [(p["PartNumber"], p["Size"]) for p in listed["Parts"]], [(1, 5 * MiB), (2, 5 * MiB)]
        )
        marker = listed["NextPartNumberMarker"]
        rest = self.attributes(key, ["ObjectParts"], PartNumberMarker=int(marker))["ObjectParts"]
        self.assertFalse(rest["IsTruncated"])
        self.assertEqual([(p["PartNumber"], p["Size"]) for p in rest["Parts"]], [(3, 1234)])
        etag = self.attributes(key, ["ETag"])["ETag"]
        self.assertTrue(etag.endswith("-3"), etag)

    def test_errors(self) -> None:
        """A missing key is NoSuchKey; an unknown attribute InvalidArgument; none InvalidRequest."""
        key = self.key("errors")
        self.assertEqual(self.error(key, ["ETag"]), ("NoSuchKey", 404))
        self.gateway.s3_client().put_object(Bucket=self.bucket, Key=key, Body=b"x")
        self.assertEqual(self.error(key, ["ETag", "Colour"]), ("InvalidArgument", 400))
        s3 = self.gateway.s3_client()

        def drop_attributes(request: Any, **_: Any) -> None:
            del request.headers["x-amz-object-attributes"]

        s3.meta.events.register("before-sign.s3.GetObjectAttributes", drop_attributes)
        self.assertEqual(self.error(key, ["ETag"], s3), ("InvalidRequest", 400))


class AttributesLambgwTests(_AttributesTests, GatewayCase):
    """GetObjectAttributes against lambgw."""

    mode = "lambgw"


class AttributesS3gwTests(_AttributesTests, GatewayCase):
    """GetObjectAttributes against s3gw."""

    mode = "s3gw"


class AttributesLambgwOverLambnetTests(_AttributesTests, LambnetCase):
    """GetObjectAttributes against lambgw over a lambnet node."""

    mode = "lambgw"


class AttributesS3gwOverLambnetTests(_AttributesTests, LambnetCase):
    """GetObjectAttributes against s3gw over a lambnet node."""

    mode = "s3gw"
