"""Benchmark the gateway against other S3 servers (moto_server, SeaweedFS, rclone) in one run.

``python -m bench.s3bench [--quick] [--only GROUP ...] [--json FILE]`` starts each server
on loopback in a temporary directory, measures every figure on it, stops it, and prints
one table: figure, gateway, moto, their ratio, and the target; the small-request and
listing figures also have a SeaweedFS column (``weed server -s3``, when installed), with
the gateway's speed relative to it and that target, and an rclone column (``rclone serve
s3``, when installed) with the gateway's speed relative to it.  The client's own ceiling
(the same client against a server that does nothing) is printed under the table.  With
``--lambnet``, the gateway also runs over a ``twistd lambnet`` node, and a second table puts
its figures next to the embedded network's; with ``--workers N`` (or ``auto``), a table puts
the figures of ``twistd lambgw --workers N`` next to one process's.  In both, the two run at
once and are measured in alternate rounds.  The gateway runs as in production, its access
log in a file of its own (``--access-log``); moto_server logs each request to its output.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from http.client import HTTPConnection
from pathlib import Path
from types import FrameType

from attrs import asdict

from bench import relay
from bench.client import (
    SMALL_TIMEOUT,
    BenchError,
    PreparedRequest,
    Signer,
    connect,
    download,
    object_path,
    perform,
    run_clients,
    upload,
)
from bench.figures import (
    FIGURES,
    FULL,
    GROUPS,
    MB,
    PEER_GROUPS,
    QUICK,
    Bench,
    Measurement,
    MiB,
    Results,
    Sizes,
)
from bench.multipart import measure_multipart
from bench.netpath import delayed, server_cpu, soak
from bench.report import lambnet_report, report, workers_report, workers_seaweed_report
from bench.servers import (
    NotInstalled,
    RssSampler,
    StartError,
    Target,
    gateway_target,
    lambnet_target,
    memory_status,
    moto_target,
    rclone_target,
    reset_peak_rss,
    seaweedfs_target,
    sink_target,
)


def _log(target: Target, text: str) -> None:
    print(f"[{target.name}] {text}", file=sys.stderr, flush=True)


def measure_throughput(bench: Bench, target: Target) -> Results:
    """PUT then GET one object of each one-stream size, ``repeats`` times; medians."""
    results: Results = {}
    for size, name in ((bench.sizes.mid, "mid"), (bench.sizes.large, "large")):
        results.update(_one_stream(bench, target, size, name))
    return results


def _one_stream(bench: Bench, target: Target, size: int, name: str) -> Results:
    """PUT then GET one object of ``size`` bytes over one connection: ``put_NAME``, ``get_NAME``."""
    payload = bench.payload(size)
    path = object_path(target.bucket, f"bench/{name}")
    signer = target.signer()
    puts: list[float] = []
    gets: list[float] = []
    cpu: tuple[list[float], list[float]] = ([], [])
    conn = connect(target.endpoint)
    try:
        for _ in range(bench.sizes.repeats):
            before = server_cpu(target)
            puts.append(size / upload(conn, signer.prepare("PUT", path, payload=payload)) / MB)
            middle = server_cpu(target)
            received, seconds = download(conn, signer.prepare("GET", path))
            if received != size:
                raise BenchError(f"GET returned {received} bytes of {size}")
            gets.append(size / seconds / MB)
            cpu[0].append((middle - before) * 1000 / (size / MB))
            cpu[1].append((server_cpu(target) - middle) * 1000 / (size / MB))
            _log(target, f"{size // MiB} MiB: PUT {puts[-1]:.0f} MB/s, GET {gets[-1]:.0f} MB/s")
    finally:
        conn.close()
    spread = "runs: PUT {}; GET {}; server CPU per MB {:.1f} / {:.1f} ms".format(
        "/".join(f"{v:.0f}" for v in puts),
        "/".join(f"{v:.0f}" for v in gets),
        statistics.median(cpu[0]),
        statistics.median(cpu[1]),
    )
    return {
        f"put_{name}": Measurement(statistics.median(puts), spread, statistics.median(cpu[0])),
        f"get_{name}": Measurement(statistics.median(gets), "", statistics.median(cpu[1])),
    }


def _concurrent(
    bench: Bench, target: Target, requests: list[list[PreparedRequest]]
) -> tuple[float, float, float]:
    """Send pre-signed requests from concurrent clients; requests/s, client and server CPU.

    The client's CPU is its share of one core (its threads share one interpreter lock):
    near 1.0 the client, not the server, sets the pace.  The server's is in µs per request.
    """
    served = server_cpu(target)
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
    return done / seconds, used / seconds, (server_cpu(target) - served) * 1e6 / max(1, done)


def measure_small(bench: Bench, target: Target) -> Results:
    """Small PUTs, then GETs of them, from concurrent clients with pre-signed requests."""
    sizes = bench.sizes
    payload = bench.payload(sizes.small_size)
    signer = target.signer()
    puts: list[tuple[float, float, float]] = []
    gets: list[tuple[float, float, float]] = []
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


def _median_rate(runs: list[tuple[float, float, float]]) -> Measurement:
    rate, cpu, served = sorted(runs)[len(runs) // 2]
    spread = "/".join(f"{r:.0f}" for r, _, _ in runs)
    note = f"runs {spread} req/s; client CPU {cpu:.0%} of a core; server CPU {served:.0f} µs/req"
    return Measurement(rate, note, statistics.median(s for _, _, s in runs))


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


def _list_key(index: int, per_prefix: int) -> str:
    """The ``index``-th listing key: ``list/PREFIX/KEY``, ``per_prefix`` keys a prefix."""
    return f"list/{index // per_prefix:05d}/{index % per_prefix:05d}"


def _fill(bench: Bench, target: Target, bucket: str, start: int, stop: int) -> float:
    """Add keys ``start..stop`` with concurrent one-byte PUTs; return PUTs per second."""
    clients = bench.sizes.clients
    per = -(-(stop - start) // clients)
    payload = bench.payload(1)
    signer = target.signer()

    def make(client: int, index: int) -> PreparedRequest:
        key = _list_key(min(stop - 1, start + client * per + index), bench.sizes.per_prefix)
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
    signer = target.signer()
    conn = connect(target.endpoint, SMALL_TIMEOUT)
    try:
        return [_page_time(bench, conn, signer, bucket, keys, n) for n in range(bench.sizes.pages)]
    finally:
        conn.close()


def _page_time(
    bench: Bench, conn: HTTPConnection, signer: Signer, bucket: str, keys: int, n: int
) -> float:
    """Time the ``n``-th of the bucket's evenly spread pages, checked to be full; ms."""
    page, pages = bench.sizes.page, bench.sizes.pages
    position = (keys - page) * n // max(1, pages - 1)
    query = [("list-type", "2"), ("max-keys", str(page))]
    if position:
        query.append(("start-after", _list_key(position - 1, bench.sizes.per_prefix)))
    request = signer.prepare("GET", object_path(bucket), query)
    start = time.perf_counter()
    body = perform(conn, request)
    took = (time.perf_counter() - start) * 1000
    found = _KEY_COUNT.search(body)
    if found is None or int(found.group(1)) != min(page, keys - position):
        raise BenchError(f"page at {position} listed {found and found.group(1)!r} keys")
    return took


