"""Tests for the rules of the object operations: ranges, conditions, new objects, copy sources."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lambgw.network.interface import ObjectInfo
from lambgw.protocol.errors import S3Error
from lambgw.protocol.s3xml import http_date
from lambgw.s3.front import MAX_METADATA, new_object_from
from lambgw.s3.objects import (
    check_conditions,
    etag_matches,
    parse_copy_source,
    parse_range,
)

ETAG = "9bb58f26192e4ba00f01e2e7b136bbd8"
OTHER = "d41d8cd98f00b204e9800998ecf8427e"
#: The object's Last-Modified, and HTTP dates before and after it.
MODIFIED = 1_600_000_000.25
BEFORE = http_date(1_599_999_999)
AT = http_date(1_600_000_000)
AFTER = http_date(1_600_000_001)
INFO = ObjectInfo("A" * 40, "k", 10, ETAG, MODIFIED)


class RangeTests(SynchronousTestCase):
    """The Range header, as S3 reads it."""

    def unsatisfiable(self, value: str, size: int) -> None:
        """``value`` is InvalidRange (416) for an object of ``size`` bytes."""
        error = self.assertRaises(S3Error, parse_range, value, size)
        self.assertEqual((error.code, error.status), ("InvalidRange", 416))

    def test_no_header(self) -> None:
        """Without a Range header the whole object is served."""
        self.assertIsNone(parse_range(None, 10))
        self.assertIsNone(parse_range("", 10))

    def test_closed(self) -> None:
        """'bytes=2-5' is bytes 2 to 5 inclusive."""
        self.assertEqual(parse_range("bytes=2-5", 10), (2, 5))

    def test_single_byte(self) -> None:
        """'bytes=0-0' is the first byte."""
        self.assertEqual(parse_range("bytes=0-0", 10), (0, 0))

    def test_end_clamped(self) -> None:
        """An end past the object is clamped to its last byte."""
        self.assertEqual(parse_range("bytes=5-1000", 10), (5, 9))

    def test_open_ended(self) -> None:
        """'bytes=7-' runs to the end."""
        self.assertEqual(parse_range("bytes=7-", 10), (7, 9))
        self.assertEqual(parse_range("bytes=9-", 10), (9, 9))

    def test_suffix(self) -> None:
        """'bytes=-3' is the last three bytes."""
        self.assertEqual(parse_range("bytes=-3", 10), (7, 9))

    def test_suffix_longer_than_object(self) -> None:
        """A suffix longer than the object is the whole object, as a range."""
        self.assertEqual(parse_range("bytes=-20", 10), (0, 9))

    def test_suffix_of_empty_object(self) -> None:
        """A suffix of an empty object is the whole (empty) object, not a range."""
        self.assertIsNone(parse_range("bytes=-5", 0))

    def test_zero_suffix(self) -> None:
        """'bytes=-0' asks for nothing: InvalidRange."""
        self.unsatisfiable("bytes=-0", 10)

    def test_start_past_end(self) -> None:
        """A start at or past the end is InvalidRange, open-ended or not."""
        self.unsatisfiable("bytes=10-20", 10)
        self.unsatisfiable("bytes=10-", 10)
        self.unsatisfiable("bytes=11-", 10)

    def test_empty_object(self) -> None:
        """Any range starting at 0 of an empty object is InvalidRange."""
        self.unsatisfiable("bytes=0-", 0)
        self.unsatisfiable("bytes=0-0", 0)

    def test_ignored_syntax(self) -> None:
        """Syntax S3 ignores gives the whole object."""
        for value in (
            "bytes=0-1,3-4",
            "items=0-5",
            "bytes=a-b",
            "bytes=-",
            "bytes=5",
            "bytes=5-3",
            "bytes=--3",
            "bytes=1.5-2",
            "bytes=\xb2-",
            "0-5",
        ):
            self.assertIsNone(parse_range(value, 10), value)

    def test_spaces(self) -> None:
        """Spaces around the range are allowed."""
        self.assertEqual(parse_range("bytes= 1-2 ", 10), (1, 2))

    @given(st.integers(1, 10**12), st.data())
    def test_within_object(self, size: int, data: st.DataObject) -> None:
        """A satisfiable closed range always lies within the object, in order."""
        first = data.draw(st.integers(0, size - 1))
        last = data.draw(st.integers(first, 2 * size))
        start, end = parse_range(f"bytes={first}-{last}", size) or (-1, -1)
        self.assertEqual(start, first)
        self.assertEqual(end, min(last, size - 1))

    @given(st.integers(1, 10**12), st.integers(1, 2 * 10**12))
    def test_suffix_length(self, size: int, length: int) -> None:
        """A suffix range has the length asked for, or the object's."""
        start, end = parse_range(f"bytes=-{length}", size) or (-1, -1)
        self.assertEqual((end, end - start + 1), (size - 1, min(length, size)))


