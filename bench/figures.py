"""What the benchmark measures: its sizes, its figures and their targets, and one run's payloads.

``bench.s3bench`` measures these figures on each server; ``bench.report`` renders them.
"""

from __future__ import annotations

import os

from attrs import define, field, frozen

from bench.client import Payload

MiB = 1 << 20
#: Throughput is reported in decimal megabytes per second, as S3 tools do.
MB = 1_000_000


@frozen
class Sizes:
    """How big and how long each measurement is."""

    large: int = 256 * MiB
    #: A second one-stream size, measured with the large one.
    mid: int = 64 * MiB
    repeats: int = 3
    clients: int = 16
    small_count: int = 150
    small_size: int = 4096
    list_sizes: tuple[int, ...] = (10_000, 100_000)
    page: int = 1000
    #: Pages timed for each listing figure (with 7, one listing code's ratio over a node read
    #: 1.26 in one run and 1.75 in another).
    pages: int = 25
    #: Walks timed for each walk figure, in every round: a walk of 10,000 keys takes a
    #: tenth of a second, and one walk a round read 1.75x over a node where 60 pages in
    #: alternation read 1.14x.
    walks: int = 5
    #: Listing keys are ``list/PREFIX/KEY``, this many under each prefix.
    per_prefix: int = 1000
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
    mid=2 * MiB,
    small_count=4,
    list_sizes=(160, 640),
    page=50,
    pages=3,
    walks=2,
    per_prefix=64,
    rss_size=16 * MiB,
    multipart_size=16 * MiB,
    part_concurrency=2,
    part_size=8 * MiB,
    deadline=60.0,
    fill_budget=60.0,
)


@frozen
class Goal:
    """A figure's target: a least or largest ratio to the baseline, or a largest value."""

    text: str
    ratio_min: float | None = None
    value_max: float | None = None
    #: A largest ratio (for times and CPU, where lower is better).
    ratio_max: float | None = None

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        """Whether the target is met; ``None`` when the figure is missing."""
        if self.ratio_min is not None:
            return None if ratio is None else ratio >= self.ratio_min
        if self.ratio_max is not None:
            return None if ratio is None else ratio <= self.ratio_max
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
    #: The server's CPU (its processes', user + system): µs per request, or ms per MB.
    cpu: float | None = None


def _size(n: int) -> str:
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB" if n < 1024 * MiB else f"{n // (1024 * MiB)} GiB"
    return f"{n // 1024} KiB" if n >= 1024 else f"{n} B"


_UNDER_50_MS = Goal("< 50 ms", None, 50.0)
_UNDER_500_MS = Goal("< 500 ms", None, 500.0)

FIGURES: tuple[Figure, ...] = (
    Figure("put_large", "throughput", "PUT {large}, 1 stream", "MB/s", Goal(">= 2x moto", 2.0)),
    Figure("get_large", "throughput", "GET {large}, 1 stream", "MB/s", Goal(">= 1.2x moto", 1.2)),
    Figure("put_mid", "throughput", "PUT {mid}, 1 stream", "MB/s"),
    Figure("get_mid", "throughput", "GET {mid}, 1 stream", "MB/s"),
    Figure("put_small", "small", "PUT {small}, {clients} clients", "req/s", Goal(">= 3x moto", 3)),
    Figure("get_small", "small", "GET {small}, {clients} clients", "req/s", Goal(">= 3x moto", 3)),
    Figure("rss_peak", "rss", "peak RSS, {rss} PUT+GET", "MiB", Goal("< 150 MiB", None, 150.0)),
    Figure("mp_upload", "multipart", "multipart {mp}, {parts} parts x{conc}", "MB/s"),
    Figure("mp_complete", "multipart", "CompleteMultipartUpload of {mp}", "ms", _UNDER_500_MS),
    Figure(
        "mp_complete_over",
        "multipart",
        "CompleteMultipartUpload of {mp} over {mp}",
        "ms",
        _UNDER_500_MS,
    ),
    Figure("mp_delete", "multipart", "DELETE of a {mp} object", "ms", _UNDER_500_MS),
    Figure(
        "mp_rss", "multipart", "peak RSS, multipart {mp}", "MiB", Goal("< 150 MiB", None, 150.0)
    ),
    Figure("list_fill", "list", "listing fill, {clients} clients", "PUT/s"),
    Figure("list_small", "list", "list page ({page}) of {list0} keys", "ms", _UNDER_50_MS),
    Figure("list_large", "list", "list page ({page}) of {list1} keys", "ms", _UNDER_50_MS),
    Figure("list_walk_small", "list", "walk of {list0} keys (pages of {page})", "s"),
    Figure("list_walk_large", "list", "walk of {list1} keys (pages of {page})", "s"),
    Figure(
        "list_page_growth",
        "list",
        "list page time, {list1} / {list0} keys",
        "x",
        Goal("not growing (< 1.1)", None, 1.1),
    ),
    Figure(
        "list_walk_growth",
        "list",
        "walk time per page, {list1} / {list0} keys",
        "x",
        Goal("not growing (< 1.1)", None, 1.1),
    ),
    Figure("list_delim", "list", "list {list1} keys by '/': {prefixes} prefixes", "ms"),
)

#: Issue 12's targets for the gateway with ``--workers`` against SeaweedFS, both running,
#: measured in alternate rounds: its rate over SeaweedFS's.
WORKERS_SEAWEED_GOALS: dict[str, Goal] = {
    "put_small": Goal(">= 1.0x", 1.0),
    "get_small": Goal(">= 1.0x", 1.0),
}

#: The figures with a SeaweedFS column, and their targets as the gateway's speed relative to
#: SeaweedFS's (its rate over SeaweedFS's, or SeaweedFS's time over its).
SEAWEED_GOALS: dict[str, Goal | None] = {
    "put_small": Goal(">= 1.0x (with --workers)", 1.0),
    "get_small": Goal(">= 1.0x (with --workers)", 1.0),
    "list_fill": None,
    "list_small": None,
    "list_large": None,
    "list_walk_small": Goal(">= 1.0x", 1.0),
    "list_walk_large": None,
    "list_delim": None,
}
#: The other S3 servers measured beside the gateway on the small requests and listings, and
#: their targets by figure: SeaweedFS's are issue 12's; rclone serve s3 is there to compare.
PEER_GOALS: dict[str, dict[str, Goal | None]] = {
    "seaweedfs": SEAWEED_GOALS,
    "rclone": dict.fromkeys(SEAWEED_GOALS),
}
#: The groups the peers run.
PEER_GROUPS = ("small", "list")
#: Units of figures where less is better: their speed ratio is the baseline's over ours.
TIME_UNITS = ("ms", "s")

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
            mid=_size(sizes.mid),
            small=_size(sizes.small_size),
            clients=sizes.clients,
            rss=_size(sizes.rss_size),
            page=f"{sizes.page:,}",
            list0=f"{sizes.list_sizes[0]:,}",
            list1=f"{sizes.list_sizes[-1]:,}",
            prefixes=f"{-(-sizes.list_sizes[-1] // sizes.per_prefix):,}",
            mp=_size(sizes.multipart_size),
            parts=sizes.multipart_size // sizes.part_size,
            conc=sizes.part_concurrency,
        )
