"""Tests of request signing: what the signature covers, dates, nonces and key files."""

from __future__ import annotations

import hashlib
import os

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lambgw.lambnet.keys import PublicKeys, ensure_key_pair
from lambgw.network import signing
from lambgw.network.http import account_key
from tests.linecount import lines_run

KEY = signing.generate_key()
NOW = 1_764_000_000


def _signed(
    method: str = "PUT",
    path: str = "/v1/accounts/demo/orders/O/object",
    query: str = "path=a%2Fb",
    digest: str = signing.EMPTY_SHA256,
    date: int = NOW,
    account: str = "demo",
) -> dict[str, str]:
    return signing.sign(KEY, account, method, path, query, digest, date)


def _check(headers: dict[str, str], **overrides: str) -> None:
    parts = {
        "method": "PUT",
        "path": "/v1/accounts/demo/orders/O/object",
        "query": "path=a%2Fb",
    }
    parts.update(overrides)
    signed = signing.parse(parts["method"], parts["path"], parts["query"], headers)
    signing.verify(KEY.public_key(), signed, NOW)


class SignatureTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """A signed request verifies with the account's public key."""
        headers = _signed()
        _check(headers)
        self.assertEqual(signing.parse("PUT", "/", "", headers).account, "demo")

    def test_method_covered(self) -> None:
        """Changing the method breaks the signature."""
        self.assertRaises(signing.SignatureError, _check, _signed(), method="DELETE")

    def test_path_covered(self) -> None:
        """Changing the path breaks the signature."""
        self.assertRaises(
            signing.SignatureError, _check, _signed(), path="/v1/accounts/demo/orders/P/object"
        )

    def test_query_covered(self) -> None:
        """Changing the query breaks the signature."""
        self.assertRaises(signing.SignatureError, _check, _signed(), query="path=other")

    def test_query_order_free(self) -> None:
        """Query parameters may be sent in any order."""
        headers = _signed(query="b=2&a=1")
        _check(headers, query="a=1&b=2")

    def test_digest_covered(self) -> None:
        """Changing the body digest header breaks the signature."""
        headers = _signed()
        headers[signing.SHA256_HEADER] = hashlib.sha256(b"other").hexdigest()
        self.assertRaises(signing.SignatureError, _check, headers)

    def test_other_key_refused(self) -> None:
        """A signature by another key does not verify."""
        headers = signing.sign(
            signing.generate_key(), "demo", "GET", "/", "", signing.EMPTY_SHA256, NOW
        )
        signed = signing.parse("GET", "/", "", headers)
        self.assertRaises(signing.SignatureError, signing.verify, KEY.public_key(), signed, NOW)

    def test_skew_bounded(self) -> None:
        """A date further than the skew from the clock is refused, either way."""
        for date in (NOW - signing.MAX_SKEW - 1, NOW + signing.MAX_SKEW + 1):
            self.assertRaises(signing.SignatureError, _check, _signed(date=date))
        _check(_signed(date=NOW - signing.MAX_SKEW))

    def test_missing_headers(self) -> None:
        """A request lacking any signing header is refused."""
        for name in ("authorization", signing.DATE_HEADER, signing.NONCE_HEADER):
            headers = _signed()
            del headers[name]
            self.assertRaises(signing.SignatureError, signing.parse, "PUT", "/", "", headers)

    @given(st.text(), st.text(), st.binary())
    def test_any_tampering_detected(self, path: str, query: str, body: bytes) -> None:
        """Any path, query or body other than the signed one is refused."""
        digest = hashlib.sha256(body).hexdigest()
        headers = signing.sign(KEY, "demo", "GET", "/p", "q=1", digest, NOW)
        signed = signing.parse("GET", "/p" + path, "q=1" + query, headers)
        if path or query.strip("&"):
            self.assertRaises(signing.SignatureError, signing.verify, KEY.public_key(), signed, NOW)


