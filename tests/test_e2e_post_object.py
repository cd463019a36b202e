"""End-to-end tests of browser uploads (POST Object), on the embedded network and over lambnet.

boto3's ``generate_presigned_post`` signs the policy, as a server application would; the form
is posted with a raw HTTP client, so each field (and each violated condition) is what the test
says.  The last test has headless Chromium submit a real form from a page of another origin.
"""

from __future__ import annotations

import hashlib
import html
import http.client
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from botocore.exceptions import ClientError
from twisted.trial.unittest import SkipTest

from tests.gateway import ClientTests, GatewayCase, MiB
from tests.test_e2e_admin import BROWSER_TIMEOUT, chromium
from tests.test_e2e_lambnet import LambnetCase


def form_body(
    fields: Sequence[tuple[str, str]],
    data: bytes | None,
    filename: str = "hello.txt",
    after: Sequence[tuple[str, str]] = (),
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body: ``fields``, the file (unless None), then ``after``."""
    boundary = "----lambgw" + secrets.token_hex(8)
    out = b""
    for name, value in fields:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    if data is not None:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        out += data + b"\r\n"
    for name, value in after:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def error_code(body: bytes) -> str:
    """The ``<Code>`` of an S3 error document."""
    found = re.search(rb"<Code>([^<]*)</Code>", body)
    return found[1].decode() if found else ""


class _PostObjectTests(ClientTests):
    """POST Object with raw HTTP requests, in both modes."""

    def presigned(self, key: str, signature_version: str = "s3v4", **kwargs: Any) -> Any:
        """boto3's URL and fields for a browser upload of ``key``."""
        s3 = self.gateway.s3_client(signature_version=signature_version)
        return s3.generate_presigned_post(self.bucket, key, **kwargs)

    def post(
        self,
        url: str,
        fields: Sequence[tuple[str, str]],
        data: bytes | None = b"hello",
        filename: str = "hello.txt",
        after: Sequence[tuple[str, str]] = (),
    ) -> tuple[int, dict[str, str], bytes]:
        """POST the form to ``url``; the status, the headers (lower-case) and the body."""
        body, content_type = form_body(fields, data, filename, after)
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.netloc, timeout=60)
        try:
            connection.request("POST", parts.path, body, {"Content-Type": content_type})
            response = connection.getresponse()
            answer = response.read()
            headers = {k.lower(): v for k, v in response.getheaders()}
            return response.status, headers, answer
        finally:
            connection.close()

    def stored(self, key: str) -> bytes | None:
        """The bytes stored at ``key``, or None if there is no object."""
        try:
            got = self.gateway.s3_client().get_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if e.response["Error"]["Code"] == "NoSuchKey":
                return None
            raise
        data: bytes = got["Body"].read()
        return data

    def refused(self, key: str, form: Any, code: str, status: int, **kwargs: Any) -> None:
        """Posting ``form`` (url and fields) is refused with ``code``; nothing is stored."""
        fields = kwargs.pop("fields", None) or list(form["fields"].items())
        got_status, _, body = self.post(form["url"], fields, **kwargs)
        self.assertEqual((got_status, error_code(body)), (status, code), body)
        self.assertIsNone(self.stored(key))

    def test_upload_sigv4(self) -> None:
        """A form signed with SigV4 stores its file; 204 with the ETag and Location."""
        key = self.key("v4")
        form = self.presigned(key)
        status, headers, body = self.post(form["url"], list(form["fields"].items()), b"hello")
        self.assertEqual((status, body), (204, b""))
        self.assertEqual(headers["etag"], f'"{hashlib.md5(b"hello").hexdigest()}"')
        self.assertTrue(headers["location"].endswith(f"/{self.bucket}/{key}"))
        self.assertEqual(self.stored(key), b"hello")

    def test_upload_sigv2(self) -> None:
        """A form signed with SigV2 (AWSAccessKeyId, signature) stores its file."""
        key = self.key("v2")
        form = self.presigned(key, signature_version="s3")
        self.assertIn("AWSAccessKeyId", form["fields"])
        status, _, _ = self.post(form["url"], list(form["fields"].items()), b"version two")
        self.assertEqual(status, 204)
        self.assertEqual(self.stored(key), b"version two")

    def test_filename_in_key(self) -> None:
        """``${filename}`` in the key becomes the name of the posted file."""
        prefix = self.key("uploads/")
        form = self.presigned(prefix + "${filename}")
        status, _, _ = self.post(form["url"], list(form["fields"].items()), filename="cat.jpg")
        self.assertEqual(status, 204)
        self.assertEqual(self.stored(prefix + "cat.jpg"), b"hello")

    def test_large_file_streamed(self) -> None:
        """A file of several MiB arrives whole, whatever falls at the pieces' edges."""
        key = self.key("large")
        data = os.urandom(9 * MiB + 17)
        form = self.presigned(key, Conditions=[["content-length-range", 1, 10 * MiB]])
        status, _, _ = self.post(form["url"], list(form["fields"].items()), data)
        self.assertEqual(status, 204)
        self.assertEqual(self.stored(key), data)

    def test_fields_after_the_file_ignored(self) -> None:
        """Fields after the file are ignored, as S3 does."""
        key = self.key("after")
        form = self.presigned(key)
        fields = list(form["fields"].items())
        status, _, _ = self.post(form["url"], fields, after=[("x-amz-meta-late", "1")])
        self.assertEqual(status, 204)
        head = self.gateway.s3_client().head_object(Bucket=self.bucket, Key=key)
        self.assertEqual(head["Metadata"], {})

    def test_status_201(self) -> None:
        """``success_action_status`` 201 answers with the object's Location, Key and ETag."""
        key = self.key("created")
        form = self.presigned(
            key,
            Fields={"success_action_status": "201"},
            Conditions=[{"success_action_status": "201"}],
        )
        status, _, body = self.post(form["url"], list(form["fields"].items()))
        self.assertEqual(status, 201)
        self.assertIn(f"<Key>{key}</Key>".encode(), body)
        self.assertIn(f"<Bucket>{self.bucket}</Bucket>".encode(), body)
        self.assertIn(hashlib.md5(b"hello").hexdigest().encode(), body)

    def test_redirect(self) -> None:
        """``success_action_redirect`` sends the browser on with bucket, key and etag."""
        key = self.key("redirected")
        target = "https://app.example.com/done?from=form"
        form = self.presigned(
            key,
            Fields={"success_action_redirect": target},
            Conditions=[{"success_action_redirect": target}],
        )
        status, headers, _ = self.post(form["url"], list(form["fields"].items()))
        self.assertEqual(status, 303)
        location = urlsplit(headers["location"])
        self.assertEqual(location.netloc + location.path, "app.example.com/done")
        query = parse_qs(location.query)
        self.assertEqual(
            (query["bucket"], query["key"], query["from"]), ([self.bucket], [key], ["form"])
        )
        self.assertEqual(query["etag"], [f'"{hashlib.md5(b"hello").hexdigest()}"'])

    def test_metadata_and_content_type(self) -> None:
        """Content-Type and x-amz-meta-* fields named by the policy are stored."""
        key = self.key("described")
        fields = {"Content-Type": "image/png", "x-amz-meta-owner": "alice"}
        form = self.presigned(
            key,
            Fields=fields,
            Conditions=[["starts-with", "$Content-Type", "image/"], {"x-amz-meta-owner": "alice"}],
        )
        status, _, _ = self.post(form["url"], list(form["fields"].items()))
        self.assertEqual(status, 204)
        head = self.gateway.s3_client().head_object(Bucket=self.bucket, Key=key)
        self.assertEqual((head["ContentType"], head["Metadata"]), ("image/png", {"owner": "alice"}))

    def test_bucket_condition(self) -> None:
        """A form signed for another bucket is refused."""
        key = self.key("elsewhere")
        s3 = self.gateway.s3_client()
        form = s3.generate_presigned_post("another-bucket", key)
        url = form["url"].replace("/another-bucket", f"/{self.bucket}")
        self.refused(key, {"url": url, "fields": form["fields"]}, "AccessDenied", 403)

    def test_key_conditions(self) -> None:
        """A key other than the policy's, or outside its starts-with, is refused."""
        key = self.key("exact")
        form = self.presigned(key)
        fields = [(n, self.key("other") if n == "key" else v) for n, v in form["fields"].items()]
        self.refused(self.key("other"), form, "AccessDenied", 403, fields=fields)
        prefixed = self.presigned(self.key("uploads/") + "${filename}")
        outside = self.key("outside")
        fields = [(n, outside if n == "key" else v) for n, v in prefixed["fields"].items()]
        self.refused(outside, prefixed, "AccessDenied", 403, fields=fields)

    def test_content_length_range(self) -> None:
        """A file smaller or larger than content-length-range is refused."""
        key = self.key("sized")
        form = self.presigned(key, Conditions=[["content-length-range", 10, 20]])
        self.refused(key, form, "EntityTooSmall", 400, data=b"short")
        self.refused(key, form, "EntityTooLarge", 400, data=b"x" * 21)
        status, _, _ = self.post(form["url"], list(form["fields"].items()), b"x" * 15)
        self.assertEqual(status, 204)

    def test_content_type_condition(self) -> None:
        """A Content-Type outside the policy's is refused."""
        key = self.key("typed")
        form = self.presigned(
            key,
            Fields={"Content-Type": "text/plain"},
            Conditions=[["starts-with", "$Content-Type", "image/"]],
        )
        self.refused(key, form, "AccessDenied", 403)

    def test_metadata_conditions(self) -> None:
        """A metadata value other than the policy's, or a field it does not name, is refused."""
        key = self.key("meta")
        form = self.presigned(
            key, Fields={"x-amz-meta-owner": "bob"}, Conditions=[{"x-amz-meta-owner": "alice"}]
        )
        self.refused(key, form, "AccessDenied", 403)
        plain = self.presigned(key)
        fields = [*plain["fields"].items(), ("x-amz-meta-sneaky", "1")]
        self.refused(key, plain, "AccessDenied", 403, fields=fields)

    def test_success_fields_conditions(self) -> None:
        """success_action_status and success_action_redirect must be the policy's."""
        key = self.key("success")
        form = self.presigned(key, Conditions=[{"success_action_status": "201"}])
        fields = [*form["fields"].items(), ("success_action_status", "200")]
        self.refused(key, form, "AccessDenied", 403, fields=fields)
        form = self.presigned(
            key, Conditions=[["starts-with", "$success_action_redirect", "https://app/"]]
        )
        fields = [*form["fields"].items(), ("success_action_redirect", "https://evil/")]
        self.refused(key, form, "AccessDenied", 403, fields=fields)

    def test_expired_policy(self) -> None:
        """A policy past its expiration is refused."""
        key = self.key("expired")
        self.refused(key, self.presigned(key, ExpiresIn=-60), "AccessDenied", 403)

    def test_bad_signature(self) -> None:
        """A tampered signature or policy is SignatureDoesNotMatch."""
        key = self.key("tampered")
        form = self.presigned(key)
        fields = [(n, "0" * 64 if n == "x-amz-signature" else v) for n, v in form["fields"].items()]
        self.refused(key, form, "SignatureDoesNotMatch", 403, fields=fields)

    def test_unsigned_and_fileless_forms(self) -> None:
        """A form without a signature is AccessDenied; one without a file InvalidArgument."""
        key = self.key("unsigned")
        form = self.presigned(key)
        self.refused(key, form, "AccessDenied", 403, fields=[("key", key)])
        self.refused(key, form, "InvalidArgument", 400, data=None)


