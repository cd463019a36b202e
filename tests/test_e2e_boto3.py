"""End-to-end tests with boto3 (default settings, and the seed's script) against a gateway."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import boto3
from botocore.client import Config
from botocore.exceptions import ClientError
from twisted.trial.unittest import SkipTest

from tests.gateway import ClientTests, GatewayCase, MiB

#: The seed's boto3 example, word for word but for the endpoint, bucket and file names and
#: ``region_name``: the seed's ``region_name=''`` is refused by boto3 itself since 2023 (its
#: endpoint rules reject an empty region before any request is sent), so it names us-east-1.
SEED_SCRIPT = """\
#!/usr/bin/env python
# coding: utf-8

\"\"\"
refer https://docs.min.io/docs/how-to-use-aws-sdk-for-python-with-minio-server.html
\"\"\"

import boto3
from botocore.client import Config
from boto3.s3.transfer import TransferConfig

s3 = boto3.resource('s3',
                    endpoint_url='http://localhost:{port}',
                    aws_access_key_id='accesskey',
                    aws_secret_access_key='secretkey',
                    config=Config(signature_version='s3v4'),
                    region_name='us-east-1')


# create bucket
s3.Bucket('{bucket}').create()

# list bucket
print("buckets:", [bucket.name for bucket in s3.buckets.all()])

# upload file
# https://boto3.amazonaws.com/v1/documentation/api/latest/guide/s3.html#multipart-transfers
MB = 2 ** 20
cfg = TransferConfig(multipart_threshold=64*MB)
s3.Bucket('{bucket}').upload_file('{source}','images/your-file', Config=cfg)

# list file
print("objects in bucket: {bucket}", [obj.key for obj in s3.Bucket('{bucket}').objects.filter(Prefix='images/')])

