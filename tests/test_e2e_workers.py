"""End-to-end tests of ``--workers``: gateway processes sharing the listeners, supervised.

Each test starts ``twistd -n lambgw --workers 2`` (a supervisor and two workers) on free
loopback ports and drives it with boto3 and plain sockets: metrics summed by the supervisor's
admin listener, a worker killed with ``kill -9`` and started again, a reload reaching every
worker, and a graceful stop with an upload in flight.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.gateway import (
    ACCOUNT,
    TWISTD,
    GatewayProcess,
    _environment,
    free_port,
    start_lambgw,
    target_is_moto,
)
from tests.test_e2e_admin import samples
from tests.test_e2e_tls import client as tls_client
from tests.test_e2e_tls import make_test_ca

#: Seconds the workers have to start, restart, reload or stop.
WAIT = 60.0
MiB = 2**20


def unix_get(path: str) -> bytes:
    """The response to an unsigned ``GET /`` sent on the UNIX socket ``path``."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(path)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def wait_for(condition: Any, what: str, output: Any = str, timeout: float = WAIT) -> Any:
    """Poll ``condition()`` until it is true; its value.

    Fail with ``what`` and ``output()`` after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{output()}")
        time.sleep(0.05)


def client_ports(pid: int, port: int) -> set[int]:
    """The client ports of the TCP connections to ``port`` that process ``pid`` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = set()
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.split(":")[1], 16) == port and inode in inodes:
                found.add(int(remote.split(":")[1], 16))
    return found