class PostObjectLambgwTests(_PostObjectTests, GatewayCase):
    """POST Object against lambgw."""

    mode = "lambgw"


class PostObjectS3gwTests(_PostObjectTests, GatewayCase):
    """POST Object against s3gw."""

    mode = "s3gw"


class PostObjectLambgwOverLambnetTests(_PostObjectTests, LambnetCase):
    """POST Object against lambgw over a lambnet node."""

    mode = "lambgw"


class PostObjectS3gwOverLambnetTests(_PostObjectTests, LambnetCase):
    """POST Object against s3gw over a lambnet node."""

    mode = "s3gw"


PAGE = """<!doctype html>
<html><body>
<form id="upload" action="{action}" method="post" enctype="multipart/form-data">
{inputs}
<input type="file" name="file">
</form>
<script>
const file = new File(["hello from the browser"], "greeting.txt", {{type: "text/plain"}});
const picked = new DataTransfer();
picked.items.add(file);
const form = document.getElementById("upload");
form.elements.file.files = picked.files;
form.submit();
</script>
</body></html>
"""


class _Origin(BaseHTTPRequestHandler):
    """The application's pages: the upload form, and where the browser lands after it."""

    page: ClassVar[bytes] = b""
    landed: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        """Serve the form, or record the redirect's query."""
        if self.path.startswith("/done"):
            type(self).landed.append(urlsplit(self.path).query)
            body = b"<html><body>uploaded</body></html>"
        else:
            body = type(self).page
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""


