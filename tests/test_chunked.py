"""Tests for the incremental aws-chunked body decoder."""

from __future__ import annotations

import hashlib
import io

from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lambgw.protocol.checksums import new_checksum
from lambgw.protocol.chunked import AwsChunkedDecoder
from lambgw.protocol.errors import S3Error
from lambgw.protocol.sigv4 import ChunkSigner, derive_signing_key

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEY = derive_signing_key(SECRET, "20130524", "us-east-1", "s3")
AMZ_DATE = "20130524T000000Z"
SCOPE = "20130524/us-east-1/s3/aws4_request"
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
TRAILER_SEED = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"

AWS_EXAMPLE = (
    b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n"
    + b"a" * 65536
    + b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
    + b"\r\n"
    + b"a" * 1024
    + b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
    + b"\r\n\r\n"
)
AWS_TRAILER_EXAMPLE = (
    b"10000;chunk-signature=b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2\r\n"
    + b"a" * 65536
    + b"\r\n400;chunk-signature=1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7"
    + b"\r\n"
    + b"a" * 1024
    + b"\r\n0;chunk-signature=2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992"
    + b"\r\nx-amz-checksum-crc32c:sOO8/Q==\r\n"
    + b"x-amz-trailer-signature:d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"
    + b"\r\n\r\n"
)

MODES = ("signed", "signed-trailer", "unsigned-trailer")


def signer(seed: str = SEED) -> ChunkSigner:
    """Make a chunk signer for the AWS example credentials."""
    return ChunkSigner(KEY, AMZ_DATE, SCOPE, seed)


def encode(payload: bytes, sizes: list[int], mode: str, trailers: dict[str, str]) -> bytes:
    """Encode ``payload`` as aws-chunked with chunks of the given sizes (then the rest)."""
    chain = signer() if mode.startswith("signed") else None
    chunks, pos = [], 0
    for size in [*sizes, len(payload)]:
        if pos >= len(payload):
            break
        chunks.append(payload[pos : pos + size])
        pos += size
    out = []
    for chunk in [*chunks, b""]:
        extension = b""
        if chain is not None:
            digest = hashlib.sha256(chunk).hexdigest()
            signature = chain.chunk_signature(digest)
            chain.verify_chunk(signature, digest)
            extension = b";chunk-signature=" + signature.encode()
        out.append(b"%x%s\r\n%s" % (len(chunk), extension, chunk))
        if chunk:
            out.append(b"\r\n")
    if mode.endswith("trailer"):
        canonical = "".join(f"{name}:{value}\n" for name, value in trailers.items())
        out.extend(f"{name}:{value}\r\n".encode() for name, value in trailers.items())
        if chain is not None:
            signature = chain.trailer_signature(canonical.encode())
            out.append(f"x-amz-trailer-signature:{signature}\r\n".encode())
    out.append(b"\r\n")
    return b"".join(out)


def decoder(mode: str, decoded_length: int | None = None, **kwargs: int) -> AwsChunkedDecoder:
    """Make a decoder for one of MODES."""
    return AwsChunkedDecoder(
        signer() if mode.startswith("signed") else None,
        mode.endswith("trailer"),
        decoded_length=decoded_length,
        **kwargs,
    )


def decode(d: AwsChunkedDecoder, body: bytes, cuts: list[int]) -> tuple[bytes, dict[str, str]]:
    """Feed ``body`` split at ``cuts``; return the payload and the trailers."""
    out: list[bytes] = []
    previous = 0
    for cut in [*sorted(cuts), len(body)]:
        out.extend(bytes(piece) for piece in d.feed(body[previous:cut]))
        previous = cut
    return b"".join(out), d.finish()


