"""Tests for what the S3 layer reads off a request before its body: target, bodies, headers."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import assume, given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from lambgw.gateway.buckets import check_bucket_name
from lambgw.protocol.errors import S3Error
from lambgw.s3.front import declared_size, header_map, is_upload, requested_checksums
from lambgw.s3.request import DiscardBody, MemoryBody, RequestState, S3Request, parse_target

KEYS = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=64)


class ParseTargetTests(SynchronousTestCase):
    """Path-style targets: bucket, key and query, keys never normalized."""

    def invalid(self, uri: bytes) -> None:
        """``uri`` is refused with InvalidURI (400) and S3's message."""
        error = self.assertRaises(S3Error, parse_target, uri)
        self.assertEqual(
            (error.code, error.status, error.message),
            ("InvalidURI", 400, "Couldn't parse the specified URI."),
        )

    def test_bucket_and_key(self) -> None:
        """The first segment is the bucket, the rest the key."""
        target = parse_target(b"/bucket/dir/file.txt")
        self.assertEqual((target.bucket, target.key), ("bucket", "dir/file.txt"))

    def test_service(self) -> None:
        """'/' addresses the service: no bucket, no key."""
        target = parse_target(b"/")
        self.assertEqual((target.bucket, target.key), ("", ""))

    def test_bucket_only(self) -> None:
        """'/bucket' and '/bucket/' address the bucket."""
        for uri in (b"/bucket", b"/bucket/"):
            target = parse_target(uri)
            self.assertEqual((target.bucket, target.key), ("bucket", ""), uri)

    def test_double_slash(self) -> None:
        """'//' inside a key is kept."""
        self.assertEqual(parse_target(b"/b/a//b").key, "a//b")

    def test_leading_slash_in_key(self) -> None:
        """A key starting with '/' keeps it."""
        self.assertEqual(parse_target(b"/b//k").key, "/k")

    def test_dot_dot(self) -> None:
        """'..' segments are part of the key, not resolved."""
        self.assertEqual(parse_target(b"/b/../../etc/passwd").key, "../../etc/passwd")
        self.assertEqual(parse_target(b"/b/a/./b/..").key, "a/./b/..")

    def test_trailing_slash(self) -> None:
        """A trailing '/' stays in the key."""
        self.assertEqual(parse_target(b"/b/dir/").key, "dir/")

    def test_percent_encoded_utf8(self) -> None:
        """Percent-encoded UTF-8 is decoded."""
        self.assertEqual(parse_target(b"/b/caf%C3%A9%20%E2%82%AC").key, "café €")

    def test_encoded_slash(self) -> None:
        """An encoded '/' is a '/' of the key."""
        self.assertEqual(parse_target(b"/b/a%2Fb%2f").key, "a/b/")

    def test_plus_in_path(self) -> None:
        """A '+' in the path is a '+', not a space."""
        self.assertEqual(parse_target(b"/b/a+b").key, "a+b")

    def test_raw_kept(self) -> None:
        """The raw path and query are kept as sent, for signatures."""
        target = parse_target(b"/b/a%2Fb?prefix=x%2Fy&list-type=2")
        self.assertEqual(target.raw_path, "/b/a%2Fb")
        self.assertEqual(target.raw_query, "prefix=x%2Fy&list-type=2")

    def test_invalid_utf8_path(self) -> None:
        """Percent-encoded bytes that are not UTF-8 are InvalidURI."""
        self.invalid(b"/b/%C3%28")
        self.invalid(b"/b/%FF")
        self.invalid(b"/b/a%ED%A0%80b")  # an encoded surrogate
        self.invalid(b"/b/a%C0%AFb")  # an overlong '/'

    def test_raw_non_ascii(self) -> None:
        """Bytes outside ASCII in the request line are InvalidURI."""
        self.invalid(b"/b/\xff")

    def test_bad_percent(self) -> None:
        """A '%' not followed by two hex digits is InvalidURI."""
        for uri in (b"/b/%zz", b"/b/a%", b"/b/%4", b"/b/k?prefix=%g0"):
            self.invalid(uri)

    def test_not_origin_form(self) -> None:
        """A target that does not start with '/' is InvalidURI."""
        self.invalid(b"bucket/key")

    def test_query_plus_is_space(self) -> None:
        """In the query '+' is a space and %2B a '+'."""
        self.assertEqual(parse_target(b"/b?prefix=a+b%2Bc").query, {"prefix": "a b+c"})

    def test_query_without_value(self) -> None:
        """A subresource without '=' has an empty value."""
        self.assertEqual(parse_target(b"/b/k?uploads").query, {"uploads": ""})

    def test_query_empty_items(self) -> None:
        """Empty items of a query are skipped."""
        self.assertEqual(parse_target(b"/b?&a=1&&b=&").query, {"a": "1", "b": ""})

    def test_query_utf8(self) -> None:
        """Query names and values are percent-decoded UTF-8."""
        query = parse_target(b"/b?pr%C3%A9fix=%E2%82%AC").query
        self.assertEqual(query, {"préfix": "€"})

    def test_query_invalid_utf8(self) -> None:
        """A query value that is not UTF-8 is InvalidURI."""
        self.invalid(b"/b?prefix=%FF")

    def test_query_value_with_equals(self) -> None:
        """Only the first '=' separates name and value."""
        self.assertEqual(parse_target(b"/b?marker=a=b").query, {"marker": "a=b"})

    @given(KEYS)
    def test_any_key_round_trips(self, key: str) -> None:
        """Any key, encoded as the SDKs encode it, comes back unchanged."""
        uri = ("/bucket/" + quote(key, safe="/~")).encode("ascii")
        self.assertEqual(parse_target(uri).key, key)

    @given(KEYS)
    def test_any_query_value_round_trips(self, value: str) -> None:
        """Any query value, fully encoded, comes back unchanged."""
        uri = ("/bucket?prefix=" + quote(value, safe="")).encode("ascii")
        self.assertEqual(parse_target(uri).query["prefix"], value)