class WorkersTests(SynchronousTestCase):
    """A supervisor with two workers."""

    def setUp(self) -> None:
        if target_is_moto():
            raise SkipTest("worker processes are the gateway's, not moto's")
        self.root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.home = os.path.join(self.root, "home")
        self.admin_port = free_port()

    def start(self, *flags: str) -> GatewayProcess:
        """Start the supervisor; return once both workers serve."""
        admin = f"tcp:{self.admin_port}:interface=127.0.0.1"
        gateway = start_lambgw(self.home, "--workers", "2", "--admin-listen", admin, *flags)
        self.addCleanup(gateway.stop)
        wait_for(lambda: gateway.output().count("S3 API on") == 2, "two workers serving")
        return gateway

    def admin(self, page: str) -> tuple[int, str]:
        """The status and text of a page of the supervisor's admin listener."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{page}") as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the summed metrics."""
        found = samples(self.admin("/metrics")[1])
        return found.get((name, frozenset(labels.items())), 0.0)

    def puts(self, gateway: GatewayProcess, count: int, clients: int = 8) -> None:
        """``count`` PutObjects from ``clients`` clients at once, each on its own connection."""

        def put(n: int) -> None:
            client = gateway.s3_client()
            client.put_object(Bucket=gateway.order_id, Key=f"k{n % 7}", Body=b"w" * n)

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(put, range(count)))

    @staticmethod
    def pids(gateway: GatewayProcess) -> dict[int, int]:
        """The process id of each worker, as last started."""
        started = re.findall(r"Started worker (\d+) \(pid (\d+)\)", gateway.output())
        return {int(n): int(pid) for n, pid in started}

    def test_metrics_summed_over_workers(self) -> None:
        """/metrics counts every request, whichever worker answered, and says 2 workers."""
        gateway = self.start()
        self.puts(gateway, 40)
        self.assertEqual(
            self.metric("lambgw_requests_total", operation="PutObject", status="200"), 40
        )
        self.assertEqual(self.metric("lambgw_workers"), 2)
        self.assertEqual(self.metric("lambgw_requests_in_flight"), 0)
        status, text = self.admin("/readyz")
        self.assertEqual(
            (status, sorted(text.splitlines())), (200, ["worker 1: ready", "worker 2: ready"])
        )
        self.assertEqual(self.admin("/healthz"), (200, "ok\n"))
        status, page = self.admin("/")
        self.assertEqual(status, 200)
        self.assertIn(gateway.order_id, page)

    def test_connections_shared_evenly(self) -> None:
        """Sixteen connections kept open, made one after the other, go about half to each worker.

        Without balancing, whichever worker the kernel woke first took most of them (16/0
        and 13/3 were seen), one worker serving while the other idled.
        """
        gateway = self.start()
        connections = []
        for _ in range(16):
            connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
            self.addCleanup(connection.close)
            connection.request("GET", "/")  # refused (unsigned), the connection kept
            connection.getresponse().read()
            connections.append(connection)
        ports = {connection.sock.getsockname()[1] for connection in connections}
        served = {
            number: len(ports & client_ports(pid, gateway.port))
            for number, pid in self.pids(gateway).items()
        }
        self.assertEqual(sum(served.values()), 16, served)
        self.assertGreaterEqual(min(served.values()), 6, served)

    def test_killed_worker_is_started_again(self) -> None:
        """A worker killed with SIGKILL is logged and restarted; the others serve meanwhile."""
        gateway = self.start()
        self.puts(gateway, 20)
        counted = self.metric("lambgw_requests_total", operation="PutObject", status="200")
        self.assertEqual(counted, 20)
        killed = self.pids(gateway)[1]
        os.kill(killed, signal.SIGKILL)
        self.puts(gateway, 20)
        wait_for(
            lambda: self.pids(gateway)[1] != killed and gateway.output().count("S3 API on") == 3,
            "worker 1 serving again",
        )
        self.assertIn(
            f"Worker 1 (pid {killed}) was killed by signal 9; starting it again in 1 s",
            gateway.output(),
        )
        self.puts(gateway, 20)
        self.assertEqual(self.metric("lambgw_worker_restarts_total"), 1)
        self.assertEqual(
            self.metric("lambgw_requests_total", operation="PutObject", status="200"), 60
        )
        self.assertTrue(gateway.running())

    def test_reload_reaches_every_worker(self) -> None:
        """After SIGHUP every worker accepts the keys of the rewritten config file."""
        config = os.path.join(self.home, "config", "user.toml")
        gateway = self.start("--config", config)
        os.makedirs(os.path.dirname(config), exist_ok=True)
        with open(config, "w") as f:
            f.write('[gateway]\naccess_key = "newkey"\nsecret_key = "newsecret"\n')
        gateway._process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: gateway.output().count("Reloaded ") == 2,
            "both workers reloaded",
            lambda: gateway.output(),
        )
        gateway.access_key, gateway.secret_key = "newkey", "newsecret"
        self.puts(gateway, 24)
        gateway.access_key, gateway.secret_key = "accesskey", "secretkey"
        with self.assertRaises(ClientError) as raised:
            gateway.s3_client().list_buckets()
        self.assertEqual(raised.exception.response["Error"]["Code"], "InvalidAccessKeyId")
        self.assertTrue(gateway.running())

    def test_concurrent_writes_of_the_same_keys(self) -> None:
        """Overwrites, deletes and multipart completions of the same keys through two workers.

        Afterwards every object is one of the bodies written, whole, and the order's used
        bytes are the sum of the stored sizes.
        """
        gateway = self.start()
        bucket, keys = gateway.order_id, ["same/a", "same/b", "same/c"]
        written: dict[str, str] = {}
        lock = threading.Lock()

        def remember(etag: str, body: bytes) -> None:
            with lock:
                written[etag.strip('"')] = hashlib.sha256(body).hexdigest()

        def multipart(client: Any, key: str, parts: list[bytes]) -> None:
            upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            done = []
            for number, body in enumerate(parts, 1):
                etag = client.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body
                )["ETag"]
                done.append({"PartNumber": number, "ETag": etag})
            result = client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done}
            )
            remember(result["ETag"], b"".join(parts))

        def work(seed: int) -> None:
            chance = random.Random(seed)
            client = gateway.s3_client()
            for _ in range(8):
                key, action = chance.choice(keys), chance.random()
                if action < 0.45:
                    body = os.urandom(chance.randrange(1, 300_000))
                    remember(client.put_object(Bucket=bucket, Key=key, Body=body)["ETag"], body)
                elif action < 0.7:
                    client.delete_object(Bucket=bucket, Key=key)
                else:
                    parts = [os.urandom(5 * MiB), os.urandom(chance.randrange(1, 100_000))]
                    multipart(client, key, parts)

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(work, range(6)))

        client = gateway.s3_client()
        listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        self.assertLessEqual({o["Key"] for o in listed}, set(keys))
        for entry in listed:
            got = client.get_object(Bucket=bucket, Key=entry["Key"])
            body = got["Body"].read()
            self.assertEqual(len(body), entry["Size"])
            self.assertEqual(hashlib.sha256(body).hexdigest(), written[got["ETag"].strip('"')])
        (order,) = gateway.orders()
        self.assertEqual(order["used"], sum(o["Size"] for o in listed))
        self.assertEqual(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []), [])

    def test_multipart_upload_moves_between_workers(self) -> None:
        """An upload begun and fed on one worker is listed, fed and completed on the other.

        Each step runs while the other worker is stopped (SIGSTOP), so it cannot accept.
        """
        gateway = self.start()
        pids, bucket = self.pids(gateway), gateway.order_id
        first = os.urandom(5 * MiB)

        def alone(number: int) -> Any:
            os.kill(pids[3 - number], signal.SIGSTOP)
            os.kill(pids[number], signal.SIGCONT)
            return gateway.s3_client()

        self.addCleanup(lambda: [os.kill(pid, signal.SIGCONT) for pid in pids.values()])
        client = alone(1)
        upload = client.create_multipart_upload(Bucket=bucket, Key="moved")["UploadId"]
        one = client.upload_part(
            Bucket=bucket, Key="moved", UploadId=upload, PartNumber=1, Body=first
        )["ETag"]
        client.close()
        client = alone(2)
        listed = client.list_parts(Bucket=bucket, Key="moved", UploadId=upload)["Parts"]
        self.assertEqual([p["ETag"] for p in listed], [one])
        two = client.upload_part(
            Bucket=bucket, Key="moved", UploadId=upload, PartNumber=2, Body=b"end"
        )["ETag"]
        client.close()
        client = alone(1)
        parts = [{"PartNumber": 1, "ETag": one}, {"PartNumber": 2, "ETag": two}]
        client.complete_multipart_upload(
            Bucket=bucket, Key="moved", UploadId=upload, MultipartUpload={"Parts": parts}
        )
        client.close()
        os.kill(pids[2], signal.SIGCONT)
        body = gateway.s3_client().get_object(Bucket=bucket, Key="moved")["Body"].read()
        self.assertEqual(hashlib.sha256(body).digest(), hashlib.sha256(first + b"end").digest())
        output = gateway.output()
        self.assertIn("[worker 2 lambgw.access#info]", output)
        self.assertRegex(output, r"worker 2 lambgw.access#info\] \S+ \S+ \S+ ListParts")
        self.assertRegex(output, r"worker 1 lambgw.access#info\] \S+ \S+ \S+ CompleteMultip")

    def test_workers_stop_when_the_supervisor_dies(self) -> None:
        """After ``kill -9`` of the supervisor its workers stop themselves; the port closes."""
        gateway = self.start()
        workers = list(self.pids(gateway).values())
        os.kill(gateway._process.pid, signal.SIGKILL)
        gateway._process.wait(WAIT)

        def gone(pid: int) -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_for(lambda: all(gone(pid) for pid in workers), "the workers to stop")
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", gateway.port), timeout=5).close()

    def test_tls_and_unix_listeners_shared(self) -> None:
        """An ssl: and a unix: listener are served by the workers, and outlive a killed one."""
        os.makedirs(self.home)
        ca, cert, key = make_test_ca(self.home)
        tls_port, path = free_port(), os.path.join(self.root, "s3.sock")
        gateway = self.start(
            *("--listen", f"ssl:{tls_port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"),
            *("--listen", f"unix:{path}:mode=660"),
        )
        https = tls_client(f"https://localhost:{tls_port}", verify=ca)
        https.put_object(Bucket=gateway.order_id, Key="tls", Body=b"over TLS")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o660)
        self.assertIn(b"<Code>AccessDenied</Code>", unix_get(path))
        os.kill(self.pids(gateway)[1], signal.SIGKILL)
        wait_for(lambda: gateway.output().count("S3 API on") == 3, "worker 1 serving again")
        for _ in range(8):
            self.assertIn(b"<Code>AccessDenied</Code>", unix_get(path))
            body = https.get_object(Bucket=gateway.order_id, Key="tls")["Body"].read()
            self.assertEqual(body, b"over TLS")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o660)

    def test_sigterm_lets_an_upload_in_flight_finish(self) -> None:
        """SIGTERM to the supervisor: the upload in flight completes, then every process exits."""
        gateway = self.start("--shutdown-grace", "30")
        client = gateway.s3_client()
        url = urlsplit(
            client.generate_presigned_url(
                "put_object", Params={"Bucket": gateway.order_id, "Key": "slow"}
            )
        )
        body = os.urandom(8 * MiB)
        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
        self.addCleanup(connection.close)
        connection.putrequest("PUT", f"{url.path}?{url.query}", skip_accept_encoding=True)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        connection.send(body[: 3 * MiB])
        wait_for(lambda: self.metric("lambgw_requests_in_flight") == 1, "the upload in flight")
        workers = self.pids(gateway).values()
        gateway._process.send_signal(signal.SIGTERM)
        wait_for(lambda: "requests in flight have 30.0 s to finish" in gateway.output(), "stop")
        connection.send(body[3 * MiB :])
        response = connection.getresponse()
        self.assertEqual(response.status, 200)
        self.assertIn(gateway._process.wait(WAIT), (0, -signal.SIGTERM))
        for pid in workers:
            with self.assertRaises(ProcessLookupError):
                os.kill(pid, 0)
        output = gateway.output()
        self.assertEqual(output.count("exited with status 0"), 2, output)


