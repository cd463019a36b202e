"""End-to-end tests of the admin listener and the access log of a real gateway.

``/metrics`` is parsed with prometheus_client's parser, the access log (JSON) is searched for
the secret key and the signatures, and the status page is rendered in headless Chromium with
a screenshot kept under the test's directory.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import urllib.error
import urllib.request
import zlib
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SkipTest

from tests.gateway import GatewayCase, free_port, start_lambgw, target_is_moto

#: Seconds Chromium has to take its screenshot.
BROWSER_TIMEOUT = 90


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of a metrics page, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def chromium() -> str | None:
    """The Chromium executable, if one is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def png_pixels(path: str) -> tuple[int, int, bytes]:
    """The width, height and inflated image data of a PNG file."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{path} is not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        if kind == b"IDAT":
            chunks.append(data[at + 8 : at + 8 + length])
        at += 12 + length
    return width, height, zlib.decompress(b"".join(chunks))


class AdminTests(GatewayCase):
    """A gateway with its admin pages on a known port and its access log in JSON."""

    admin: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        """Start the gateway with ``--admin-listen`` and ``--access-log-format json``."""
        if target_is_moto():
            raise SkipTest("moto_server has no admin listener")
        cls.root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        cls.scratch = os.path.join(cls.root, "scratch")
        os.makedirs(cls.scratch)
        port = free_port()
        cls.admin = f"http://127.0.0.1:{port}"
        try:
            cls.gateway = start_lambgw(
                os.path.join(cls.root, "home"),
                *("--admin-listen", f"tcp:{port}:interface=127.0.0.1"),
                *("--access-log-format", "json"),
            )
            cls.bucket = cls.gateway.order_id
        except BaseException:
            cls.tearDownClass()
            raise

    def get(self, path: str) -> tuple[int, str, str]:
        """GET an admin page: its status, content type and text."""
        try:
            with urllib.request.urlopen(self.admin + path, timeout=30) as response:  # noqa: S310
                body = response.read().decode("utf-8")
                return response.status, response.headers["Content-Type"], body
        except urllib.error.HTTPError as e:
            return e.code, e.headers["Content-Type"], e.read().decode("utf-8")

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """The current metrics, parsed."""
        status, content_type, text = self.get("/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(content_type.startswith("text/plain; version=0.0.4"), content_type)
        return samples(text)

    def access_lines(self) -> list[dict[str, Any]]:
        """The access log's records so far."""
        marker = "[lambgw.access#info] "
        return [
            json.loads(line.split(marker, 1)[1])
            for line in self.gateway.output().splitlines()
            if marker in line
        ]

    def test_counters_move(self) -> None:
        """A PutObject moves the request counter, the bytes received and the latencies."""
        put = ("lambgw_requests_total", frozenset({("operation", "PutObject"), ("status", "200")}))
        received = ("lambgw_received_bytes_total", frozenset({("operation", "PutObject")}))
        before = self.metrics()
        self.gateway.s3_client().put_object(Bucket=self.bucket, Key=self.key("a"), Body=b"x" * 5000)
        after = self.metrics()
        self.assertEqual(after[put] - before.get(put, 0), 1)
        self.assertEqual(after[received] - before.get(received, 0), 5000)
        count = ("lambgw_request_duration_seconds_count", frozenset({("operation", "PutObject")}))
        self.assertGreaterEqual(after[count], 1)
        network = (
            "lambgw_network_call_duration_seconds_count",
            frozenset({("call", "put_object")}),
        )
        self.assertGreaterEqual(after[network], 1)

    def test_families_typed(self) -> None:
        """Prometheus's parser reads every family with its type: none is left untyped."""
        self.gateway.s3_client().list_buckets()
        status, _, text = self.get("/metrics")
        self.assertEqual(status, 200)
        types = {f.name: f.type for f in text_string_to_metric_families(text)}
        self.assertEqual(types["lambgw_requests"], "counter")
        self.assertEqual(types["lambgw_sent_bytes"], "counter")
        self.assertEqual(types["lambgw_network_call_errors"], "counter")
        self.assertEqual(types["lambgw_request_duration_seconds"], "histogram")
        self.assertEqual(types["lambgw_connections_open"], "gauge")
        self.assertNotIn("unknown", types.values())
        (listed,) = [
            s
            for s in next(
                f for f in text_string_to_metric_families(text) if f.name == "lambgw_requests"
            ).samples
            if s.labels["operation"] == "ListBuckets"
        ]
        self.assertEqual((listed.name, listed.labels["status"]), ("lambgw_requests_total", "200"))
        self.assertGreaterEqual(listed.value, 1)

    def test_order_gauges(self) -> None:
        """The account's order is exported with its capacity and its space used."""
        self.gateway.s3_client().put_object(Bucket=self.bucket, Key=self.key("b"), Body=b"y" * 100)
        found = self.metrics()
        order = frozenset({("order", self.bucket)})
        self.assertEqual(found[("lambgw_order_capacity_bytes", order)], 10 * 1024**3)
        self.assertGreaterEqual(found[("lambgw_order_used_bytes", order)], 100)

    def test_open_uploads(self) -> None:
        """An open multipart upload shows in the uploads gauge; its part is not in the spool."""
        client = self.gateway.s3_client()
        key = self.key("mp")
        upload_id = client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"z" * 70000
        )
        opened = self.metrics()
        client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        closed = self.metrics()
        uploads = ("lambgw_multipart_uploads_open", frozenset())
        self.assertEqual(opened[uploads] - closed[uploads], 1)
        self.assertNotIn(("lambgw_spool_bytes", frozenset({("area", "uploads")})), opened)
        self.assertLess(opened[("lambgw_spool_bytes", frozenset({("area", "bodies")}))], 70000)

    def test_health(self) -> None:
        """/healthz says alive and /readyz ready: the network answers, the spool is writable."""
        self.assertEqual(self.get("/healthz")[::2], (200, "ok\n"))
        self.assertEqual(self.get("/readyz")[::2], (200, "ready\n"))

    def test_no_secret_in_log(self) -> None:
        """The log holds neither the secret key nor any signature, presigned or in headers."""
        client = self.gateway.s3_client(signature_version="s3v4")
        key = self.key("secret")
        client.put_object(Bucket=self.bucket, Key=key, Body=b"s")
        url = client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}
        )
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310
            self.assertEqual(response.read(), b"s")
        signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
        log = self.gateway.output()
        self.assertNotIn(self.gateway.secret_key, log)
        self.assertNotIn(signature, log)
        self.assertNotIn("X-Amz-Credential", log)
        self.assertNotIn("Signature=", log)
        (record,) = [r for r in self.access_lines() if r["key"] == key and r["method"] == "GET"]
        self.assertEqual(
            (record["operation"], record["status"], record["bytes_out"], record["access_key"]),
            ("GetObject", 200, 1, self.gateway.access_key),
        )

    def test_refused_upload_logged(self) -> None:
        """An upload refused at its headers (bad signature, 100-continue) is logged and counted."""
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ClientError

        client = boto3.client(
            "s3",
            endpoint_url=self.gateway.endpoint,
            aws_access_key_id=self.gateway.access_key,
            aws_secret_access_key="not-the-secret",
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        key = self.key("refused")
        with self.assertRaises(ClientError):
            client.put_object(Bucket=self.bucket, Key=key, Body=b"r" * 100000)
        (record,) = [r for r in self.access_lines() if r["key"] == key]
        self.assertEqual((record["operation"], record["status"]), ("PutObject", 403))
        refused = (
            "lambgw_requests_total",
            frozenset({("operation", "PutObject"), ("status", "403")}),
        )
        self.assertGreaterEqual(self.metrics()[refused], 1)

    def test_status_page(self) -> None:
        """The status page lists the orders with their use, and renders in headless Chromium."""
        client = self.gateway.s3_client()
        small = self.gateway.buy_order(capacity="1MiB")
        client.put_object(Bucket=small, Key="fill", Body=b"f" * 700 * 1024)
        key = self.key("open & unfinished")
        upload_id = client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        self.addCleanup(
            client.abort_multipart_upload, Bucket=self.bucket, Key=key, UploadId=upload_id
        )
        status, content_type, page = self.get("/")
        self.assertEqual((status, content_type), (200, "text/html; charset=utf-8"))
        self.assertIn(self.bucket, page)
        self.assertIn(small, page)
        self.assertIn("open &amp; unfinished", page)
        self.assertIn('style="width: 68.4%"', page)
        browser = chromium()
        if browser is None:
            raise SkipTest("chromium is not installed (.ci/run installs it)")
        screenshot = os.path.abspath("status-page.png")
        profile = tempfile.mkdtemp(prefix="lambgw-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        done = subprocess.run(
            [
                browser,
                *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic"),
                *("--no-first-run", "--disable-background-networking"),
                *("--disable-component-update", "--disable-sync", "--hide-scrollbars"),
                f"--user-data-dir={profile}",
                f"--screenshot={screenshot}",
                "--window-size=1200,800",
                self.admin + "/",
            ],
            capture_output=True,
            text=True,
            timeout=BROWSER_TIMEOUT,
            check=False,
        )
        self.assertTrue(os.path.exists(screenshot), f"no screenshot:\n{done.stderr}")
        print(f"status page screenshot: {screenshot}")
        width, height, pixels = png_pixels(screenshot)
        self.assertEqual((width, height), (1200, 800))
        self.assertGreater(len(set(pixels)), 50, "the screenshot is nearly uniform")