class EtagMatchTests(SynchronousTestCase):
    """If-Match and If-None-Match lists."""

    def test_quoted(self) -> None:
        """A quoted ETag matches."""
        self.assertTrue(etag_matches(f'"{ETAG}"', ETAG))

    def test_unquoted(self) -> None:
        """An unquoted ETag matches."""
        self.assertTrue(etag_matches(ETAG, ETAG))

    def test_star(self) -> None:
        """'*' matches any ETag."""
        self.assertTrue(etag_matches("*", ETAG))

    def test_list(self) -> None:
        """An ETag anywhere in a comma-separated list matches."""
        self.assertTrue(etag_matches(f'"{OTHER}", "{ETAG}"', ETAG))

    def test_weak(self) -> None:
        """A weak validator of the ETag matches."""
        self.assertTrue(etag_matches(f'W/"{ETAG}"', ETAG))

    def test_other(self) -> None:
        """Another ETag does not match."""
        self.assertFalse(etag_matches(f'"{OTHER}"', ETAG))
        self.assertFalse(etag_matches("", ETAG))


class ConditionTests(SynchronousTestCase):
    """Conditional GET and HEAD, with RFC 7232's precedence as S3 applies it."""

    def status(self, **headers: str) -> int | None:
        """The status a request with ``headers`` (underscores for dashes) earns."""
        return check_conditions({k.replace("_", "-"): [v] for k, v in headers.items()}, INFO)

    def test_no_conditions(self) -> None:
        """Without conditions the object is served."""
        self.assertIsNone(self.status())

    def test_if_match(self) -> None:
        """If-Match with the ETag serves; with another ETag fails with 412."""
        self.assertIsNone(self.status(if_match=f'"{ETAG}"'))
        self.assertEqual(self.status(if_match=f'"{OTHER}"'), 412)

    def test_if_none_match(self) -> None:
        """If-None-Match with the ETag is 304; with another ETag serves."""
        self.assertEqual(self.status(if_none_match=f'"{ETAG}"'), 304)
        self.assertIsNone(self.status(if_none_match=f'"{OTHER}"'))

    def test_if_none_match_star(self) -> None:
        """If-None-Match: * of an existing object is 304."""
        self.assertEqual(self.status(if_none_match="*"), 304)

    def test_if_modified_since(self) -> None:
        """If-Modified-Since serves a newer object, 304 otherwise."""
        self.assertIsNone(self.status(if_modified_since=BEFORE))
        self.assertEqual(self.status(if_modified_since=AT), 304)
        self.assertEqual(self.status(if_modified_since=AFTER), 304)

    def test_if_unmodified_since(self) -> None:
        """If-Unmodified-Since fails with 412 for a newer object, serves otherwise."""
        self.assertEqual(self.status(if_unmodified_since=BEFORE), 412)
        self.assertIsNone(self.status(if_unmodified_since=AT))
        self.assertIsNone(self.status(if_unmodified_since=AFTER))

    def test_bad_dates_ignored(self) -> None:
        """A date that does not parse is ignored."""
        self.assertIsNone(self.status(if_modified_since="yesterday"))
        self.assertIsNone(self.status(if_unmodified_since="yesterday"))

    def test_if_match_wins_over_if_unmodified_since(self) -> None:
        """If-Match true and If-Unmodified-Since false: served (the date is ignored)."""
        self.assertIsNone(self.status(if_match=f'"{ETAG}"', if_unmodified_since=BEFORE))

    def test_if_match_false_if_unmodified_true(self) -> None:
        """If-Match false and If-Unmodified-Since true: 412."""
        self.assertEqual(self.status(if_match=f'"{OTHER}"', if_unmodified_since=AFTER), 412)

    def test_if_none_match_wins_over_if_modified_since(self) -> None:
        """If-None-Match false and If-Modified-Since true (not modified): served."""
        self.assertIsNone(self.status(if_none_match=f'"{OTHER}"', if_modified_since=AFTER))

    def test_if_none_match_true_if_modified_since(self) -> None:
        """If-None-Match matching and If-Modified-Since false (modified): 304."""
        self.assertEqual(self.status(if_none_match=f'"{ETAG}"', if_modified_since=BEFORE), 304)

    def test_412_before_304(self) -> None:
        """A failed If-Match is 412 even when If-None-Match would give 304."""
        self.assertEqual(self.status(if_match=f'"{OTHER}"', if_none_match=f'"{ETAG}"'), 412)

    def test_if_match_and_if_modified_since(self) -> None:
        """If-Match true and If-Modified-Since false: 304."""
        self.assertEqual(self.status(if_match=f'"{ETAG}"', if_modified_since=AFTER), 304)

    def test_second_precision(self) -> None:
        """Last-Modified is compared in whole seconds, as HTTP dates are."""
        self.assertEqual(self.status(if_modified_since=http_date(int(MODIFIED))), 304)