_TOKEN = re.compile(rb"<NextContinuationToken>([^<]+)</NextContinuationToken>")
_PREFIX = re.compile(rb"<CommonPrefixes>")


def _walk(bench: Bench, target: Target, bucket: str, keys: int) -> float:
    """List every key of the bucket in pages, following continuation tokens; seconds."""
    signer = target.signer()
    listed, pages, token = 0, 0, None
    conn = connect(target.endpoint, SMALL_TIMEOUT)
    start = time.perf_counter()
    try:
        while True:
            query = [("list-type", "2"), ("max-keys", str(bench.sizes.page))]
            if token is not None:
                query.append(("continuation-token", token))
            body = perform(conn, signer.prepare("GET", object_path(bucket), query))
            found = _KEY_COUNT.search(body)
            listed += int(found.group(1)) if found else 0
            pages += 1
            more = _TOKEN.search(body)
            if more is None or b"<IsTruncated>true</IsTruncated>" not in body:
                break
            token = html.unescape(more.group(1).decode())
    finally:
        conn.close()
    if listed != keys:
        raise BenchError(f"the walk listed {listed} keys of {keys} in {pages} pages")
    return time.perf_counter() - start


#: How many listings by ``/`` their figure is the median of: each is a millisecond or two on
#: a new connection, and three of them read from 1.5 to 3.1 ms on one tree in one run.
DELIMITED_LISTINGS = 15


