"""Measure the gateway's CPU time per small request.

``python -m bench.cpu [--count N] [--clients C] [--size BYTES]`` starts the gateway on its
embedded network in a temporary home, sends ``N`` small PUTs and then ``N`` GETs of them
from ``C`` concurrent clients (pre-signed, as ``bench.s3bench`` does), ``--repeats`` times,
and prints the median CPU milliseconds (user + system, all threads) the gateway process
spent per request, and the size its store's write-ahead log has at the end.  The figure
depends less than requests per second on what else runs, but a shared machine's speed still
moves it by tens of percent from one hour to the next: to compare two trees, use
``bench.compare``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.client import Payload, PreparedRequest, object_path, run_clients
from bench.servers import Target, gateway_target

#: Seconds a measured batch may take before its clients give up.
DEADLINE = 600.0


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds ``pid`` has used, from ``/proc/PID/stat``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # utime and stime are fields 14 and 15 of the line; fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds of ``pid`` and of every live descendant of it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    family, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    total = 0.0
    for member in family:
        try:
            total += cpu_seconds(member)
        except OSError:
            continue
    return total


def cpu_per_request(target: Target, requests: list[list[PreparedRequest]]) -> float:
    """Send the requests from one client per row; return the server's CPU ms per request."""
    before = cpu_seconds(target.pid)
    done, _ = run_clients(
        target.endpoint,
        len(requests),
        len(requests[0]),
        lambda client, index: requests[client][index],
        time.monotonic() + DEADLINE,
    )
    used = cpu_seconds(target.pid) - before
    return 1000 * used / done


def measure(target: Target, count: int, clients: int, size: int, tag: str) -> tuple[float, float]:
    """PUT ``count`` objects of ``size`` bytes, then GET them; return CPU ms per PUT and GET."""
    payload = Payload.of(os.urandom(size))
    signer = target.signer()
    per_client = max(1, count // clients)
    paths = [
        [object_path(target.bucket, f"cpu/{tag}/{c}/{i}") for i in range(per_client)]
        for c in range(clients)
    ]
    puts = [[signer.prepare("PUT", p, payload=payload) for p in row] for row in paths]
    gets = [[signer.prepare("GET", p) for p in row] for row in paths]
    return cpu_per_request(target, puts), cpu_per_request(target, gets)


def main(argv: list[str] | None = None) -> None:
    """Run the measurement and print CPU ms per PUT and per GET."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="requests of each kind")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections")
    parser.add_argument("--size", type=int, default=4096, help="object size in bytes")
    parser.add_argument("--repeats", type=int, default=3, help="measured runs (median printed)")
    args = parser.parse_args(argv)
    runs: list[tuple[float, float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="lambgw-cpu-") as home,
        gateway_target(Path(home)) as target,
    ):
        measure(target, min(args.count, 320), args.clients, args.size, "warmup")
        for run in range(args.repeats):
            runs.append(measure(target, args.count, args.clients, args.size, f"run{run}"))
        logs = sum(path.stat().st_size for path in Path(home).rglob("*.sqlite3-wal"))
    for kind, values in (("PUT", [p for p, _ in runs]), ("GET", [g for _, g in runs])):
        spread = "/".join(f"{v:.3f}" for v in values)
        print(
            f"gateway CPU per {args.size}-byte {kind}: {statistics.median(values):.3f} ms"
            f" (median of runs {spread})"
        )
    print(f"the store's write-ahead log at the end: {logs / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
