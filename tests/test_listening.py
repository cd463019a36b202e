"""Tests of where the S3 API listens (``lambgw.listening``)."""

from __future__ import annotations

import os

from attrs import evolve
from OpenSSL import SSL
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from lambgw.config import load
from lambgw.listening import OLD_PROTOCOLS, listen_descriptions, quote, server_endpoint
from tests.test_e2e_tls import make_test_ca


class DescriptionTests(SynchronousTestCase):
    """The endpoint descriptions made from the configuration."""

    def setUp(self) -> None:
        """A configuration read from an empty home."""
        home = self.mktemp()
        self.config = load({"home": home, "account": "demo"})

    def test_address_is_tcp(self) -> None:
        """Without a certificate the address is plain TCP."""
        self.assertEqual(listen_descriptions(self.config), ["tcp:9002:interface=127.0.0.1"])

    def test_ipv6_address_escaped(self) -> None:
        """An IPv6 host has its colons escaped."""
        config = evolve(self.config, host="::1")
        self.assertEqual(listen_descriptions(config)[0], "tcp:9002:interface=\\:\\:1")

    def test_certificate_makes_ssl(self) -> None:
        """A certificate and key turn the address into an ssl endpoint; --listen follows."""
        config = evolve(
            self.config, tls_cert="/a:b/cert.pem", tls_key="/k.pem", listen=("unix:/x",)
        )
        self.assertEqual(
            listen_descriptions(config),
            [
                "ssl:9002:interface=127.0.0.1:privateKey=/k.pem:certKey=/a\\:b/cert.pem",
                "unix:/x",
            ],
        )

    def test_quote(self) -> None:
        """Backslashes, colons and equals signs are escaped."""
        self.assertEqual(quote("a\\b:c=d"), "a\\\\b\\:c\\=d")


class EndpointTests(SynchronousTestCase):
    """Endpoints made from descriptions."""

    def test_tls_endpoint_refuses_old_versions(self) -> None:
        """An ssl endpoint's context turns off everything before TLS 1.2."""
        directory = self.mktemp()
        os.makedirs(directory)
        _, cert, key = make_test_ca(directory)
        endpoint = server_endpoint(MemoryReactor(), f"ssl:0:privateKey={key}:certKey={cert}")
        context: SSL.Context = endpoint._sslContextFactory.getContext()  # type: ignore[attr-defined]
        options = context.set_options(0)  # adds nothing, returns the options in force
        self.assertEqual(options & OLD_PROTOCOLS, OLD_PROTOCOLS)

    def test_bad_description(self) -> None:
        """A description that cannot be used is a ValueError naming it."""
        with self.assertRaises(ValueError) as caught:
            server_endpoint(MemoryReactor(), "nosuch:1")
        self.assertIn("nosuch:1", str(caught.exception))

    def test_missing_certificate(self) -> None:
        """A certificate file that is not there is a ValueError."""
        self.assertRaises(
            ValueError, server_endpoint, MemoryReactor(), "ssl:0:privateKey=/nonexistent.pem"
        )
