"""Tests for SigV4 canonical requests and signatures, against AWS's published examples."""

from __future__ import annotations

import hashlib
import hmac
import random
from urllib.parse import unquote_to_bytes

from twisted.trial.unittest import SynchronousTestCase

from lambgw.protocol import sigv4
from lambgw.protocol.errors import S3Error

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AMZ_DATE = "20130524T000000Z"
SCOPE = "20130524/us-east-1/s3/aws4_request"
EMPTY = sigv4.EMPTY_SHA256


def _signature(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, list[str]],
    signed: tuple[str, ...],
    payload: str,
    *,
    presigned: bool = False,
) -> str:
    canonical = sigv4.canonical_request(
        method, raw_path, raw_query, headers, signed, payload, presigned=presigned
    )
    key = sigv4.derive_signing_key(SECRET, "20130524", "us-east-1", "s3")
    return sigv4.sign(key, sigv4.string_to_sign(AMZ_DATE, SCOPE, canonical))


class PublishedExampleTests(SynchronousTestCase):
    """The S3 examples of "Examples: Signature Calculations in AWS Signature Version 4"."""

    def test_get_object_with_range(self) -> None:
        """GET Object with a Range header signs as published."""
        headers = {
            "host": ["examplebucket.s3.amazonaws.com"],
            "range": ["bytes=0-9"],
            "x-amz-content-sha256": [EMPTY],
            "x-amz-date": [AMZ_DATE],
        }
        signed = ("host", "range", "x-amz-content-sha256", "x-amz-date")
        self.assertEqual(
            sigv4.canonical_request("GET", "/test.txt", "", headers, signed, EMPTY),
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
            f"x-amz-content-sha256:{EMPTY}\nx-amz-date:{AMZ_DATE}\n\n"
            f"host;range;x-amz-content-sha256;x-amz-date\n{EMPTY}",
        )
        self.assertEqual(
            _signature("GET", "/test.txt", "", headers, signed, EMPTY),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        )

    def test_put_object(self) -> None:
        """PUT Object with a $ in the key and a Date header signs as published."""
        payload = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
        headers = {
            "host": ["examplebucket.s3.amazonaws.com"],
            "date": ["Fri, 24 May 2013 00:00:00 GMT"],
            "x-amz-date": [AMZ_DATE],
            "x-amz-storage-class": ["REDUCED_REDUNDANCY"],
            "x-amz-content-sha256": [payload],
        }
        signed = ("date", "host", "x-amz-content-sha256", "x-amz-date", "x-amz-storage-class")
        self.assertEqual(
            _signature("PUT", "/test%24file.text", "", headers, signed, payload),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
        )

    def test_get_bucket_lifecycle(self) -> None:
        """A sub-resource without a value signs as ``lifecycle=``."""
        headers = {
            "host": ["examplebucket.s3.amazonaws.com"],
            "x-amz-content-sha256": [EMPTY],
            "x-amz-date": [AMZ_DATE],
        }
        signed = ("host", "x-amz-content-sha256", "x-amz-date")
        self.assertEqual(sigv4.canonical_query("lifecycle"), "lifecycle=")
        self.assertEqual(
            _signature("GET", "/", "lifecycle", headers, signed, EMPTY),
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        )

    def test_list_objects(self) -> None:
        """GET Bucket with a query signs as published."""
        headers = {
            "host": ["examplebucket.s3.amazonaws.com"],
            "x-amz-content-sha256": [EMPTY],
            "x-amz-date": [AMZ_DATE],
        }
        signed = ("host", "x-amz-content-sha256", "x-amz-date")
        self.assertEqual(
            _signature("GET", "/", "max-keys=2&prefix=J", headers, signed, EMPTY),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        )

    def test_presigned_url(self) -> None:
        """The presigned URL example signs as published, X-Amz-Signature left out."""
        query = (
            "X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
            "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
            "&X-Amz-Signature=ffff"
        )
        headers = {"host": ["examplebucket.s3.amazonaws.com"]}
        self.assertEqual(
            _signature(
                "GET", "/test.txt", query, headers, ("host",), "UNSIGNED-PAYLOAD", presigned=True
            ),
            "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
        )