def _delimited(bench: Bench, target: Target, bucket: str, keys: int) -> float:
    """List the bucket's keys under ``list/`` by ``/``: its prefixes only; milliseconds."""
    query = [("list-type", "2"), ("prefix", "list/"), ("delimiter", "/")]
    conn = connect(target.endpoint, SMALL_TIMEOUT)
    try:
        request = target.signer().prepare("GET", object_path(bucket), query)
        start = time.perf_counter()
        body = perform(conn, request)
        took = time.perf_counter() - start
    finally:
        conn.close()
    prefixes = len(_PREFIX.findall(body))
    if prefixes != -(-keys // bench.sizes.per_prefix):
        raise BenchError(f"the listing by '/' gave {prefixes} prefixes for {keys} keys")
    return took * 1000


def measure_list(bench: Bench, target: Target) -> Results:
    """Fill a fresh bucket to each listing size and time pages and walks in it.

    How much slower the larger bucket lists is measured at the end, in both buckets in
    alternation, so that the machine's drift over the long fill does not read as growth.
    """
    sizes = bench.sizes
    results: Results = {}
    rate = 0.0
    filled: list[tuple[str, int]] = []
    for n, (key, keys) in enumerate(
        zip(("list_small", "list_large"), sizes.list_sizes, strict=True)
    ):
        projected = keys / rate if rate else 0.0
        if projected > sizes.fill_budget:
            results[key] = Measurement(
                None,
                f"skipped: filling {keys:,} keys would take ~{projected:.0f} s "
                f"at {rate:.0f} PUT/s (budget {sizes.fill_budget:.0f} s)",
            )
            break
        bucket = target.new_bucket(f"bench-list-{n}")
        start = time.monotonic()
        rate = _fill(bench, target, bucket, 0, keys)
        took = time.monotonic() - start
        _log(target, f"filled {keys:,} keys at {rate:.0f} PUT/s in {took:.0f} s")
        filled.append((bucket, keys))
        times = _page_times(bench, target, bucket, keys)
        _log(target, f"{keys:,} keys: pages " + "/".join(f"{t:.1f}" for t in times) + " ms")
        spread = f"pages {min(times):.1f}..{max(times):.1f} ms"
        results[key] = Measurement(statistics.median(times), spread)
        results["list_fill"] = Measurement(rate, f"to {keys:,} keys")
        walks = [_walk(bench, target, bucket, keys) for _ in range(sizes.walks)]
        walk_key = key.replace("list_", "list_walk_")
        results[walk_key] = Measurement(
            statistics.median(walks), "runs " + "/".join(f"{w:.2f}" for w in walks) + " s"
        )
        _log(target, f"{keys:,} keys: walks " + "/".join(f"{w:.2f}" for w in walks) + " s")
        delimited = [_delimited(bench, target, bucket, keys) for _ in range(DELIMITED_LISTINGS)]
        results["list_delim"] = Measurement(statistics.median(delimited), f"of {keys:,} keys")
    if len(filled) == len(sizes.list_sizes) > 1:
        results.update(_growth(bench, target, filled[0], filled[-1]))
    if "list_walk_large" not in results:
        results["list_delim"] = Measurement(None, "skipped with the larger listing")
    return results


def _growth(
    bench: Bench, target: Target, small: tuple[str, int], large: tuple[str, int]
) -> Results:
    """How much slower the larger bucket lists than the smaller, listed in alternation.

    ``list_page_growth``: the larger bucket's page time over the smaller's, a page of each
    in turn; ``list_walk_growth``: its walk time per key over the smaller's, a walk of each
    in turn.
    """
    signer = target.signer()
    pages: tuple[list[float], list[float]] = ([], [])
    conn = connect(target.endpoint, SMALL_TIMEOUT)
    try:
        for n in range(bench.sizes.pages):
            for times, (bucket, keys) in zip(pages, (small, large), strict=True):
                times.append(_page_time(bench, conn, signer, bucket, keys, n))
    finally:
        conn.close()
    walks: tuple[list[float], list[float]] = ([], [])
    for _ in range(bench.sizes.walks):
        for times, (bucket, keys) in zip(walks, (small, large), strict=True):
            times.append(_walk(bench, target, bucket, keys) / keys)
    medians = [statistics.median(times) for times in (*pages, *walks)]
    page_note = "; ".join(
        f"{keys:,} keys {median:.1f} ms"
        for median, (_, keys) in zip(medians[:2], (small, large), strict=True)
    )
    walk_note = "; ".join(
        f"{keys:,} keys " + "/".join(f"{t * keys:.2f}" for t in times) + " s"
        for times, (_, keys) in zip(walks, (small, large), strict=True)
    )
    _log(target, f"in alternation: pages {page_note}; walks {walk_note}")
    return {
        "list_page_growth": Measurement(medians[1] / medians[0], f"alternate pages: {page_note}"),
        "list_walk_growth": Measurement(medians[3] / medians[2], f"alternate walks: {walk_note}"),
    }


def measure_multipart_group(bench: Bench, target: Target) -> Results:
    """One large upload in parts sent concurrently, ``repeats`` times.

    The rate and the completion time are the medians of the runs; the peak RSS is the
    highest of them.
    """
    sizes = bench.sizes
    measure = measure_multipart(
        sizes.multipart_size, sizes.part_size, sizes.part_concurrency, bench.payload
    )
    runs = [measure(target) for _ in range(sizes.repeats)]
    for figures in runs:
        _log(target, "multipart " + ", ".join(f"{k} {v:.2f}" for k, (v, _) in figures.items()))
    rates = [figures["mp_upload"][0] for figures in runs]
    spread = "runs " + "/".join(f"{rate:.0f}" for rate in rates) + " MB/s"
    peak = max(runs, key=lambda figures: figures["mp_rss"][0])["mp_rss"]
    return {
        "mp_upload": Measurement(statistics.median(rates), f"{runs[0]['mp_upload'][1]}; {spread}"),
        **{
            key: Measurement(statistics.median(f[key][0] for f in runs))
            for key in ("mp_complete", "mp_complete_over", "mp_delete")
        },
        "mp_rss": Measurement(*peak),
    }


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


#: How many of a server's log lines telling of a failure a failed group prints.
PROBLEM_LINES = 20
_PROBLEM = re.compile(r"failed|Traceback|Error|Unhandled", re.IGNORECASE)


def _measure_group(bench: Bench, target: Target, group: str) -> Results:
    """The group's figures on ``target``; if it fails, each is missing, saying why.

    A failure also prints the last lines of the server's logs (and its node's) that tell of
    one, since the logs go with the server's temporary home.
    """
    try:
        return MEASURES[group](bench, target)
    except (BenchError, StartError, OSError) as exc:
        _log(target, f"{group} failed: {exc}")
        for log in [target.server.log] + ([target.node.log] if target.node else []):
            try:
                lines = log.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in [line for line in lines if _PROBLEM.search(line)][-PROBLEM_LINES:]:
                _log(target, f"{log.name}: {line}")
        return {
            figure.key: Measurement(None, f"failed: {exc}")
            for figure in FIGURES
            if figure.group == group
        }


def run_target(bench: Bench, factory: TargetFactory, name: str, groups: tuple[str, ...]) -> Results:
    """Start one server in a temporary home, run the groups on it, and stop it."""
    results: Results = {}
    with tempfile.TemporaryDirectory(prefix=f"s3bench-{name}-", ignore_cleanup_errors=True) as tmp:
        try:
            with factory(Path(tmp)) as target:
                for group in groups:
                    results.update(_measure_group(bench, target, group))
        except NotInstalled as exc:
            print(f"[{name}] not installed: {exc}", file=sys.stderr)
            for figure in FIGURES:
                results[figure.key] = Measurement(None, f"not installed: {exc}")
        except StartError as exc:
            print(f"[{name}] did not start: {exc}", file=sys.stderr)
            for figure in FIGURES:
                results[figure.key] = Measurement(None, f"did not start: {exc}".splitlines()[0])
    return results


def run_side_by_side(
    bench: Bench,
    groups: tuple[str, ...],
    first: TargetFactory,
    second: TargetFactory,
) -> tuple[Results, Results]:
    """Two servers (made by ``first`` and ``second``), both running, measured in alternate rounds.

    Taking turns round by round gives both the same share of whatever else the machine
    is doing, which a run of one after the other does not.  Each figure is the median of
    the rounds.
    """
    one_round = Bench(Sizes(**{**asdict(bench.sizes), "repeats": 1}))
    rounds: tuple[list[Results], list[Results]] = ([], [])
    with (
        tempfile.TemporaryDirectory(prefix="s3bench-first-", ignore_cleanup_errors=True) as a,
        tempfile.TemporaryDirectory(prefix="s3bench-second-", ignore_cleanup_errors=True) as b,
        first(Path(a)) as one,
        second(Path(b)) as other,
    ):
        for _ in range(bench.sizes.repeats):
            for target, done in zip((one, other), rounds, strict=True):
                results: Results = {}
                for group in groups:
                    results.update(_measure_group(one_round, target, group))
                done.append(results)

    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    def medians(runs: list[Results]) -> Results:
        found: Results = {}
        for key in dict.fromkeys(key for r in runs for key in r):
            measured = [r[key] for r in runs if key in r]
            values = [v for m in measured if (v := m.value) is not None]
            cpus = [c for m in measured if (c := m.cpu) is not None]
            # A figure no round measured keeps the first round's reason.
            runs_text = "/".join(_round_text(v) for v in values) if values else measured[0].note
            found[key] = Measurement(median(values), runs_text, median(cpus))
        return found

    return medians(rounds[0]), medians(rounds[1])


def _round_text(value: float) -> str:
    """A round's figure with three significant digits or more (a walk is a tenth of a second)."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


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
        "--workers",
        metavar="N",
        help='also run the gateway with --workers N (a number or "auto") and compare it '
        "with one process",
    )
    parser.add_argument(
        "--no-seaweedfs",
        action="store_true",
        help="leave out the SeaweedFS column (it runs when weed is installed)",
    )
    parser.add_argument(
        "--no-rclone",
        action="store_true",
        help="leave out the rclone serve s3 column (it runs when rclone is installed)",
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
        total, repeats = (512, 1) if args.quick else (2048, 3)
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
    peers: dict[str, Results] = {}
    peer_groups = tuple(g for g in groups if g in PEER_GROUPS)
    if peer_groups and not args.no_seaweedfs:
        peers["seaweedfs"] = run_target(
            bench, lambda home: seaweedfs_target(home, "seaweedfs"), "seaweedfs", peer_groups
        )
    if peer_groups and not args.no_rclone:
        peers["rclone"] = run_target(
            bench, lambda home: rclone_target(home, "rclone"), "rclone", peer_groups
        )
    ceiling_groups = tuple(g for g in groups if g in ("throughput", "small"))
    ceiling = run_target(bench, lambda home: sink_target(home, "sink"), "sink", ceiling_groups)
    table, data = report(bench, groups, gateway, moto, ceiling, peers)
    print(table)
    over: Results = {}
    if args.lambnet:
        embedded, over = run_side_by_side(
            bench,
            groups,
            lambda home: gateway_target(home, "gateway"),
            lambda home: lambnet_target(home, "lambnet"),
        )
        print(lambnet_report(bench, groups, embedded, over))
        if "throughput" in groups:
            # What two hops cost with no Python at all: the most the GET ratios can reach.
            for size in (bench.sizes.mid, bench.sizes.large):
                print("  " + relay.describe(size, *relay.relay_ceiling(size)))
    many: Results = {}
    # The workers and SeaweedFS, side by side (``--workers`` with the small requests).
    beside_seaweed: Results = {}
    beside_workers: Results = {}
    if args.workers:
        flags = ("--workers", args.workers)
        one, many = run_side_by_side(
            bench,
            groups,
            lambda home: gateway_target(home, "gateway"),
            lambda home: gateway_target(home, "workers", flags),
        )
        print(workers_report(bench, groups, one, many))
        if "small" in groups and not args.no_seaweedfs:
            # Issue 12's target is the workers against SeaweedFS: measured side by side too,
            # not across the minutes between the tables above.
            try:
                theirs, ours = run_side_by_side(
                    bench,
                    ("small",),
                    lambda home: seaweedfs_target(home, "seaweedfs"),
                    lambda home: gateway_target(home, "workers", flags),
                )
            except StartError as exc:
                print(f"[seaweedfs] did not start: {exc}", file=sys.stderr)
            else:
                print(workers_seaweed_report(bench, ("small",), theirs, ours))
                beside_seaweed, beside_workers = theirs, ours
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
                    **{
                        name: {k: asdict(m) for k, m in peer.items()}
                        for name, peer in peers.items()
                    },
                    "lambnet": {k: asdict(m) for k, m in over.items()},
                    "workers": {k: asdict(m) for k, m in many.items()},
                    "workers_against_seaweedfs": {
                        "seaweedfs": {k: asdict(m) for k, m in beside_seaweed.items()},
                        "workers": {k: asdict(m) for k, m in beside_workers.items()},
                    },
                },
                indent=2,
            )
        )
    broken = [
        m
        for m in [
            *gateway.values(),
            *moto.values(),
            *ceiling.values(),
            *over.values(),
            *many.values(),
            *(m for peer in peers.values() for m in peer.values()),
            *beside_seaweed.values(),
            *beside_workers.values(),
        ]
        if m.value is None and m.note.startswith(("failed", "did not start"))
    ]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
