"""A chaos soak: a mixed S3 workload against a gateway over a lambnet node, both killed at random.

::

    python -m bench.soak --minutes 10          # the soak
    python -m bench.soak --quick               # about 40 seconds, a few kills (the smoke test)

It makes a fresh home in a temporary directory, with the account ``demo``, its key and an
order of 4 GiB on a ``twistd lambnet`` node, and a ``twistd lambgw`` gateway over that node,
both on loopback.  Several clients (boto3, one thread each, see :mod:`bench.soakload`) PUT,
GET, GET ranges, LIST, DeleteObjects, upload in parts and overwrite the same keys, while a
chaos thread kills the gateway or the node with SIGKILL at random moments and restarts it
after a random pause (at most one of them is down at a time; the kills are spaced and
bounded in number).  At the end it checks, with both up:

- every key holds what its last acknowledged write left, or what a later write that failed
  may have left, whole (a partial object or a lost write is a violation);
- the bucket lists no key that no client wrote;
- the order's used bytes equal the sum of its objects (plus the open parts, where the network
  counts them), then, once the open uploads are aborted, the sum of its objects;
- once both are stopped and started again (their start-up sweeps run), no stray file is
  left: nothing in the gateway's spool, its uploads or the node's incoming bodies, and no
  object file of the node that no object refers to.

It prints operations done, kills survived, objects verified and what was lost, and exits
with status 1 if anything was wrong.  The temporary directory is removed at the end, unless
``--keep`` (then its logs can be read).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from attrs import define, field

from bench.servers import ACCESS_KEY, ACCOUNT, SECRET_KEY, ServerProcess, StartError, free_port
from bench.soakload import Body, SoakClient, Tally, check_read

#: The order the clients write into.
CAPACITY = "4GiB"


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _environment() -> dict[str, str]:
    root = str(Path(__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


@define
class Cluster:
    """A lambnet node and a gateway over it, in ``home``, on fixed loopback ports."""

    home: Path
    node: ServerProcess
    gateway: ServerProcess
    order_id: str = ""

    @classmethod
    def create(cls, home: Path) -> Cluster:
        """Make the account, its key and its order; the servers are not started yet."""
        for args in (
            ("account", "create"),
            ("account", "key"),
            ("order", "buy", "--capacity", CAPACITY, "--days", "30"),
        ):
            cls.admin(home, *args, "--account", ACCOUNT)
        twistd = ("-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=")
        node_port, port = free_port(), free_port()
        node = ServerProcess(
            _python(
                *(*twistd, "lambnet", "--data", str(home / "network")),
                *("--listen", f"tcp:{node_port}:interface=127.0.0.1"),
            ),
            node_port,
            home / "lambnet.log",
            _environment(),
        )
        gateway = ServerProcess(
            _python(
                *(*twistd, "lambgw", "--home", str(home), "--account", ACCOUNT),
                *("--gateway.address", f"127.0.0.1:{port}"),
                *("--broker.validator_addr", f"http://127.0.0.1:{node_port}"),
                *("--admin-listen", ""),
            ),
            port,
            home / "gateway.log",
            _environment(),
        )
        return cls(home, node, gateway)

    @staticmethod
    def admin(home: Path, *args: str) -> str:
        """Run ``python -m lambgw ARGS --home HOME``; its output."""
        command = _python("-m", "lambgw", *args, "--home", str(home))
        done = subprocess.run(
            command, capture_output=True, timeout=300, check=False, env=_environment(), text=True
        )
        if done.returncode:
            raise StartError(f"{' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def start(self) -> None:
        """Start the node, then the gateway."""
        self.node.start()
        self.gateway.start()

    def stop(self) -> None:
        """Stop both, cleanly (SIGTERM): the gateway first."""
        self.gateway.stop()
        self.node.stop()

    def client(self, **config: Any) -> Any:
        """A boto3 client of the gateway."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.gateway.port}",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=60, **config
            ),
        )

    def used(self) -> int:
        """The bytes the order holds, as the node's store says."""
        orders = json.loads(self.admin(self.home, "order", "list", "--json", "--account", ACCOUNT))
        (order,) = [o for o in orders if o["order_id"] == self.order_id]
        return int(order["used"])

    def stray_files(self) -> Counter[str]:
        """Files left where nothing should be, with both servers stopped, by place."""
        found: Counter[str] = Counter()
        for place, root in (
            ("gateway spool", self.home / "gateway" / "spool"),
            ("gateway uploads", self.home / "gateway" / "uploads"),
            ("node incoming", self.home / "network" / "incoming"),
        ):
            for _, _, names in os.walk(root):
                found[place] += len(names)
        swept = self.admin(self.home, "store", "sweep", "--min-age", "0")
        found["node object files unreferenced"] = int(swept.split()[1])
        return found


@define
class Chaos:
    """Kills the gateway or the node (SIGKILL) at random moments and restarts it.

    It runs on the main thread: the servers die with the thread that started them.
    """

    cluster: Cluster
    rng: random.Random
    gap: tuple[float, float]
    max_kills: int
    kills: Counter[str] = field(factory=Counter)

    def run(self, deadline: float) -> None:
        """Kill and restart until ``deadline`` (``time.monotonic()``) or the kills are used up."""
        while sum(self.kills.values()) < self.max_kills:
            pause = self.rng.uniform(*self.gap)
            if time.monotonic() + pause > deadline:
                break
            time.sleep(pause)
            name = self.rng.choice(["gateway", "node"])
            server = self.cluster.gateway if name == "gateway" else self.cluster.node
            server.kill()
            self.kills[name] += 1
            time.sleep(self.rng.uniform(0.0, 1.5))
            server.start()