class BrowserFormTests(GatewayCase):
    """Headless Chromium submits a real upload form from a page of another origin."""

    mode = "lambgw"

    def test_browser_submits_form(self) -> None:
        """The browser posts the file, is redirected back, and the object is stored."""
        browser = chromium()
        if browser is None:
            raise SkipTest("chromium is not installed (.ci/run installs it)")
        origin = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
        self.addCleanup(origin.server_close)
        threading.Thread(target=origin.serve_forever, daemon=True).start()
        self.addCleanup(origin.shutdown)
        back = f"http://localhost:{origin.server_address[1]}/done"
        prefix = self.key("browser/")
        form = self.gateway.s3_client(signature_version="s3v4").generate_presigned_post(
            self.bucket,
            prefix + "${filename}",
            Fields={"success_action_redirect": back, "Content-Type": "text/plain"},
            Conditions=[
                {"success_action_redirect": back},
                ["starts-with", "$Content-Type", "text/"],
                ["content-length-range", 1, 1024],
            ],
        )
        inputs = "\n".join(
            f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
            for name, value in form["fields"].items()
        )
        _Origin.page = PAGE.format(action=html.escape(form["url"]), inputs=inputs).encode()
        _Origin.landed = []
        profile = tempfile.mkdtemp(prefix="lambgw-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        done = subprocess.run(
            [
                browser,
                *("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic"),
                *("--no-first-run", "--disable-background-networking"),
                *("--disable-component-update", "--disable-sync"),
                f"--user-data-dir={profile}",
                "--virtual-time-budget=20000",
                "--dump-dom",
                f"http://localhost:{origin.server_address[1]}/form",
            ],
            capture_output=True,
            text=True,
            timeout=BROWSER_TIMEOUT,
            check=False,
        )
        self.assertEqual(len(_Origin.landed), 1, f"no redirect back:\n{done.stderr[-2000:]}")
        query = parse_qs(_Origin.landed[0])
        key = prefix + "greeting.txt"
        self.assertEqual((query["bucket"], query["key"]), ([self.bucket], [key]))
        got = self.gateway.s3_client().get_object(Bucket=self.bucket, Key=key)
        self.assertEqual(got["Body"].read(), b"hello from the browser")
        self.assertEqual(got["ContentType"], "text/plain")
        self.assertEqual(query["etag"], [got["ETag"]])
