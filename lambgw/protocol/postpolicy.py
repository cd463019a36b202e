"""The policy of a browser upload (S3's POST Object): its signature and its conditions.

A server application signs a base64 JSON policy, ``{"expiration": ..., "conditions": [...]}``,
and puts it with its signature in the form (SigV4: ``x-amz-algorithm``, ``x-amz-credential``,
``x-amz-date``, ``x-amz-signature``; SigV2: ``AWSAccessKeyId``, ``signature``).  The upload is
allowed if the signature is the key's, the policy has not expired, every condition holds, and
every field of the form is named by a condition.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from attrs import frozen

from lambgw.protocol import sigv2, sigv4
from lambgw.protocol.errors import S3Error

#: Fields no condition needs to name: the signature and the file.
_UNCHECKED = frozenset({"policy", "x-amz-signature", "signature", "awsaccesskeyid", "file"})


@frozen
class PostPolicy:
    """A decoded policy: when it expires and what it requires."""

    expiration: float
    conditions: tuple[Any, ...]


def _invalid(why: str) -> S3Error:
    return S3Error.of("InvalidPolicyDocument", f"Invalid Policy: {why}")


def _denied(why: str) -> S3Error:
    return S3Error.of("AccessDenied", f"Invalid according to Policy: {why}")


def missing_field(name: str) -> S3Error:
    """The error of a form without the field ``name``."""
    return S3Error.of(
        "InvalidArgument",
        f"Bucket POST must contain a field named '{name}'.  If it is specified, please check "
        "the order of the fields.",
    )


def _time(value: Any) -> float:
    """An ISO 8601 time of a policy (``2026-01-01T12:00:00.000Z``)."""
    if not isinstance(value, str):
        raise _invalid("Invalid 'expiration' value.")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(f"Invalid 'expiration' value: '{value}'") from None
    if when.tzinfo is None:
        raise _invalid(f"Invalid 'expiration' value: '{value}'")
    return when.timestamp()


def decode_policy(encoded: str) -> PostPolicy:
    """The policy of the form's ``policy`` field (base64 of JSON)."""
    try:
        document = json.loads(base64.b64decode(encoded.encode("ascii"), validate=True))
    except (ValueError, UnicodeError, binascii.Error):
        raise _invalid("Invalid JSON.") from None
    if not isinstance(document, dict):
        raise _invalid("Invalid JSON.")
    if "expiration" not in document:
        raise _invalid("Policy missing expiration.")
    if not isinstance(document.get("conditions"), list):
        raise _invalid("Policy missing conditions.")
    return PostPolicy(_time(document["expiration"]), tuple(document["conditions"]))


def signed_by(fields: Mapping[str, str], lookup_secret: Callable[[str], str | None]) -> str:
    """The access key whose signature the form's policy carries; raise if it does not."""
    policy = fields.get("policy")
    if "x-amz-algorithm" in fields or "x-amz-signature" in fields:
        if fields.get("x-amz-algorithm") != sigv4.ALGORITHM:
            raise S3Error.of("InvalidArgument", "Only the AWS4-HMAC-SHA256 algorithm is supported.")
        for name in ("x-amz-credential", "x-amz-date", "x-amz-signature", "policy"):
            if name not in fields:
                raise missing_field(name)
        credential = sigv4.Credential.parse(fields["x-amz-credential"], "InvalidArgument")
        secret = _secret(lookup_secret, credential.access_key)
        key = sigv4.derive_signing_key(
            secret, credential.date, credential.region, credential.service
        )
        expected = sigv4.sign(key, fields["policy"])
        if not sigv4.signatures_match(expected, fields["x-amz-signature"]):
            raise _mismatch()
        return credential.access_key
    if "awsaccesskeyid" in fields or "signature" in fields:
        for name in ("AWSAccessKeyId", "signature", "policy"):
            if name.lower() not in fields:
                raise missing_field(name)
        access_key = fields["awsaccesskeyid"]
        expected = sigv2.sign(_secret(lookup_secret, access_key), policy or "")
        if not hmac.compare_digest(expected.encode(), fields["signature"].encode()):
            raise _mismatch()
        return access_key
    raise S3Error.of("AccessDenied", "Anonymous access is not allowed.")


def _secret(lookup_secret: Callable[[str], str | None], access_key: str) -> str:
    secret = lookup_secret(access_key)
    if secret is None:
        raise S3Error.of(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        )
    return secret


def _mismatch() -> S3Error:
    return S3Error.of(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    )


def check_policy(
    policy: PostPolicy, fields: Mapping[str, str], bucket: str, now: float
) -> tuple[int, int] | None:
    """Check the form against the policy at ``now``; the content-length-range, if any.

    ``fields`` are the form's, by lower-case name; ``bucket`` is the one posted to.
    """
    if now >= policy.expiration:
        raise _denied("Policy expired.")
    values = {**fields, "bucket": bucket}
    named: set[str] = {"bucket"}
    length_range = None
    for condition in policy.conditions:
        if isinstance(condition, dict) and len(condition) == 1:
            ((name, wanted),) = condition.items()
            operation, field = "eq", str(name).lower()
        elif isinstance(condition, list) and len(condition) == 3:
            operation = str(condition[0]).lower()
            if operation == "content-length-range":
                length_range = _length_range(condition)
                continue
            if not isinstance(condition[1], str) or not condition[1].startswith("$"):
                raise _invalid(f"Invalid condition: {json.dumps(condition)}")
            field, wanted = condition[1][1:].lower(), condition[2]
        else:
            raise _invalid(f"Invalid condition: {json.dumps(condition)}")
        if not isinstance(wanted, str) or operation not in ("eq", "starts-with"):
            raise _invalid(f"Invalid condition: {json.dumps(condition)}")
        named.add(field)
        value = values.get(field, "")
        if (operation == "eq" and value != wanted) or not value.startswith(wanted):
            raise _denied(f"Policy Condition failed: {json.dumps(condition)}")
    extra = sorted(
        name
        for name in fields
        if name not in named and name not in _UNCHECKED and not name.startswith("x-ignore-")
    )
    if extra:
        raise _denied(f"Extra input fields: {', '.join(extra)}")
    return length_range


def _length_range(condition: list[Any]) -> tuple[int, int]:
    try:
        low, high = (int(str(bound), 10) for bound in condition[1:])
    except ValueError:
        low, high = -1, -1
    if not 0 <= low <= high:
        raise _invalid(f"Invalid content-length-range: {json.dumps(condition)}")
    return low, high
