"""End-to-end fault tests: the gateway over a real lambnet node that fails, stalls or is late.

A :class:`~tests.faultproxy.FaultProxy` stands between the gateway and the node: it answers
``500`` to everything, cuts connections mid-body or stalls, and the S3 clients must see a
clear error, nothing half stored, the order's capacity untouched, and the same gateway
process serving again once the proxy forwards.  The gateway's silence timeout is set to
:data:`TIMEOUT` seconds (``--broker.timeout``) so that a stall is given up quickly.  Last, a
gateway started before its node waits for it, and serves once it answers.
"""

from __future__ import annotations

import atexit
import functools
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import quote

from botocore.exceptions import ClientError
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from lambgw.lambnet.keys import private_key_path, read_private_key
from lambgw.network import signing, wire
from lambgw.tap import EXIT_CONFIG
from tests.faultproxy import FaultProxy
from tests.gateway import (
    ACCESS_KEY,
    ACCOUNT,
    SECRET_KEY,
    TWISTD,
    GatewayCase,
    GatewayProcess,
    MiB,
    _environment,
    _spawn,
    _wait_listening,
    free_port,
    target_is_moto,
)
from tests.test_e2e_lambnet import _incoming, prepare_account, start_node

#: The gateway's silence timeout in these tests, in seconds.
TIMEOUT = 2.0
#: Seconds a test waits for something the gateway does by itself.
PATIENCE = 30.0


@functools.cache
def _template() -> tuple[str, str]:
    """A config home with account demo, its key and a 1 GiB order, made once; and the order."""
    root = tempfile.mkdtemp(prefix="lambgw-e2e-template-")
    atexit.register(shutil.rmtree, root, True)
    home = os.path.join(root, "home")
    os.makedirs(home)
    return home, prepare_account(home, "1GiB")


def prepared_home(home: str) -> str:
    """Make ``home`` a copy of the template home (account demo and its order); the order."""
    template, order_id = _template()
    shutil.copytree(template, home)
    return order_id


def order_used(home: str, node_port: int, order_id: str) -> int:
    """The bytes ``order_id`` holds, asked of the node with a request signed by demo."""
    target = f"/{wire.VERSION}/accounts/{ACCOUNT}/orders/{order_id}"
    key = read_private_key(private_key_path(home, ACCOUNT))
    headers = signing.sign(key, ACCOUNT, "GET", target, "", signing.EMPTY_SHA256, int(time.time()))
    connection = http.client.HTTPConnection("127.0.0.1", node_port, timeout=PATIENCE)
    try:
        connection.request("GET", target, headers=headers)
        answer = connection.getresponse()
        body = answer.read()
    finally:
        connection.close()
    if answer.status != 200:
        raise AssertionError(f"the node answered {answer.status}: {body!r}")
    return int(json.loads(body)["used"])


def gateway_argv(mode: str, home: str, network: str, *flags: str) -> list[str]:
    """The command line of a gateway in ``mode`` over the network at ``network``."""
    return [
        *(*TWISTD, "-n", "--pidfile=", mode, "--home", home, "--account", ACCOUNT),
        *("--gateway.address", "127.0.0.1:{port}", "--broker.validator_addr", network),
        *flags,
    ]


def error_of(call: Callable[[], Any]) -> tuple[int, str]:
    """Run an S3 call that must fail; the HTTP status and the S3 error code the client saw."""
    try:
        call()
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]
    raise AssertionError("the call succeeded")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = PATIENCE) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout} s for {what}")
        time.sleep(0.05)


