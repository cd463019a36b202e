"""The admin command of the embedded network: accounts and orders, as the storage CLI shows them.

::

    python -m lambgw account create --account demo
    python -m lambgw account key --account demo
    python -m lambgw order buy --account demo --capacity 10GiB --days 30
    python -m lambgw order list --account demo [--json]
    python -m lambgw store sweep [--min-age 3600] [--gateway-data DIR]

Every command takes ``--home DIR`` (default ``~/.lambda_storagecli``) and ``--data DIR`` (the
embedded network's data, default ``HOME/network``; a ``lambnet`` node's ``--data`` is such a store
too). ``account key`` makes the account's Ed25519 key pair unless ``HOME/keys/ACCOUNT.key`` exists
(encrypted with ``$LAMBGW_KEY_PASSWORD`` if set), publishes its public key in the store for a node
to check signatures with, and prints the public key. Capacities are bytes with an optional unit:
``B``, ``KiB``, ``MiB``, ``GiB``, ``TiB``, ``PiB`` are powers of 1024 and ``KB``, ``MB``, ``GB``,
``TB``, ``PB`` powers of 1000 (units are case-insensitive, decimals are allowed: ``1.5GiB``).
``order list --json`` prints a list of objects with the keys ``order_id``, ``capacity`` and ``used``
(bytes), ``created`` and ``expires`` (ISO 8601, UTC) and ``status`` (``active`` or ``expired``). A
failure prints one line on stderr and exits with status 1 (2 for a bad command line).  Only
``account create`` makes a store where there is none: every other command refuses a home without
one, so that a read never leaves an empty store behind (give the ``--home`` the gateway runs with).
``store sweep`` removes the object files a crash left unreferenced (untouched for ``--min-age``
seconds) and the request bodies that processes no longer running left in their spools: a node's
in the store's ``incoming/``, gateways' in the gateway data (``--gateway-data``, default
``HOME/gateway``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from lambgw.config import DEFAULT_HOME
from lambgw.lambnet.keys import ensure_key_pair
from lambgw.network import signing
from lambgw.network.errors import NetworkError
from lambgw.network.index import INDEX_FILE
from lambgw.network.interface import Order
from lambgw.network.store import Store
from lambgw.spooldir import Swept, gateway_spools, sweep_spool

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "pb": 1000**5,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "pib": 1024**5,
}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*")


def parse_size(text: str) -> int:
    """Return the bytes of a size such as ``10GiB``, ``500 MB`` or ``1024``."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 10GiB, 500MB or a number of bytes)")
    try:
        size = int(Decimal(match.group(1)) * _UNITS[unit])
    except InvalidOperation:
        raise ValueError(f"not a size: {text!r}") from None
    if size <= 0:
        raise ValueError(f"the size must be at least one byte: {text!r}")
    return size


