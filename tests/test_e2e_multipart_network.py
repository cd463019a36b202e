"""End-to-end: multipart uploads kept by the network, seen through a listening gateway.

A retried CompleteMultipartUpload answers as the first did; wrong completions charge and
leave nothing; uploads that an earlier release left in the gateway's ``uploads`` directory
are moved into the network at start and complete under the ids their clients hold.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from typing import Any

from botocore.exceptions import ClientError
from twisted.trial.unittest import SynchronousTestCase

from lambgw.network.store import Store
from tests.gateway import ACCOUNT, GatewayCase, GatewayProcess, MiB, start_lambgw


def error_code(call: Any, **kwargs: Any) -> str:
    """The S3 error code of a boto3 call that must fail."""
    try:
        call(**kwargs)
    except ClientError as e:
        return str(e.response["Error"]["Code"])
    raise AssertionError(f"{call} did not fail")


class RetriedCompletionTests(GatewayCase):
    """CompleteMultipartUpload retried, and completions that must fail."""

    mode = "lambgw"

    def upload(self, key: str, *bodies: bytes) -> tuple[str, list[dict[str, Any]]]:
        """Open an upload of ``key`` and send ``bodies`` as its parts."""
        client = self.gateway.s3_client()
        upload_id = client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        parts = []
        for number, body in enumerate(bodies, 1):
            etag = client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )["ETag"]
            parts.append({"PartNumber": number, "ETag": etag})
        return upload_id, parts

    def used(self) -> int:
        """The bytes the order has in use, from the network itself."""
        store = Store(os.path.join(self.gateway.home, "network"))
        try:
            return store.order(ACCOUNT, self.bucket).used
        finally:
            store.close()

    def test_retry_answers_the_same(self) -> None:
        """The same completion again is 200 with the same ETag, Bucket, Key and Location."""
        client = self.gateway.s3_client()
        key = self.key("retried")
        before = self.used()
        upload_id, parts = self.upload(key, os.urandom(5 * MiB), b"last")
        args = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id}
        first = client.complete_multipart_upload(MultipartUpload={"Parts": parts}, **args)
        again = client.complete_multipart_upload(MultipartUpload={"Parts": parts}, **args)
        fields = ("ETag", "Bucket", "Key", "Location")
        self.assertEqual({f: again[f] for f in fields}, {f: first[f] for f in fields})
        self.assertEqual(again["ResponseMetadata"]["HTTPStatusCode"], 200)
        self.assertEqual(self.used() - before, 5 * MiB + 4)
        other = {"Parts": parts[:1]}
        code = error_code(client.complete_multipart_upload, MultipartUpload=other, **args)
        self.assertEqual(code, "NoSuchUpload")
        self.assertEqual(self.used() - before, 5 * MiB + 4)

    def test_wrong_completions_leave_upload_and_charge(self) -> None:
        """Out of order, wrong ETag and small parts fail; the upload and its charge stay."""
        client = self.gateway.s3_client()
        key = self.key("wrong")
        before = self.used()
        upload_id, parts = self.upload(key, b"small", b"last")
        args = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id}
        cases = [
            ("InvalidPartOrder", [parts[1], parts[0]]),
            ("InvalidPart", [{"PartNumber": 1, "ETag": '"' + "0" * 32 + '"'}]),
            ("InvalidPart", [{"PartNumber": 3, "ETag": parts[1]["ETag"]}]),
            ("EntityTooSmall", parts),
        ]
        for expected, named in cases:
            code = error_code(
                client.complete_multipart_upload, MultipartUpload={"Parts": named}, **args
            )
            self.assertEqual(code, expected)
        self.assertEqual(self.used() - before, 9)
        listed = client.list_parts(**args)["Parts"]
        self.assertEqual([p["PartNumber"] for p in listed], [1, 2])
        client.abort_multipart_upload(**args)
        self.assertEqual(self.used(), before)
        code = error_code(
            client.complete_multipart_upload, MultipartUpload={"Parts": parts}, **args
        )
        self.assertEqual(code, "NoSuchUpload")


def lay_out_old_upload(
    uploads_dir: str, order_id: str, key: str, bodies: list[bytes], completing: bool = False
) -> str:
    """Write an upload as the gateway's own multipart store of earlier releases wrote it.

    ``<id>/manifest.json``, then per part a data file ``<n>.<random>.data`` and its record
    ``<n>.json``; an interrupted completion left the directory named ``<id>.completing``.
    """
    upload_id = secrets.token_urlsafe(24)[:32].replace("-", "x") + "_-"
    directory = os.path.join(uploads_dir, upload_id)
    os.makedirs(directory)
    manifest = {
        "upload_id": upload_id,
        "account": ACCOUNT,
        "bucket": order_id,
        "key": key,
        "order_id": order_id,
        "path": key,
        "created": 1_700_000_000.0,
        "content_type": "text/plain",
        "metadata": {"color": "blue"},
        "headers": {},
        "checksum_algorithm": "",
        "checksum_type": "",
    }
    with open(os.path.join(directory, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    for number, body in enumerate(bodies, 1):
        name = f"{number}.{secrets.token_hex(8)}.data"
        with open(os.path.join(directory, name), "wb") as f:
            f.write(body)
        record = {
            "number": number,
            "size": len(body),
            "etag": hashlib.md5(body).hexdigest(),
            "last_modified": 1_700_000_100.0,
            "checksums": {},
            "file": name,
        }
        with open(os.path.join(directory, f"{number}.json"), "w", encoding="utf-8") as f:
            json.dump(record, f)
    with open(os.path.join(directory, f"{len(bodies) + 1}.{secrets.token_hex(8)}.data"), "wb"):
        pass  # a torn part: a data file no record names
    if completing:
        os.rename(directory, directory + ".completing")
    return upload_id


class UpgradeTests(SynchronousTestCase):
    """Uploads left on disk by an earlier release are moved into the network at start."""

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp(prefix="lambgw-e2e-upgrade-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.home = os.path.join(self.root, "home")

    def start(self) -> GatewayProcess:
        gateway = start_lambgw(self.home)
        self.addCleanup(gateway.stop)
        return gateway

    def test_old_uploads_complete_after_upgrade(self) -> None:
        """An open upload and an interrupted completion on disk complete after the restart."""
        first = self.start()
        order_id = first.order_id
        first.stop()
        uploads_dir = os.path.join(self.home, "gateway", "uploads")
        old_bodies = [os.urandom(5 * MiB), os.urandom(5 * MiB)]
        open_id = lay_out_old_upload(uploads_dir, order_id, "old/open", old_bodies)
        done_id = lay_out_old_upload(uploads_dir, order_id, "old/done", [b"whole"], True)
        os.makedirs(os.path.join(uploads_dir, "gone.aborted.1234"))

        gateway = self.start()
        client = gateway.s3_client()
        listed = client.list_multipart_uploads(Bucket=order_id)["Uploads"]
        self.assertEqual(
            sorted((u["Key"], u["UploadId"]) for u in listed),
            [("old/done", done_id), ("old/open", open_id)],
        )
        args = {"Bucket": order_id, "Key": "old/open", "UploadId": open_id}
        parts = client.list_parts(**args)["Parts"]
        expected = [{"PartNumber": n, "ETag": f'"{hashlib.md5(b).hexdigest()}"'}
                    for n, b in enumerate(old_bodies, 1)]  # fmt: skip
        self.assertEqual([{k: p[k] for k in ("PartNumber", "ETag")} for p in parts], expected)
        last = client.upload_part(PartNumber=3, Body=b"new tail", **args)["ETag"]
        named = [*expected, {"PartNumber": 3, "ETag": last}]
        client.complete_multipart_upload(MultipartUpload={"Parts": named}, **args)
        got = client.get_object(Bucket=order_id, Key="old/open")
        self.assertEqual(got["Body"].read(), b"".join(old_bodies) + b"new tail")
        self.assertEqual((got["ContentType"], got["Metadata"]), ("text/plain", {"color": "blue"}))
        client.complete_multipart_upload(
            Bucket=order_id,
            Key="old/done",
            UploadId=done_id,
            MultipartUpload={
                "Parts": [{"PartNumber": 1, "ETag": hashlib.md5(b"whole").hexdigest()}]
            },
        )
        self.assertEqual(
            client.get_object(Bucket=order_id, Key="old/done")["Body"].read(), b"whole"
        )
        self.assertEqual(os.listdir(uploads_dir), [])


class ExpiryTests(SynchronousTestCase):
    """The network aborts idle uploads after the multipart expiry and gives their space back."""

    def setUp(self) -> None:
        self.root = tempfile.mkdtemp(prefix="lambgw-e2e-expiry-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.home = os.path.join(self.root, "home")

    def test_idle_upload_expired(self) -> None:
        """An upload idle past the expiry is gone after a restart; its part no longer charged."""
        gateway = start_lambgw(self.home, "--multipart.expiry", "2")
        self.addCleanup(gateway.stop)
        client = gateway.s3_client()
        bucket = gateway.order_id
        upload_id = client.create_multipart_upload(Bucket=bucket, Key="idle")["UploadId"]
        client.upload_part(
            Bucket=bucket, Key="idle", UploadId=upload_id, PartNumber=1, Body=b"x" * 1000
        )
        store = Store(os.path.join(self.home, "network"))
        self.addCleanup(store.close)
        self.assertEqual(store.order(ACCOUNT, bucket).used, 1000)
        gateway.stop()
        time.sleep(2.5)
        gateway = start_lambgw(self.home, "--multipart.expiry", "2")
        self.addCleanup(gateway.stop)
        client = gateway.s3_client()
        deadline = time.monotonic() + 10
        while (
            client.list_multipart_uploads(Bucket=bucket).get("Uploads")
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        self.assertEqual(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []), [])
        self.assertEqual(store.order(ACCOUNT, bucket).used, 0)
        code = error_code(
            client.upload_part,
            Bucket=bucket,
            Key="idle",
            UploadId=upload_id,
            PartNumber=2,
            Body=b"y",
        )
        self.assertEqual(code, "NoSuchUpload")