class ProxiedNodeCase(GatewayCase):
    """lambgw over a lambnet node reached through a fault proxy, shared by the class's tests."""

    mode = "lambgw"
    node: ClassVar[GatewayProcess]
    proxy: ClassVar[FaultProxy]

    @classmethod
    def setUpClass(cls) -> None:
        """Start the node, the proxy in front of it, and the gateway over the proxy."""
        if target_is_moto():
            raise SkipTest("the lambnet tests run against the gateway only")
        cls.root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        cls.scratch = os.path.join(cls.root, "scratch")
        os.makedirs(cls.scratch)
        home = os.path.join(cls.root, "home")
        try:
            cls.bucket = prepared_home(home)
            cls.node = start_node(home)
            cls.proxy = FaultProxy(cls.node.port)
            argv = gateway_argv(
                "lambgw",
                home,
                cls.proxy.address,
                *("--admin-listen", "", "--broker.timeout", f"{TIMEOUT:g}"),
            )
            cls.gateway = _spawn(argv, home, "lambgw", cls.bucket)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        """Stop the gateway, the proxy and the node; remove the directory."""
        proxy, node = cls.__dict__.get("proxy"), cls.__dict__.get("node")
        if proxy is not None:
            proxy.close()
        if node is not None:
            node.stop()
        super().tearDownClass()

    def setUp(self) -> None:
        """Forward again; note the order's used bytes; an S3 client that does not retry."""
        super().setUp()
        self.proxy.forward()
        self.home = self.gateway.home
        self.s3 = self.gateway.s3_client(
            retries={"total_max_attempts": 1, "mode": "standard"},
            read_timeout=PATIENCE,
            connect_timeout=5,
        )
        self.used_before = self.used()

    def used(self) -> int:
        """The bytes the order holds, as the node says."""
        return order_used(self.home, self.node.port, self.bucket)

    def put(self, name: str, body: bytes) -> str:
        """Store ``body`` at the test's key ``name`` (the proxy forwarding); the key."""
        key = self.key(name)
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        return key

    def assert_nothing_stored(self, key: str) -> None:
        """No object at ``key``, no upload left on the node or in the spool, no charge."""
        self.proxy.forward()
        wait_for(lambda: not _incoming(self.home), "the node to drop the partial upload")
        self.assertEqual(self.used(), self.used_before)
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=key)
        self.assertNotIn("Contents", listed)
        spool = os.path.join(self.home, "gateway", "spool")
        left = [n for _, _, names in os.walk(spool) for n in names if not n.startswith(".")]
        self.assertEqual(left, [])

    def assert_logged_once(self, text: str) -> None:
        """The gateway's log has exactly one line with ``text``, naming the cause."""
        lines = [line for line in self.gateway.output().splitlines() if text in line]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("NetworkUnavailable: ", lines[0])

    def assert_serving(self) -> None:
        """Forwarding again, the same gateway process stores and reads an object."""
        self.proxy.forward()
        key = self.put("after", b"still here")
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        self.assertEqual(body, b"still here")
        self.assertTrue(self.gateway.running())


