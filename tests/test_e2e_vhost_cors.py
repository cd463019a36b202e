"""End-to-end: virtual-hosted-style requests with boto3, and CORS for a browser page."""

from __future__ import annotations

import http.client
import socket
import urllib.parse
from typing import Any

import boto3
from botocore.client import Config

from tests.configured import ConfiguredCase
from tests.gateway import ACCESS_KEY, SECRET_KEY

PAGE = "http://app.example"
CONFIG = f"""
[gateway]
cors_origins = ["{PAGE}"]
"""

_getaddrinfo = socket.getaddrinfo


def _resolve_localhost_subdomains(host: Any, *args: Any, **kwargs: Any) -> Any:
    """``socket.getaddrinfo`` where ``*.localhost`` is loopback, as RFC 6761 says it is."""
    if isinstance(host, str) and host.endswith(".localhost"):
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)


class VirtualHostTests(ConfiguredCase):
    """Buckets named by the host under ``--domain localhost``, and CORS headers."""

    CONFIG = CONFIG
    FLAGS = ("--domain", "localhost")

    def setUp(self) -> None:
        """Start the gateway; resolve ``*.localhost`` to loopback in this process."""
        super().setUp()
        type(self).bucket = self.gateway.s3_client().list_buckets()["Buckets"][0]["Name"]
        self.patch(socket, "getaddrinfo", _resolve_localhost_subdomains)

    def virtual(self) -> tuple[Any, list[str]]:
        """A virtual-hosted boto3 client, and the URLs it sends requests to."""
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://localhost:{self.gateway.port}",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "virtual"}),
        )
        urls: list[str] = []
        s3.meta.events.register("before-send.s3", lambda request, **_: urls.append(request.url))
        return s3, urls

    def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes = b""
    ) -> http.client.HTTPResponse:
        """Send one raw request to the gateway (``url`` is a path, or a full URL)."""
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection = http.client.HTTPConnection("127.0.0.1", self.gateway.port, timeout=10)
        self.addCleanup(connection.close)
        connection.request(method, target or url, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response

    def test_boto3_virtual_round_trip(self) -> None:
        """boto3 in virtual style puts, lists and gets with the order id in lower case."""
        s3, urls = self.virtual()
        bucket = self.bucket.lower()
        s3.put_object(Bucket=bucket, Key=self.key("a b"), Body=b"hosted")
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=self.key(""))
        self.assertEqual([o["Key"] for o in listed["Contents"]], [self.key("a b")])
        body = s3.get_object(Bucket=bucket, Key=self.key("a b"))["Body"].read()
        self.assertEqual(body, b"hosted")
        self.assertTrue(all(url.startswith(f"http://{bucket}.localhost:") for url in urls))

    def test_path_style_still_served(self) -> None:
        """Requests to the domain itself stay path style."""
        s3 = self.gateway.s3_client()
        s3.put_object(Bucket=self.bucket, Key=self.key("p"), Body=b"path")
        virtual, _ = self.virtual()
        got = virtual.get_object(Bucket=self.bucket.lower(), Key=self.key("p"))
        self.assertEqual(got["Body"].read(), b"path")

    def test_preflight_allowed(self) -> None:
        """A preflight from the configured origin is answered with the CORS headers."""
        response = self.request(
            "OPTIONS",
            f"/{self.bucket}/{self.key('up')}",
            {
                "Origin": PAGE,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        self.assertEqual(response.status, 200)
        self.assertEqual(response.getheader("Access-Control-Allow-Origin"), PAGE)
        self.assertIn("PUT", response.getheader("Access-Control-Allow-Methods") or "")
        self.assertEqual(response.getheader("Access-Control-Allow-Headers"), "content-type")

    def test_preflight_other_origin_refused(self) -> None:
        """A preflight from an origin not configured is refused with 403."""
        response = self.request(
            "OPTIONS",
            f"/{self.bucket}/{self.key('up')}",
            {"Origin": "http://evil.example", "Access-Control-Request-Method": "PUT"},
        )
        self.assertEqual(response.status, 403)
        self.assertIsNone(response.getheader("Access-Control-Allow-Origin"))

    def test_presigned_browser_upload(self) -> None:
        """A browser-style presigned PUT with Origin stores the object and exposes its ETag."""
        url = self.gateway.s3_client().generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": self.key("b")}, ExpiresIn=300
        )
        response = self.request("PUT", url, {"Origin": PAGE}, b"from the page")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.getheader("Access-Control-Allow-Origin"), PAGE)
        self.assertIn("ETag", response.getheader("Access-Control-Expose-Headers") or "")
        got = self.gateway.s3_client().get_object(Bucket=self.bucket, Key=self.key("b"))
        self.assertEqual(got["Body"].read(), b"from the page")

    def test_no_cors_headers_for_other_origin(self) -> None:
        """A response to an origin not configured carries no CORS header."""
        s3 = self.gateway.s3_client()
        s3.put_object(Bucket=self.bucket, Key=self.key("c"), Body=b"c")
        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key("c")}, ExpiresIn=300
        )
        response = self.request("GET", url, {"Origin": "http://evil.example"})
        self.assertEqual(response.status, 200)
        self.assertIsNone(response.getheader("Access-Control-Allow-Origin"))