class MemoryBodyTests(SynchronousTestCase):
    """Small bodies kept in memory, bounded."""

    def test_whole_body(self) -> None:
        """The pieces written come back joined."""
        body = MemoryBody(10)
        body.write(b"abc")
        body.write(b"defghij")
        self.assertEqual(self.successResultOf(body.finish()), b"abcdefghij")
        self.assertEqual(body.tell(), 10)

    def test_empty(self) -> None:
        """A body with no bytes is empty."""
        self.assertEqual(self.successResultOf(MemoryBody(10).finish()), b"")

    def test_too_large(self) -> None:
        """One byte past the limit fails with MaxMessageLengthExceeded."""
        body = MemoryBody(10)
        body.write(b"x" * 6)
        body.write(b"x" * 5)
        body.write(b"x")
        failure = self.failureResultOf(body.finish(), S3Error)
        self.assertEqual(failure.value.code, "MaxMessageLengthExceeded")
        self.assertEqual(body.tell(), 12)

    def test_too_large_keeps_nothing(self) -> None:
        """Nothing written past the limit is kept in memory."""
        body = MemoryBody(4)
        body.write(b"abcde")
        body.write(b"f" * 100)
        self.assertEqual(body._parts, [])

    def test_file_like(self) -> None:
        """Read gives nothing and seek does nothing, so twisted.web parses no form."""
        body = MemoryBody(10)
        body.write(b"a=b")
        body.seek(0)
        self.assertEqual(body.read(), b"")
        self.assertEqual(self.successResultOf(body.finish()), b"a=b")

    def test_close_forgets(self) -> None:
        """Close drops what was kept."""
        body = MemoryBody(10)
        body.write(b"abc")
        body.close()
        self.assertEqual(self.successResultOf(body.finish()), b"")


class DiscardBodyTests(SynchronousTestCase):
    """The bodies of refused requests: counted, dropped."""

    def test_counts_and_drops(self) -> None:
        """Bytes are counted, not kept, and finishing gives nothing."""
        body = DiscardBody()
        body.write(b"x" * 1000)
        body.write(b"y" * 24)
        self.assertEqual(body.tell(), 1024)
        self.assertEqual(self.successResultOf(body.finish()), b"")


