"""End-to-end tests of multipart uploads against real gateway processes.

aws cli, boto3, s3cmd and minio-py upload above their multipart thresholds in both modes;
the seed's listing commands answer as AWS does; bad input gets the S3 error; an upload
survives ``kill -9`` of its gateway; two gateways sharing one directory serve one upload.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from twisted.trial.unittest import SynchronousTestCase

from tests.gateway import (
    ClientTests,
    GatewayCase,
    GatewayProcess,
    MiB,
    file_sha256,
    make_file,
    start_lambgw,
)

#: The size of the upload interrupted by ``kill -9`` (``LAMBGW_E2E_KILL_MIB`` to change it).
KILL_TEST_SIZE = int(os.environ.get("LAMBGW_E2E_KILL_MIB", "1024")) * MiB


def aws_env(config_dir: str, *settings: str) -> dict[str, str]:
    """The environment of an aws cli configured with the gateway's keys and ``settings``.

    ``settings`` are lines of the ``[default]`` section of the config file.
    """
    os.makedirs(config_dir, exist_ok=True)
    with open(os.path.join(config_dir, "config"), "w") as f:
        f.write("[default]\nregion = us-east-1\n" + "".join(s + "\n" for s in settings))
    with open(os.path.join(config_dir, "credentials"), "w") as f:
        f.write("[default]\naws_access_key_id = accesskey\naws_secret_access_key = secretkey\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = os.path.join(config_dir, "config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.path.join(config_dir, "credentials")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def aws(env: dict[str, str], endpoint: str, *args: str) -> str:
    """Run the aws cli; its stdout (raises with its stderr if it fails)."""
    done = subprocess.run(
        [sys.executable, "-m", "awscli", "--endpoint-url", endpoint, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"aws {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def error_code(call: Any, *args: Any, **kwargs: Any) -> str:
    """The S3 error code a boto3 call fails with."""
    try:
        call(*args, **kwargs)
    except ClientError as e:
        return str(e.response["Error"]["Code"])
    raise AssertionError("the call succeeded")


class _MultipartClientTests(ClientTests):
    """Multipart uploads by every client, run in both modes."""

    def aws(self, *args: str, settings: tuple[str, ...] = ()) -> str:
        """Run the aws cli against the gateway with the given config settings."""
        env = aws_env(os.path.join(self.root, "aws-" + self._testMethodName), *settings)
        return aws(env, self.gateway.endpoint, *args)

    def check_download(self, source: str, key: str, parts: int) -> None:
        """The object at ``key`` is ``source`` byte for byte, made of ``parts`` parts."""
        copy = self.scratch_path("download")
        client = self.gateway.s3_client()
        client.download_file(self.bucket, key, copy)
        self.assertSameFile(source, copy)
        head = client.head_object(Bucket=self.bucket, Key=key)
        self.assertTrue(head["ETag"].endswith(f'-{parts}"'), head["ETag"])

    def test_awscli_default_threshold(self) -> None:
        """Aws s3 cp of a 20 MiB file goes up in 8 MiB parts and comes back the same."""
        source = self.new_file(20 * MiB)
        key = self.key("cp")
        self.aws("s3", "cp", "--only-show-errors", source, f"s3://{self.bucket}/{key}")
        self.check_download(source, key, 3)

    def test_awscli_64mb_threshold(self) -> None:
        """With the seed's multipart_threshold of 64MB, a 72 MiB file goes up in parts."""
        source = self.new_file(72 * MiB)
        key = self.key("cp64")
        settings = ("s3 =\n  multipart_threshold = 64MB",)
        self.aws(
            "s3", "cp", "--only-show-errors", source, f"s3://{self.bucket}/{key}", settings=settings
        )
        self.check_download(source, key, 9)

    def test_awscli_sync(self) -> None:
        """Aws s3 sync of a folder with a file above the threshold uploads it in parts."""
        folder = os.path.join(self.scratch, "sync-" + self._testMethodName)
        os.makedirs(os.path.join(folder, "sub"))
        self.addCleanup(shutil.rmtree, folder, True)
        big = make_file(folder, "big", 17 * MiB)
        make_file(os.path.join(folder, "sub"), "small", 1000)
        prefix = self.key("sync")
        self.aws("s3", "sync", "--only-show-errors", folder, f"s3://{self.bucket}/{prefix}/")
        self.check_download(big, f"{prefix}/big", 3)
        listed = self.gateway.s3_client().list_objects_v2(Bucket=self.bucket, Prefix=prefix + "/")
        self.assertEqual(
            sorted(o["Key"] for o in listed["Contents"]), [f"{prefix}/big", f"{prefix}/sub/small"]
        )
        again = self.aws("s3", "sync", folder, f"s3://{self.bucket}/{prefix}/")
        self.assertNotIn("upload:", again)

    def test_boto3_upload_file(self) -> None:
        """boto3 upload_file in 5 MiB parts; GetObject with PartNumber returns one part."""
        source = self.new_file(12 * MiB)
        key = self.key("boto3")
        client = self.gateway.s3_client()
        config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
        client.upload_file(source, self.bucket, key, Config=config)
        self.check_download(source, key, 3)
        part = client.get_object(Bucket=self.bucket, Key=key, PartNumber=2)
        self.assertEqual(part["PartsCount"], 3)
        self.assertEqual(part["ContentRange"], f"bytes {5 * MiB}-{10 * MiB - 1}/{12 * MiB}")
        with open(source, "rb") as f:
            f.seek(5 * MiB)
            self.assertEqual(part["Body"].read(), f.read(5 * MiB))

    def test_s3cmd_multipart(self) -> None:
        """s3cmd put with 5 MiB chunks makes a multipart object that comes back the same."""
        source = self.new_file(12 * MiB)
        key = self.key("s3cmd")
        address = self.gateway.endpoint.removeprefix("http://")
        config = os.path.join(self.root, "s3cmd.cfg")
        with open(config, "w") as f:
            f.write(
                "[default]\naccess_key = accesskey\nsecret_key = secretkey\n"
                f"host_base = {address}\nhost_bucket = {address}\nuse_https = False\n"
                "signature_v2 = False\nbucket_location = us-east-1\n"
            )
        done = subprocess.run(
            [
                shutil.which("s3cmd") or "s3cmd",
                "-c",
                config,
                "put",
                "--multipart-chunk-size-mb=5",
                source,
                f"s3://{self.bucket}/{key}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.check_download(source, key, 3)

    def test_minio_multipart(self) -> None:
        """minio-py fput_object with 5 MiB parts makes an object that comes back the same."""
        from minio import Minio

        source = self.new_file(11 * MiB)
        key = self.key("minio")
        client = Minio(
            self.gateway.endpoint.removeprefix("http://"),
            access_key="accesskey",
            secret_key="secretkey",
            secure=False,
            region="us-east-1",
        )
        client.fput_object(self.bucket, key, source, part_size=5 * MiB)
        self.check_download(source, key, 3)

    def test_seed_listing_commands(self) -> None:
        """The seed's list-multipart-uploads and list-parts answer as AWS does."""
        client = self.gateway.s3_client()
        key = "test/goland-" + self._testMethodName
        upload_id = client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        self.addCleanup(
            client.abort_multipart_upload, Bucket=self.bucket, Key=key, UploadId=upload_id
        )
        bodies = [os.urandom(5 * MiB), b"last part"]
        for number, body in enumerate(bodies, 1):
            client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
        listed = json.loads(
            self.aws(
                "s3api", "list-multipart-uploads", "--bucket", self.bucket, "--prefix", "test/g"
            )
        )
        (upload,) = [u for u in listed["Uploads"] if u["UploadId"] == upload_id]
        self.assertEqual(upload["Key"], key)
        self.assertEqual(upload["StorageClass"], "STANDARD")
        self.assertTrue(upload["Initiator"]["ID"])
        self.assertNotEqual(upload["Initiated"][:4], "0001")
        self.assertGreaterEqual(len(upload_id), 22)
        parts = json.loads(
            self.aws(
                "s3api",
                "list-parts",
                "--bucket",
                self.bucket,
                "--key",
                key,
                "--upload-id",
                upload_id,
            )
        )
        self.assertEqual([p["PartNumber"] for p in parts["Parts"]], [1, 2])
        self.assertEqual(
            [p["ETag"] for p in parts["Parts"]],
            [f'"{hashlib.md5(b).hexdigest()}"' for b in bodies],
        )
        self.assertEqual([p["Size"] for p in parts["Parts"]], [5 * MiB, 9])
        self.assertEqual(parts["StorageClass"], "STANDARD")
        self.assertEqual(parts["Owner"]["ID"], parts["Initiator"]["ID"])
        self.assertTrue(parts["Parts"][0]["LastModified"])


class LambgwMultipartTests(_MultipartClientTests, GatewayCase):
    """Multipart uploads in lambgw mode (the bucket is an order)."""

    mode = "lambgw"

    def client_upload(self, key: str, sizes: list[int]) -> tuple[str, list[dict[str, Any]]]:
        """Start an upload to ``key`` and send parts of ``sizes``; its id and part list."""
        client = self.gateway.s3_client()
        upload_id = client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        parts = []
        for number, size in enumerate(sizes, 1):
            etag = client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=os.urandom(size),
            )["ETag"]
            parts.append({"PartNumber": number, "ETag": etag})
        return upload_id, parts

    def complete_code(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> str:
        """The error code of completing ``upload_id`` with ``parts``."""
        client = self.gateway.s3_client()
        return error_code(
            client.complete_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )

    def test_boto3_one_gib(self) -> None:
        """A 1 GiB file goes up with boto3 in 64 MiB parts, 4 at a time, and comes back."""
        source = self.new_file(1024 * MiB)
        key = self.key("gib")
        config = TransferConfig(
            multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB, max_concurrency=4
        )
        self.gateway.s3_client().upload_file(source, self.bucket, key, Config=config)
        self.check_download(source, key, 16)

    def test_part_numbers_out_of_range(self) -> None:
        """Part numbers 0 and 10001 are InvalidArgument."""
        client = self.gateway.s3_client()
        key = self.key("range")
        upload_id, _ = self.client_upload(key, [])
        for number in (0, 10001):
            self.assertEqual(
                error_code(
                    client.upload_part,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=b"x",
                ),
                "InvalidArgument",
            )

    def test_complete_errors(self) -> None:
        """Empty, duplicate, out-of-order, wrong-ETag and too-small completions are refused."""
        key = self.key("errors")
        upload_id, parts = self.client_upload(key, [5 * MiB, 1024, 1024])
        self.assertEqual(self.complete_code(key, upload_id, []), "MalformedXML")
        self.assertEqual(
            self.complete_code(key, upload_id, [parts[0], parts[0]]), "InvalidPartOrder"
        )
        self.assertEqual(
            self.complete_code(key, upload_id, [parts[1], parts[0]]), "InvalidPartOrder"
        )
        wrong = {"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}
        self.assertEqual(self.complete_code(key, upload_id, [wrong]), "InvalidPart")
        self.assertEqual(self.complete_code(key, upload_id, parts), "EntityTooSmall")
        # Nothing was lost: the upload completes with the parts that fit.
        client = self.gateway.s3_client()
        client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts[:2]}
        )
        size = client.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        self.assertEqual(size, 5 * MiB + 1024)

    def test_malformed_complete_xml(self) -> None:
        """A Complete body that is not XML is MalformedXML."""
        client = self.gateway.s3_client(signature_version="s3v4")
        key = self.key("malformed")
        upload_id, _ = self.client_upload(key, [10])
        url = client.generate_presigned_url(
            "complete_multipart_upload",
            Params={"Bucket": self.bucket, "Key": key, "UploadId": upload_id},
            HttpMethod="POST",
        )
        request = urllib.request.Request(  # noqa: S310 - an http URL made above
            url, data=b"<CompleteMultipartUpload><Part>", method="POST"
        )
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(request, timeout=30)  # noqa: S310
        self.assertEqual(e.exception.code, 400)
        self.assertIn(b"<Code>MalformedXML</Code>", e.exception.read())

    def test_part_after_abort(self) -> None:
        """After AbortMultipartUpload a part, a listing or a completion is NoSuchUpload."""
        client = self.gateway.s3_client()
        key = self.key("aborted")
        upload_id, parts = self.client_upload(key, [10])
        client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        self.assertEqual(
            error_code(
                client.upload_part,
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=2,
                Body=b"x",
            ),
            "NoSuchUpload",
        )
        self.assertEqual(self.complete_code(key, upload_id, parts), "NoSuchUpload")
        self.assertEqual(
            error_code(client.list_parts, Bucket=self.bucket, Key=key, UploadId=upload_id),
            "NoSuchUpload",
        )

    def test_unknown_upload_id(self) -> None:
        """A made-up upload id is NoSuchUpload."""
        client = self.gateway.s3_client()
        self.assertEqual(
            error_code(
                client.upload_part,
                Bucket=self.bucket,
                Key=self.key("x"),
                UploadId="Upload1",
                PartNumber=1,
                Body=b"x",
            ),
            "NoSuchUpload",
        )

    def used(self) -> int:
        """Bytes used in the order, as the admin command reports them."""
        (order,) = [o for o in self.gateway.orders() if o["order_id"] == self.bucket]
        return int(order["used"])

    def test_concurrent_completes(self) -> None:
        """Two concurrent completions both answer the object (as a retry would); charged once."""
        key = self.key("twice")
        before = self.used()
        upload_id, parts = self.client_upload(key, [5 * MiB, 5 * MiB, 100])
        outcomes: list[str] = []

        def complete() -> None:
            client = self.gateway.s3_client()
            try:
                client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
                outcomes.append("ok")
            except ClientError as e:
                outcomes.append(e.response["Error"]["Code"])

        threads = [threading.Thread(target=complete) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        self.assertEqual(outcomes, ["ok", "ok"])
        self.assertEqual(self.used() - before, 10 * MiB + 100)

    def test_upload_part_copy(self) -> None:
        """UploadPartCopy with a range copies those bytes of an object into a part."""
        client = self.gateway.s3_client()
        source = os.urandom(6 * MiB)
        client.put_object(Bucket=self.bucket, Key=self.key("source"), Body=source)
        key = self.key("copied")
        upload_id, _ = self.client_upload(key, [])
        copied = client.upload_part_copy(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=1,
            CopySource={"Bucket": self.bucket, "Key": self.key("source")},
            CopySourceRange=f"bytes=0-{5 * MiB - 1}",
        )
        etag = copied["CopyPartResult"]["ETag"]
        self.assertEqual(etag, f'"{hashlib.md5(source[: 5 * MiB]).hexdigest()}"')
        last = client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=2, Body=b"tail"
        )["ETag"]
        client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": 1, "ETag": etag}, {"PartNumber": 2, "ETag": last}]
            },
        )
        body = client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        self.assertEqual(body, source[: 5 * MiB] + b"tail")

    def test_full_object_crc64nvme(self) -> None:
        """A FULL_OBJECT CRC64NVME upload gets the CRC64NVME of the whole object."""
        from awscrt import checksums

        client = self.gateway.s3_client()
        key = self.key("crc64")
        upload_id = client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ChecksumAlgorithm="CRC64NVME", ChecksumType="FULL_OBJECT"
        )["UploadId"]
        bodies = [os.urandom(5 * MiB), b"tail bytes"]
        parts = []
        for number, body in enumerate(bodies, 1):
            answer = client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ChecksumAlgorithm="CRC64NVME",
            )
            parts.append(
                {
                    "PartNumber": number,
                    "ETag": answer["ETag"],
                    "ChecksumCRC64NVME": answer["ChecksumCRC64NVME"],
                }
            )
        whole = checksums.crc64nvme(b"".join(bodies)).to_bytes(8, "big")
        expected = base64.b64encode(whole).decode()
        done = client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            ChecksumCRC64NVME=expected,
        )
        self.assertEqual(done["ChecksumCRC64NVME"], expected)
        head = client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        self.assertEqual(head["ChecksumCRC64NVME"], expected)
        self.assertEqual(head["ChecksumType"], "FULL_OBJECT")

    def test_open_uploads_hold_capacity(self) -> None:
        """Parts of open uploads count against the order; abort gives the space back."""
        bucket = self.gateway.buy_order(capacity="12MiB")
        client = self.gateway.s3_client()
        client.list_buckets()
        key = self.key("quota")
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        body = os.urandom(5 * MiB)
        for number in (1, 2):
            client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
        code = error_code(
            client.upload_part,
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=3,
            Body=body,
        )
        self.assertEqual(code, "QuotaExceeded")
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        again = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        client.upload_part(Bucket=bucket, Key=key, UploadId=again, PartNumber=1, Body=body)
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=again)
        (order,) = [o for o in self.gateway.orders() if o["order_id"] == bucket]
        self.assertEqual(int(order["used"]), 0)


