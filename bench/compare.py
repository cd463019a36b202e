"""Compare two source trees side by side: their gateways serve interleaved rounds.

``python -m bench.compare BASE [--lambnet] [--workers N] [--count N] [--rounds R]
[--clients C]`` runs ``R`` rounds.  Each starts a gateway from the source tree ``BASE`` (a
checkout, or ``git archive REV | tar -x -C BASE``) and one from this tree, each in a fresh
home (with ``--lambnet``, each over a node of its own tree; with ``--workers``, each with
that many workers), warms both up, sends ``N`` small PUTs to one and then to the other, and
then ``N`` GETs of them, from ``C`` clients, the order of the two alternating from round to
round, and stops them.  The script prints for each figure the median over the rounds for
both trees, their ratio, and the median of the rounds' own ratios (each taken over two
batches run back to back) with the middle half of them.

This machine's speed drifts by tens of percent from one minute to the next, so two runs
made one after the other cannot show a change of a few percent; rounds interleaved in one
run can.  CPU is user + system time of each server process (with ``--workers``, of the
gateway's workers too), per request.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.client import Payload, PreparedRequest, object_path, run_clients
from bench.cpu import DEADLINE, tree_cpu_seconds
from bench.servers import GatewayTarget, Target, gateway_target, lambnet_target

#: Figure name -> tree name -> the value of each round.
Rounds = dict[str, dict[str, list[float]]]


def run_batch(
    target: GatewayTarget, method: str, paths: list[list[str]], payload: Payload
) -> dict[str, float]:
    """Send a ``method`` of 4 KiB to each path, one client a row; the batch's figures."""
    signer = target.signer()
    pids = {"gateway": target.pid}
    if target.node is not None:
        pids["node"] = target.node.pid
    requests = [
        [signer.prepare(method, path, payload=payload if method == "PUT" else None) for path in row]
        for row in paths
    ]
    before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
    done, elapsed = send(target, requests)
    figures = {f"{method} req/s": done / elapsed}
    total = 0.0
    for name, pid in pids.items():
        used = (tree_cpu_seconds(pid) - before[name]) * 1e6 / max(done, 1)
        figures[f"{method} CPU µs, {name}"] = used
        total += used
    if len(pids) > 1:
        figures[f"{method} CPU µs, all"] = total
    return figures


def send(target: GatewayTarget, requests: list[list[PreparedRequest]]) -> tuple[int, float]:
    """Send the requests, one client a row; how many were answered, and the seconds taken."""
    started = time.monotonic()
    done, _ = run_clients(
        target.endpoint,
        len(requests),
        len(requests[0]),
        lambda c, i: requests[c][i],
        started + DEADLINE,
    )
    return done, time.monotonic() - started


def table(rounds: Rounds, names: Sequence[str]) -> list[str]:
    """The figures' medians for both trees, and the ratio of the second to the first.

    ``ratio`` is that of the medians; ``paired`` the median of the rounds' own ratios (the
    two trees' batches of a round ran one after the other), with the middle half of them.
    """
    base, new = names
    lines = [f"{'figure':26}  {base:>10}  {new:>10}  {'ratio':>6}  {'paired':>6}  middle half"]
    for figure, trees in rounds.items():
        old, now = statistics.median(trees[base]), statistics.median(trees[new])
        ratio = f"{now / old:6.3f}" if old else "     -"
        pairs = sorted(b / a for a, b in zip(trees[base], trees[new], strict=True) if a)
        paired, spread = "     -", ""
        if pairs:
            paired = f"{statistics.median(pairs):6.3f}"
            low, high = pairs[len(pairs) // 4], pairs[(3 * len(pairs) - 1) // 4]
            spread = f"{low:.3f}-{high:.3f}"
        lines.append(f"{figure:26}  {old:10.1f}  {now:10.1f}  {ratio}  {paired}  {spread}")
    return lines


def record(rounds: Rounds, tree: str, figures: Mapping[str, float]) -> None:
    """Add one round's ``figures`` of ``tree``."""
    for figure, value in figures.items():
        rounds.setdefault(figure, {}).setdefault(tree, []).append(value)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the comparison and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("base", type=Path, help="the source tree to compare against")
    parser.add_argument("--lambnet", action="store_true", help="each gateway over a node")
    parser.add_argument("--count", type=int, default=3000, help="requests of each kind a round")
    parser.add_argument("--rounds", type=int, default=10, help="rounds for each tree")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections")
    parser.add_argument("--workers", help='run each gateway with --workers N (or "auto")')
    args = parser.parse_args(argv)
    if args.lambnet and args.workers:
        parser.error("--workers is for the embedded network's gateways")
    if not (args.base / "lambgw").is_dir():
        parser.error(f"{args.base} is not a source tree (no lambgw/ in it)")
    flags = ("--workers", args.workers) if args.workers else ()

    def start(home: Path, source: Path | None) -> contextlib.AbstractContextManager[Target]:
        if args.lambnet:
            return lambnet_target(home, source=source)
        return gateway_target(home, flags=flags, source=source)

    names = ("base", "this tree")
    rounds: Rounds = {}
    payload = Payload.of(os.urandom(4096))
    per = max(1, args.count // args.clients)
    for number in range(args.rounds):
        # Fresh processes each round: one process of a tree can run ten percent faster or
        # slower than another of the same tree for its whole life (two processes of one
        # tree have differed by that much over ten rounds), which rounds on the same two
        # processes would take for a difference of the trees.
        with contextlib.ExitStack() as stack:
            targets = []
            for name, source in zip(names, (args.base, None), strict=True):
                home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                target = stack.enter_context(start(home, source=source))
                assert isinstance(target, GatewayTarget)
                targets.append((name, target))
                warm = [
                    [object_path(target.bucket, f"warm/{c}/{i}") for i in range(10)]
                    for c in range(args.clients)
                ]
                for method in ("PUT", "GET"):
                    run_batch(target, method, warm, payload)
            order = targets if number % 2 == 0 else targets[::-1]
            paths = {
                name: [
                    [object_path(target.bucket, f"r/{c}/{i}") for i in range(per)]
                    for c in range(args.clients)
                ]
                for name, target in targets
            }
            # Each kind of request goes to the two trees one after the other, so that the
            # round's ratio is taken at one speed of the machine.
            for method in ("PUT", "GET"):
                for name, target in order:
                    record(rounds, name, run_batch(target, method, paths[name], payload))
    print(f"{args.rounds} rounds of {args.count} requests, {args.clients} clients; median:")
    print("\n".join(table(rounds, names)))


if __name__ == "__main__":
    main()