class PublishedExampleTests(SynchronousTestCase):
    def test_signed_example(self) -> None:
        """AWS's chunked upload example decodes, fed in uneven pieces."""
        d = AwsChunkedDecoder(signer(), False, decoded_length=66560)
        self.assertEqual(len(AWS_EXAMPLE), 66824)
        payload, trailers = decode(d, AWS_EXAMPLE, list(range(0, len(AWS_EXAMPLE), 997)))
        self.assertEqual((payload, trailers), (b"a" * 66560, {}))

    def test_signed_trailer_example(self) -> None:
        """AWS's chunked upload example with a signed checksum trailer decodes."""
        d = AwsChunkedDecoder(signer(TRAILER_SEED), True, decoded_length=66560)
        payload, trailers = decode(d, AWS_TRAILER_EXAMPLE, [5, 100, 66000, 66600])
        self.assertEqual(payload, b"a" * 66560)
        self.assertEqual(trailers, {"x-amz-checksum-crc32c": "sOO8/Q=="})

    def test_bad_trailer_signature(self) -> None:
        """A trailer whose value was changed after signing is SignatureDoesNotMatch."""
        body = AWS_TRAILER_EXAMPLE.replace(b"sOO8/Q==", b"AAAAAA==")
        d = AwsChunkedDecoder(signer(TRAILER_SEED), True)
        e = self.assertRaises(S3Error, d.feed, body)
        self.assertEqual((e.code, e.status), ("SignatureDoesNotMatch", 403))

    def test_missing_trailer_signature(self) -> None:
        """A signed-trailer body whose trailer is unsigned is SignatureDoesNotMatch."""
        cut = AWS_TRAILER_EXAMPLE.index(b"x-amz-trailer-signature")
        body = AWS_TRAILER_EXAMPLE[:cut] + b"\r\n"
        d = AwsChunkedDecoder(signer(TRAILER_SEED), True)
        e = self.assertRaises(S3Error, d.feed, body)
        self.assertEqual(e.code, "SignatureDoesNotMatch")

    def test_botocore_wrapper(self) -> None:
        """The body botocore's AwsChunkedWrapper sends decodes, with its CRC32 trailer."""
        payload = bytes(range(256)) * 1000
        wrapper = AwsChunkedWrapper(
            io.BytesIO(payload),
            checksum_cls=Crc32Checksum,
            checksum_name="x-amz-checksum-crc32",
            chunk_size=65536,
        )
        body = wrapper.read()
        d = AwsChunkedDecoder(None, True, decoded_length=len(payload))
        decoded, trailers = decode(d, body, [1, 70000, 70001])
        crc32 = new_checksum("crc32")
        crc32.update(payload)
        self.assertEqual(decoded, payload)
        self.assertEqual(trailers, {"x-amz-checksum-crc32": crc32.b64()})


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=150, deadline=None)
    @given(
        st.sampled_from(MODES),
        st.binary(max_size=3000),
        st.lists(st.integers(min_value=1, max_value=700), max_size=8),
        st.lists(st.integers(min_value=0, max_value=5000), max_size=12),
    )
    def test_any_chunking_any_split(
        self, mode: str, payload: bytes, sizes: list[int], cuts: list[int]
    ) -> None:
        """Any payload in any chunk sizes, fed split anywhere, decodes to itself."""
        trailers = {"x-amz-checksum-crc32": "AAAAAA=="} if mode.endswith("trailer") else {}
        body = encode(payload, sizes, mode, trailers)
        cuts = [min(cut, len(body)) for cut in cuts]
        self.assertEqual(decode(decoder(mode, len(payload)), body, cuts), (payload, trailers))

    def test_every_byte_boundary(self) -> None:
        """A small body decodes when fed one byte at a time, in every mode."""
        payload = b"The quick brown fox jumps over the lazy dog"
        for mode in MODES:
            body = encode(payload, [10, 1, 20], mode, {"x-amz-checksum-sha256": "x"})
            cuts = list(range(len(body)))
            expected_trailers = {"x-amz-checksum-sha256": "x"} if mode.endswith("trailer") else {}
            self.assertEqual(decode(decoder(mode), body, cuts), (payload, expected_trailers))


class StreamingTests(SynchronousTestCase):
    def test_unsigned_released_at_once(self) -> None:
        """Unsigned chunk data is given back as soon as it arrives."""
        d = decoder("unsigned-trailer")
        self.assertEqual(b"".join(d.feed(b"a;ignored\r\nhello")), b"hello")

    def test_signed_held_until_verified(self) -> None:
        """Signed chunk data is given back only once the whole chunk is verified."""
        body = encode(b"hello world", [], "signed", {})
        d = decoder("signed")
        end_of_data = body.index(b"hello world") + 11
        self.assertEqual(d.feed(body[: end_of_data - 1]), [])
        self.assertEqual(b"".join(d.feed(body[end_of_data - 1 : end_of_data])), b"hello world")


