"""Run a real listening gateway for the end-to-end tests, and share it across a test class.

``start_lambgw`` and ``start_s3gw`` start ``twistd -n lambgw|s3gw`` on a free loopback port
with a temporary config home, wait until it accepts connections and return a
:class:`GatewayProcess`.  With the environment variable ``LAMBGW_E2E_TARGET=moto`` they start
``moto_server`` instead (orders are then stood in for by buckets named like order ids), which
is useful to check the tests themselves against a reference S3 implementation.

:class:`GatewayCase` gives a trial test case one gateway per class: trial does not call
``setUpClass``/``tearDownClass`` itself, so the case calls them around the first and the last
of its tests, and any gateway still running when the process exits is stopped then.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from attrs import define, field
from twisted.trial.unittest import SynchronousTestCase

#: The environment variable that chooses what the end-to-end tests run against.
TARGET_ENV = "LAMBGW_E2E_TARGET"
#: The account every end-to-end gateway serves.
ACCOUNT = "demo"
#: The keys a gateway with no config file accepts.
ACCESS_KEY = "accesskey"
SECRET_KEY = "secretkey"
#: Seconds a gateway may take to accept connections after it is started.
START_TIMEOUT = 60.0
#: Seconds a gateway has to exit after SIGTERM before it is killed.
STOP_GRACE = 5.0

#: The admin pages of a test gateway listen on any free loopback port (not the fixed default).
ADMIN_ANYWHERE = ("--admin-listen", "tcp:0:interface=127.0.0.1")

MiB = 2**20
#: The checkout the tests are in: its ``lambgw`` and ``twisted/plugins`` are the ones run.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: twistd, run by this interpreter (``python -m twisted`` is the other runner, ``twist``).
TWISTD = (sys.executable, "-c", "from twisted.scripts.twistd import run; run()")


def target_is_moto() -> bool:
    """Whether the end-to-end tests run against ``moto_server`` instead of the gateway."""
    return os.environ.get(TARGET_ENV, "gateway") == "moto"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def admin(home: str, *args: str) -> str:
    """Run the admin command ``python -m lambgw ARGS --account demo --home HOME``; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "lambgw", *args, "--account", ACCOUNT, "--home", home],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_environment(),
    )
    if done.returncode != 0:
        raise RuntimeError(f"lambgw {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def make_file(directory: str, name: str, size: int) -> str:
    """Write ``size`` random bytes to ``directory/name``; its path."""
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = min(left, 8 * MiB)
            f.write(os.urandom(chunk))
            left -= chunk
    return path


def file_sha256(path: str) -> str:
    """Return the SHA-256 of a file's content, in hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _order_id() -> str:
    return secrets.token_hex(20).upper()


@define
class GatewayProcess:
    """A gateway (or moto_server) process listening on ``127.0.0.1:port``."""

    mode: str
    home: str
    port: int
    order_id: str
    _process: subprocess.Popen[bytes]
    _log_path: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    _fake_orders: list[str] = field(factory=list)

    @property
    def endpoint(self) -> str:
        """The URL S3 clients are pointed at."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_moto(self) -> bool:
        """Whether this is moto_server standing in for the gateway."""
        return bool(self._fake_orders)

    def output(self) -> str:
        """Return what the process wrote to stdout and stderr so far."""
        with open(self._log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def orders(self) -> list[dict[str, Any]]:
        """Return the account's orders as the admin command lists them."""
        if self.is_moto:
            return [{"order_id": o, "status": "active"} for o in self._fake_orders]
        orders: list[dict[str, Any]] = json.loads(admin(self.home, "order", "list", "--json"))
        return orders

    def buy_order(self, capacity: str = "1GiB", days: str = "30") -> str:
        """Buy another order for the account, and list the buckets for the gateway to see it."""
        if self.is_moto:
            order_id = _order_id()
            self.s3_client().create_bucket(Bucket=order_id)
            self._fake_orders.append(order_id)
            return order_id
        before = {o["order_id"] for o in self.orders()}
        admin(self.home, "order", "buy", "--capacity", capacity, "--days", days)
        (new,) = [o["order_id"] for o in self.orders() if o["order_id"] not in before]
        self.s3_client().list_buckets()
        return str(new)

    def s3_client(self, **config: Any) -> Any:
        """Return a path-style boto3 S3 client for this gateway (``config`` goes to Config)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, **config),
        )

    def running(self) -> bool:
        """Whether the process has not exited."""
        return self._process.poll() is None

    def stop(self) -> None:
        """Stop the process: SIGTERM, then SIGKILL if it is still there after a few seconds."""
        _running.discard(self)
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __hash__(self) -> int:
        return id(self)


_running: set[GatewayProcess] = set()


@atexit.register
def _stop_all() -> None:
    for gateway in list(_running):
        gateway.stop()


def _wait_listening(process: subprocess.Popen[bytes], port: int, log_path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                raise RuntimeError(f"gateway exited with {process.returncode}:\n{f.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise RuntimeError(
                    f"gateway not listening on {port} after {START_TIMEOUT}s"
                ) from None
            time.sleep(0.05)


def _environment() -> dict[str, str]:
    """Return the environment for a gateway: this checkout first on the path, no AWS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return env


def _spawn(argv: Sequence[str], home: str, mode: str, order_id: str) -> GatewayProcess:
    """Start ``argv`` (with ``{port}`` filled in) until it listens; retry if the port was taken."""
    for attempt in range(3):
        port = free_port()
        log_path = os.path.join(home, f"{mode}-{port}.log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [a.format(port=port) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=home,
                env=_environment(),
            )
        try:
            _wait_listening(process, port, log_path)
        except RuntimeError as e:
            if attempt < 2 and "in use" in str(e):
                continue
            raise
        gateway = GatewayProcess(mode, home, port, order_id, process, log_path)
        _running.add(gateway)
        return gateway
    raise AssertionError("unreachable")


def _start_moto(home: str, mode: str) -> GatewayProcess:
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "{port}"]
    order_id = _order_id()
    gateway = _spawn(argv, home, mode, order_id)
    gateway._fake_orders.append(order_id)
    if mode == "lambgw":
        gateway.s3_client().create_bucket(Bucket=order_id)
    return gateway


def start_lambgw(home: str, *flags: str) -> GatewayProcess:
    """Start ``twistd -n lambgw --account demo`` with config home ``home`` and extra ``flags``.

    Its ``order_id`` is the order the account got on first start.
    """
    os.makedirs(home, exist_ok=True)
    if target_is_moto():
        return _start_moto(home, "lambgw")
    argv = [
        *(*TWISTD, "-n", "--pidfile=", "lambgw", "--home", home, "--account", ACCOUNT),
        *("--gateway.address", "127.0.0.1:{port}", *ADMIN_ANYWHERE, *flags),
    ]
    gateway = _spawn(argv, home, "lambgw", "")
    try:
        gateway.order_id = gateway.s3_client().list_buckets()["Buckets"][0]["Name"]
    except BaseException:
        gateway.stop()
        raise
    return gateway


def start_s3gw(home: str, *flags: str) -> GatewayProcess:
    """Start ``twistd -n s3gw`` serving the first order of account demo under ``home``.

    lambgw is started on ``home`` first, for the account to get its order.
    """
    os.makedirs(home, exist_ok=True)
    if target_is_moto():
        return _start_moto(home, "s3gw")
    first = start_lambgw(home)
    first.stop()
    order_id = first.order_id
    argv = [
        *(*TWISTD, "-n", "--pidfile=", "s3gw", "--home", home, "--account", ACCOUNT),
        *("--broker.extra_order_id", order_id, "--gateway.address", "127.0.0.1:{port}"),
        *(*ADMIN_ANYWHERE, *flags),
    ]
    return _spawn(argv, home, "s3gw", order_id)


def _remove_if_there(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


def _test_names(cls: type) -> set[str]:
    return set(unittest.TestLoader().getTestCaseNames(cls))


class GatewayCase(SynchronousTestCase):
    """A test case whose tests share one gateway, from before the first to after the last.

    Set ``mode`` to ``"lambgw"`` or ``"s3gw"``.  Tests find the gateway in ``self.gateway``,
    the bucket to work in in ``self.bucket`` (the account's order in lambgw mode, a bucket
    made for the class in s3gw mode) and a scratch directory in ``self.scratch``.
    """

    mode: ClassVar[str] = "lambgw"
    gateway: ClassVar[GatewayProcess]
    bucket: ClassVar[str]
    root: ClassVar[str]
    scratch: ClassVar[str]

    _pending: ClassVar[dict[type[GatewayCase], set[str]]] = {}
    _failed: ClassVar[dict[type[GatewayCase], BaseException]] = {}

    @classmethod
    def setUpClass(cls) -> None:
        """Start the gateway in a fresh temporary directory; make the s3gw bucket."""
        cls.root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        cls.scratch = os.path.join(cls.root, "scratch")
        os.makedirs(cls.scratch)
        home = os.path.join(cls.root, "home")
        try:
            if cls.mode == "lambgw":
                cls.gateway = start_lambgw(home)
                cls.bucket = cls.gateway.order_id
            else:
                cls.gateway = start_s3gw(home)
                cls.bucket = f"e2e-{cls.__name__.lower()}"
                cls.gateway.s3_client().create_bucket(Bucket=cls.bucket)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        """Stop the gateway and remove the temporary directory."""
        gateway = cls.__dict__.get("gateway")
        if gateway is not None:
            gateway.stop()
        shutil.rmtree(cls.root, ignore_errors=True)

    def setUp(self) -> None:
        """Set up the class's gateway if this is its first test."""
        cls = type(self)
        if cls in GatewayCase._failed:
            raise GatewayCase._failed[cls]
        if cls not in GatewayCase._pending:
            try:
                cls.setUpClass()
            except BaseException as e:
                GatewayCase._failed[cls] = e
                raise
            GatewayCase._pending[cls] = _test_names(cls)
        self.addCleanup(self._test_done)

    @staticmethod
    def tear_down_pending() -> None:
        """Tear down the classes some of whose tests did not run (e.g. when a subset is run)."""
        for cls in list(GatewayCase._pending):
            del GatewayCase._pending[cls]
            cls.tearDownClass()

    def _test_done(self) -> None:
        cls = type(self)
        pending = GatewayCase._pending.get(cls, set())
        pending.discard(self._testMethodName)
        if not pending:
            GatewayCase._pending.pop(cls, None)
            cls.tearDownClass()
        elif not self.gateway.running():
            self.fail(f"the gateway died:\n{self.gateway.output()}")

    def key(self, name: str) -> str:
        """Return an object key unique to this test: ``test/<test name>/<name>``."""
        return f"test/{self._testMethodName}/{name}"

    def new_file(self, size: int, name: str = "") -> str:
        """Make a scratch file of ``size`` random bytes (removed after the test); its path."""
        path = make_file(self.scratch, name or f"{self._testMethodName}-{size}", size)
        self.addCleanup(os.remove, path)
        return path

    def scratch_path(self, name: str) -> str:
        """Return a scratch path for a file the test writes (removed after the test)."""
        path = os.path.join(self.scratch, f"{self._testMethodName}-{name}")
        self.addCleanup(_remove_if_there, path)
        return path

    def assertSameFile(self, expected: str, actual: str) -> None:
        """Assert that two files have the same bytes."""
        self.assertEqual(os.path.getsize(actual), os.path.getsize(expected))
        self.assertEqual(file_sha256(actual), file_sha256(expected))


if TYPE_CHECKING:
    #: The base of the mixins that hold one client's tests for both modes.
    ClientTests = GatewayCase
else:
    ClientTests = object


atexit.register(GatewayCase.tear_down_pending)