def format_size(size: int) -> str:
    """Return ``size`` in bytes for a person, in powers of 1024: ``10.0 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def _status(order: Order, now: float) -> str:
    return "expired" if order.status == "active" and order.expired(now) else order.status


def _order_json(order: Order, now: float) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "capacity": order.capacity,
        "used": order.used,
        "created": _iso(order.created),
        "expires": _iso(order.expires),
        "status": _status(order, now),
    }


def _print_orders(orders: Sequence[Order], as_json: bool, now: float) -> None:
    if as_json:
        print(json.dumps([_order_json(order, now) for order in orders], indent=2))
        return
    row = "{:<42}{:>12}  {:>12}  {:<22}{}"
    print(row.format("ORDER ID", "CAPACITY", "USED", "EXPIRES", "STATUS"))
    for order in orders:
        print(
            row.format(
                order.order_id,
                format_size(order.capacity),
                format_size(order.used),
                _iso(order.expires),
                _status(order, now),
            )
        )


def _size_argument(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _days_argument(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not days > 0:
        raise argparse.ArgumentTypeError(f"the duration must be positive: {text!r}")
    return days


def build_parser(prog: str = "python -m lambgw") -> argparse.ArgumentParser:
    """Return the parser of the admin command line, run as ``prog``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=DEFAULT_HOME, help="config home (%(default)s)")
    common.add_argument("--data", help="the embedded network's data (default: HOME/network)")
    account = argparse.ArgumentParser(add_help=False)
    account.add_argument("--account", required=True, help="the account name")

    parser = argparse.ArgumentParser(
        prog=prog, description="Manage the accounts and orders of the network."
    )
    topics = parser.add_subparsers(dest="topic", required=True, metavar="{account,order,store}")
    accounts = topics.add_parser("account", help="accounts").add_subparsers(
        dest="action", required=True
    )
    accounts.add_parser("create", parents=[common, account], help="create an account")
    accounts.add_parser("key", parents=[common, account], help="make or show the account's key")
    orders = topics.add_parser("order", help="orders").add_subparsers(dest="action", required=True)
    listing = orders.add_parser("list", parents=[common, account], help="list the orders")
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    buying = orders.add_parser("buy", parents=[common, account], help="buy an order")
    buying.add_argument("--capacity", type=_size_argument, required=True, help="e.g. 10GiB")
    buying.add_argument("--days", type=_days_argument, default=30.0, help="validity (30)")
    buying.add_argument("--json", action="store_true", help="print JSON for scripts")
    store = topics.add_parser("store", help="the store").add_subparsers(
        dest="action", required=True
    )
    sweep = store.add_parser(
        "sweep", parents=[common], help="delete object files left unreferenced by a crash"
    )
    sweep.add_argument(
        "--min-age", type=float, default=3600.0, help="keep younger files (%(default)s s)"
    )
    sweep.add_argument("--gateway-data", help="the gateway's data (default: HOME/gateway)")
    return parser


def _run(args: argparse.Namespace, store: Store) -> None:
    now = time.time()
    command = (args.topic, args.action)
    if command == ("account", "create"):
        store.create_account(args.account)
        print(f"created account {args.account}")
    elif command == ("account", "key"):
        if not store.has_account(args.account):
            raise NetworkError(f"no such account: {args.account}")
        try:
            key_file, public = ensure_key_pair(
                args.home, store.root, args.account, signing.env_password()
            )
        except ValueError as e:
            raise NetworkError(str(e)) from None
        print(f"private key: {key_file}")
        print(signing.public_key_pem(public).decode("ascii"), end="")
    elif command == ("order", "list"):
        _print_orders(store.orders(args.account), args.json, now)
    elif command == ("order", "buy"):
        order = store.buy_order(args.account, args.capacity, args.days)
        if args.json:
            print(json.dumps(_order_json(order, now), indent=2))
        else:
            _print_orders([order], False, now)
    else:
        removed = store.sweep(args.min_age)
        print(f"removed {removed} unreferenced object files")
        gateway = args.gateway_data or os.path.join(os.path.expanduser(args.home), "gateway")
        spools = [os.path.join(store.root, "incoming"), *gateway_spools(gateway)]
        swept = sum(map(sweep_spool, spools), Swept())
        print(f"removed {swept.files} files ({swept.bytes} bytes) left in spools by crashes")


def main(argv: list[str] | None = None, prog: str = "python -m lambgw") -> int:
    """Run the admin command with ``argv`` (default: the process's); return the exit status."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    data = args.data or os.path.join(os.path.expanduser(args.home), "network")
    if (args.topic, args.action) != ("account", "create") and not os.path.exists(
        os.path.join(data, INDEX_FILE)
    ):
        print(
            f"{parser.prog}: error: no network data in {data}: give the --home (or --data) "
            "the gateway runs with; a new one is made by the gateway's first start or by "
            "'account create'",
            file=sys.stderr,
        )
        return 1
    try:
        store = Store(data)
    except (OSError, sqlite3.Error) as e:
        print(f"{parser.prog}: error: cannot open the network data in {data}: {e}", file=sys.stderr)
        return 1
    try:
        _run(args, store)
    except NetworkError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0
