"""Tests for browser uploads' pure parts: the streaming form reader and the policy."""

from __future__ import annotations

import base64
import itertools
import json
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lambgw.protocol import sigv2, sigv4
from lambgw.protocol.errors import S3Error
from lambgw.protocol.formdata import (
    MAX_PRE_DATA,
    FilePartDecoder,
    FormHead,
    form_boundary,
)
from lambgw.protocol.postpolicy import check_policy, decode_policy, signed_by

BOUNDARY = b"XyZ-boundary"


def form(fields: list[tuple[str, str]], data: bytes, after: bytes = b"") -> bytes:
    """A form with ``fields``, then the file ``data``, then ``after`` (more parts)."""
    out = b""
    for name, value in fields:
        out += b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="'
        out += name.encode() + b'"\r\n\r\n' + value.encode() + b"\r\n"
    out += b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; '
    out += b'filename="a \\"b\\".txt"\r\nContent-Type: text/plain\r\n\r\n'
    return out + data + b"\r\n--" + BOUNDARY + after + b"--\r\n"


def read(body: bytes, cuts: list[int]) -> tuple[FormHead, bytes]:
    """Feed ``body`` cut at ``cuts``; the head and the file's bytes."""
    head, decoder = FormHead(BOUNDARY), FilePartDecoder(BOUNDARY)
    data = b""
    started = False
    edges = [0, *sorted(c for c in cuts if 0 < c < len(body)), len(body)]
    for low, high in itertools.pairwise(edges):
        piece = body[low:high]
        if not started:
            rest = head.feed(piece)
            if rest is None:
                continue
            started, piece = True, rest
        data += b"".join(bytes(p) for p in decoder.feed(piece))
    decoder.finish()
    return head, data


def _code(f: Any, *args: Any) -> str:
    try:
        f(*args)
    except S3Error as e:
        return e.code
    raise AssertionError("no S3Error raised")


class FormTests(SynchronousTestCase):
    """The form is read as it streams, whatever the pieces."""

    @settings(max_examples=200)
    @given(
        st.binary(max_size=300),
        st.lists(st.integers(min_value=0, max_value=600), max_size=12),
    )
    def test_any_cuts(self, data: bytes, cuts: list[int]) -> None:
        """Fields and file come out the same however the body is cut."""
        fields = [("key", "a/${filename}"), ("X-Amz-Meta-Note", "é")]
        head, got = read(form(fields, data), cuts)
        self.assertEqual(got, data)
        self.assertEqual(head.fields, {"key": "a/${filename}", "x-amz-meta-note": "é"})
        self.assertEqual((head.filename, head.file_content_type), ('a "b".txt', "text/plain"))

    def test_file_holding_boundary_lookalikes(self) -> None:
        """Bytes that almost make the delimiter stay in the file."""
        data = b"\r\n--XyZ-boundar\r\n--XyZ\r\n-" * 50
        self.assertEqual(read(form([], data), list(range(0, 2000, 7)))[1], data)

    def test_after_the_file_dropped(self) -> None:
        """Parts after the file are not part of it."""
        after = b'\r\nContent-Disposition: form-data; name="late"\r\n\r\nx\r\n--' + BOUNDARY
        self.assertEqual(read(form([], b"abc", after), [])[1], b"abc")

    def test_cut_body(self) -> None:
        """A body cut before the file's delimiter is malformed."""
        decoder = FilePartDecoder(BOUNDARY)
        decoder.feed(b"some bytes")
        self.assertEqual(_code(decoder.finish), "MalformedPOSTRequest")

    def test_no_file(self) -> None:
        """A form that ends without a file says so."""
        body = b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="key"\r\n\r\nk\r\n'
        body += b"--" + BOUNDARY + b"--\r\n"
        self.assertEqual(_code(FormHead(BOUNDARY).feed, body), "InvalidArgument")

    def test_pre_data_bounded(self) -> None:
        """Fields before the file past 20 KiB are refused, even before they end."""
        big = [("x-amz-meta-big", "v" * MAX_PRE_DATA)]
        self.assertEqual(
            _code(FormHead(BOUNDARY).feed, form(big, b"")), "MaxPostPreDataLengthExceeded"
        )
        endless = b"--" + BOUNDARY + b"\r\n" + b"x" * (MAX_PRE_DATA + 1)
        self.assertEqual(_code(FormHead(BOUNDARY).feed, endless), "MaxPostPreDataLengthExceeded")

    def test_malformed_parts(self) -> None:
        """A part without a name, or a header line without a colon, is malformed."""
        nameless = b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data\r\n\r\nv\r\n"
        self.assertEqual(_code(FormHead(BOUNDARY).feed, nameless), "MalformedPOSTRequest")
        colonless = b"--" + BOUNDARY + b"\r\nnonsense\r\n\r\nv\r\n"
        self.assertEqual(_code(FormHead(BOUNDARY).feed, colonless), "MalformedPOSTRequest")

    def test_boundary(self) -> None:
        """The boundary comes from the content type, quoted or not."""
        self.assertEqual(form_boundary('multipart/form-data; boundary="a b"'), b"a b")
        self.assertEqual(form_boundary("multipart/form-data; charset=x; boundary=ab"), b"ab")
        self.assertIsNone(form_boundary("text/plain"))
        self.assertEqual(_code(form_boundary, "multipart/form-data"), "MalformedPOSTRequest")