# download file
s3.Bucket('{bucket}').download_file('images/your-file', '{destination}')
"""  # noqa: E501


def run_seed_script(directory: str, port: int, bucket: str, source: str, destination: str) -> str:
    """Run the seed's boto3 example as a program of its own; what it printed."""
    script = os.path.join(directory, "seed_boto3.py")
    with open(script, "w") as f:
        f.write(
            SEED_SCRIPT.format(port=port, bucket=bucket, source=source, destination=destination)
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run(
        [sys.executable, script], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    os.remove(script)
    if done.returncode != 0:
        raise AssertionError(f"the seed's boto3 script failed:\n{done.stderr}")
    return done.stdout


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``url`` with urllib; the status and the body (error statuses included)."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class _Boto3Tests(ClientTests):
    """The boto3 tests, run in both modes."""

    def client(self, **config: Any) -> Any:
        """Return a boto3 S3 client with default settings (``config`` for botocore's Config)."""
        session = boto3.session.Session(
            aws_access_key_id=self.gateway.access_key,
            aws_secret_access_key=self.gateway.secret_key,
            region_name="us-east-1",
        )
        return session.client(
            "s3",
            endpoint_url=self.gateway.endpoint,
            config=Config(**config) if config else None,
        )

    def put(self, key: str, body: bytes = b"content", **extra: Any) -> Any:
        """Store ``body`` at ``key`` with put_object."""
        return self.client().put_object(Bucket=self.bucket, Key=key, Body=body, **extra)

    def round_trip(self, size: int) -> None:
        """Upload ``size`` random bytes with upload_file and download them with download_file."""
        source = self.new_file(size)
        copy = self.scratch_path("download")
        s3 = self.client()
        s3.upload_file(source, self.bucket, self.key("object"))
        s3.download_file(self.bucket, self.key("object"), copy)
        self.assertSameFile(source, copy)

    def test_list_buckets(self) -> None:
        """list_buckets names the bucket."""
        names = [b["Name"] for b in self.client().list_buckets()["Buckets"]]
        self.assertIn(self.bucket, names)

    def test_head_bucket(self) -> None:
        """head_bucket of the bucket succeeds."""
        answer = self.client().head_bucket(Bucket=self.bucket)
        self.assertEqual(answer["ResponseMetadata"]["HTTPStatusCode"], 200)

    def test_round_trip_empty(self) -> None:
        """A 0-byte file comes back byte-identical."""
        self.round_trip(0)

    def test_round_trip_one_byte(self) -> None:
        """A 1-byte file comes back byte-identical."""
        self.round_trip(1)

    def test_round_trip_5mib(self) -> None:
        """A 5 MiB file comes back byte-identical."""
        self.round_trip(5 * MiB)

    def test_round_trip_100mib_multipart(self) -> None:
        """A 100 MiB file, uploaded in parts, comes back byte-identical."""
        self.round_trip(100 * MiB)

    def test_put_object_etag_is_md5(self) -> None:
        """put_object answers the MD5 of the body as ETag, and get_object returns the body."""
        body = b"hello, lambda"
        answer = self.put(self.key("hello"), body)
        self.assertEqual(answer["ETag"], f'"{hashlib.md5(body).hexdigest()}"')
        got = self.client().get_object(Bucket=self.bucket, Key=self.key("hello"))
        self.assertEqual(got["Body"].read(), body)
        self.assertEqual(got["ETag"], answer["ETag"])

    def test_list_objects_v2_delimiter(self) -> None:
        """list_objects_v2 with a delimiter gives CommonPrefixes and the direct objects."""
        for name in ("x/1", "x/2", "y/1", "z"):
            self.put(self.key(name))
        prefix = self.key("")
        page = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix, Delimiter="/")
        self.assertEqual(
            [p["Prefix"] for p in page["CommonPrefixes"]], [prefix + "x/", prefix + "y/"]
        )
        self.assertEqual([o["Key"] for o in page["Contents"]], [prefix + "z"])

    def test_list_objects_v1_delimiter(self) -> None:
        """list_objects (v1) with a delimiter gives CommonPrefixes and the direct objects."""
        for name in ("x/1", "y/1", "z"):
            self.put(self.key(name))
        prefix = self.key("")
        page = self.client().list_objects(Bucket=self.bucket, Prefix=prefix, Delimiter="/")
        self.assertEqual(
            [p["Prefix"] for p in page["CommonPrefixes"]], [prefix + "x/", prefix + "y/"]
        )
        self.assertEqual([o["Key"] for o in page["Contents"]], [prefix + "z"])

    def test_list_pages(self) -> None:
        """Paging list_objects_v2 by two keys returns every key once, in byte order."""
        names = ["a", "b", "b/c", "c", "é", "z"]
        for name in names:
            self.put(self.key(name))
        paginator = self.client().get_paginator("list_objects_v2")
        pages = list(paginator.paginate(Bucket=self.bucket, Prefix=self.key(""), MaxKeys=2))
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        self.assertEqual(keys, [self.key(n) for n in sorted(names, key=str.encode)])
        self.assertEqual(len(pages), 3)

    def test_metadata_round_trip(self) -> None:
        """User metadata and Content-Type come back from head_object and get_object."""
        key = self.key("meta")
        self.put(key, Metadata={"colour": "blue"}, ContentType="text/x-e2e")
        s3 = self.client()
        for answer in (
            s3.head_object(Bucket=self.bucket, Key=key),
            s3.get_object(Bucket=self.bucket, Key=key),
        ):
            self.assertEqual(answer["Metadata"], {"colour": "blue"})
            self.assertEqual(answer["ContentType"], "text/x-e2e")

    def test_range_reads(self) -> None:
        """get_object with Range returns the asked bytes and Content-Range, suffixes included."""
        key = self.key("ranged")
        self.put(key, b"0123456789")
        s3 = self.client()
        for spec, body, content_range in (
            ("bytes=2-5", b"2345", "bytes 2-5/10"),
            ("bytes=-3", b"789", "bytes 7-9/10"),
            ("bytes=7-", b"789", "bytes 7-9/10"),
        ):
            answer = s3.get_object(Bucket=self.bucket, Key=key, Range=spec)
            self.assertEqual(answer["Body"].read(), body, spec)
            self.assertEqual(answer["ContentRange"], content_range, spec)
            self.assertEqual(answer["ResponseMetadata"]["HTTPStatusCode"], 206)

    def test_delete_object(self) -> None:
        """delete_object removes the object: get_object then fails with NoSuchKey."""
        key = self.key("doomed")
        self.put(key)
        s3 = self.client()
        s3.delete_object(Bucket=self.bucket, Key=key)
        with self.assertRaises(ClientError) as caught:
            s3.get_object(Bucket=self.bucket, Key=key)
        self.assertEqual(caught.exception.response["Error"]["Code"], "NoSuchKey")

    def test_copy_object(self) -> None:
        """copy_object copies bytes and metadata inside the bucket."""
        self.put(self.key("src"), b"copied bytes", Metadata={"k": "v"})
        s3 = self.client()
        s3.copy_object(
            Bucket=self.bucket,
            Key=self.key("dst"),
            CopySource={"Bucket": self.bucket, "Key": self.key("src")},
        )
        got = s3.get_object(Bucket=self.bucket, Key=self.key("dst"))
        self.assertEqual(got["Body"].read(), b"copied bytes")
        self.assertEqual(got["Metadata"], {"k": "v"})

    def test_copy_object_replace_metadata(self) -> None:
        """copy_object with MetadataDirective REPLACE stores the new metadata."""
        self.put(self.key("src"), b"bytes", Metadata={"old": "1"})
        s3 = self.client()
        s3.copy_object(
            Bucket=self.bucket,
            Key=self.key("dst"),
            CopySource={"Bucket": self.bucket, "Key": self.key("src")},
            MetadataDirective="REPLACE",
            Metadata={"new": "2"},
            ContentType="text/plain",
        )
        head = s3.head_object(Bucket=self.bucket, Key=self.key("dst"))
        self.assertEqual(head["Metadata"], {"new": "2"})
        self.assertEqual(head["ContentType"], "text/plain")

    def test_delete_objects(self) -> None:
        """delete_objects removes every listed key and only those."""
        for name in ("d1", "d2", "keep"):
            self.put(self.key(name))
        s3 = self.client()
        answer = s3.delete_objects(
            Bucket=self.bucket,
            Delete={"Objects": [{"Key": self.key("d1")}, {"Key": self.key("d2")}]},
        )
        self.assertEqual(
            sorted(d["Key"] for d in answer["Deleted"]), [self.key("d1"), self.key("d2")]
        )
        listing = s3.list_objects_v2(Bucket=self.bucket, Prefix=self.key(""))
        self.assertEqual([o["Key"] for o in listing["Contents"]], [self.key("keep")])

    def test_presigned_get_sigv4(self) -> None:
        """A SigV4 presigned GET URL fetches the object with no other credentials."""
        self.put(self.key("shared"), b"presigned v4")
        url = self.client(signature_version="s3v4").generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key("shared")}, ExpiresIn=60
        )
        self.assertIn("X-Amz-Signature=", url)
        self.assertEqual(http_get(url), (200, b"presigned v4"))

    def test_presigned_get_default(self) -> None:
        """A presigned GET URL made with boto3's default settings fetches the object."""
        self.put(self.key("shared"), b"presigned default")
        url = self.client().generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key("shared")}, ExpiresIn=60
        )
        self.assertEqual(http_get(url), (200, b"presigned default"))

    def test_presigned_get_tampered(self) -> None:
        """A presigned GET URL for one key does not open another."""
        if self.gateway.is_moto:
            raise SkipTest("moto does not check signatures")
        self.put(self.key("shared"), b"a")
        self.put(self.key("secret"), b"b")
        url = self.client(signature_version="s3v4").generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key("shared")}, ExpiresIn=60
        )
        status, _ = http_get(url.replace("/shared?", "/secret?"))
        self.assertEqual(status, 403)

    def test_get_if_none_match_not_modified(self) -> None:
        """get_object with If-None-Match of the current ETag is answered 304."""
        etag = self.put(self.key("etagged"))["ETag"]
        with self.assertRaises(ClientError) as caught:
            self.client().get_object(Bucket=self.bucket, Key=self.key("etagged"), IfNoneMatch=etag)
        self.assertEqual(caught.exception.response["ResponseMetadata"]["HTTPStatusCode"], 304)

    def test_get_if_match_mismatch(self) -> None:
        """get_object with If-Match of another ETag fails with 412 PreconditionFailed."""
        self.put(self.key("etagged"))
        with self.assertRaises(ClientError) as caught:
            self.client().get_object(Bucket=self.bucket, Key=self.key("etagged"), IfMatch='"0000"')
        self.assertEqual(caught.exception.response["Error"]["Code"], "PreconditionFailed")

    def test_last_modified_is_recent(self) -> None:
        """head_object's LastModified is the time of the upload."""
        self.put(self.key("timed"))
        head = self.client().head_object(Bucket=self.bucket, Key=self.key("timed"))
        self.assertLess(abs(head["LastModified"].timestamp() - time.time()), 120)


