"""Measure the gateway's CPU time per small request, and a bare twisted.web resource's.

``python -m bench.cpu [--count N] [--clients C] [--size BYTES]`` starts the gateway on its
embedded network in a temporary home, sends ``N`` small PUTs and then ``N`` GETs of them
from ``C`` concurrent clients (pre-signed, as ``bench.s3bench`` does), ``--repeats`` times,
each time with a new gateway, and prints the median CPU milliseconds (user + system, all
threads) the gateway process spent per request, against issue 12's targets, and the size its
store's write-ahead log has at the end of the last run.

The figure depends less than requests per second on what else runs, but a shared machine's
speed still moves it by tens of percent from one hour to the next (twofold on the 2-core VM
the figures in ``bench/README.md`` come from).  So each run also sends the same requests to
a bare twisted.web resource (:mod:`bench.bare`), each kind right after the gateway's, and
the gateway's CPU over the resource's is printed too (the median of the runs' own ratios),
against the targets over the resource's CPU when they were set.  To compare two trees, use
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
from bench.servers import Target, bare_target, gateway_target

#: Seconds a measured batch may take before its clients give up.
DEADLINE = 600.0
#: Issue 12's targets: the most CPU milliseconds per 4 KiB request, on one worker.
TARGETS = {"PUT": 0.450, "GET": 0.300}
#: The size of object the targets are for.
TARGET_SIZE = 4096
#: CPU milliseconds a bare twisted.web resource took per request when the targets were set
#: (it answered 8,300 small requests a second on one core).
BARE_THEN = 1 / 8.3


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


def requests(
    target: Target, count: int, clients: int, size: int, tag: str
) -> tuple[list[list[PreparedRequest]], list[list[PreparedRequest]]]:
    """``count`` PUTs of new objects of ``size`` bytes, and the GETs of them, one row a client."""
    payload = Payload.of(os.urandom(size))
    signer = target.signer()
    per_client = max(1, count // clients)
    paths = [
        [object_path(target.bucket, f"cpu/{tag}/{c}/{i}") for i in range(per_client)]
        for c in range(clients)
    ]
    puts = [[signer.prepare("PUT", p, payload=payload) for p in row] for row in paths]
    gets = [[signer.prepare("GET", p) for p in row] for row in paths]
    return puts, gets


def measure_pair(
    target: Target, floor: Target, count: int, clients: int, size: int, tag: str
) -> tuple[tuple[float, float], tuple[float, float]]:
    """CPU ms per PUT and per GET of ``target`` and of ``floor``, each kind to both in turn."""
    mine, theirs = (requests(t, count, clients, size, tag) for t in (target, floor))
    put, floor_put = cpu_per_request(target, mine[0]), cpu_per_request(floor, theirs[0])
    get, floor_get = cpu_per_request(target, mine[1]), cpu_per_request(floor, theirs[1])
    return (put, get), (floor_put, floor_get)


def report(
    size: int, gateway: list[tuple[float, float]], bare: list[tuple[float, float]]
) -> list[str]:
    """The lines that give the runs' CPU ms per PUT and GET of the gateway and of the floor.

    ``gateway`` and ``bare``: one (PUT, GET) pair per run, each of the floor's measured
    right after the gateway's.
    """
    lines = []
    for index, kind in enumerate(("PUT", "GET")):
        values = [run[index] for run in gateway]
        line = (
            f"gateway CPU per {size}-byte {kind}: {statistics.median(values):.3f} ms"
            f" (median of runs {_spread(values)})"
        )
        if size == TARGET_SIZE:
            line += _verdict(statistics.median(values), TARGETS[kind], " ms")
        lines.append(line)
    for index, kind in enumerate(("PUT", "GET")):
        floor = [run[index] for run in bare]
        lines.append(
            f"bare twisted.web CPU per {size}-byte {kind}: {statistics.median(floor):.3f} ms"
            f" (median of runs {_spread(floor)})"
        )
        ratios = [run[index] / base[index] for run, base in zip(gateway, bare, strict=True)]
        line = (
            f"gateway over bare, {kind}: {statistics.median(ratios):.2f}x (runs {_spread(ratios)})"
        )
        if size == TARGET_SIZE:
            line += _verdict(statistics.median(ratios), TARGETS[kind] / BARE_THEN, "x")
        lines.append(line)
    if size == TARGET_SIZE:
        lines.append(
            f"(the targets over the bare resource's {1000 * BARE_THEN:.0f} µs when they were set)"
        )
    return lines


def _spread(values: list[float]) -> str:
    return "/".join(f"{value:.3f}" for value in values)


def _verdict(value: float, target: float, unit: str) -> str:
    return f"; target <= {target:.3f}{unit}: {'met' if value <= target else 'NOT met'}"


def main(argv: list[str] | None = None) -> None:
    """Run the measurement and print CPU ms per PUT and per GET."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="requests of each kind")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections")
    parser.add_argument("--size", type=int, default=4096, help="object size in bytes")
    parser.add_argument("--repeats", type=int, default=5, help="measured runs (median printed)")
    args = parser.parse_args(argv)
    runs: list[tuple[float, float]] = []
    floors: list[tuple[float, float]] = []
    logs = 0
    for _ in range(args.repeats):
        # New processes each run: one process can be ten percent faster or slower than
        # another of the same code for its whole life.
        with (
            tempfile.TemporaryDirectory(prefix="lambgw-cpu-") as home,
            gateway_target(Path(home)) as target,
            tempfile.TemporaryDirectory(prefix="lambgw-bare-") as bare_home,
            bare_target(Path(bare_home)) as bare,
        ):
            measure_pair(target, bare, min(args.count, 320), args.clients, args.size, "warmup")
            mine, floor = measure_pair(target, bare, args.count, args.clients, args.size, "run")
            runs.append(mine)
            floors.append(floor)
            logs = sum(path.stat().st_size for path in Path(home).rglob("*.sqlite3-wal"))
    for line in report(args.size, runs, floors):
        print(line)
    print(f"the store's write-ahead log at the end: {logs / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
