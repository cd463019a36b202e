"""Benchmark the gateway against a baseline S3 server (moto_server) in the same run.

``python -m bench.s3bench [--quick] [--only GROUP ...] [--json FILE]`` starts each server
on loopback in a temporary directory, measures every figure on it, stops it, and prints
one table: figure, gateway, moto, their ratio, and the target.  The client's own ceiling
(the same client against a server that does nothing) is printed under the table.  With
``--lambnet``, the gateway also runs over a ``twistd lambnet`` node, and a second table puts
its figures next to the embedded network's.  The gateway runs as in production, its access
log in a file of its own (``--access-log``); moto_server logs each request to its output.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import FrameType

from attrs import asdict, define, field, frozen

from bench.client import (
    SMALL_TIMEOUT,
    BenchError,
    Payload,
    PreparedRequest,
    connect,
    download,
    object_path,
    perform,
    run_clients,
    upload,
)
from bench.multipart import measure_multipart
from bench.netpath import delayed, soak
from bench.servers import (
    RssSampler,
    StartError,
    Target,
    gateway_target,
    lambnet_target,
    memory_status,
    moto_target,
    reset_peak_rss,
    sink_target,
)

MiB = 1 << 20
#: Throughput is reported in decimal megabytes per second, as S3 tools do.
MB = 1_000_000


@frozen
class Sizes:
    """How big and how long each measurement is."""

    large: int = 256 * MiB
    repeats: int = 3
    clients: int = 16
    small_count: int = 150
    small_size: int = 4096
    list_sizes: tuple[int, ...] = (10_000, 100_000)
    page: int = 1000
    pages: int = 7
    rss_size: int = 1024 * MiB
    multipart_size: int = 1024 * MiB
    part_size: int = 64 * MiB
    part_concurrency: int = 4
    #: Seconds any one group of measurements may take on one server.
    deadline: float = 900.0
    #: Seconds a listing fill may be projected to take before it is skipped.
    fill_budget: float = 300.0


FULL = Sizes()
QUICK = Sizes(
    large=4 * MiB,
    small_count=4,
    list_sizes=(160, 640),
    page=50,
    pages=3,
    rss_size=16 * MiB,
    multipart_size=16 * MiB,
    part_concurrency=2,
    part_size=8 * MiB,
    deadline=60.0,
    fill_budget=60.0,
)


@frozen
class Goal:
    """A figure's target: a least ratio to the baseline or a largest value."""

    text: str
    ratio_min: float | None = None
    value_max: float | None = None

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        """Whether the target is met; ``None`` when the figure is missing."""
        if self.ratio_min is not None:
            return None if ratio is None else ratio >= self.ratio_min
        if self.value_max is not None:
            return None if value is None else value < self.value_max
        return None


@frozen
class Figure:
    """One reported figure; ``label`` may use ``{large}``, ``{lists[N]}`` etc."""

    key: str
    group: str
    label: str
    unit: str
    goal: Goal | None = None


@frozen
class Measurement:
    """A figure's value on one server, or why there is none."""

    value: float | None
    note: str = ""