class NonceTests(SynchronousTestCase):
    def test_replay_refused(self) -> None:
        """A nonce is accepted once."""
        cache = signing.NonceCache()
        cache.check("demo", "a" * 32, NOW, NOW)
        self.assertRaises(signing.SignatureError, cache.check, "demo", "a" * 32, NOW, NOW + 1)

    def test_accounts_separate(self) -> None:
        """The same nonce from two accounts is two requests."""
        cache = signing.NonceCache()
        cache.check("demo", "a" * 32, NOW, NOW)
        cache.check("eve", "a" * 32, NOW, NOW)

    def test_replay_refused_until_the_date_expires(self) -> None:
        """A replay is refused all through its date's window, after thousands of other requests."""
        cache = signing.NonceCache(window=300, width=10)
        cache.check("demo", "a" * 32, NOW, NOW)
        for n in range(6000):
            cache.check("demo", f"{n:032x}", NOW + n // 20, NOW + n // 20)
        self.assertRaises(signing.SignatureError, cache.check, "demo", "a" * 32, NOW, NOW + 300)

    def test_outside_the_window_refused(self) -> None:
        """A request dated outside the window is refused, so no forgotten nonce is reused."""
        cache = signing.NonceCache(window=300, width=10)
        self.assertRaises(signing.SignatureError, cache.check, "demo", "a" * 32, NOW, NOW + 301)
        self.assertRaises(signing.SignatureError, cache.check, "demo", "b" * 32, NOW + 301, NOW)

    def test_size_bounded(self) -> None:
        """Under a steady stream, only the nonces of dates still accepted are kept."""
        cache = signing.NonceCache(window=100, width=10)
        sizes = []
        for second in range(1000):
            for n in range(20):
                cache.check("demo", f"{second:016x}{n:016x}", NOW + second, NOW + second)
            sizes.append((len(cache), cache.buckets))
        self.assertLessEqual(max(size for size, _ in sizes), 20 * (100 + 10))
        self.assertLessEqual(max(buckets for _, buckets in sizes), 100 // 10 + 2)
        cache.check("demo", "c" * 32, NOW + 1200, NOW + 1200)
        self.assertEqual(len(cache), 1)

    def test_work_per_check_independent_of_size(self) -> None:
        """A check runs the same Python lines with 10 or 100,000 nonces kept: no scans."""

        def lines_run_with(kept: int) -> int:
            cache = signing.NonceCache(window=300, width=10)
            for n in range(kept):
                cache.check("demo", f"{n:032x}", NOW - n % 250, NOW)
            return lines_run(lambda: cache.check("demo", "f" * 32, NOW + 5, NOW + 5))

        self.assertEqual(lines_run_with(10), lines_run_with(100_000))


class KeyFileTests(SynchronousTestCase):
    def test_plain_round_trip(self) -> None:
        """A private key written without a password reads back."""
        pem = signing.private_key_pem(KEY)
        self.assertEqual(
            signing.public_key_pem(signing.load_private_key(pem).public_key()),
            signing.public_key_pem(KEY.public_key()),
        )

    def test_encrypted_needs_password(self) -> None:
        """An encrypted key needs its password, and says so."""
        pem = signing.private_key_pem(KEY, b"secret")
        error = self.assertRaises(ValueError, signing.load_private_key, pem)
        self.assertIn(signing.PASSWORD_ENV, str(error))
        signing.load_private_key(pem, b"secret")

    def test_account_names(self) -> None:
        """Account names cannot be paths."""
        self.assertTrue(signing.valid_account("demo-1.x_y"))
        for name in ("", "..", ".hidden", "a/b", "a\\b", "x" * 200):
            self.assertFalse(signing.valid_account(name), name)

    def test_key_pair_files(self) -> None:
        """Key pairs: an encrypted private key in the home, the public key in the store."""
        home, data = self.mktemp(), self.mktemp()
        key_file, public = ensure_key_pair(home, data, "demo", b"pw")
        self.assertEqual(key_file, os.path.join(home, "keys", "demo.key"))
        self.assertEqual(os.stat(key_file).st_mode & 0o777, 0o600)
        self.assertEqual(
            signing.public_key_pem(PublicKeys(data).get("demo")),  # type: ignore[arg-type]
            signing.public_key_pem(public),
        )
        self.patch(os, "environ", {signing.PASSWORD_ENV: "pw"})
        key = account_key(home, "demo")
        self.assertEqual(signing.public_key_pem(key.public_key()), signing.public_key_pem(public))
        again, _ = ensure_key_pair(home, data, "demo", b"pw")
        self.assertEqual(again, key_file)

    def test_key_errors_name_the_file(self) -> None:
        """A missing or encrypted key without its password is reported with its file."""
        home = self.mktemp()
        error = self.assertRaises(ValueError, account_key, home, "demo")
        self.assertIn("demo.key", str(error))
        ensure_key_pair(home, self.mktemp(), "demo", b"pw")
        self.patch(os, "environ", {})
        error = self.assertRaises(ValueError, account_key, home, "demo")
        self.assertIn(signing.PASSWORD_ENV, str(error))
