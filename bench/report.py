"""The benchmark's tables: the gateway against the baselines, and the comparisons.

Over lambnet against the embedded network, and with ``--workers`` against one process.
"""

from __future__ import annotations

from bench.figures import (
    FIGURES,
    PEER_GOALS,
    TIME_UNITS,
    WORKERS_SEAWEED_GOALS,
    Bench,
    Figure,
    Goal,
    Results,
)

#: ``yes``/``NO`` for a target met or not; nothing when the figure is missing.
_MET = {True: "yes", False: "NO", None: ""}


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def speedup(figure: Figure, value: float | None, base: float | None) -> float | None:
    """How many times as fast as the baseline ``value`` is (``None`` if either is missing)."""
    if not value or not base:
        return None
    return base / value if figure.unit in TIME_UNITS else value / base


def peer_cells(name: str, figure: Figure, value: float | None, peer: Results) -> dict[str, object]:
    """A peer's figure of a row, the gateway's speed relative to it, and its target if any.

    The keys are the peer's ``name`` and, after it, ``_speedup``, ``_target``, ``_met`` and
    ``_note``.
    """
    theirs = peer.get(figure.key)
    base = theirs.value if theirs else None
    ratio = speedup(figure, value, base)
    goal = PEER_GOALS[name].get(figure.key)
    return {
        name: base,
        f"{name}_speedup": ratio,
        f"{name}_target": goal.text if goal else None,
        f"{name}_met": goal.met(value, ratio) if goal else None,
        f"{name}_note": theirs.note if theirs else "",
    }


def _has_goals(name: str) -> bool:
    return any(PEER_GOALS[name].values())