class NewObjectTests(SynchronousTestCase):
    """What a request gives a new object besides its bytes."""

    def test_defaults(self) -> None:
        """Without headers: binary/octet-stream, no metadata, no stored headers."""
        new = new_object_from({}, 5, ETAG)
        self.assertEqual((new.size, new.etag, new.content_type), (5, ETAG, "binary/octet-stream"))
        self.assertEqual((dict(new.metadata), dict(new.headers)), ({}, {}))

    def test_content_type(self) -> None:
        """Content-Type is kept."""
        self.assertEqual(
            new_object_from({"content-type": ["text/plain"]}, 0, ETAG).content_type, "text/plain"
        )

    def test_metadata(self) -> None:
        """x-amz-meta-* headers are the metadata, names without the prefix."""
        new = new_object_from({"x-amz-meta-color": ["blue"], "x-amz-meta-a-b": ["1"]}, 0, ETAG)
        self.assertEqual(dict(new.metadata), {"color": "blue", "a-b": "1"})

    def test_metadata_repeated(self) -> None:
        """A repeated metadata header is joined with commas."""
        new = new_object_from({"x-amz-meta-tag": ["a", "b"]}, 0, ETAG)
        self.assertEqual(dict(new.metadata), {"tag": "a,b"})

    def test_metadata_limit(self) -> None:
        """Metadata of exactly the limit is accepted."""
        value = "v" * (MAX_METADATA - len("name"))
        new = new_object_from({"x-amz-meta-name": [value]}, 0, ETAG)
        self.assertEqual(new.metadata["name"], value)

    def test_metadata_too_large(self) -> None:
        """One byte of metadata past the limit is MetadataTooLarge (400)."""
        headers = {"x-amz-meta-name": ["v" * (MAX_METADATA - len("name") + 1)]}
        error = self.assertRaises(S3Error, new_object_from, headers, 0, ETAG)
        self.assertEqual((error.code, error.status), ("MetadataTooLarge", 400))

    def test_metadata_summed(self) -> None:
        """The limit applies to the names and values of all metadata together."""
        headers = {f"x-amz-meta-k{i}": ["v" * 250] for i in range(10)}
        self.assertRaises(S3Error, new_object_from, headers, 0, ETAG)

    def test_stored_headers(self) -> None:
        """Cache-Control, Content-Disposition, -Encoding, -Language and Expires are kept."""
        headers = {
            "cache-control": ["no-cache"],
            "content-disposition": ['attachment; filename="a.txt"'],
            "content-encoding": ["gzip"],
            "content-language": ["fr"],
            "expires": [AFTER],
            "x-amz-acl": ["private"],
            "content-md5": ["xxx"],
        }
        self.assertEqual(
            dict(new_object_from(headers, 0, ETAG).headers),
            {
                "cache-control": "no-cache",
                "content-disposition": 'attachment; filename="a.txt"',
                "content-encoding": "gzip",
                "content-language": "fr",
                "expires": AFTER,
            },
        )

    def test_aws_chunked_only(self) -> None:
        """Content-Encoding: aws-chunked alone is not stored."""
        new = new_object_from({"content-encoding": ["aws-chunked"]}, 0, ETAG)
        self.assertNotIn("content-encoding", new.headers)

    def test_content_encoding_as_sent(self) -> None:
        """A Content-Encoding list is kept byte for byte, less only its aws-chunked token."""
        for value, kept in (
            ("deflate, gzip", "deflate, gzip"),
            ("deflate,  aws-chunked, gzip", "deflate, gzip"),
            ("aws-chunked, deflate ,gzip", "deflate ,gzip"),
        ):
            new = new_object_from({"content-encoding": [value]}, 0, ETAG)
            self.assertEqual(new.headers["content-encoding"], kept, value)

    def test_aws_chunked_stripped(self) -> None:
        """aws-chunked is removed from a Content-Encoding list, whatever its place and case."""
        for value in ("aws-chunked,gzip", "gzip, aws-chunked", "AWS-Chunked , gzip"):
            new = new_object_from({"content-encoding": [value]}, 0, ETAG)
            self.assertEqual(new.headers["content-encoding"], "gzip", value)