class ChunkSignerTests(SynchronousTestCase):
    """The chunked upload examples of the SigV4 streaming pages."""

    def _signer(self, seed: str) -> sigv4.ChunkSigner:
        key = sigv4.derive_signing_key(SECRET, "20130524", "us-east-1", "s3")
        return sigv4.ChunkSigner(key, AMZ_DATE, SCOPE, seed)

    def test_chunk_signatures_chain(self) -> None:
        """Chunk signatures chain from the seed as in the published example."""
        signer = self._signer("4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9")
        for data, expected in (
            (b"a" * 65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
            (b"a" * 1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
            (b"", "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
        ):
            signer.verify_chunk(expected, hashlib.sha256(data).hexdigest())

    def test_trailer_signature(self) -> None:
        """The trailer signature follows the last chunk as in the published example."""
        signer = self._signer("106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e")
        for data, expected in (
            (b"a" * 65536, "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2"),
            (b"a" * 1024, "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7"),
            (b"", "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992"),
        ):
            signer.verify_chunk(expected, hashlib.sha256(data).hexdigest())
        signer.verify_trailer(
            "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435",
            b"x-amz-checksum-crc32c:sOO8/Q==\n",
        )

    def test_wrong_chunk_signature(self) -> None:
        """A wrong chunk signature is SignatureDoesNotMatch."""
        signer = self._signer("4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9")
        e = self.assertRaises(S3Error, signer.verify_chunk, "0" * 64, EMPTY)
        self.assertEqual((e.code, e.status), ("SignatureDoesNotMatch", 403))


class CanonicalFormTests(SynchronousTestCase):
    def test_uri_reencodes(self) -> None:
        """The path is decoded then encoded once, upper-case, keeping ``/``."""
        self.assertEqual(sigv4.canonical_uri("/a%20b/%c3%bc"), "/a%20b/%C3%BC")
        self.assertEqual(sigv4.canonical_uri("/a b/ü"), "/a%20b/%C3%BC")
        self.assertEqual(sigv4.canonical_uri("/x$y"), "/x%24y")

    def test_uri_not_normalized(self) -> None:
        """``//`` and ``..`` are kept: they may be part of a key."""
        self.assertEqual(sigv4.canonical_uri("/b//k/../x/."), "/b//k/../x/.")

    def test_uri_plus_and_tilde(self) -> None:
        """A literal ``+`` stays a plus (encoded), ``~`` stays as is."""
        self.assertEqual(sigv4.canonical_uri("/b/a+b~c"), "/b/a%2Bb~c")
        self.assertEqual(sigv4.canonical_uri("/b/a%2Bb%7Ec"), "/b/a%2Bb~c")

    def test_plain_paths_kept_as_they_are(self) -> None:
        """A plain path is its own canonical URI: the same as decoding and encoding it give."""
        rng = random.Random(7)
        alphabet = "ab/-._~Z9+=%20é?"
        for _ in range(5000):
            path = "/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
            again = sigv4.uri_encode(unquote_to_bytes(path), keep_slash=True)
            self.assertEqual(sigv4.canonical_uri(path), again, path)

    def test_empty_path(self) -> None:
        """An empty path is ``/``."""
        self.assertEqual(sigv4.canonical_uri(""), "/")

    def test_query_sorted_and_encoded(self) -> None:
        """Parameters are re-encoded (``/`` too) and sorted by name then value."""
        self.assertEqual(
            sigv4.canonical_query("prefix=a/b+c&delimiter=%2f&b=2&b=1&uploads"),
            "b=1&b=2&delimiter=%2F&prefix=a%2Fb%2Bc&uploads=",
        )

    def test_query_presigned_drops_signature(self) -> None:
        """Only the presigned form drops X-Amz-Signature."""
        self.assertEqual(sigv4.canonical_query("a=1&X-Amz-Signature=s", presigned=True), "a=1")
        self.assertEqual(sigv4.canonical_query("a=1&X-Amz-Signature=s"), "X-Amz-Signature=s&a=1")

    def test_parse_query(self) -> None:
        """Query pairs are decoded, with ``+`` kept as a plus."""
        self.assertEqual(
            sigv4.parse_query("a=1+2&b=%20x&&c"), [("a", "1+2"), ("b", " x"), ("c", "")]
        )

    def test_headers_trimmed_and_joined(self) -> None:
        """Header values are trimmed, inner spaces collapsed, repeats joined with commas."""
        headers = {
            "host": ["h"],
            "x-amz-meta-a": ["  one   two ", "three"],
            "x-amz-meta-b": [" b  c "],
        }
        self.assertEqual(
            sigv4.canonical_headers(headers, ("host", "x-amz-meta-a", "x-amz-meta-b")),
            "host:h\nx-amz-meta-a:one two,three\nx-amz-meta-b:b c\n",
        )

    def test_header_bytes_signed_as_sent(self) -> None:
        """Header bytes are hashed as sent: UTF-8 as UTF-8, other bytes (escaped) as such."""
        for sent in ("Hello Worldé".encode(), b"caf\xe9"):
            canonical = "x-amz-meta-a:" + sent.decode("utf-8", "surrogateescape")
            digest = hashlib.sha256(b"x-amz-meta-a:" + sent).hexdigest()
            self.assertEqual(
                sigv4.string_to_sign(AMZ_DATE, SCOPE, canonical).rsplit("\n", 1)[1], digest
            )


class AuthorizationHeaderTests(SynchronousTestCase):
    def test_parse_with_spaces(self) -> None:
        """The fields may be separated by ``, `` or ``,``."""
        for separator in (", ", ","):
            parsed = sigv4.AuthorizationHeader.parse(
                "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request"
                f"{separator}SignedHeaders=host;range;x-amz-date{separator}Signature=abc"
            )
            self.assertEqual(parsed.credential.access_key, "AK")
            self.assertEqual(parsed.credential.scope, SCOPE)
            self.assertEqual(parsed.signed_headers, ("host", "range", "x-amz-date"))
            self.assertEqual(parsed.signature, "abc")

    def test_signature_alone_changes(self) -> None:
        """Values alike but for their signature each parse to their own, as a full parse does."""
        head = (
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,"
            " SignedHeaders=host;x-amz-date, Signature="
        )
        for signature in ("ab12", "CD34", "ab12", "not hex", "ab12 "):
            parsed = sigv4.AuthorizationHeader.parse(head + signature)
            self.assertEqual(parsed.signature, signature.strip())
            self.assertEqual(parsed.signed_headers, ("host", "x-amz-date"))
            self.assertEqual(parsed, sigv4._parse_authorization(head + signature))
        other = head.replace("AK/", "BK/") + "ab12"
        self.assertEqual(sigv4.AuthorizationHeader.parse(other).credential.access_key, "BK")

    def test_malformed_every_time(self) -> None:
        """A malformed value is refused each time it comes, not only the first."""
        value = "AWS4-HMAC-SHA256 Credential=AK/2013/us-east-1/s3/aws4_request, " + (
            "SignedHeaders=host, Signature=ab12"
        )
        for _ in range(2):
            e = self.assertRaises(S3Error, sigv4.AuthorizationHeader.parse, value)
            self.assertEqual(e.code, "AuthorizationHeaderMalformed")

    def test_any_region(self) -> None:
        """Any region in the credential scope is accepted."""
        credential = sigv4.Credential.parse("AK/20130524/eu-west-9/s3/aws4_request", "X")
        self.assertEqual(credential.region, "eu-west-9")

    def test_wrong_service(self) -> None:
        """A scope for another service than s3 is rejected."""
        e = self.assertRaises(
            S3Error,
            sigv4.Credential.parse,
            "AK/20130524/us-east-1/ec2/aws4_request",
            "AuthorizationHeaderMalformed",
        )
        self.assertEqual(e.code, "AuthorizationHeaderMalformed")

    def test_malformed(self) -> None:
        """Missing fields or a bad credential make AuthorizationHeaderMalformed."""
        for value in (
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request, Signature=x",
            "AWS4-HMAC-SHA256 Credential=AK/2013/us-east-1/s3/aws4_request, "
            "SignedHeaders=host, Signature=x",
            "AWS4-HMAC-SHA256 garbage",
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=x-amz-date, Signature=x",
        ):
            e = self.assertRaises(S3Error, sigv4.AuthorizationHeader.parse, value)
            self.assertEqual((e.code, e.status), ("AuthorizationHeaderMalformed", 400))


def _fresh_key(secret: str, day: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


class SigningKeyTests(SynchronousTestCase):
    """Signing keys are kept between requests, by secret, day, region and service."""

    def test_kept_keys_match_fresh_derivation(self) -> None:
        """Each combination of secret and scope gets its own key, the same when asked again."""
        scopes = [
            (SECRET, "20130524", "us-east-1", "s3"),
            ("other secret", "20130524", "us-east-1", "s3"),
            (SECRET, "20130525", "us-east-1", "s3"),
            (SECRET, "20130524", "eu-west-1", "s3"),
        ]
        for scope in scopes * 2:
            self.assertEqual(sigv4.derive_signing_key(*scope), _fresh_key(*scope))
        self.assertEqual(len({sigv4.derive_signing_key(*scope) for scope in scopes}), 4)
