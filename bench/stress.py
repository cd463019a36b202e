"""Run the concurrency-sensitive tests many times while other processes load every core.

``python -m bench.stress [--runs 50] [--load N] [--timeout S] [MODULE ...]`` starts ``N``
processes (default: one per core) that keep the CPUs busy, then runs trial on the modules
(default :data:`MODULES`) ``--runs`` times, one fresh trial process a run.  It prints one line
a run and, at the end, the failing tests with how often each failed::

    runs 50, failed runs 0, tests run 4650, failures 0

and exits 1 if any run failed or timed out.  Threads hand results to the reactor in many places
(the spool's lanes, the node's lanes, the serial store, sendfile and splice bodies): an
ordering that only holds on a quiet machine shows up here, where a single run on an idle
machine would pass.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

#: Test modules whose outcome depends on how threads, processes and the reactor interleave.
MODULES = (
    "tests.test_spool",
    "tests.test_spool_stream",
    "tests.test_serial",
    "tests.test_splice",
    "tests.test_network_http",
    "tests.test_sessions",
    "tests.test_network_http_upload",
    "tests.test_network_http_download",
    "tests.test_lambnet_download",
    "tests.test_multipart",
    "tests.test_embedded",
    "tests.test_quick",
    "tests.test_worker_balance",
    "tests.test_node_incoming",
    "tests.test_node_digests",
    "tests.test_e2e_spliced_uploads",
    "tests.test_heldwrites",
    "tests.test_lean_agent",
    "tests.test_lambnet_service",
)

#: A line that names a test (a dotted name alone on its line), under ``[FAIL]`` or ``[ERROR]``.
_FAILED_TEST = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)$", re.MULTILINE)
_SUMMARY = re.compile(r"^(PASSED|FAILED) \((.*)\)$", re.MULTILINE)


def _burn(stop_at: float) -> None:
    """Keep one CPU busy until ``stop_at`` (a ``time.monotonic`` value) or until killed."""
    x = 0
    while time.monotonic() < stop_at:
        for _ in range(100_000):
            x = (x * 31 + 7) % 1_000_003


@contextmanager
def cpu_load(processes: int, seconds: float) -> Iterator[None]:
    """Keep ``processes`` CPUs busy for at most ``seconds`` while the block runs."""
    stop_at = time.monotonic() + seconds
    workers = [
        multiprocessing.Process(target=_burn, args=(stop_at,), daemon=True)
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join(5)


def failed_tests(output: str) -> list[str]:
    """The names of the tests a trial output reports as failures or errors."""
    names: list[str] = []
    for block in re.split(r"^={70,}$", output, flags=re.MULTILINE)[1:]:
        if block.lstrip().startswith(("[FAIL]", "[ERROR]")):
            found = _FAILED_TEST.findall(block)
            names.extend(found or ["(unnamed)"])
    return names


def tests_run(output: str) -> int:
    """How many tests trial says it ran."""
    found = re.search(r"^Ran (\d+) tests? in", output, re.MULTILINE)
    return int(found.group(1)) if found else 0


def run_once(modules: Sequence[str], timeout: float, workdir: str) -> tuple[bool, int, list[str]]:
    """Run trial on ``modules`` once; whether it passed, the tests run and the failed ones."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "twisted.trial", "--temp-directory", workdir, *modules],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, 0, [f"(the run took more than {timeout:.0f} s)"]
    output = done.stdout + done.stderr
    summary = _SUMMARY.search(output)
    passed = done.returncode == 0 and summary is not None and summary.group(1) == "PASSED"
    failures = failed_tests(output)
    if not passed and not failures:
        failures = [f"(trial exited {done.returncode} with no failed test named)"]
    return passed, tests_run(output), failures


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stress loop; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.stress", description=__doc__)
    parser.add_argument("modules", nargs="*", default=list(MODULES), help="test modules")
    parser.add_argument("--runs", type=int, default=50, help="trial runs (default 50)")
    parser.add_argument(
        "--load", type=int, default=os.cpu_count() or 1, help="busy processes (default: cores)"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds one run may take (default 300)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 1000 or not 0 <= args.load <= 64:
        parser.error("--runs takes 1 to 1000 and --load 0 to 64")
    counts: collections.Counter[str] = collections.Counter()
    failed_runs = total = 0
    with (
        tempfile.TemporaryDirectory(prefix="lambgw-stress-") as top,
        cpu_load(args.load, args.runs * args.timeout),
    ):
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            passed, ran, failures = run_once(
                args.modules, args.timeout, os.path.join(top, f"run-{run}")
            )
            total += ran
            counts.update(failures)
            failed_runs += not passed
            verdict = "ok" if passed else "FAILED " + ", ".join(failures)
            print(
                f"run {run}/{args.runs}: {ran} tests, {time.monotonic() - started:.1f} s, "
                f"{verdict}",
                flush=True,
            )
    print(
        f"runs {args.runs}, failed runs {failed_runs}, tests run {total}, "
        f"failures {sum(counts.values())}"
    )
    for name, count in counts.most_common():
        print(f"  {count:4d}  {name}")
    return 1 if failed_runs else 0


if __name__ == "__main__":
    sys.exit(main())