class RequestedChecksumsTests(SynchronousTestCase):
    """The checksum algorithms a request asks for."""

    def test_none(self) -> None:
        """A request without checksum headers asks for none."""
        self.assertEqual(requested_checksums({"content-type": ["text/plain"]}), [])

    def test_value_header(self) -> None:
        """An x-amz-checksum-<algorithm> header asks for that algorithm."""
        headers = {"x-amz-checksum-crc32": ["AAAAAA=="], "x-amz-checksum-sha256": ["x"]}
        self.assertEqual(requested_checksums(headers), ["crc32", "sha256"])

    def test_trailer(self) -> None:
        """An x-amz-trailer naming a checksum asks for it."""
        headers = {"x-amz-trailer": ["x-amz-checksum-crc64nvme"]}
        self.assertEqual(requested_checksums(headers), ["crc64nvme"])

    def test_sdk_algorithm(self) -> None:
        """x-amz-sdk-checksum-algorithm asks for its algorithm, in any case."""
        headers = {"x-amz-sdk-checksum-algorithm": ["CRC32C"]}
        self.assertEqual(requested_checksums(headers), ["crc32c"])

    def test_checksum_algorithm(self) -> None:
        """x-amz-checksum-algorithm names an algorithm, not a checksum value."""
        headers = {"x-amz-checksum-algorithm": ["SHA1"]}
        self.assertEqual(requested_checksums(headers), ["sha1"])

    def test_type_and_mode_ignored(self) -> None:
        """x-amz-checksum-type and x-amz-checksum-mode ask for nothing."""
        headers = {"x-amz-checksum-type": ["FULL_OBJECT"], "x-amz-checksum-mode": ["ENABLED"]}
        self.assertEqual(requested_checksums(headers), [])

    def test_deduplicated(self) -> None:
        """An algorithm named several ways is computed once."""
        headers = {
            "x-amz-checksum-crc32": ["AAAAAA=="],
            "x-amz-trailer": ["x-amz-checksum-crc32"],
            "x-amz-sdk-checksum-algorithm": ["CRC32"],
        }
        self.assertEqual(requested_checksums(headers), ["crc32"])

    def test_unknown_algorithm(self) -> None:
        """An unknown algorithm is InvalidRequest."""
        error = self.assertRaises(
            S3Error, requested_checksums, {"x-amz-sdk-checksum-algorithm": ["md4"]}
        )
        self.assertEqual(error.code, "InvalidRequest")


class DeclaredSizeTests(SynchronousTestCase):
    """The payload size a request declares."""

    def test_content_length(self) -> None:
        """Without aws-chunked the size is the Content-Length."""
        self.assertEqual(declared_size({}, 42), 42)
        self.assertIsNone(declared_size({}, None))

    def test_decoded_length(self) -> None:
        """x-amz-decoded-content-length wins over the Content-Length."""
        self.assertEqual(declared_size({"x-amz-decoded-content-length": ["5"]}, 200), 5)

    def test_bad_decoded_length(self) -> None:
        """A decoded length that is not a number is InvalidArgument."""
        for value in ("-1", "abc", "", "1e3"):
            error = self.assertRaises(
                S3Error, declared_size, {"x-amz-decoded-content-length": [value]}, 10
            )
            self.assertEqual(error.code, "InvalidArgument", value)


