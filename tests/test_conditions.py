"""Conditional write headers, and the write headers that are refused rather than ignored."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from lambgw.protocol.conditions import (
    COMPLETE_MULTIPART,
    COPY_OBJECT,
    CREATE_MULTIPART,
    DELETE_OBJECT,
    PUT_OBJECT,
    UPLOAD_PART,
    refuse_unsupported,
    unquote_etag,
    write_conditions,
)
from lambgw.protocol.errors import S3Error

OWNER = "f" * 64


class WriteConditionsTests(SynchronousTestCase):
    """``If-None-Match`` and ``If-Match`` of a write."""

    def test_none(self) -> None:
        """No header: an unconditional write."""
        self.assertEqual(write_conditions({}), (False, None))

    def test_if_none_match_star(self) -> None:
        """``If-None-Match: *`` asks for no object to be there."""
        self.assertEqual(write_conditions({"if-none-match": [" * "]}), (True, None))

    def test_if_none_match_etag(self) -> None:
        """``If-None-Match`` with an etag is NotImplemented (501), as in S3."""
        error = self.assertRaises(S3Error, write_conditions, {"if-none-match": ['"abc"']})
        self.assertEqual((error.code, error.status), ("NotImplemented", 501))
        self.assertIn("If-None-Match", error.message)

    def test_if_match_unquoted(self) -> None:
        """The etag of ``If-Match`` loses its quotes (and a weak marker); ``*`` stays."""
        for value, etag in (('"abc"', "abc"), ("abc", "abc"), ('W/"abc"', "abc"), ("*", "*")):
            self.assertEqual(write_conditions({"if-match": [value]}), (False, etag), value)

    def test_unquote_etag(self) -> None:
        """An ETag loses spaces, quotes and a weak marker; '*' stays."""
        self.assertEqual(unquote_etag(' W/"abc" '), "abc")
        self.assertEqual(unquote_etag("*"), "*")

    def test_both(self) -> None:
        """Both conditions may be given at once."""
        headers = {"if-match": ['"a"'], "if-none-match": ["*"]}
        self.assertEqual(write_conditions(headers), (True, "a"))


class RefuseUnsupportedTests(SynchronousTestCase):
    """Headers that would change a write are NotImplemented, naming the header."""

    def refused(self, headers: dict[str, list[str]], operation: str, named: str) -> None:
        """``headers`` on ``operation`` are NotImplemented, the message naming ``named``."""
        owner = OWNER if operation in (PUT_OBJECT, COPY_OBJECT, CREATE_MULTIPART) else None
        error = self.assertRaises(S3Error, refuse_unsupported, headers, operation, owner)
        self.assertEqual((error.code, error.status), ("NotImplemented", 501))
        self.assertIn(named, error.message)

    def test_plain_put(self) -> None:
        """A put with ordinary headers, STANDARD storage and a private ACL passes."""
        headers = {
            "content-type": ["text/plain"],
            "x-amz-meta-a": ["b"],
            "if-match": ['"e"'],
            "if-none-match": ["*"],
            "x-amz-storage-class": ["STANDARD"],
            "x-amz-acl": ["private"],
        }
        refuse_unsupported(headers, PUT_OBJECT, OWNER)

    def test_encryption(self) -> None:
        """Server-side encryption, with S3's keys or the client's, is refused everywhere."""
        for operation in (PUT_OBJECT, COPY_OBJECT, CREATE_MULTIPART, UPLOAD_PART):
            self.refused(
                {"x-amz-server-side-encryption": ["AES256"]},
                operation,
                "x-amz-server-side-encryption",
            )
        self.refused(
            {"x-amz-server-side-encryption-customer-algorithm": ["AES256"]},
            UPLOAD_PART,
            "x-amz-server-side-encryption-customer-algorithm",
        )

    def test_object_lock(self) -> None:
        """Object lock headers are refused."""
        self.refused({"x-amz-object-lock-mode": ["GOVERNANCE"]}, PUT_OBJECT, "object-lock")

    def test_storage_class(self) -> None:
        """A storage class other than STANDARD is refused, naming it."""
        self.refused({"x-amz-storage-class": ["GLACIER"]}, PUT_OBJECT, "GLACIER")

    def test_time_conditions_on_writes(self) -> None:
        """If-Modified-Since and If-Unmodified-Since do not apply to writes: refused."""
        for operation in (PUT_OBJECT, COMPLETE_MULTIPART, DELETE_OBJECT):
            self.refused({"if-unmodified-since": ["x"]}, operation, "If-Unmodified-Since")

    def test_conditions_where_unsupported(self) -> None:
        """If-Match on CopyObject and If-None-Match on DeleteObject are refused."""
        self.refused({"if-match": ['"e"']}, COPY_OBJECT, "If-Match")
        self.refused({"if-none-match": ["*"]}, DELETE_OBJECT, "If-None-Match")
        self.refused({"if-none-match": ["*"]}, CREATE_MULTIPART, "If-None-Match")

    def test_conditions_where_supported(self) -> None:
        """If-Match on DeleteObject and both on CompleteMultipartUpload pass."""
        refuse_unsupported({"if-match": ["*"]}, DELETE_OBJECT)
        refuse_unsupported({"if-match": ["e"], "if-none-match": ["*"]}, COMPLETE_MULTIPART)

    def test_public_acl_on_put(self) -> None:
        """A put whose ACL would open the object is refused."""
        self.refused({"x-amz-acl": ["public-read"]}, PUT_OBJECT, "public-read")