class SocketActivationTests(SynchronousTestCase):
    """``--listen systemd:...`` with ``--workers``: the supervisor's socket, shared."""

    def test_inherited_socket_shared(self) -> None:
        """Two workers answer on a listening socket systemd passed to the supervisor."""
        if target_is_moto():
            raise SkipTest("worker processes are the gateway's, not moto's")
        root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        self.addCleanup(shutil.rmtree, root, True)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        argv = [
            *(*TWISTD, "-n", "--pidfile=", "lambgw", "--home", root, "--account", ACCOUNT),
            *("--gateway.address", f"127.0.0.1:{free_port()}", "--admin-listen", ""),
            *("--listen", "systemd:domain=INET:index=0", "--workers", "2"),
        ]
        # As systemd does: the socket is fd 3 and LISTEN_PID is the supervisor's own pid.
        environment = "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=s3"
        script = f'export {environment}; exec "$@" 3<&{sock.fileno()}'
        log_path = os.path.join(root, "gateway.log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                ["bash", "-c", script, "bash", *argv],
                pass_fds=[sock.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
                env=_environment(),
            )
        self.addCleanup(lambda: (process.terminate(), process.wait(WAIT)))
        sock.close()

        def output() -> str:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                return f.read()

        wait_for(lambda: output().count("S3 API on") == 2, "two workers serving", output)
        for _ in range(6):
            buckets = tls_client(f"http://127.0.0.1:{port}").list_buckets()["Buckets"]
            self.assertEqual(len(buckets), 1)
