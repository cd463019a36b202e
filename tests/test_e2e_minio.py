"""End-to-end tests with minio-py against a listening gateway."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from datetime import timedelta

from minio import Minio
from minio.commonconfig import CopySource
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from tests.gateway import ClientTests, GatewayCase, MiB


class _MinioTests(ClientTests):
    """The minio-py tests, run in both modes."""

    def client(self) -> Minio:
        """Return ``Minio("127.0.0.1:PORT", secure=False)`` with the gateway's keys."""
        return Minio(
            f"127.0.0.1:{self.gateway.port}",
            access_key=self.gateway.access_key,
            secret_key=self.gateway.secret_key,
            secure=False,
        )

    def put(self, key: str, body: bytes = b"content", **extra: object) -> None:
        """Store ``body`` at ``key`` with put_object."""
        self.client().put_object(self.bucket, key, io.BytesIO(body), len(body), **extra)  # type: ignore[arg-type]

    def read(self, key: str, **extra: object) -> bytes:
        """Return the bytes get_object answers for ``key``."""
        response = self.client().get_object(self.bucket, key, **extra)  # type: ignore[arg-type]
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def round_trip(self, size: int) -> None:
        """Upload ``size`` random bytes with fput_object and download them with fget_object."""
        source = self.new_file(size)
        copy = self.scratch_path("download")
        minio = self.client()
        minio.fput_object(self.bucket, self.key("object"), source)
        minio.fget_object(self.bucket, self.key("object"), copy)
        self.assertSameFile(source, copy)

    def test_list_buckets(self) -> None:
        """list_buckets names the bucket and bucket_exists finds it."""
        minio = self.client()
        self.assertIn(self.bucket, [b.name for b in minio.list_buckets()])
        self.assertTrue(minio.bucket_exists(self.bucket))

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

    def test_list_objects_delimiter(self) -> None:
        """list_objects (not recursive) gives the sub-prefixes and the direct objects."""
        for name in ("x/1", "x/2", "y/1", "z"):
            self.put(self.key(name))
        prefix = self.key("")
        listed = list(self.client().list_objects(self.bucket, prefix=prefix))
        self.assertEqual(
            sorted((o.object_name, o.is_dir) for o in listed),
            [(prefix + "x/", True), (prefix + "y/", True), (prefix + "z", False)],
        )

    def test_list_objects_recursive(self) -> None:
        """list_objects with recursive=True lists every key under the prefix."""
        for name in ("x/1", "x/2", "z"):
            self.put(self.key(name))
        listed = list(self.client().list_objects(self.bucket, prefix=self.key(""), recursive=True))
        self.assertEqual(
            [o.object_name for o in listed], [self.key(n) for n in ("x/1", "x/2", "z")]
        )

    def test_metadata_round_trip(self) -> None:
        """User metadata and Content-Type come back from stat_object."""
        self.put(self.key("meta"), content_type="text/x-e2e", metadata={"colour": "blue"})
        stat = self.client().stat_object(self.bucket, self.key("meta"))
        self.assertEqual(stat.content_type, "text/x-e2e")
        assert stat.metadata is not None
        self.assertEqual(stat.metadata.get("x-amz-meta-colour"), "blue")

    def test_range_reads(self) -> None:
        """get_object with offset/length, and with a suffix Range header, returns those bytes."""
        self.put(self.key("ranged"), b"0123456789")
        self.assertEqual(self.read(self.key("ranged"), offset=2, length=4), b"2345")
        self.assertEqual(self.read(self.key("ranged"), offset=7), b"789")
        self.assertEqual(
            self.read(self.key("ranged"), request_headers={"Range": "bytes=-3"}), b"789"
        )

    def test_remove_object(self) -> None:
        """remove_object removes the object: stat_object then fails with NoSuchKey."""
        self.put(self.key("doomed"))
        minio = self.client()
        minio.remove_object(self.bucket, self.key("doomed"))
        with self.assertRaises(S3Error) as caught:
            minio.stat_object(self.bucket, self.key("doomed"))
        self.assertIn(caught.exception.code, ("NoSuchKey", "ResponseCode404"))

    def test_copy_object(self) -> None:
        """copy_object copies the bytes inside the bucket."""
        self.put(self.key("src"), b"copied bytes")
        self.client().copy_object(
            self.bucket, self.key("dst"), CopySource(self.bucket, self.key("src"))
        )
        self.assertEqual(self.read(self.key("dst")), b"copied bytes")

    def test_remove_objects(self) -> None:
        """remove_objects (DeleteObjects) removes every listed key and only those."""
        for name in ("d1", "d2", "keep"):
            self.put(self.key(name))
        minio = self.client()
        errors = list(
            minio.remove_objects(
                self.bucket, [DeleteObject(self.key("d1")), DeleteObject(self.key("d2"))]
            )
        )
        self.assertEqual(errors, [])
        listed = list(minio.list_objects(self.bucket, prefix=self.key(""), recursive=True))
        self.assertEqual([o.object_name for o in listed], [self.key("keep")])

    def test_presigned_get(self) -> None:
        """A presigned_get_object URL fetches the object with no other credentials."""
        self.put(self.key("shared"), b"presigned by minio")
        url = self.client().presigned_get_object(
            self.bucket, self.key("shared"), expires=timedelta(minutes=5)
        )
        try:
            with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310
                self.assertEqual(response.read(), b"presigned by minio")
        except urllib.error.HTTPError as e:
            self.fail(f"presigned GET answered {e.code}: {e.read()!r}")


class MinioLambgwTests(_MinioTests, GatewayCase):
    """minio-py against lambgw: the bucket is an order id."""

    mode = "lambgw"


class MinioS3gwTests(_MinioTests, GatewayCase):
    """minio-py against s3gw: ordinary buckets inside one order."""

    mode = "s3gw"

    def test_make_and_remove_bucket(self) -> None:
        """make_bucket makes a bucket that exists; remove_bucket removes it."""
        minio = self.client()
        minio.make_bucket("minio-made")
        self.assertTrue(minio.bucket_exists("minio-made"))
        minio.remove_bucket("minio-made")
        self.assertFalse(minio.bucket_exists("minio-made"))