def report(
    bench: Bench,
    groups: tuple[str, ...],
    gateway: Results,
    moto: Results,
    ceiling: Results,
    peers: dict[str, Results] | None = None,
) -> tuple[str, list[dict[str, object]]]:
    """Render the table (and its notes) and the rows as plain data for ``--json``.

    Each of ``peers`` (by name, a key of :data:`PEER_GOALS`) gets a column for the figures of
    its entry there: its value, the gateway's speed relative to it (``x``) and, for a peer
    with targets, that target and whether it is met.
    """
    peers = peers or {}
    header: tuple[str, ...] = ("figure", "unit", "gateway", "moto", "ratio", "target", "met")
    for name in peers:
        header += (name, "x", "target", "met") if _has_goals(name) else (name, "x")
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
        row: tuple[str, ...] = (
            label,
            figure.unit,
            _fmt(value),
            _fmt(base),
            "-" if ratio is None else f"{ratio:.2f}",
            figure.goal.text if figure.goal else "",
            _MET[met],
        )
        cells: dict[str, object] = {}
        for name, peer in peers.items():
            width = 4 if _has_goals(name) else 2
            if figure.key not in PEER_GOALS[name]:
                row += ("",) * width
                continue
            mine = peer_cells(name, figure, value, peer)
            cells.update(mine)
            faster = mine[f"{name}_speedup"]
            row += (
                _fmt(mine[name]),  # type: ignore[arg-type]
                "-" if faster is None else f"{faster:.2f}",
                str(mine[f"{name}_target"] or ""),
                _MET[mine[f"{name}_met"]],  # type: ignore[index]
            )[:width]
            if mine[f"{name}_note"]:
                notes.append(f"{label} [{name}]: {mine[f'{name}_note']}")
        rows.append(row)
        for side, m in (("gateway", ours), ("moto", theirs)):
            if m and m.note:
                notes.append(f"{label} [{side}]: {m.note}")
        data.append(
            {
                **cells,
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
    lines = _table(header, rows)
    if peers:
        lines.append(
            f"(x: the gateway's speed relative to {', '.join(peers)}; above 1 it is faster)"
        )
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


def _ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """The lines of a table: labels left-aligned, figures right-aligned, a rule under the header."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if column < 2 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _at_least(bound: float) -> Goal:
    return Goal(f">= {bound:g}x", ratio_min=bound)


def _at_most(bound: float) -> Goal:
    return Goal(f"<= {bound:g}x", ratio_max=bound)


#: Targets for the gateway over lambnet against the embedded network, by figure (``cpu:``
#: for the servers' CPU row under it).  Times (ms, s) and CPU are better low: at most.
LAMBNET_GOALS: dict[str, Goal] = {
    "put_large": _at_least(0.8),
    "get_large": _at_least(0.8),
    "put_mid": _at_least(0.8),
    "get_mid": _at_least(0.8),
    "put_small": _at_least(0.6),
    "get_small": _at_least(0.6),
    "cpu:put_small": _at_most(2.5),
    "cpu:get_small": _at_most(2.5),
    "mp_upload": _at_least(0.8),
    "list_small": _at_most(1.5),
    "list_walk_small": _at_most(1.5),
}


def _side_by_side(
    bench: Bench,
    groups: tuple[str, ...],
    names: tuple[str, str],
    base: Results,
    other: Results,
    goals: dict[str, Goal] | None = None,
) -> list[str]:
    """The lines of a table putting the figures of ``other`` next to those of ``base``.

    A figure with the servers' CPU gets a row of its own for it.  With ``goals``, each
    ratio that has one is printed with it and whether it is met.
    """
    goals = goals or {}
    header = ("figure", "unit", *names, "ratio", *(("target", "met") if goals else ()))
    rows: list[tuple[str, ...]] = []

    def row(key: str, label: str, unit: str, ref: float | None, value: float | None) -> None:
        ratio = value / ref if value is not None and ref else None
        cells: tuple[str, ...] = (label, unit, _fmt(ref), _fmt(value), _ratio(ratio))
        if goals:
            goal = goals.get(key)
            cells += (goal.text, _MET[goal.met(value, ratio)]) if goal else ("", "")
        rows.append(cells)

    for figure in FIGURES:
        if figure.group not in groups:
            continue
        ours, theirs = base.get(figure.key), other.get(figure.key)
        label = bench.label(figure)
        row(
            figure.key,
            label,
            figure.unit,
            ours.value if ours else None,
            theirs.value if theirs else None,
        )
        cpu_base, cpu = ours.cpu if ours else None, theirs.cpu if theirs else None
        if cpu_base is not None and cpu is not None:
            unit = "ms/MB" if figure.unit == "MB/s" else "µs/req"
            row(f"cpu:{figure.key}", f"  server CPU, {label}", unit, cpu_base, cpu)
    return _table(header, rows)


def lambnet_report(bench: Bench, groups: tuple[str, ...], embedded: Results, over: Results) -> str:
    """Render the figures of the gateway over lambnet next to the embedded network's."""
    lines = _side_by_side(bench, groups, ("embedded", "lambnet"), embedded, over, LAMBNET_GOALS)
    lines.append("(ratio: lambnet / embedded; for times and CPU, lower is better)")
    for key, m in over.items():
        lines.append(f"  {key}: rounds embedded {embedded[key].note}; lambnet {m.note}")
    title = "the gateway over a lambnet node, against the embedded network, both running, in"
    return "\n".join(["", title + " alternate rounds:", *lines])


def workers_report(bench: Bench, groups: tuple[str, ...], one: Results, many: Results) -> str:
    """Render the figures of the gateway with ``--workers`` next to one process's."""
    lines = _side_by_side(bench, groups, ("1 worker", "workers"), one, many)
    for key, m in many.items():
        lines.append(f"  {key}: rounds 1 worker {one[key].note}; workers {m.note}")
    title = "the gateway with --workers against one process, both running, in alternate rounds:"
    return "\n".join(["", title, *lines])


def workers_seaweed_report(
    bench: Bench, groups: tuple[str, ...], seaweed: Results, many: Results
) -> str:
    """Render the figures of the gateway with ``--workers`` next to SeaweedFS's, with targets."""
    lines = _side_by_side(
        bench, groups, ("seaweedfs", "workers"), seaweed, many, WORKERS_SEAWEED_GOALS
    )
    lines.append("(ratio: workers / seaweedfs; for CPU, lower is better)")
    for key, m in many.items():
        lines.append(f"  {key}: rounds seaweedfs {seaweed[key].note}; workers {m.note}")
    title = "the gateway with --workers against SeaweedFS, both running, in alternate rounds:"
    return "\n".join(["", title, *lines])
