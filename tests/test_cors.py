"""Tests of the CORS policy (``lambgw.s3.cors``)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from lambgw.protocol.errors import S3Error
from lambgw.s3.cors import CorsPolicy

PAGE = "https://app.example.com"


class CorsPolicyTests(SynchronousTestCase):
    """Which cross-origin requests are allowed, and the headers they get."""

    def test_default_allows_nothing(self) -> None:
        """With no origin configured, no origin is allowed and no header is added."""
        policy = CorsPolicy()
        self.assertFalse(policy.enabled)
        self.assertEqual(policy.response_headers(PAGE), [])
        with self.assertRaises(S3Error) as caught:
            policy.preflight(PAGE, "PUT", None)
        self.assertEqual((caught.exception.code, caught.exception.status), ("AccessForbidden", 403))

    def test_exact_origin(self) -> None:
        """A configured origin is allowed and echoed back; another one is not."""
        policy = CorsPolicy.of([PAGE])
        headers = dict(policy.response_headers(PAGE))
        self.assertEqual(headers["Access-Control-Allow-Origin"], PAGE)
        self.assertEqual(headers["Vary"], "Origin")
        self.assertEqual(policy.response_headers("https://evil.example.org"), [])

    def test_pattern_origin(self) -> None:
        """An origin pattern allows the origins it matches."""
        policy = CorsPolicy.of(["https://*.example.com"])
        self.assertTrue(policy.allows_origin(PAGE))
        self.assertFalse(policy.allows_origin("http://app.example.com"))

    def test_any_origin(self) -> None:
        """``*`` allows any origin and answers ``*``."""
        headers = dict(CorsPolicy.of(["*"]).response_headers("http://localhost:8000"))
        self.assertEqual(headers["Access-Control-Allow-Origin"], "*")

    def test_exposes_etag_and_amz(self) -> None:
        """Ordinary responses expose the ETag and x-amz headers."""
        headers = dict(CorsPolicy.of([PAGE]).response_headers(PAGE))
        exposed = headers["Access-Control-Expose-Headers"]
        self.assertIn("ETag", exposed)
        self.assertIn("x-amz-request-id", exposed)

    def test_preflight_allowed(self) -> None:
        """An allowed preflight gets the methods, the headers asked and a max age."""
        headers = dict(CorsPolicy.of([PAGE]).preflight(PAGE, "PUT", "Content-Type, X-Amz-Date"))
        self.assertEqual(headers["Access-Control-Allow-Origin"], PAGE)
        self.assertIn("PUT", headers["Access-Control-Allow-Methods"])
        self.assertEqual(headers["Access-Control-Allow-Headers"], "content-type, x-amz-date")
        self.assertTrue(int(headers["Access-Control-Max-Age"]) > 0)

    def test_preflight_method_refused(self) -> None:
        """A method outside the configured ones is refused."""
        policy = CorsPolicy.of([PAGE], methods=["get"])
        allowed = dict(policy.preflight(PAGE, "GET", None))
        self.assertEqual(allowed["Access-Control-Allow-Methods"], "GET")
        self.assertRaises(S3Error, policy.preflight, PAGE, "PUT", None)

    def test_preflight_header_refused(self) -> None:
        """A request header outside the configured patterns is refused."""
        policy = CorsPolicy.of([PAGE], headers=["Content-Type", "x-amz-*"])
        policy.preflight(PAGE, "PUT", "content-type, x-amz-meta-a")
        self.assertRaises(S3Error, policy.preflight, PAGE, "PUT", "authorization")

    def test_preflight_needs_method(self) -> None:
        """A preflight without Access-Control-Request-Method is refused."""
        self.assertRaises(S3Error, CorsPolicy.of([PAGE]).preflight, PAGE, None, None)
