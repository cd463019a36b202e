"""End-to-end tests of object tagging with boto3, on the embedded network and over lambnet."""

from __future__ import annotations

import os
from typing import Any

from botocore.exceptions import ClientError

from tests.gateway import ClientTests, GatewayCase, MiB
from tests.test_e2e_lambnet import LambnetCase


def _tags(tag_set: list[dict[str, str]]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in tag_set}


def _tag_set(tags: dict[str, str]) -> dict[str, Any]:
    return {"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}


class _TaggingTests(ClientTests):
    """Object tagging through boto3, in both modes."""

    def tags(self, key: str) -> dict[str, str]:
        """The tags of ``key``, as GetObjectTagging gives them."""
        answer = self.gateway.s3_client().get_object_tagging(Bucket=self.bucket, Key=key)
        return _tags(answer["TagSet"])

    def error(self, call: Any, **kwargs: Any) -> tuple[str, int]:
        """The S3 error code and status of a call that must fail."""
        with self.assertRaises(ClientError) as caught:
            call(Bucket=self.bucket, **kwargs)
        response = caught.exception.response
        return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]

    def test_put_object_with_tags(self) -> None:
        """Tags given with PutObject are returned, and counted on GET and HEAD."""
        s3 = self.gateway.s3_client()
        key = self.key("tagged")
        s3.put_object(Bucket=self.bucket, Key=key, Body=b"x", Tagging="a=1&b%20c=d%2Fe&caf%C3%A9=")
        self.assertEqual(self.tags(key), {"a": "1", "b c": "d/e", "café": ""})
        self.assertEqual(s3.get_object(Bucket=self.bucket, Key=key)["TagCount"], 3)
        head = s3.head_object(Bucket=self.bucket, Key=key)
        self.assertEqual(head["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"], "3")

    def test_streamed_object_with_tags(self) -> None:
        """A large object streamed to the network keeps its tags."""
        s3 = self.gateway.s3_client()
        key = self.key("large")
        with open(self.new_file(3 * MiB), "rb") as body:
            s3.put_object(Bucket=self.bucket, Key=key, Body=body, Tagging="size=large")
        self.assertEqual(self.tags(key), {"size": "large"})

    def test_untagged_object(self) -> None:
        """An object without tags has an empty tag set and no tag count."""
        s3 = self.gateway.s3_client()
        key = self.key("plain")
        s3.put_object(Bucket=self.bucket, Key=key, Body=b"x")
        self.assertEqual(self.tags(key), {})
        self.assertNotIn("TagCount", s3.get_object(Bucket=self.bucket, Key=key))

    def test_put_and_delete_tagging(self) -> None:
        """PutObjectTagging replaces the set; DeleteObjectTagging empties it; bytes untouched."""
        s3 = self.gateway.s3_client()
        key = self.key("retag")
        etag = s3.put_object(Bucket=self.bucket, Key=key, Body=b"body", Tagging="old=1")["ETag"]
        s3.put_object_tagging(
            Bucket=self.bucket, Key=key, Tagging=_tag_set({"new": "2", "other": "3"})
        )
        self.assertEqual(self.tags(key), {"new": "2", "other": "3"})
        deleted = s3.delete_object_tagging(Bucket=self.bucket, Key=key)
        self.assertEqual(deleted["ResponseMetadata"]["HTTPStatusCode"], 204)
        self.assertEqual(self.tags(key), {})
        got = s3.get_object(Bucket=self.bucket, Key=key)
        self.assertEqual((got["ETag"], got["Body"].read()), (etag, b"body"))

    def test_copy_tagging_directive(self) -> None:
        """A copy keeps the source's tags, or takes x-amz-tagging with REPLACE."""
        s3 = self.gateway.s3_client()
        source = self.key("source")
        s3.put_object(Bucket=self.bucket, Key=source, Body=b"x", Tagging="k=v")
        copy_source = {"Bucket": self.bucket, "Key": source}
        s3.copy_object(Bucket=self.bucket, Key=self.key("kept"), CopySource=copy_source)
        self.assertEqual(self.tags(self.key("kept")), {"k": "v"})
        s3.copy_object(
            Bucket=self.bucket,
            Key=self.key("replaced"),
            CopySource=copy_source,
            TaggingDirective="REPLACE",
            Tagging="n=1",
        )
        self.assertEqual(self.tags(self.key("replaced")), {"n": "1"})
        s3.copy_object(
            Bucket=self.bucket,
            Key=self.key("cleared"),
            CopySource=copy_source,
            TaggingDirective="REPLACE",
        )
        self.assertEqual(self.tags(self.key("cleared")), {})

    def test_multipart_upload_with_tags(self) -> None:
        """Tags given at CreateMultipartUpload are the completed object's."""
        s3 = self.gateway.s3_client()
        key = self.key("multipart")
        upload = s3.create_multipart_upload(Bucket=self.bucket, Key=key, Tagging="mp=yes")
        upload_id = upload["UploadId"]
        part = s3.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=os.urandom(1024)
        )
        s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        )
        self.assertEqual(self.tags(key), {"mp": "yes"})

    def test_limits(self) -> None:
        """Eleven tags, long keys and values and duplicate keys earn S3's errors."""
        s3 = self.gateway.s3_client()
        key = self.key("limits")
        s3.put_object(Bucket=self.bucket, Key=key, Body=b"x")
        eleven = {f"k{i}": "v" for i in range(11)}
        put_tagging = s3.put_object_tagging
        self.assertEqual(
            self.error(put_tagging, Key=key, Tagging=_tag_set(eleven)), ("BadRequest", 400)
        )
        for tags in ({"k" * 129: "v"}, {"k": "v" * 257}, {"aws:k": "v"}):
            self.assertEqual(
                self.error(put_tagging, Key=key, Tagging=_tag_set(tags)), ("InvalidTag", 400)
            )
        duplicate = {"TagSet": [{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}]}
        self.assertEqual(self.error(put_tagging, Key=key, Tagging=duplicate), ("InvalidTag", 400))
        self.assertEqual(
            self.error(s3.put_object, Key=key, Body=b"y", Tagging="a=1&a=2"),
            ("InvalidArgument", 400),
        )
        self.assertEqual(
            self.error(
                s3.put_object, Key=key, Body=b"y", Tagging="&".join(f"k{i}=v" for i in range(11))
            ),
            ("BadRequest", 400),
        )
        self.assertEqual(self.tags(key), {})
        self.assertEqual(s3.get_object(Bucket=self.bucket, Key=key)["Body"].read(), b"x")

    def test_missing_object(self) -> None:
        """Tagging calls on a missing key are NoSuchKey."""
        s3 = self.gateway.s3_client()
        key = self.key("missing")
        self.assertEqual(self.error(s3.get_object_tagging, Key=key), ("NoSuchKey", 404))
        self.assertEqual(
            self.error(s3.put_object_tagging, Key=key, Tagging=_tag_set({"k": "v"})),
            ("NoSuchKey", 404),
        )
        self.assertEqual(self.error(s3.delete_object_tagging, Key=key), ("NoSuchKey", 404))


class TaggingLambgwTests(_TaggingTests, GatewayCase):
    """Object tagging against lambgw."""

    mode = "lambgw"


class TaggingS3gwTests(_TaggingTests, GatewayCase):
    """Object tagging against s3gw."""

    mode = "s3gw"


class TaggingLambgwOverLambnetTests(_TaggingTests, LambnetCase):
    """Object tagging against lambgw over a lambnet node."""

    mode = "lambgw"


class TaggingS3gwOverLambnetTests(_TaggingTests, LambnetCase):
    """Object tagging against s3gw over a lambnet node."""

    mode = "s3gw"