@define
class Soak:
    """One soak run: its settings, what it did and what it found."""

    seconds: float
    clients: int
    seed: int
    gap: tuple[float, float]
    max_kills: int
    tally: Tally = field(factory=Tally)

    def run(self, home: Path) -> bool:
        """Run the soak in ``home``; print the report; whether nothing was wrong."""
        cluster = Cluster.create(home)
        cluster.start()
        try:
            return self._run(cluster)
        finally:
            cluster.stop()

    def _run(self, cluster: Cluster) -> bool:
        (bucket,) = [b["Name"] for b in cluster.client().list_buckets()["Buckets"]]
        cluster.order_id = bucket
        rng = random.Random(self.seed)
        clients = [
            SoakClient(
                n,
                cluster.client(retries={"total_max_attempts": 1}),
                bucket,
                self.tally,
                random.Random(rng.random()),
            )
            for n in range(self.clients)
        ]
        chaos = Chaos(cluster, random.Random(rng.random()), self.gap, self.max_kills)
        deadline = time.monotonic() + self.seconds
        threads = [
            threading.Thread(target=self._work, args=(c, deadline), daemon=True) for c in clients
        ]
        for thread in threads:
            thread.start()
        chaos.run(deadline)
        for thread in threads:
            thread.join()
        return self._verify(cluster, clients, chaos)

    def _work(self, client: SoakClient, deadline: float) -> None:
        while time.monotonic() < deadline:
            client.step()

    def _verify(self, cluster: Cluster, clients: list[SoakClient], chaos: Chaos) -> bool:
        s3 = cluster.client(retries={"mode": "standard", "total_max_attempts": 10})
        verified = sizes = 0
        for client in clients:
            client.s3 = s3
            for key, candidates in sorted(client.keys.items()):
                found = client.read(key)
                wrong = check_read(key, candidates, found)
                if wrong is not None:
                    self.tally.violation(f"at the end, {wrong}")
                elif isinstance(found, Body):
                    verified += 1
                    sizes += found.size
        listed = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cluster.order_id):
            listed.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        known = {key for client in clients for key in client.keys}
        for key in sorted(set(listed) - known):
            self.tally.violation(f"at the end, {key} is listed but no client wrote it")
        objects = sum(listed.values())
        uploads = s3.list_multipart_uploads(Bucket=cluster.order_id).get("Uploads", [])
        parts = 0
        for upload in uploads:
            listed_parts = s3.list_parts(
                Bucket=cluster.order_id, Key=upload["Key"], UploadId=upload["UploadId"]
            ).get("Parts", [])
            parts += sum(p["Size"] for p in listed_parts)
        used = cluster.used()
        if used not in (objects, objects + parts):
            self.tally.violation(
                f"the order uses {used} bytes; its objects hold {objects}, open parts {parts}"
            )
        for upload in uploads:
            s3.abort_multipart_upload(
                Bucket=cluster.order_id, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        used_after = cluster.used()
        if used_after != objects:
            self.tally.violation(
                f"with the uploads aborted the order uses {used_after} bytes, its objects {objects}"
            )
        # Stop, start again (the start-up sweeps run), stop: nothing may be left.
        cluster.stop()
        cluster.start()
        cluster.stop()
        stray = cluster.stray_files()
        lost = [v for v in self.tally.violations if "missing" in v or "not listed" in v]
        done, failed = self.tally.done, self.tally.failed
        print(f"soak: {self.seconds / 60:.1f} min, {self.clients} clients, seed {self.seed}")
        print(
            f"operations done: {sum(done.values())} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(done.items()))})"
        )
        print(f"operations failed under faults: {sum(failed.values())}")
        for why, count in failed.most_common(8):
            print(f"    {count:6d}  {why}")
        print(
            f"kills survived: {sum(chaos.kills.values())} "
            f"(gateway {chaos.kills['gateway']}, node {chaos.kills['node']})"
        )
        print(f"objects verified: {verified} ({sizes} bytes), keys checked {len(known)}")
        print(f"open uploads at the end: {len(uploads)} ({parts} bytes of parts), aborted")
        print(f"order used: {used} bytes; objects {objects}; after aborting {used_after}")
        print(
            f"stray files: {sum(stray.values())} "
            f"({', '.join(f'{k} {v}' for k, v in sorted(stray.items()))})"
        )
        print(f"lost: {len(lost)}")
        print(f"violations: {len(self.tally.violations)}")
        for violation in self.tally.violations[:20]:
            print(f"    {violation}")
        return not self.tally.violations and not sum(stray.values())


def main(argv: list[str] | None = None) -> int:
    """Run the soak from the command line; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (%(default)s)")
    parser.add_argument("--quick", action="store_true", help="40 seconds, 3 kills at most")
    parser.add_argument("--clients", type=int, default=4, help="S3 clients (%(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    if args.quick:
        soak = Soak(40.0, 2, seed, (6.0, 12.0), 3)
    else:
        seconds = args.minutes * 60
        soak = Soak(seconds, args.clients, seed, (8.0, 30.0), max(2, int(seconds / 10)))
    home = Path(tempfile.mkdtemp(prefix="lambgw-soak-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        ok = soak.run(home)
    finally:
        if args.keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