class Boto3LambgwTests(_Boto3Tests, GatewayCase):
    """boto3 against lambgw: the bucket is an order id."""

    mode = "lambgw"

    def test_seed_script(self) -> None:
        """The seed's boto3 script runs with the order id as its bucket."""
        source = self.new_file(MiB, "your-file")
        copy = self.scratch_path("newfile")
        out = run_seed_script(self.scratch, self.gateway.port, self.bucket, source, copy)
        # Buckets are listed by name: other tests' orders may come first.
        self.assertIn(f"'{self.bucket}'", out.splitlines()[0])
        self.assertIn(f"objects in bucket: {self.bucket} ['images/your-file']", out)
        self.assertSameFile(source, copy)

    def test_copy_across_orders(self) -> None:
        """copy_object from one order into another of the account copies the bytes."""
        other = self.gateway.buy_order()
        self.put(self.key("src"), b"travelling bytes")
        s3 = self.client()
        s3.copy_object(
            Bucket=other,
            Key=self.key("dst"),
            CopySource={"Bucket": self.bucket, "Key": self.key("src")},
        )
        got = s3.get_object(Bucket=other, Key=self.key("dst"))
        self.assertEqual(got["Body"].read(), b"travelling bytes")


class Boto3S3gwTests(_Boto3Tests, GatewayCase):
    """boto3 against s3gw: ordinary buckets inside one order."""

    mode = "s3gw"

    def test_seed_script(self) -> None:
        """The seed's boto3 script runs verbatim, creating its bucket."""
        source = self.new_file(MiB, "your-file")
        copy = self.scratch_path("newfile")
        out = run_seed_script(self.scratch, self.gateway.port, "awstest", source, copy)
        self.assertIn("'awstest'", out.splitlines()[0])
        self.assertIn("objects in bucket: awstest ['images/your-file']", out)
        self.assertSameFile(source, copy)

    def test_create_and_delete_bucket(self) -> None:
        """create_bucket makes a listed bucket; delete_bucket of the emptied bucket removes it."""
        s3 = self.client()
        s3.create_bucket(Bucket="made-by-boto3")
        self.assertIn("made-by-boto3", [b["Name"] for b in s3.list_buckets()["Buckets"]])
        s3.put_object(Bucket="made-by-boto3", Key="k", Body=b"v")
        s3.delete_object(Bucket="made-by-boto3", Key="k")
        s3.delete_bucket(Bucket="made-by-boto3")
        self.assertNotIn("made-by-boto3", [b["Name"] for b in s3.list_buckets()["Buckets"]])

    def test_delete_non_empty_bucket_refused(self) -> None:
        """delete_bucket of a bucket with objects fails with BucketNotEmpty."""
        self.put(self.key("resident"))
        with self.assertRaises(ClientError) as caught:
            self.client().delete_bucket(Bucket=self.bucket)
        self.assertEqual(caught.exception.response["Error"]["Code"], "BucketNotEmpty")

    def test_copy_across_buckets(self) -> None:
        """copy_object from one bucket into another of the order copies the bytes."""
        s3 = self.client()
        s3.create_bucket(Bucket="copy-target")
        self.put(self.key("src"), b"travelling bytes")
        s3.copy_object(
            Bucket="copy-target",
            Key="dst",
            CopySource={"Bucket": self.bucket, "Key": self.key("src")},
        )
        got = s3.get_object(Bucket="copy-target", Key="dst")
        self.assertEqual(got["Body"].read(), b"travelling bytes")