class IsUploadTests(SynchronousTestCase):
    """Which requests carry object bytes to spool."""

    def test_put_object(self) -> None:
        """A PUT to a key is an upload."""
        self.assertTrue(is_upload("PUT", "k", {}, {}))

    def test_upload_part(self) -> None:
        """UploadPart is an upload."""
        self.assertTrue(is_upload("PUT", "k", {"partNumber": "1", "uploadId": "u"}, {}))

    def test_not_put(self) -> None:
        """GET, POST and DELETE are not uploads."""
        for method in ("GET", "POST", "DELETE", "HEAD"):
            self.assertFalse(is_upload(method, "k", {}, {}), method)

    def test_bucket(self) -> None:
        """A PUT to a bucket (CreateBucket) is not an upload."""
        self.assertFalse(is_upload("PUT", "", {}, {}))

    def test_copy(self) -> None:
        """CopyObject carries no bytes."""
        self.assertFalse(is_upload("PUT", "k", {}, {"x-amz-copy-source": ["/b/k"]}))

    def test_subresources(self) -> None:
        """PUTs of an object's acl, tagging, retention or legal hold are not uploads."""
        for name in ("acl", "tagging", "retention", "legal-hold"):
            self.assertFalse(is_upload("PUT", "k", {name: ""}, {}), name)


class BucketNameTests(SynchronousTestCase):
    """The bucket names S3 accepts."""

    def refused(self, name: str) -> None:
        """``name`` is InvalidBucketName naming itself."""
        error = self.assertRaises(S3Error, check_bucket_name, name)
        self.assertEqual(
            (error.code, error.status, error.resource), ("InvalidBucketName", 400, name)
        )

    def test_valid(self) -> None:
        """Ordinary names, 3 and 63 characters long, are accepted."""
        for name in ("awstest", "abc", "a" * 63, "my.bucket-1", "0ab"):
            check_bucket_name(name)

    def test_length(self) -> None:
        """Names of 2 or 64 characters are refused."""
        self.refused("ab")
        self.refused("a" * 64)

    def test_characters(self) -> None:
        """Upper case, underscores, spaces and slashes are refused."""
        for name in ("Bucket", "my_bucket", "my bucket", "a/b", "é-bucket"):
            self.refused(name)

    def test_ends(self) -> None:
        """A name must start and end with a letter or a digit."""
        for name in ("-abc", "abc-", ".abc", "abc."):
            self.refused(name)

    def test_adjacent_dots(self) -> None:
        """Two dots in a row are refused."""
        self.refused("a..b")

    def test_ip_address(self) -> None:
        """A name formatted as an IP address is refused."""
        self.refused("192.168.5.4")

    @given(st.from_regex(r"[a-z0-9]([a-z0-9\-]|\.(?!\.)){1,61}[a-z0-9]", fullmatch=True))
    def test_generated_valid(self, name: str) -> None:
        """Names made of the allowed characters, without '..', are accepted."""
        assume(not all(part.isdigit() for part in name.split(".")))
        check_bucket_name(name)


class HeaderMapTests(SynchronousTestCase):
    """The headers as text, with lower-case names, are read off a request once."""

    def test_made_once(self) -> None:
        """A second reading gives the mapping made at the first, and keeps every value."""
        request = DummyRequest([b""])
        request.s3 = RequestState(request_id="TEST", started=0.0)  # type: ignore[attr-defined]
        request.requestHeaders.setRawHeaders(b"X-Amz-Meta-Color", [b"red", b"blue"])
        headers = header_map(request)  # type: ignore[arg-type]
        self.assertEqual(headers["x-amz-meta-color"], ["red", "blue"])
        self.assertIs(header_map(request), headers)  # type: ignore[arg-type]


class EarlyAnswerTests(SynchronousTestCase):
    def test_observers_hear_before_the_answer_is_written(self) -> None:
        """A request answered at its headers tells its observers before writing the answer."""
        channel = DummyChannel()
        request = S3Request(channel)
        request.s3 = RequestState(request_id="0123456789ABCDEF", started=0.0)
        written_when_told: list[bytes] = []
        request.answered_early.append(
            lambda answered: written_when_told.append(answered.channel.transport.written.getvalue())
        )
        request.respond_early(403, [(b"Content-Type", b"application/xml")], b"<Error/>")
        self.assertEqual(written_when_told, [b""])
        self.assertTrue(channel.transport.written.getvalue().startswith(b"HTTP/1.1 403 "))
        self.assertEqual(request.answered_early, [])
