"""The status page: the account's orders, open uploads and request rates, in plain HTML."""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape

from attrs import frozen

from lambgw.network.interface import Order
from lambgw.observe.metrics import Rates

STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35em .6em; border-bottom: 1px solid #ddd;
  white-space: nowrap; }
code { font-size: .9em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.bar { background: #e8eef4; border-radius: 4px; height: 1.1em; width: 10em; overflow: hidden; }
.fill { background: #3b7dd8; height: 100%; } .fill.some { min-width: 2px; }
.fill.high { background: #d8873b; } .fill.full { background: #c8413b; }
.expired { color: #c8413b; font-weight: bold; }
.cards { display: flex; gap: 1em; flex-wrap: wrap; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6em 1em; min-width: 9em; }
.card b { display: block; font-size: 1.5em; }
.muted { color: #777; }
"""


@frozen
class OpenUpload:
    """An open multipart upload as the status page lists it."""

    upload_id: str
    bucket: str
    key: str
    parts: int
    size: int
    last_activity: float


@frozen
class StatusSnapshot:
    """Everything the status page shows, taken at ``now``."""

    account: str
    mode: str
    now: float
    uptime: float
    orders: Sequence[Order]
    uploads: Sequence[OpenUpload]
    rates: Rates
    in_flight: int


def human_size(size: float) -> str:
    """A byte count for people: ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(moment))


def _order_row(order: Order, now: float, with_account: bool) -> str:
    share = min(1.0, order.used / order.capacity) if order.capacity else 1.0
    level = "full" if share >= 0.95 else "high" if share >= 0.8 else "some" if order.used else ""
    days = (order.expires - now) / 86400
    expiry = (
        '<span class="expired">expired</span>'
        if order.expired(now)
        else time.strftime("%Y-%m-%d", time.gmtime(order.expires))
        + f" <span class='muted'>({days:.0f} days)</span>"
    )
    account = f"<td>{escape(order.account)}</td>" if with_account else ""
    return (
        f"<tr>{account}<td><code>{escape(order.order_id)}</code></td>"
        f'<td><div class="bar" title="{share:.1%}">'
        f'<div class="fill {level}" style="width: {share * 100:.1f}%"></div></div></td>'
        f'<td class="num">{human_size(order.used)} of {human_size(order.capacity)}'
        f" ({share:.0%})</td><td>{expiry}</td><td>{escape(order.status)}</td></tr>"
    )


def _upload_row(upload: OpenUpload, now: float) -> str:
    idle = max(0.0, now - upload.last_activity) / 60
    return (
        f"<tr><td>{escape(upload.bucket)}</td><td>{escape(upload.key)}</td>"
        f'<td class="num">{upload.parts}</td><td class="num">{human_size(upload.size)}</td>'
        f'<td class="num">{idle:.0f} min</td></tr>'
    )


def render_status(snapshot: StatusSnapshot) -> bytes:
    """The status page of ``snapshot``, as UTF-8 HTML."""
    rates = snapshot.rates
    minutes = rates.window / 60
    several = len({o.account for o in snapshot.orders}) > 1
    orders = "".join(_order_row(o, snapshot.now, several) for o in snapshot.orders) or (
        '<tr><td colspan="5" class="muted">No orders.</td></tr>'
    )
    account_head = "<th>Account</th>" if several else ""
    uploads = "".join(_upload_row(u, snapshot.now) for u in snapshot.uploads) or (
        '<tr><td colspan="5" class="muted">No open uploads.</td></tr>'
    )
    cards = [
        ("requests / min", f"{rates.per_minute(rates.requests):.1f}"),
        ("client errors / min", f"{rates.per_minute(rates.client_errors):.1f}"),
        ("server errors / min", f"{rates.per_minute(rates.server_errors):.1f}"),
        ("in flight", str(snapshot.in_flight)),
        ("up for", f"{snapshot.uptime / 3600:.1f} h"),
    ]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">
<title>lambgw: {escape(snapshot.account)}</title>
<style>{STYLE}</style></head><body>
<h1>lambgw status <span class="muted">account {escape(snapshot.account)},
{escape(snapshot.mode)} mode</span></h1>
<div class="cards">{"".join(f"<div class='card'><b>{v}</b>{k}</div>" for k, v in cards)}</div>
<p class="muted">Rates over the last {minutes:.0f} minutes; page taken {_when(snapshot.now)}.</p>
<h2>Orders</h2>
<table><tr>{account_head}<th>Order</th><th>Used</th><th></th><th>Expires</th><th>Status</th></tr>
{orders}</table>
<h2>Open multipart uploads</h2>
<table><tr><th>Bucket</th><th>Key</th><th>Parts</th><th>Size</th><th>Idle</th></tr>
{uploads}</table>
<p class="muted"><a href="/metrics">metrics</a> · <a href="/healthz">healthz</a> ·
<a href="/readyz">readyz</a></p>
</body></html>
"""
    return page.encode("utf-8")
