"""Benchmarks of the gateway's path to a network node: a soak, and a delayed network.

``python -m bench.s3bench --soak MINUTES [--lambnet]`` sends small PUTs, then GETs of them,
from concurrent clients for ``MINUTES`` minutes against one gateway (over a ``lambnet``
node with ``--lambnet``), and prints each minute's rates and the processes' RSS; at the
end, the last minute's rates against the first's (target >= 0.9) and how much the RSS grew
after the first minute (target < 20 MiB).

``python -m bench.s3bench --delay MS`` runs two gateways over a node each, one reached
directly and one through ``bench.delayproxy`` (``MS`` milliseconds each way), measured in
alternate batches, and prints the small-request rates at each number of clients with and
without the delay (target >= 0.8x).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from attrs import define, field, frozen

from bench.client import Payload, PreparedRequest, Signer, object_path, run_clients
from bench.cpu import tree_cpu_seconds
from bench.servers import Target, memory_status

MiB = 1 << 20
#: The soak's targets: last minute against the first, and RSS growth after the first minute.
SOAK_RATIO = 0.9
SOAK_GROWTH = 20 * MiB
#: The delayed network's target: rates with the delay against those without.
DELAY_RATIO = 0.8

TargetFactory = Callable[[Path], AbstractContextManager[Target]]


@frozen
class Rates:
    """Small PUTs and GETs done, and the seconds they took."""

    puts: int = 0
    put_seconds: float = 0.0
    gets: int = 0
    get_seconds: float = 0.0

    def __add__(self, other: Rates) -> Rates:
        return Rates(
            self.puts + other.puts,
            self.put_seconds + other.put_seconds,
            self.gets + other.gets,
            self.get_seconds + other.get_seconds,
        )

    @property
    def put_rate(self) -> float:
        """PUTs per second."""
        return self.puts / self.put_seconds if self.put_seconds else 0.0

    @property
    def get_rate(self) -> float:
        """GETs per second."""
        return self.gets / self.get_seconds if self.get_seconds else 0.0


@define
class SmallBatches:
    """Batches of small PUTs, then GETs of the same new keys, from concurrent clients."""

    target: Target
    clients: int
    per_client: int
    payload: Payload
    _signer: Signer = field(init=False)
    _batch: int = field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self._signer = self.target.signer()

    def run(self, deadline: float) -> Rates:
        """One batch: PUT fresh keys, then GET them; only the sending is timed."""
        self._batch += 1
        paths = [
            [
                object_path(self.target.bucket, f"path/{self._batch}/{c}/{i}")
                for i in range(self.per_client)
            ]
            for c in range(self.clients)
        ]
        puts = [
            [self._signer.prepare("PUT", p, payload=self.payload) for p in row] for row in paths
        ]
        gets = [[self._signer.prepare("GET", p) for p in row] for row in paths]
        put_done, put_seconds = self._send(puts, deadline)
        get_done, get_seconds = self._send(gets, deadline)
        return Rates(put_done, put_seconds, get_done, get_seconds)

    def _send(self, requests: list[list[PreparedRequest]], deadline: float) -> tuple[int, float]:
        return run_clients(
            self.target.endpoint,
            self.clients,
            self.per_client,
            lambda client, index: requests[client][index],
            deadline,
        )


def server_cpu(target: Target) -> float:
    """The CPU seconds the processes serving ``target`` have used (0 if they are gone).

    A gateway's workers are counted with it: they are its child processes.
    """
    try:
        return sum(tree_cpu_seconds(pid) for pid in target.pids)
    except OSError:
        return 0.0


def _rss(target: Target) -> list[int]:
    return [memory_status(pid)["VmRSS"] for pid in target.pids]


def _names(target: Target) -> list[str]:
    return ["gateway", "node"][: len(target.pids)]


def _say(text: str) -> None:
    print(text, flush=True)


def soak(factory: TargetFactory, minutes: float, period: float = 60.0, size: int = 4096) -> bool:
    """Soak one gateway with small requests; print per-period rates and RSS; whether met."""
    with tempfile.TemporaryDirectory(prefix="s3bench-soak-") as home, factory(Path(home)) as target:
        batches = SmallBatches(target, 16, 20, Payload.of(os.urandom(size)))
        batches.run(time.monotonic() + 120)  # warm up: connections, caches, the first order
        names = _names(target)
        start_rss = _rss(target)
        _say(f"soak of {minutes:g} min, {size}-byte objects, 16 clients, against {target.name}")
        _say(
            "RSS at start: "
            + ", ".join(f"{n} {r / MiB:.0f} MiB" for n, r in zip(names, start_rss, strict=True))
        )
        periods: list[tuple[Rates, list[int], float]] = []
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end - period / 2:
            stop = min(end, time.monotonic() + period)
            done = Rates()
            used = server_cpu(target)
            while time.monotonic() < stop:
                done = done + batches.run(stop + 60)
            cpu = (server_cpu(target) - used) * 1e6 / max(1, done.puts + done.gets)
            periods.append((done, _rss(target), cpu))
            rss = ", ".join(
                f"{n} {r / MiB:.0f} MiB" for n, r in zip(names, periods[-1][1], strict=True)
            )
            _say(
                f"{len(periods) * period / 60:5.1f} min: PUT {done.put_rate:6.0f}/s, "
                f"GET {done.get_rate:6.0f}/s; server CPU {cpu:5.0f} µs/req; RSS {rss}"
            )
    if not periods:
        return False
    (first, first_rss, first_cpu), (last, last_rss, last_cpu) = periods[0], periods[-1]
    put_ratio = last.put_rate / first.put_rate if first.put_rate else 0.0
    get_ratio = last.get_rate / first.get_rate if first.get_rate else 0.0
    growth = [b - a for a, b in zip(first_rss, last_rss, strict=True)]
    met = min(put_ratio, get_ratio) >= SOAK_RATIO and max(growth) < SOAK_GROWTH
    _say(f"last/first period: PUT {put_ratio:.2f}, GET {get_ratio:.2f} (target >= {SOAK_RATIO})")
    _say(
        f"server CPU per request, last/first period: {last_cpu / first_cpu:.2f}"
        " (rates depend on the machine's other work; this does not)"
    )
    _say(
        "RSS growth after the first period: "
        + ", ".join(f"{n} {g / MiB:+.1f} MiB" for n, g in zip(names, growth, strict=True))
        + f" (target < {SOAK_GROWTH // MiB} MiB)"
    )
    _say("met" if met else "NOT met")
    return met


def delayed(
    factory: Callable[[Path, float], AbstractContextManager[Target]],
    delay_ms: float,
    clients: tuple[int, ...] = (16, 128),
    total: int = 2048,
    repeats: int = 3,
    size: int = 4096,
) -> bool:
    """Small-request rates without and with ``delay_ms`` each way; print them; whether met.

    Both gateways run at once, each over a node of its own, and take turns batch by batch,
    so that both get the same share of whatever else the machine is doing; each rate is the
    median of ``repeats`` batches.
    """
    payload = Payload.of(os.urandom(size))
    delays = (0.0, delay_ms)
    runs: dict[tuple[float, int], list[Rates]] = {(d, c): [] for d in delays for c in clients}
    with contextlib.ExitStack() as stack:
        targets = {}
        for delay in delays:
            home = stack.enter_context(tempfile.TemporaryDirectory(prefix="s3bench-delay-"))
            targets[delay] = stack.enter_context(factory(Path(home), delay))
        batches = {
            (d, c): SmallBatches(targets[d], c, max(1, total // c), payload)
            for d in delays
            for c in clients
        }
        for delay in delays:
            SmallBatches(targets[delay], 16, 8, payload).run(time.monotonic() + 120)
        for round_ in range(repeats):
            for count in clients:
                for delay in delays if round_ % 2 == 0 else delays[::-1]:
                    rates = batches[delay, count].run(time.monotonic() + 300)
                    runs[delay, count].append(rates)
                    _say(
                        f"round {round_ + 1}, delay {delay:g} ms, {count} clients: "
                        f"PUT {rates.put_rate:.0f}/s, GET {rates.get_rate:.0f}/s"
                    )
        peaks = {delay: memory_status(targets[delay].pid)["VmHWM"] for delay in delays}
    medians = {
        key: (
            statistics.median(r.put_rate for r in found),
            statistics.median(r.get_rate for r in found),
        )
        for key, found in runs.items()
    }
    _say(f"\nsmall requests ({size} bytes) over a node {delay_ms:g} ms away each way:")
    _say(
        f"{'clients':>8} {'PUT':>8} {'delayed':>8} {'ratio':>6}"
        f" {'GET':>8} {'delayed':>8} {'ratio':>6}"
    )
    met = True
    for count in clients:
        (near_put, near_get), (far_put, far_get) = medians[0.0, count], medians[delay_ms, count]
        put_ratio = far_put / near_put if near_put else 0.0
        get_ratio = far_get / near_get if near_get else 0.0
        if count == max(clients):
            met = met and min(put_ratio, get_ratio) >= DELAY_RATIO
        _say(
            f"{count:>8} {near_put:>8.0f} {far_put:>8.0f} {put_ratio:>6.2f}"
            f" {near_get:>8.0f} {far_get:>8.0f} {get_ratio:>6.2f}"
        )
    _say(
        f"gateway peak RSS: {peaks[0.0] / MiB:.0f} MiB without the delay, "
        f"{peaks[delay_ms] / MiB:.0f} MiB with it"
    )
    _say(f"target: >= {DELAY_RATIO}x at {max(clients)} clients: {'met' if met else 'NOT met'}")
    return met