def _policy(conditions: list[Any], expires: float | None = None) -> str:
    when = time.gmtime(expires if expires is not None else time.time() + 600)
    document = {
        "expiration": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", when),
        "conditions": conditions,
    }
    return base64.b64encode(json.dumps(document).encode()).decode()


def _secrets(key: str) -> str | None:
    return {"AK": "secret"}.get(key)


class PolicyTests(SynchronousTestCase):
    """Policies are decoded, their signatures checked and their conditions enforced."""

    def v4_fields(self, policy: str) -> dict[str, str]:
        signing = sigv4.derive_signing_key("secret", "20261130", "us-east-1", "s3")
        return {
            "policy": policy,
            "x-amz-algorithm": "AWS4-HMAC-SHA256",
            "x-amz-credential": "AK/20261130/us-east-1/s3/aws4_request",
            "x-amz-date": "20261130T000000Z",
            "x-amz-signature": sigv4.sign(signing, policy),
        }

    def test_signatures(self) -> None:
        """SigV4 and SigV2 signatures name their key; others are refused."""
        policy = _policy([])
        self.assertEqual(signed_by(self.v4_fields(policy), _secrets), "AK")
        v2 = {"policy": policy, "awsaccesskeyid": "AK", "signature": sigv2.sign("secret", policy)}
        self.assertEqual(signed_by(v2, _secrets), "AK")
        tampered = {**self.v4_fields(policy), "policy": _policy([{"key": "k"}])}
        self.assertEqual(_code(signed_by, tampered, _secrets), "SignatureDoesNotMatch")
        unknown = {**v2, "awsaccesskeyid": "nobody"}
        self.assertEqual(_code(signed_by, unknown, _secrets), "InvalidAccessKeyId")
        self.assertEqual(_code(signed_by, {"policy": policy}, _secrets), "AccessDenied")

    def test_conditions(self) -> None:
        """Exact and starts-with conditions, and every field named by one."""
        policy = decode_policy(
            _policy(
                [
                    {"bucket": "b"},
                    ["starts-with", "$key", "up/"],
                    ["eq", "$Content-Type", "image/png"],
                    ["content-length-range", 1, "10"],
                ]
            )
        )
        fields = {"key": "up/x", "content-type": "image/png", "x-ignore-me": "1"}
        self.assertEqual(check_policy(policy, fields, "b", time.time()), (1, 10))
        for changed in ({"key": "down/x"}, {"content-type": "image/gif"}, {"x-amz-meta-a": "1"}):
            self.assertEqual(
                _code(check_policy, policy, {**fields, **changed}, "b", time.time()),
                "AccessDenied",
            )
        self.assertEqual(_code(check_policy, policy, fields, "c", time.time()), "AccessDenied")

    def test_expiration(self) -> None:
        """A policy is refused once expired."""
        policy = decode_policy(_policy([], time.time() - 1))
        self.assertEqual(_code(check_policy, policy, {}, "b", time.time()), "AccessDenied")

    def test_invalid_documents(self) -> None:
        """Policies that are not base64 JSON, or lack a part, are InvalidPolicyDocument."""
        no_conditions = base64.b64encode(b'{"expiration": "2030-01-01T00:00:00Z"}').decode()
        for encoded in ("%%%", base64.b64encode(b"[]").decode(), no_conditions):
            self.assertEqual(_code(decode_policy, encoded), "InvalidPolicyDocument")
        bad = decode_policy(_policy([["content-length-range", 5, 1]]))
        self.assertEqual(_code(check_policy, bad, {}, "b", time.time()), "InvalidPolicyDocument")
