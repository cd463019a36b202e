"""Tests of virtual-hosted-style addressing (``lambgw.s3.hosts``)."""

from __future__ import annotations

from email.utils import formatdate

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactor
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyChannel

from lambgw.protocol import sigv2
from lambgw.protocol.errors import S3Error
from lambgw.s3.front import Front
from lambgw.s3.hosts import bucket_from_host, host_name, request_target, virtual_target
from lambgw.s3.request import RequestState, S3Request

DOMAINS = ["s3.example.com"]


class HostNameTests(SynchronousTestCase):
    """The name part of a Host header."""

    def test_port_dropped(self) -> None:
        """The port is not part of the name."""
        self.assertEqual(host_name("b.s3.example.com:9002"), "b.s3.example.com")

    def test_lower_case(self) -> None:
        """Names are compared in lower case."""
        self.assertEqual(host_name("B.S3.Example.COM."), "b.s3.example.com")

    def test_ipv6_literal(self) -> None:
        """An IPv6 literal keeps its brackets and loses its port."""
        self.assertEqual(host_name("[::1]:9002"), "[::1]")


class BucketFromHostTests(SynchronousTestCase):
    """Which bucket a Host header names."""

    def test_subdomain_is_bucket(self) -> None:
        """A name under a configured domain names a bucket."""
        self.assertEqual(bucket_from_host("photos.s3.example.com:443", DOMAINS), "photos")

    def test_dotted_bucket(self) -> None:
        """A bucket name with dots is the whole part before the domain."""
        self.assertEqual(bucket_from_host("a.b.s3.example.com", DOMAINS), "a.b")

    def test_order_id_lower_case(self) -> None:
        """An order id in the host comes out in lower case, as hosts are case-insensitive."""
        order = "D9A585E80A92439D5DFFB384901F359A572F4E1F"
        self.assertEqual(bucket_from_host(f"{order}.s3.example.com", DOMAINS), order.lower())

    def test_domain_itself_is_path_style(self) -> None:
        """The domain itself names no bucket."""
        self.assertIsNone(bucket_from_host("s3.example.com:9002", DOMAINS))

    def test_other_host_is_path_style(self) -> None:
        """A host outside the domains names no bucket."""
        self.assertIsNone(bucket_from_host("127.0.0.1:9002", DOMAINS))
        self.assertIsNone(bucket_from_host("evils3.example.com", DOMAINS))

    def test_no_host(self) -> None:
        """A request without Host is path style."""
        self.assertIsNone(bucket_from_host(None, DOMAINS))

    def test_configured_domain_normalized(self) -> None:
        """A configured domain in capitals or with a final dot still matches."""
        self.assertEqual(bucket_from_host("b.localhost", [".LocalHost."]), "b")

    @given(st.from_regex(r"[a-z0-9][a-z0-9.-]{1,40}[a-z0-9]", fullmatch=True))
    def test_any_bucket_roundtrips(self, bucket: str) -> None:
        """Any bucket-like label before the domain is that bucket."""
        self.assertEqual(bucket_from_host(f"{bucket}.s3.example.com", DOMAINS), bucket)


class VirtualTargetTests(SynchronousTestCase):
    """The target of a virtual-hosted request."""

    def test_key_is_whole_path(self) -> None:
        """The whole path but its first slash is the key."""
        target = virtual_target(b"/dir/a%20b.txt?x=1", "photos")
        self.assertEqual((target.bucket, target.key), ("photos", "dir/a b.txt"))
        self.assertEqual(target.raw_path, "/dir/a%20b.txt")
        self.assertEqual(dict(target.query), {"x": "1"})

    def test_slashes_kept(self) -> None:
        """Doubled and trailing slashes stay in the key."""
        self.assertEqual(virtual_target(b"/a//b/", "photos").key, "a//b/")

    def test_root_is_bucket(self) -> None:
        """The path ``/`` addresses the bucket itself."""
        target = virtual_target(b"/?list-type=2", "photos")
        self.assertEqual((target.bucket, target.key), ("photos", ""))

    def test_bad_uri_refused(self) -> None:
        """Bad percent-encoding is refused as in path style."""
        with self.assertRaises(S3Error) as caught:
            virtual_target(b"/a%zz", "photos")
        self.assertEqual(caught.exception.code, "InvalidURI")

    def test_request_target_path_style(self) -> None:
        """A host outside the domains gives the path-style target."""
        target = request_target(b"/photos/k", "127.0.0.1:9002", DOMAINS)
        self.assertEqual((target.bucket, target.key), ("photos", "k"))

    def test_request_target_virtual(self) -> None:
        """A host under a domain gives the virtual-hosted target."""
        target = request_target(b"/photos/k", "b.s3.example.com", DOMAINS)
        self.assertEqual((target.bucket, target.key), ("b", "photos/k"))


class FrontTests(SynchronousTestCase):
    """What the S3 layer's header-time check does with the host and with preflights."""

    NOW = 1_790_000_000.0

    def begin(self, method: bytes, uri: bytes, headers: dict[bytes, bytes]) -> S3Request:
        """Run a request's headers through a Front serving ``s3.example.com``."""
        request = S3Request(DummyChannel())
        for name, value in headers.items():
            request.requestHeaders.setRawHeaders(name, [value])
        request.s3 = RequestState(request_id="TEST", started=0.0)
        front = Front(
            lambda key: self.fail("no gateway is needed"),
            MemoryReactor(),  # type: ignore[arg-type]
            ThreadPool(),
            {"key": "secret"}.get,
            clock=lambda: self.NOW,
            domains=DOMAINS,
        )
        front.begin(request, method, uri, 0)
        return request

    def test_sigv2_virtual_host(self) -> None:
        """A SigV2 request to BUCKET.domain signs /Bucket/key and reaches that bucket."""
        date = formatdate(self.NOW, usegmt=True)
        text = sigv2.string_to_sign("GET", "/k", "", {}, date, "Photos")
        request = self.begin(
            b"GET",
            b"/k",
            {
                b"host": b"Photos.s3.example.com",
                b"date": date.encode(),
                b"authorization": f"AWS key:{sigv2.sign('secret', text)}".encode(),
            },
        )
        state = request.s3
        self.assertIsNone(state.error)
        assert state.target is not None
        self.assertEqual((state.target.bucket, state.target.key), ("photos", "k"))
        self.assertEqual(state.access_key, "key")

    def test_preflight_not_authenticated(self) -> None:
        """An OPTIONS request passes the header check without any signature."""
        request = self.begin(b"OPTIONS", b"/b/k", {b"host": b"s3.example.com"})
        self.assertIsNone(request.s3.error)
        self.assertIsNone(request.s3.access_key)

    def test_other_methods_authenticated(self) -> None:
        """A GET without a signature is refused at its headers."""
        request = self.begin(b"GET", b"/b/k", {b"host": b"b.s3.example.com"})
        assert request.s3.error is not None
        self.assertEqual(request.s3.error.code, "AccessDenied")