class S3gwMultipartTests(_MultipartClientTests, GatewayCase):
    """Multipart uploads in s3gw mode (ordinary buckets inside one order)."""

    mode = "s3gw"


class RestartAndScaleOutTests(SynchronousTestCase):
    """Uploads survive kill -9 of their gateway and are shared by gateways on one directory."""

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp(prefix="lambgw-e2e-mp-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.home = os.path.join(self.root, "home")

    def start(self) -> GatewayProcess:
        gateway = start_lambgw(self.home)
        self.addCleanup(gateway.stop)
        return gateway

    def test_kill_9_mid_upload(self) -> None:
        """After kill -9 in the middle of an upload, a restarted gateway finishes it."""
        part_size = 32 * MiB
        count = KILL_TEST_SIZE // part_size
        half = count // 2
        source = make_file(self.root, "source", part_size * count)
        gateway = self.start()
        bucket, key = gateway.order_id, "test/killed"
        client = gateway.s3_client()
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]

        def part(c: Any, number: int) -> str:
            with open(source, "rb") as f:
                f.seek((number - 1) * part_size)
                data = f.read(part_size)
            return str(
                c.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                )["ETag"]
            )

        etags = {n: part(client, n) for n in range(1, half + 1)}
        # The next part is on its way when the gateway dies.
        slow = gateway.s3_client(retries={"max_attempts": 1}, read_timeout=30)
        sending = threading.Thread(target=lambda: self.swallow(part, slow, half + 1))
        sending.start()
        self.wait_for_spooling(os.path.join(self.home, "gateway", "spool"))
        os.kill(gateway._process.pid, signal.SIGKILL)
        gateway._process.wait()
        sending.join(60)

        gateway = self.start()
        client = gateway.s3_client()
        listed = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
        self.assertEqual({p["PartNumber"]: p["ETag"] for p in listed}, etags)
        for number in range(half + 1, count + 1):
            etags[number] = part(client, number)
        client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": e} for n, e in sorted(etags.items())]
            },
        )
        copy = os.path.join(self.root, "copy")
        client.download_file(bucket, key, copy)
        self.assertEqual(file_sha256(copy), file_sha256(source))

    @staticmethod
    def wait_for_spooling(spool: str) -> None:
        """Wait until a body is being written into ``spool`` (at most a few seconds)."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                files = [os.path.join(d, n) for d, _, names in os.walk(spool) for n in names]
                if any(os.path.getsize(f) for f in files):
                    return
            time.sleep(0.01)

    @staticmethod
    def swallow(call: Any, *args: Any) -> None:
        """Run ``call``; its failure (the gateway died) is expected."""
        with contextlib.suppress(Exception):
            call(*args)

    def test_two_gateways_share_an_upload(self) -> None:
        """Parts sent alternately to two gateways on one directory make one object."""
        first = self.start()
        second = self.start()
        bucket, key = first.order_id, "test/shared"
        clients = [first.s3_client(), second.s3_client()]
        upload_id = clients[0].create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        bodies = [os.urandom(5 * MiB) for _ in range(3)] + [b"end"]
        parts = []
        for number, body in enumerate(bodies, 1):
            client = clients[number % 2]
            etag = client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )["ETag"]
            parts.append({"PartNumber": number, "ETag": etag})
        listed = clients[0].list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
        self.assertEqual([p["PartNumber"] for p in listed], [1, 2, 3, 4])
        clients[1].complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        body = clients[0].get_object(Bucket=bucket, Key=key)["Body"].read()
        self.assertEqual(body, b"".join(bodies))