def _size(n: int) -> str:
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB" if n < 1024 * MiB else f"{n // (1024 * MiB)} GiB"
    return f"{n // 1024} KiB" if n >= 1024 else f"{n} B"


_UNDER_50_MS = Goal("< 50 ms", None, 50.0)

FIGURES: tuple[Figure, ...] = (
    Figure("put_large", "throughput", "PUT {large}, 1 stream", "MB/s", Goal(">= 2x moto", 2.0)),
    Figure("get_large", "throughput", "GET {large}, 1 stream", "MB/s", Goal(">= 1.2x moto", 1.2)),
    Figure("put_small", "small", "PUT {small}, {clients} clients", "req/s", Goal(">= 3x moto", 3)),
    Figure("get_small", "small", "GET {small}, {clients} clients", "req/s", Goal(">= 3x moto", 3)),
    Figure("rss_peak", "rss", "peak RSS, {rss} PUT+GET", "MiB", Goal("< 150 MiB", None, 150.0)),
    Figure("mp_upload", "multipart", "multipart {mp}, {parts} parts x{conc}", "MB/s"),
    Figure(
        "mp_complete", "multipart", "CompleteMultipartUpload of {mp}", "s", Goal("< 1 s", None, 1.0)
    ),
    Figure(
        "mp_rss", "multipart", "peak RSS, multipart {mp}", "MiB", Goal("< 150 MiB", None, 150.0)
    ),
    Figure("list_fill", "list", "listing fill, {clients} clients", "PUT/s"),
    Figure("list_small", "list", "list page ({page}) of {list0} keys", "ms", _UNDER_50_MS),
    Figure("list_large", "list", "list page ({page}) of {list1} keys", "ms", _UNDER_50_MS),
)

GROUPS = ("throughput", "small", "rss", "multipart", "list")

Results = dict[str, Measurement]


@define
class Bench:
    """The sizes of a run and the payloads it sends, hashed once before any timing."""

    sizes: Sizes
    _payloads: dict[int, Payload] = field(factory=dict)

    def payload(self, size: int) -> Payload:
        """Random bytes of ``size`` with their hashes, made once per run."""
        if size not in self._payloads:
            self._payloads[size] = Payload.of(os.urandom(size))
        return self._payloads[size]

    def label(self, figure: Figure) -> str:
        """Return the figure's label with this run's sizes filled in."""
        sizes = self.sizes
        return figure.label.format(
            large=_size(sizes.large),
            small=_size(sizes.small_size),
            clients=sizes.clients,
            rss=_size(sizes.rss_size),
            page=f"{sizes.page:,}",
            list0=f"{sizes.list_sizes[0]:,}",
            list1=f"{sizes.list_sizes[-1]:,}",
            mp=_size(sizes.multipart_size),
            parts=sizes.multipart_size // sizes.part_size,
            conc=sizes.part_concurrency,
        )


def _log(target: Target, text: str) -> None:
    print(f"[{target.name}] {text}", file=sys.stderr, flush=True)


def measure_throughput(bench: Bench, target: Target) -> Results:
    """PUT then GET one large object, ``repeats`` times over one connection; medians."""
    size = bench.sizes.large
    payload = bench.payload(size)
    path = object_path(target.bucket, "bench/large")
    signer = target.signer()
    puts: list[float] = []
    gets: list[float] = []
    conn = connect(target.endpoint)
    try:
        for _ in range(bench.sizes.repeats):
            puts.append(size / upload(conn, signer.prepare("PUT", path, payload=payload)) / MB)
            received, seconds = download(conn, signer.prepare("GET", path))
            if received != size:
                raise BenchError(f"GET returned {received} bytes of {size}")
            gets.append(size / seconds / MB)
            _log(target, f"PUT {puts[-1]:.0f} MB/s, GET {gets[-1]:.0f} MB/s")
    finally:
        conn.close()
    spread = "runs: PUT {}; GET {}".format(
        "/".join(f"{v:.0f}" for v in puts), "/".join(f"{v:.0f}" for v in gets)
    )
    return {
        "put_large": Measurement(statistics.median(puts), spread),
        "get_large": Measurement(statistics.median(gets)),
    }


def _concurrent(
    bench: Bench, target: Target, requests: list[list[PreparedRequest]]
) -> tuple[float, float]:
    """Send pre-signed requests from concurrent clients; return requests/s and client CPU.

    The client's CPU is its share of one core (its threads share one interpreter lock):
    near 1.0 the client, not the server, sets the pace.
    """
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    done, seconds = run_clients(
        target.endpoint,
        len(requests),
        len(requests[0]),
        lambda client, index: requests[client][index],
        time.monotonic() + bench.sizes.deadline / (2 * bench.sizes.repeats),
    )
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime
    return done / seconds, used / seconds


def measure_small(bench: Bench, target: Target) -> Results:
    """Small PUTs, then GETs of them, from concurrent clients with pre-signed requests."""
    sizes = bench.sizes
    payload = bench.payload(sizes.small_size)
    signer = target.signer()
    puts: list[tuple[float, float]] = []
    gets: list[tuple[float, float]] = []
    count = sizes.small_count
    for round_ in range(sizes.repeats):
        paths = [
            [object_path(target.bucket, f"small/{round_}/{c}/{i}") for i in range(count)]
            for c in range(sizes.clients)
        ]
        put = [[signer.prepare("PUT", p, payload=payload) for p in row] for row in paths]
        puts.append(_concurrent(bench, target, put))
        get = [[signer.prepare("GET", p) for p in row] for row in paths]
        gets.append(_concurrent(bench, target, get))
        _log(target, f"small PUT {puts[-1][0]:.0f}/s, GET {gets[-1][0]:.0f}/s")
    return {"put_small": _median_rate(puts), "get_small": _median_rate(gets)}


def _median_rate(runs: list[tuple[float, float]]) -> Measurement:
    rate, cpu = sorted(runs)[len(runs) // 2]
    spread = "/".join(f"{r:.0f}" for r, _ in runs)
    return Measurement(rate, f"runs {spread} req/s; client CPU {cpu:.0%} of a core")


def measure_rss(bench: Bench, target: Target) -> Results:
    """Measure the server's peak RSS while one large object goes up and comes back down."""
    size = bench.sizes.rss_size
    payload = bench.payload(size)
    path = object_path(target.bucket, "bench/rss")
    signer = target.signer()
    reset = reset_peak_rss(target.pid)
    before = memory_status(target.pid)["VmRSS"]
    conn = connect(target.endpoint)
    try:
        with RssSampler(target.pid) as sampler:
            up = upload(conn, signer.prepare("PUT", path, payload=payload))
            received, down = download(conn, signer.prepare("GET", path))
    finally:
        conn.close()
    if received != size:
        raise BenchError(f"GET returned {received} bytes of {size}")
    peak = sampler.peak
    if reset:
        peak = max(peak, memory_status(target.pid)["VmHWM"])
    note = (
        f"RSS before {before / MiB:.0f} MiB; "
        f"PUT {size / up / MB:.0f}, GET {size / down / MB:.0f} MB/s"
    )
    if not reset:
        note += "; VmHWM not resettable, sampled VmRSS only"
    _log(target, f"peak RSS {peak / MiB:.0f} MiB ({note})")
    return {"rss_peak": Measurement(peak / MiB, note)}


def _list_key(index: int) -> str:
    return f"list/{index:07d}"


def _fill(bench: Bench, target: Target, bucket: str, start: int, stop: int) -> float:
    """Add keys ``start..stop`` with concurrent one-byte PUTs; return PUTs per second."""
    clients = bench.sizes.clients
    per = -(-(stop - start) // clients)
    payload = bench.payload(1)
    signer = target.signer()

    def make(client: int, index: int) -> PreparedRequest:
        key = _list_key(min(stop - 1, start + client * per + index))
        return signer.prepare("PUT", object_path(bucket, key), payload=payload)

    done, seconds = run_clients(
        target.endpoint, clients, per, make, time.monotonic() + bench.sizes.fill_budget * 2
    )
    if done < clients * per:
        raise BenchError(f"fill stopped at its deadline after {done} PUTs")
    return done / seconds


_KEY_COUNT = re.compile(rb"<KeyCount>(\d+)</KeyCount>")


def _page_times(bench: Bench, target: Target, bucket: str, keys: int) -> list[float]:
    """Time ListObjectsV2 pages starting at evenly spread keys of the bucket."""
    page, pages = bench.sizes.page, bench.sizes.pages
    signer = target.signer()
    times: list[float] = []
    conn = connect(target.endpoint, SMALL_TIMEOUT)
    try:
        for n in range(pages):
            position = (keys - page) * n // max(1, pages - 1)
            query = [("list-type", "2"), ("max-keys", str(page))]
            if position:
                query.append(("start-after", _list_key(position - 1)))
            request = signer.prepare("GET", object_path(bucket), query)
            start = time.perf_counter()
            body = perform(conn, request)
            times.append((time.perf_counter() - start) * 1000)
            found = _KEY_COUNT.search(body)
            if found is None or int(found.group(1)) != min(page, keys - position):
                raise BenchError(f"page at {position} listed {found and found.group(1)!r} keys")
    finally:
        conn.close()
    return times


def measure_list(bench: Bench, target: Target) -> Results:
    """Fill a fresh bucket to each listing size in turn and time pages at each size."""
    sizes = bench.sizes
    bucket = target.new_bucket("bench-list")
    results: Results = {}
    filled = 0
    rate = 0.0
    for key, keys in zip(("list_small", "list_large"), sizes.list_sizes, strict=True):
        projected = (keys - filled) / rate if rate else 0.0
        if projected > sizes.fill_budget:
            results[key] = Measurement(
                None,
                f"skipped: filling {keys - filled:,} more keys would take ~{projected:.0f} s "
                f"at {rate:.0f} PUT/s (budget {sizes.fill_budget:.0f} s)",
            )
            break
        start = time.monotonic()
        rate = _fill(bench, target, bucket, filled, keys)
        took = time.monotonic() - start
        _log(target, f"filled {keys:,} keys at {rate:.0f} PUT/s in {took:.0f} s")
        filled = keys
        times = _page_times(bench, target, bucket, keys)
        _log(target, f"{keys:,} keys: pages " + "/".join(f"{t:.1f}" for t in times) + " ms")
        spread = f"pages {min(times):.1f}..{max(times):.1f} ms"
        results[key] = Measurement(statistics.median(times), spread)
        results["list_fill"] = Measurement(rate, f"to {keys:,} keys")
    return results


def measure_multipart_group(bench: Bench, target: Target) -> Results:
    """One large upload in parts sent concurrently: MB/s, completion time, peak RSS."""
    sizes = bench.sizes
    measure = measure_multipart(
        sizes.multipart_size, sizes.part_size, sizes.part_concurrency, bench.payload
    )
    figures = measure(target)
    _log(target, "multipart " + ", ".join(f"{k} {v:.2f}" for k, (v, _) in figures.items()))
    return {key: Measurement(value, note) for key, (value, note) in figures.items()}


MEASURES: dict[str, Callable[[Bench, Target], Results]] = {
    "throughput": measure_throughput,
    "small": measure_small,
    "rss": measure_rss,
    "multipart": measure_multipart_group,
    "list": measure_list,
}

TargetFactory = Callable[[Path], AbstractContextManager[Target]]

#: What the gateway column can run: the real gateway, or moto (to test the script).
GATEWAYS: dict[str, Callable[[Path, str], AbstractContextManager[Target]]] = {
    "lambgw": gateway_target,
    "lambnet": lambnet_target,
    "moto": moto_target,
}


def run_target(bench: Bench, factory: TargetFactory, name: str, groups: tuple[str, ...]) -> Results:
    """Start one server in a temporary home, run the groups on it, and stop it."""
    results: Results = {}
    with tempfile.TemporaryDirectory(prefix=f"s3bench-{name}-", ignore_cleanup_errors=True) as tmp:
        try:
            with factory(Path(tmp)) as target:
                for group in groups:
                    try:
                        results.update(MEASURES[group](bench, target))
                    except (BenchError, StartError, OSError) as exc:
                        _log(target, f"{group} failed: {exc}")
                        for figure in FIGURES:
                            if figure.group == group and figure.key not in results:
                                results[figure.key] = Measurement(None, f"failed: {exc}")
        except StartError as exc:
            print(f"[{name}] did not start: {exc}", file=sys.stderr)
            for figure in FIGURES:
                results[figure.key] = Measurement(None, f"did not start: {exc}".splitlines()[0])
    return results


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def report(
    bench: Bench,
    groups: tuple[str, ...],
    gateway: Results,
    moto: Results,
    ceiling: Results,
) -> tuple[str, list[dict[str, object]]]:
    """Render the table (and its notes) and the rows as plain data for ``--json``."""
    header = ("figure", "unit", "gateway", "moto", "ratio", "target", "met")
    rows: list[tuple[str, ...]] = []
    data: list[dict[str, object]] = []
    notes: list[str] = []
    for figure in FIGURES:
        if figure.group not in groups:
            continue
        ours, theirs = gateway.get(figure.key), moto.get(figure.key)
        value = ours.value if ours else None
        base = theirs.value if theirs else None
        ratio = value / base if value is not None and base else None
        met = figure.goal.met(value, ratio) if figure.goal else None
        label = bench.label(figure)
        rows.append(
            (
                label,
                figure.unit,
                _fmt(value),
                _fmt(base),
                "-" if ratio is None else f"{ratio:.2f}",
                figure.goal.text if figure.goal else "",
                {True: "yes", False: "NO", None: ""}[met],
            )
        )
        for side, m in (("gateway", ours), ("moto", theirs)):
            if m and m.note:
                notes.append(f"{label} [{side}]: {m.note}")
        data.append(
            {
                "key": figure.key,
                "label": label,
                "unit": figure.unit,
                "gateway": value,
                "moto": base,
                "ratio": ratio,
                "target": figure.goal.text if figure.goal else None,
                "met": met,
                "notes": {
                    "gateway": ours.note if ours else "",
                    "moto": theirs.note if theirs else "",
                },
            }
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if column < 2 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if notes:
        lines += ["", "notes:"] + [f"  {n}" for n in notes]
    if ceiling:
        lines += ["", "client ceiling (same client against a sink that stores nothing):"]
        lines += [f"  {key}: {_fmt(m.value)} {m.note}".rstrip() for key, m in ceiling.items()]
        for key, m in ceiling.items():
            ours = gateway.get(key)
            if m.value and ours and ours.value and ours.value > 0.7 * m.value:
                lines.append(f"  {key}: the gateway is over 70% of this ceiling: the client limits")
    return "\n".join(lines), data


#: The share of the embedded network's throughput the gateway over lambnet should keep.
LAMBNET_GOAL = 0.7


def lambnet_report(bench: Bench, groups: tuple[str, ...], embedded: Results, over: Results) -> str:
    """Render the figures of the gateway over lambnet next to the embedded network's."""
    header = ("figure", "unit", "embedded", "lambnet", "ratio")
    rows: list[tuple[str, ...]] = []
    for figure in FIGURES:
        if figure.group not in groups:
            continue
        ours, theirs = embedded.get(figure.key), over.get(figure.key)
        value = theirs.value if theirs else None
        base = ours.value if ours else None
        ratio = value / base if value is not None and base else None
        rows.append(
            (
                bench.label(figure),
                figure.unit,
                _fmt(base),
                _fmt(value),
                "-" if ratio is None else f"{ratio:.2f}",
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if column < 2 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    goal = f"{LAMBNET_GOAL:.0%}"
    lines.append(f"(throughput over lambnet should be at least {goal} of the embedded figures)")
    return "\n".join(["", "the gateway over a lambnet node, against the embedded network:", *lines])


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.s3bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=GROUPS,
        default=list(GROUPS),
        metavar="NAME",
        help=f"figure groups to run, of: {', '.join(GROUPS)}",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    parser.add_argument(
        "--gateway",
        choices=sorted(GATEWAYS),
        default="lambgw",
        help="what runs in the gateway column (moto: to check the script itself)",
    )
    parser.add_argument(
        "--lambnet",
        action="store_true",
        help="also run the gateway over a lambnet node and compare it with the embedded network",
    )
    parser.add_argument(
        "--soak",
        type=float,
        metavar="MINUTES",
        help="only soak one gateway (over a node with --lambnet) with small requests",
    )
    parser.add_argument(
        "--soak-period", type=float, default=60.0, metavar="SECONDS", help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--delay",
        type=float,
        metavar="MS",
        help="only compare small requests over a node reached directly and MS ms away",
    )
    parser.add_argument(
        "--fill-budget",
        type=float,
        metavar="SECONDS",
        help="largest projected listing fill before it is skipped",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 if every figure was measured, 1 otherwise."""
    args = _arguments(argv)
    sizes = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, _terminate)
    if args.soak is not None:
        factory = lambnet_target if args.lambnet else GATEWAYS[args.gateway]
        return 0 if soak(lambda home: factory(home, "soak"), args.soak, args.soak_period) else 1
    if args.delay is not None:
        total, repeats = (64, 1) if args.quick else (2048, 3)
        met = delayed(
            lambda home, delay: lambnet_target(home, "lambnet", delay),
            args.delay,
            total=total,
            repeats=repeats,
        )
        return 0 if met else 1
    if args.fill_budget is not None:
        sizes = Sizes(**{**asdict(sizes), "fill_budget": args.fill_budget})
    bench = Bench(sizes)
    groups = tuple(g for g in GROUPS if g in args.only)
    gateway_factory = GATEWAYS[args.gateway]
    started = time.monotonic()
    gateway = run_target(bench, lambda home: gateway_factory(home, "gateway"), "gateway", groups)
    moto = run_target(bench, lambda home: moto_target(home, "moto"), "moto", groups)
    ceiling_groups = tuple(g for g in groups if g in ("throughput", "small"))
    ceiling = run_target(bench, lambda home: sink_target(home, "sink"), "sink", ceiling_groups)
    table, data = report(bench, groups, gateway, moto, ceiling)
    print(table)
    over: Results = {}
    if args.lambnet:
        over = run_target(bench, lambda home: lambnet_target(home, "lambnet"), "lambnet", groups)
        print(lambnet_report(bench, groups, gateway, over))
    print(f"\n({time.monotonic() - started:.0f} s; server-side figures; MB = 10^6 bytes)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": ["python", "-m", "bench.s3bench", *(argv or sys.argv[1:])],
                    "gateway": args.gateway,
                    "sizes": asdict(sizes),
                    "figures": data,
                    "ceiling": {k: asdict(m) for k, m in ceiling.items()},
                    "lambnet": {k: asdict(m) for k, m in over.items()},
                },
                indent=2,
            )
        )
    broken = [
        m
        for m in [*gateway.values(), *moto.values(), *ceiling.values(), *over.values()]
        if m.value is None and m.note.startswith(("failed", "did not start"))
    ]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
