"""ACLs: those that keep a resource private to its owner pass, those that open it are refused."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from lambgw.protocol.acl import acl_headers_given, check_acl_headers, check_policy
from lambgw.protocol.errors import S3Error

OWNER = "a" * 64
OTHER = "b" * 64
XSI = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'


def policy(*grants: str) -> bytes:
    """An AccessControlPolicy document with ``grants`` (each a ``<Grant>``)."""
    return (
        '<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Owner><ID>{OWNER}</ID></Owner>"
        f"<AccessControlList>{''.join(grants)}</AccessControlList></AccessControlPolicy>"
    ).encode()


def grant(kind: str, inner: str, permission: str = "FULL_CONTROL") -> str:
    """One ``<Grant>`` to a grantee of ``kind`` described by ``inner``."""
    return (
        f'<Grant><Grantee {XSI} xsi:type="{kind}">{inner}</Grantee>'
        f"<Permission>{permission}</Permission></Grant>"
    )


class HeaderTests(SynchronousTestCase):
    """``x-amz-acl`` and ``x-amz-grant-*``."""

    def assertCode(self, headers: dict[str, list[str]], code: str, status: int) -> None:
        """``headers`` are refused with ``code`` and ``status``."""
        error = self.assertRaises(S3Error, check_acl_headers, headers, OWNER)
        self.assertEqual((error.code, error.status), (code, status))

    def test_private_canned(self) -> None:
        """The canned ACLs that grant only the owner pass."""
        for value in ("private", "bucket-owner-full-control", "bucket-owner-read"):
            check_acl_headers({"x-amz-acl": [value]}, OWNER)

    def test_open_canned(self) -> None:
        """Canned ACLs that let others in are NotImplemented (501)."""
        for value in ("public-read", "public-read-write", "authenticated-read"):
            self.assertCode({"x-amz-acl": [value]}, "NotImplemented", 501)

    def test_unknown_canned(self) -> None:
        """An unknown canned ACL is InvalidArgument."""
        self.assertCode({"x-amz-acl": ["secret"]}, "InvalidArgument", 400)

    def test_owner_grant(self) -> None:
        """A grant header naming the owner alone passes."""
        check_acl_headers({"x-amz-grant-full-control": [f'id="{OWNER}"']}, OWNER)
        check_acl_headers({"x-amz-grant-read": [f'id="{OWNER}", id="{OWNER}"']}, OWNER)

    def test_other_grants(self) -> None:
        """Grants to another id, a group or an e-mail address are NotImplemented."""
        for value in (
            f'id="{OTHER}"',
            f'id="{OWNER}", uri="http://acs.amazonaws.com/groups/global/AllUsers"',
            'emailAddress="x@example.com"',
        ):
            self.assertCode({"x-amz-grant-read": [value]}, "NotImplemented", 501)

    def test_malformed_grant(self) -> None:
        """A grant header that is not a grantee list is InvalidArgument."""
        for value in ("", "id=unquoted", f'id="{OWNER}" junk'):
            self.assertCode({"x-amz-grant-read": [value]}, "InvalidArgument", 400)

    def test_canned_and_grants(self) -> None:
        """A canned ACL with grant headers is InvalidRequest, as in S3."""
        headers = {"x-amz-acl": ["private"], "x-amz-grant-read": [f'id="{OWNER}"']}
        self.assertCode(headers, "InvalidRequest", 400)

    def test_given(self) -> None:
        """Headers set an ACL when either form is there."""
        self.assertTrue(acl_headers_given({"x-amz-acl": ["private"]}))
        self.assertTrue(acl_headers_given({"x-amz-grant-write": ['id="x"']}))
        self.assertFalse(acl_headers_given({"content-type": ["a/b"]}))


class PolicyTests(SynchronousTestCase):
    """An ``AccessControlPolicy`` body."""

    def test_owner_only(self) -> None:
        """Grants to the owner alone pass, as does an empty list."""
        check_policy(policy(grant("CanonicalUser", f"<ID>{OWNER}</ID>")), OWNER)
        check_policy(policy(), OWNER)

    def test_other_grantee(self) -> None:
        """A grant to another user or to a group is NotImplemented."""
        for other in (
            grant("CanonicalUser", f"<ID>{OTHER}</ID>", "READ"),
            grant("Group", "<URI>http://acs.amazonaws.com/groups/global/AllUsers</URI>", "READ"),
        ):
            body = policy(grant("CanonicalUser", f"<ID>{OWNER}</ID>"), other)
            error = self.assertRaises(S3Error, check_policy, body, OWNER)
            self.assertEqual((error.code, error.status), ("NotImplemented", 501))

    def test_malformed(self) -> None:
        """A grant without a permission is MalformedACLError; bad XML is MalformedXML."""
        body = policy(
            f'<Grant><Grantee {XSI} xsi:type="CanonicalUser"><ID>x</ID></Grantee></Grant>'
        )
        self.assertEqual(
            self.assertRaises(S3Error, check_policy, body, OWNER).code, "MalformedACLError"
        )
        self.assertEqual(
            self.assertRaises(S3Error, check_policy, b"<x", OWNER).code, "MalformedXML"
        )