class NodeErrorTests(ProxiedNodeCase):
    """The node answers 500 or its connections are cut: S3 errors, nothing stored."""

    def test_put_fails_with_503(self) -> None:
        """A PUT answered 500 by the node is a 503 ServiceUnavailable; nothing is stored."""
        self.proxy.fail()
        put = lambda: self.put("k", b"x" * 1000)  # noqa: E731
        self.assertEqual(error_of(put), (503, "ServiceUnavailable"))
        self.assertGreater(self.proxy.failed, 0)
        self.assert_nothing_stored(self.key("k"))
        self.assert_logged_once(f"Network call put_object {self.bucket}/{self.key('k')} failed")
        self.assert_serving()

    def test_aws_cli_put_fails_with_503(self) -> None:
        """``aws s3api put-object`` answered 500 by the node reports ServiceUnavailable."""
        source = self.new_file(100_000)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        self.proxy.fail()
        done = subprocess.run(
            [
                *(sys.executable, "-m", "awscli", "--endpoint-url", self.gateway.endpoint),
                *("s3api", "put-object", "--bucket", self.bucket, "--key", self.key("cli")),
                *("--body", source),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("(ServiceUnavailable) when calling the PutObject operation", done.stderr)
        self.assert_nothing_stored(self.key("cli"))
        self.assert_serving()

    def test_reads_fail_with_503(self) -> None:
        """GET, HEAD, ListObjectsV2 and ListBuckets answered 500 by the node are 503s."""
        key = self.put("k", b"data")
        used = self.used()
        self.proxy.fail()
        calls: dict[str, Callable[[], Any]] = {
            "get": lambda: self.s3.get_object(Bucket=self.bucket, Key=key),
            "head": lambda: self.s3.head_object(Bucket=self.bucket, Key=key),
            "list": lambda: self.s3.list_objects_v2(Bucket=self.bucket),
            "buckets": lambda: self.s3.list_buckets(),
        }
        seen: dict[str, tuple[int, str] | BaseException] = {}

        def run(name: str) -> None:
            try:
                seen[name] = error_of(calls[name])
            except BaseException as e:
                seen[name] = e

        # The gateway retries a read a few times before it gives up: the reads go together.
        threads = [threading.Thread(target=run, args=(name,)) for name in calls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(PATIENCE)
        self.assertEqual(
            seen,
            {
                "get": (503, "ServiceUnavailable"),
                "head": (503, "503"),
                "list": (503, "ServiceUnavailable"),
                "buckets": (503, "ServiceUnavailable"),
            },
        )
        self.proxy.forward()
        self.assertEqual(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read(), b"data")
        self.assertEqual(self.used(), used)
        self.assert_serving()

    def test_multipart_complete_fails_with_503_and_can_be_retried(self) -> None:
        """Completing an upload answered 500 is a 503; the upload stays open and completes."""
        key = self.key("mp")
        parts = [os.urandom(5 * MiB), os.urandom(1000)]
        upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        done = [
            {
                "PartNumber": number,
                "ETag": self.s3.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                )["ETag"],
            }
            for number, data in enumerate(parts, 1)
        ]
        # The parts are charged as they are stored; the failed completion adds nothing.
        self.used_before = self.used()

        def complete() -> Any:
            return self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
            )

        self.proxy.fail()
        self.assertEqual(error_of(complete), (503, "ServiceUnavailable"))
        self.assert_nothing_stored(key)
        listed = self.s3.list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id)
        self.assertEqual([p["PartNumber"] for p in listed["Parts"]], [1, 2])
        complete()
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        self.assertEqual(body, b"".join(parts))
        self.assert_serving()

    def test_put_cut_mid_body_fails_with_503(self) -> None:
        """A PUT whose connection to the node is cut mid-body is a 503; nothing is stored."""
        self.proxy.cut(after=256 * 1024)
        put = lambda: self.put("cut", os.urandom(4 * MiB))  # noqa: E731
        self.assertEqual(error_of(put), (503, "ServiceUnavailable"))
        self.assert_nothing_stored(self.key("cut"))
        self.assert_logged_once(f"Network call put_object {self.bucket}/{self.key('cut')} failed")
        cut = [
            line
            for line in self.node.output().splitlines()
            if "was lost after" in line and quote(self.key("cut"), safe="") in line
        ]
        self.assertEqual(len(cut), 1, cut)
        self.assert_serving()

    def test_get_cut_mid_body_is_a_short_read(self) -> None:
        """A GET whose node connection is cut mid-body ends short, never with wrong bytes."""
        data = os.urandom(2 * MiB)
        key = self.put("big", data)
        self.proxy.cut(after=256 * 1024)
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        received = read_until_broken(body)
        self.assertLess(len(received), len(data))
        self.assertEqual(received, data[: len(received)])
        self.assert_serving()


def read_until_broken(body: Any) -> bytes:
    """Read a streaming body that must end short of its length; what was read."""
    received = b""
    try:
        while chunk := body.read(64 * 1024):
            received += chunk
    except Exception:
        return received
    raise AssertionError(f"the body ended cleanly after {len(received)} bytes")


class NodeSilenceTests(ProxiedNodeCase):
    """The node goes silent: the gateway gives up after its timeout and keeps serving."""

    def test_put_without_answer_fails_with_503(self) -> None:
        """A PUT the node never answers is a 503 after the silence timeout; nothing stored."""
        self.proxy.stall()
        started = time.monotonic()
        put = lambda: self.put("silent", b"x" * 100_000)  # noqa: E731
        self.assertEqual(error_of(put), (503, "ServiceUnavailable"))
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, TIMEOUT * 0.9)
        self.assertLess(elapsed, TIMEOUT + 10)
        self.assert_nothing_stored(self.key("silent"))
        self.assert_serving()

    def test_get_silent_mid_body_is_cut(self) -> None:
        """A GET whose node falls silent after the headers is cut after the silence timeout."""
        data = os.urandom(2 * MiB)
        key = self.put("big", data)
        self.proxy.stall(after=256 * 1024)
        started = time.monotonic()
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        received = read_until_broken(body)
        elapsed = time.monotonic() - started
        self.assertLess(len(received), len(data))
        self.assertEqual(received, data[: len(received)])
        self.assertGreaterEqual(elapsed, TIMEOUT * 0.9)
        self.assertLess(elapsed, TIMEOUT + 10, "the client's own timeout ended the read")
        self.assert_serving()