class RejectionTests(SynchronousTestCase):
    def test_truncated(self) -> None:
        """A body that ends anywhere before its end is IncompleteBody."""
        body = encode(b"0123456789" * 5, [17], "signed-trailer", {"x-amz-checksum-crc32": "A"})
        for end in range(len(body)):
            d = decoder("signed-trailer")
            d.feed(body[:end])
            e = self.assertRaises(S3Error, d.finish)
            self.assertEqual((e.code, e.status), ("IncompleteBody", 400))

    def test_wrong_chunk_signature_in_middle(self) -> None:
        """A bad signature on a middle chunk fails before its data is released."""
        body = encode(b"x" * 300, [100, 100], "signed", {})
        second = body.index(b"64;chunk-signature=", 10) + len(b"64;chunk-signature=")
        tampered = body[:second] + b"0" * 64 + body[second + 64 :]
        d = decoder("signed")
        released = d.feed(tampered[:second])
        e = self.assertRaises(S3Error, d.feed, tampered[second:])
        self.assertEqual(e.code, "SignatureDoesNotMatch")
        self.assertEqual(b"".join(released), b"x" * 100)

    def test_tampered_chunk_data(self) -> None:
        """Changing signed chunk data is SignatureDoesNotMatch."""
        body = encode(b"x" * 300, [100], "signed", {}).replace(b"xxx", b"xyx", 1)
        e = self.assertRaises(S3Error, decoder("signed").feed, body)
        self.assertEqual(e.code, "SignatureDoesNotMatch")

    def test_unsigned_chunk_in_signed_body(self) -> None:
        """A chunk without signature in a signed body is SignatureDoesNotMatch."""
        e = self.assertRaises(S3Error, decoder("signed").feed, b"5\r\nhello\r\n")
        self.assertEqual(e.code, "SignatureDoesNotMatch")

    def test_oversize_size_line(self) -> None:
        """An endless chunk header line is InvalidArgument, whatever the feeding."""
        for pieces in ([b"1" * 5000], [b"1" * 100] * 50):
            d = decoder("unsigned-trailer")
            e = self.assertRaises(S3Error, lambda d=d, p=pieces: [d.feed(x) for x in p])
            self.assertEqual((e.code, e.status), ("InvalidArgument", 400))

    def test_bad_size(self) -> None:
        """Chunk sizes that are not plain hex are InvalidArgument."""
        for line in (b"0x10\r\n", b"+5\r\n", b" 5\r\n", b"\r\n", b"g\r\n", b"1" * 17 + b"\r\n"):
            e = self.assertRaises(S3Error, decoder("unsigned-trailer").feed, line)
            self.assertEqual(e.code, "InvalidArgument")

    def test_chunk_too_large(self) -> None:
        """A chunk larger than the limit is refused before its data is read."""
        e = self.assertRaises(S3Error, decoder("unsigned-trailer", max_chunk=1024).feed, b"401\r\n")
        self.assertEqual(e.code, "InvalidArgument")

    def test_missing_crlf_after_data(self) -> None:
        """Chunk data longer than its declared size is InvalidArgument."""
        e = self.assertRaises(S3Error, decoder("unsigned-trailer").feed, b"2\r\nabc\r\n")
        self.assertEqual(e.code, "InvalidArgument")

    def test_bare_lf(self) -> None:
        """A line ended by LF alone is InvalidArgument."""
        e = self.assertRaises(S3Error, decoder("unsigned-trailer").feed, b"2\nab\r\n")
        self.assertEqual(e.code, "InvalidArgument")

    def test_trailer_not_announced(self) -> None:
        """Trailer headers on a body without trailer are InvalidArgument."""
        body = encode(b"abc", [], "signed", {})[:-2] + b"x-amz-checksum-crc32:A\r\n\r\n"
        e = self.assertRaises(S3Error, decoder("signed").feed, body)
        self.assertEqual(e.code, "InvalidArgument")

    def test_data_after_end(self) -> None:
        """Bytes after the final empty line are InvalidArgument."""
        body = encode(b"abc", [], "unsigned-trailer", {}) + b"junk"
        e = self.assertRaises(S3Error, decoder("unsigned-trailer").feed, body)
        self.assertEqual(e.code, "InvalidArgument")

    def test_decoded_length_mismatch(self) -> None:
        """A payload shorter or longer than x-amz-decoded-content-length is IncompleteBody."""
        body = encode(b"abcdef", [2], "unsigned-trailer", {})
        short = decoder("unsigned-trailer", decoded_length=7)
        short.feed(body)
        self.assertEqual(self.assertRaises(S3Error, short.finish).code, "IncompleteBody")
        long = decoder("unsigned-trailer", decoded_length=5)
        self.assertEqual(self.assertRaises(S3Error, long.feed, body).code, "IncompleteBody")

    def test_trailer_too_large(self) -> None:
        """An endless trailer is InvalidArgument."""
        d = decoder("unsigned-trailer")
        d.feed(b"0\r\n")
        lines = b"".join(b"x-amz-meta-%d:%s\r\n" % (i, b"v" * 100) for i in range(200))
        e = self.assertRaises(S3Error, d.feed, lines)
        self.assertEqual(e.code, "InvalidArgument")
