"""Tests for the incremental checksums of S3 bodies."""

from __future__ import annotations

import base64
import hashlib
import zlib

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lambgw.protocol.checksums import (
    ALGORITHMS,
    combine_full_object,
    composite,
    decode_b64,
    new_checksum,
)
from lambgw.protocol.errors import S3Error


def _checksum(name: str, data: bytes) -> bytes:
    c = new_checksum(name)
    c.update(data)
    return c.digest()


class KnownValueTests(SynchronousTestCase):
    def test_crc32(self) -> None:
        """CRC32 matches zlib's on b"hello world"."""
        self.assertEqual(
            _checksum("crc32", b"hello world"), zlib.crc32(b"hello world").to_bytes(4, "big")
        )
        self.assertEqual(_checksum("crc32", b"hello world").hex(), "0d4a1185")

    def test_crc32c_check_value(self) -> None:
        """CRC32C of the standard check input is 0xE3069283."""
        self.assertEqual(_checksum("crc32c", b"123456789").hex(), "e3069283")

    def test_crc64nvme_check_value(self) -> None:
        """CRC64NVME of the standard check input is 0xAE8B14860A799888."""
        self.assertEqual(_checksum("crc64nvme", b"123456789").hex(), "ae8b14860a799888")

    def test_sha256_empty(self) -> None:
        """SHA-256 of nothing is the well-known empty hash."""
        self.assertEqual(
            _checksum("sha256", b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        )

    def test_sha1_and_md5(self) -> None:
        """SHA-1 and MD5 agree with hashlib."""
        self.assertEqual(_checksum("sha1", b"abc"), hashlib.sha1(b"abc").digest())
        self.assertEqual(_checksum("md5", b"abc"), hashlib.md5(b"abc").digest())

    def test_b64_header_form(self) -> None:
        """b64() is the base64 of the raw big-endian digest."""
        c = new_checksum("crc32c")
        c.update(b"a" * 66560)
        self.assertEqual(c.b64(), "sOO8/Q==")

    def test_name_case_insensitive(self) -> None:
        """Algorithm names are accepted in any case."""
        self.assertEqual(_checksum("CRC32C", b"123456789").hex(), "e3069283")
        self.assertEqual(new_checksum("SHA256").name, "sha256")

    def test_unknown_name(self) -> None:
        """An unknown algorithm is an InvalidRequest."""
        e = self.assertRaises(S3Error, new_checksum, "crc16")
        self.assertEqual((e.code, e.status), ("InvalidRequest", 400))

    def test_decode_b64(self) -> None:
        """decode_b64 returns the raw digest and rejects malformed or wrong-size values."""
        self.assertEqual(decode_b64("crc32c", "sOO8/Q=="), bytes.fromhex("b0e3bcfd"))
        self.assertRaises(S3Error, decode_b64, "crc32c", "not base64!")
        self.assertRaises(S3Error, decode_b64, "crc32c", base64.b64encode(b"12345").decode())


class SplitPropertyTests(SynchronousTestCase):
    @given(
        st.sampled_from((*ALGORITHMS, "md5")),
        st.binary(max_size=2000),
        st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
    )
    def test_any_split_equals_one_update(self, name: str, data: bytes, cuts: list[int]) -> None:
        """Feeding a body in any pieces gives the checksum of feeding it at once."""
        c = new_checksum(name)
        previous = 0
        for cut in sorted(min(x, len(data)) for x in cuts):
            c.update(memoryview(data)[previous:cut])
            previous = cut
        c.update(data[previous:])
        self.assertEqual(c.digest(), _checksum(name, data))


class MultipartTests(SynchronousTestCase):
    @given(
        st.sampled_from(("crc32", "crc32c", "crc64nvme")),
        st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    )
    def test_full_object_combine(self, name: str, parts: list[bytes]) -> None:
        """Combining part CRCs gives the CRC of the concatenated parts."""
        combined = combine_full_object(name, [(_checksum(name, p), len(p)) for p in parts])
        self.assertEqual(combined, _checksum(name, b"".join(parts)))

    def test_full_object_not_for_hashes(self) -> None:
        """SHA checksums cannot be combined into a full-object checksum."""
        self.assertRaises(S3Error, combine_full_object, "sha256", [(b"x" * 32, 1)])

    def test_composite(self) -> None:
        """The composite checksum hashes the concatenated part digests and appends the count."""
        parts = [b"part one", b"part two", b"3"]
        digests = [hashlib.sha256(p).digest() for p in parts]
        expected = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()
        self.assertEqual(composite("sha256", digests), f"{expected}-3")