class StartBeforeNodeTests(SynchronousTestCase):
    """A gateway started while its node is unreachable waits for it instead of exiting."""

    def setUp(self) -> None:
        """Make the account and its order in a fresh home; the node is not started."""
        if target_is_moto():
            raise SkipTest("the lambnet tests run against the gateway only")
        self.root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.home = os.path.join(self.root, "home")
        self.order_id = prepared_home(self.home)
        self.node_port = free_port()

    def start(self, mode: str = "lambgw", *flags: str) -> tuple[subprocess.Popen[bytes], str]:
        """Start a gateway over the (absent) node, without waiting; the process and its log."""
        self.port, self.admin_port = free_port(), free_port()
        argv = gateway_argv(
            mode,
            self.home,
            f"http://127.0.0.1:{self.node_port}",
            *("--admin-listen", f"tcp:{self.admin_port}:interface=127.0.0.1", *flags),
        )
        log_path = os.path.join(self.root, f"{mode}.log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [a.format(port=self.port) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                env=_environment(),
            )
        self.addCleanup(_stop, process)
        return process, log_path

    def admin_page(self, path: str) -> tuple[int, str]:
        """GET a page of the admin listener: its status and text."""
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=PATIENCE) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def test_serves_once_the_node_answers(self) -> None:
        """The gateway waits, unready, until the node starts; then serves without a restart."""
        process, log_path = self.start()
        _wait_listening(process, self.admin_port, log_path)
        self.assertEqual(self.admin_page("/healthz"), (200, "ok\n"))
        # The readiness check tries the node as long as the gateway's first attempt does.
        status, text = self.admin_page("/readyz")
        self.assertEqual(status, 503)
        self.assertIn("network unreachable", text)
        address = f"http://127.0.0.1:{self.node_port}"
        wait_for(
            lambda: f"Waiting for the network node at {address}: " in read(log_path),
            "the waiting line",
        )
        self.assertRaises(OSError, _connect, self.port)
        self.assertNotIn("Traceback", read(log_path))
        node = start_node(self.home, self.node_port)
        self.addCleanup(node.stop)
        _wait_listening(process, self.port, log_path)
        gateway = GatewayProcess("lambgw", self.home, self.port, self.order_id, process, log_path)
        s3 = gateway.s3_client()
        s3.put_object(Bucket=self.order_id, Key="k", Body=b"late but here")
        self.assertEqual(
            s3.get_object(Bucket=self.order_id, Key="k")["Body"].read(), b"late but here"
        )
        self.assertEqual(self.admin_page("/readyz"), (200, "ready\n"))
        self.assertNotIn("Cannot start", read(log_path))

    def test_stops_while_waiting(self) -> None:
        """SIGTERM while the gateway waits for the node ends it at once, cleanly."""
        process, log_path = self.start()
        wait_for(lambda: "Waiting for the network node" in read(log_path), "the waiting line")
        process.send_signal(signal.SIGTERM)
        self.assertIn(process.wait(10), (0, -signal.SIGTERM))
        self.assertIn("Server Shut Down.", read(log_path))
        self.assertNotIn("Traceback", read(log_path))
        self.assertNotIn("Cannot start", read(log_path))

    def test_wrong_order_still_stops(self) -> None:
        """Once the node answers, an order the account does not hold still stops start-up."""
        node = start_node(self.home, self.node_port)
        self.addCleanup(node.stop)
        process, log_path = self.start("s3gw", "--broker.extra_order_id", "0" * 40)
        self.assertEqual(process.wait(PATIENCE), EXIT_CONFIG)
        self.assertIn(
            f"Cannot start: order {'0' * 40} is not an order of account {ACCOUNT}",
            read(log_path),
        )
        self.assertNotIn("Waiting for the network node", read(log_path))


def read(path: str) -> str:
    """The text of a log file so far."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _connect(port: int) -> None:
    """Connect to ``127.0.0.1:port`` and hang up (raises OSError if nothing listens)."""
    socket.create_connection(("127.0.0.1", port), timeout=5).close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started by a test: SIGTERM, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