class CopySourceTests(SynchronousTestCase):
    """x-amz-copy-source."""

    def test_leading_slash(self) -> None:
        """'/bucket/key' and 'bucket/key' name the same object."""
        self.assertEqual(parse_copy_source("/b/dir/k"), ("b", "dir/k"))
        self.assertEqual(parse_copy_source("b/dir/k"), ("b", "dir/k"))

    def test_url_encoded(self) -> None:
        """The source is URL-decoded; '+' stays a '+'."""
        self.assertEqual(parse_copy_source("/b/a%20b%2Bc+d/%C3%A9"), ("b", "a b+c+d/é"))

    def test_encoded_question_mark(self) -> None:
        """An encoded '?' is part of the key."""
        self.assertEqual(parse_copy_source("/b/what%3F"), ("b", "what?"))

    def test_key_slashes_kept(self) -> None:
        """'//' and '..' in the source key are kept."""
        self.assertEqual(parse_copy_source("/b/a//../c/"), ("b", "a//../c/"))

    def test_bad_encoding(self) -> None:
        """Bad percent-encoding or bytes that are not UTF-8 are InvalidArgument, as in S3."""
        for value in ("/b/%FF", "/b/%%%%", "/b/a%C3%28", "/b/caf\udce9"):
            error = self.assertRaises(S3Error, parse_copy_source, value)
            self.assertEqual(
                (error.code, error.message), ("InvalidArgument", "Invalid copy source encoding")
            )

    def test_version_id(self) -> None:
        """A versionId is NotImplemented (501)."""
        error = self.assertRaises(S3Error, parse_copy_source, "/b/k?versionId=3")
        self.assertEqual((error.code, error.status), ("NotImplemented", 501))

    def test_missing_key(self) -> None:
        """A source without a key is InvalidArgument."""
        for value in ("/b", "/b/", "", "/"):
            error = self.assertRaises(S3Error, parse_copy_source, value)
            self.assertEqual(error.code, "InvalidArgument", value)
