"""The gateway's configuration: ``user.toml`` as the storage CLI reads it, and flags over it.

The file is ``~/.lambda_storagecli/config/user.toml`` unless ``--home`` or ``--config`` says
otherwise.  Every problem is reported as one :class:`ConfigError` line naming the file, the key,
its line and what is wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import tomli
from attrs import field, frozen

from lambgw.network.http import SILENCE_TIMEOUT
from lambgw.s3.connections import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MIN_BODY_RATE,
    ConnectionLimits,
)
from lambgw.s3.cors import CorsPolicy
from lambgw.users import User, Users

#: The config home of the storage CLI.
DEFAULT_HOME = "~/.lambda_storagecli"
DEFAULT_ADDRESS = "127.0.0.1:9002"
#: The seed's example keys, used only when none are configured (a warning is logged).
DEFAULT_ACCESS_KEY = "accesskey"
DEFAULT_SECRET_KEY = "secretkey"  # noqa: S105 - documented default for a loopback gateway

_ORDER_ID = re.compile(r"[0-9A-F]{40}")

#: The most gateway processes ``--workers`` may start.
MAX_WORKERS = 256

#: The least and the most ``[broker] timeout`` may be, in seconds.
NETWORK_TIMEOUT_RANGE = (1.0, 3600.0)

#: The keys a file may hold, by section; anything else is refused as a likely typo.
KNOWN_KEYS: Mapping[str, frozenset[str]] = {
    "gateway": frozenset(
        {
            "address",
            "access_key",
            "secret_key",
            "domain",
            "users",
            "cors_origins",
            "cors_methods",
            "cors_headers",
            "header_timeout",
            "min_body_rate",
            "max_connections",
            "workers",
        }
    ),
    "broker": frozenset(
        {
            "validator_addr",
            "dht_gateway_addr",
            "extra_order_id",
            "db_path",
            "extra_key_file",
            "ca_file",
            "timeout",
        }
    ),
}


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` is one line for the operator."""


@frozen
class Config:
    """Everything the gateway needs to start, after the file and the flags are merged."""

    home: str
    config_file: str
    host: str
    port: int
    access_key: str
    secret_key: str
    account: str
    validator_addr: str
    dht_gateway_addr: str
    extra_order_id: str
    db_path: str
    debug: bool
    default_keys: bool
    #: Every key the gateway accepts, the ``[gateway]`` pair (for ``account``) included.
    users: Users = field(factory=lambda: Users({}))
    #: Domains under which ``BUCKET.DOMAIN`` addresses a bucket (virtual-hosted style).
    domains: tuple[str, ...] = ()
    cors: CorsPolicy = field(factory=CorsPolicy)
    #: Twisted endpoint descriptions the S3 API listens on besides ``address``.
    listen: tuple[str, ...] = ()
    #: A certificate and key (PEM files) that make ``address`` HTTPS.
    tls_cert: str = ""
    tls_key: str = ""
    #: The account's private key for the network at ``validator_addr`` (default under home).
    extra_key_file: str = ""
    #: The PEM certificate authorities an HTTPS ``validator_addr`` is checked against.
    ca_file: str = ""
    #: Seconds without progress after which a request to the network is given up.
    network_timeout: float = SILENCE_TIMEOUT
    #: The bounds on the S3 API's connections: head time, body pace, how many.
    limits: ConnectionLimits = field(factory=ConnectionLimits)
    #: How many gateway processes share the S3 listeners (1: this process serves alone).
    workers: int = 1

    @property
    def address(self) -> str:
        """The listening address as ``HOST:PORT``."""
        return f"{self.host}:{self.port}"

    @property
    def network_dir(self) -> str:
        """Where the embedded network keeps its data."""
        return os.path.join(self.home, "network")

    @property
    def embedded(self) -> bool:
        """Whether no network address is configured, so the embedded network is used."""
        return not (self.validator_addr or self.dht_gateway_addr)


def _key_line(text: str, section: str, key: str) -> int | None:
    """The line number of ``key`` in ``[section]`` of a TOML text, if it can be found."""
    current = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        header = re.match(r"\[\s*([A-Za-z0-9_.\-]+)\s*\]", stripped)
        if header:
            current = header.group(1)
            continue
        if current == section and re.match(rf'"?{re.escape(key)}"?\s*=', stripped):
            return number
    return None


def read_file(path: str) -> tuple[dict[str, Any], str]:
    """Parse the TOML file at ``path``; a missing file is an empty configuration."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}, ""
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from e
    try:
        return tomli.loads(text), text
    except tomli.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e


def parse_address(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` too); raise ValueError saying what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"an IPv6 host goes in brackets, [HOST]:PORT, got {value!r}")
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port {number} is out of range 0-65535")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - ":PORT" means all interfaces, as in Go
    return host, number


def _string(data: Mapping[str, Any], section: str, key: str, path: str, text: str) -> str | None:
    table = data.get(section, {})
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, str):
        line = _key_line(text, section, key)
        where = f"line {line}: " if line else ""
        raise ConfigError(
            f"{path}: {where}[{section}] {key}: expected a string, got {type(value).__name__}"
        )
    return value


def _strings(
    data: Mapping[str, Any], section: str, key: str, path: str, text: str
) -> list[str] | None:
    """A key holding a list of strings (a single string is a list of one)."""
    value = data.get(section, {}).get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        line = _key_line(text, section, key)
        where = f"line {line}: " if line else ""
        raise ConfigError(f"{path}: {where}[{section}] {key}: expected a list of strings")
    return list(value)


@frozen
class Bounded:
    """A number a flag or a key may set: its range, what it counts, and its default."""

    low: float
    high: float
    unit: str
    default: float


#: The numbers of the file and the flags, by ``(section, key)``.
NUMBERS: Mapping[tuple[str, str], Bounded] = {
    ("broker", "timeout"): Bounded(*NETWORK_TIMEOUT_RANGE, "seconds", SILENCE_TIMEOUT),
    ("gateway", "header_timeout"): Bounded(0.1, 3600.0, "seconds", DEFAULT_HEADER_TIMEOUT),
    ("gateway", "min_body_rate"): Bounded(0, 2**40, "bytes a second", DEFAULT_MIN_BODY_RATE),
    ("gateway", "max_connections"): Bounded(0, 2**31, "connections", DEFAULT_MAX_CONNECTIONS),
}


#: The flags of the bounds on the S3 API's connections, as twistd options take them.
LIMIT_FLAGS: list[list[Any]] = [
    [
        "gateway.header_timeout",
        None,
        None,
        "Seconds a request's head may take; also the window of --gateway.min_body_rate "
        "(default 30).",
    ],
    [
        "gateway.min_body_rate",
        None,
        None,
        "Bytes a second a request body must bring, over each header_timeout (default "
        "1024; 0: any).",
    ],
    [
        "gateway.max_connections",
        None,
        None,
        "Connections open at once on the S3 API; more are answered 503 SlowDown "
        "(default 1024; 0: no cap).",
    ],
]


def _in_range(value: object, bounds: Bounded, where: str) -> float:
    """``value`` if it is a number within ``bounds``; else a ConfigError naming ``where``."""
    expected = f"expected {bounds.unit} from {bounds.low:g} to {bounds.high:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: {expected}, got {type(value).__name__}")
    if not bounds.low <= value <= bounds.high:
        raise ConfigError(f"{where}: {expected}, got {value:g}")
    return float(value)


def _number(
    options: Mapping[str, Any],
    data: Mapping[str, Any],
    path: str,
    text: str,
    section: str,
    key: str,
) -> float:
    """``--SECTION.KEY`` or ``[SECTION] KEY``, checked; the default if neither is set."""
    bounds = NUMBERS[section, key]
    flag = options.get(f"{section}.{key}")
    if flag is not None:
        try:
            value = float(flag)
        except ValueError:
            raise ConfigError(
                f"--{section}.{key}: expected {bounds.unit} from {bounds.low:g} to "
                f"{bounds.high:g}, got {flag!r}"
            ) from None
        return _in_range(value, bounds, f"--{section}.{key}")
    table = data.get(section, {})
    if key not in table:
        return bounds.default
    line = _key_line(text, section, key)
    where = f"{path}: line {line}: [{section}] {key}" if line else f"{path}: [{section}] {key}"
    return _in_range(table[key], bounds, where)


def cores() -> int:
    """The cores this process may run on (what ``workers = "auto"`` starts)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _workers(options: Mapping[str, Any], data: Mapping[str, Any], path: str, text: str) -> int:
    """``--workers`` or ``[gateway] workers``: a count, or ``auto`` for one per core."""
    value = options.get("workers")
    where = "--workers"
    if value is None:
        value = data.get("gateway", {}).get("workers", 1)
        line = _key_line(text, "gateway", "workers")
        where = f"{path}: line {line}: [gateway] workers" if line else f"{path}: [gateway] workers"
    if value == "auto":
        return min(cores(), MAX_WORKERS)
    expected = f'expected "auto" or a number of processes from 1 to {MAX_WORKERS}'
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise ConfigError(f"{where}: {expected}, got {value!r}")
    return value


def _users(data: Mapping[str, Any], path: str) -> list[User]:
    """The ``[[gateway.users]]`` tables: an access key, its secret key and its account."""
    tables = data.get("gateway", {}).get("users", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: [gateway] users: expected [[gateway.users]] tables")
    users = []
    for number, table in enumerate(tables, 1):
        where = f"{path}: [[gateway.users]] #{number}"
        unknown = sorted(set(table) - {"access_key", "secret_key", "account"})
        if unknown:
            raise ConfigError(
                f"{where}: {unknown[0]}: unknown key (known: access_key, account, secret_key)"
            )
        values = []
        for key in ("access_key", "secret_key", "account"):
            value = table.get(key)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}: {key}: expected a non-empty string")
            values.append(value)
        users.append(User(*values))
    return users


def load(options: Mapping[str, Any]) -> Config:
    """Merge the config file with the command-line ``options`` (flags win).

    ``options`` uses the flag names: ``home``, ``config``, ``account``, ``gateway.address``,
    ``gateway.access_key``, ``gateway.secret_key``, ``broker.validator_addr``,
    ``broker.dht_gateway_addr``, ``broker.extra_order_id``, ``broker.db_path``,
    ``broker.extra_key_file``, ``broker.ca_file``, ``broker.timeout``, ``debug``,
    ``gateway.header_timeout``, ``gateway.min_body_rate``, ``gateway.max_connections``,
    and the lists ``domain`` and ``listen``, with ``tls-cert`` and ``tls-key``.
    """
    home = os.path.expanduser(options.get("home") or DEFAULT_HOME)
    path = os.path.expanduser(options.get("config") or os.path.join(home, "config", "user.toml"))
    data, text = read_file(path)

    for section, table in data.items():
        if section not in KNOWN_KEYS:
            continue
        if not isinstance(table, dict):
            line = _key_line(text, "", section)
            where = f"line {line}: " if line else ""
            raise ConfigError(f"{path}: {where}{section}: expected a [{section}] table")
        for key in table:
            if key not in KNOWN_KEYS[section]:
                line = _key_line(text, section, key)
                where = f"line {line}: " if line else ""
                known = ", ".join(sorted(KNOWN_KEYS[section]))
                raise ConfigError(f"{path}: {where}[{section}] {key}: unknown key (known: {known})")

    def pick(section: str, key: str) -> tuple[str | None, str]:
        flag = options.get(f"{section}.{key}")
        if flag is not None:
            return str(flag), f"--{section}.{key}"
        value = _string(data, section, key, path, text)
        line = _key_line(text, section, key)
        where = f"{path}: line {line}: [{section}] {key}" if line else f"{path}: [{section}] {key}"
        return value, where

    address, where = pick("gateway", "address")
    try:
        host, port = parse_address(address or DEFAULT_ADDRESS)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None

    access_key, access_where = pick("gateway", "access_key")
    secret_key, where = pick("gateway", "secret_key")
    if (access_key is None) != (secret_key is None):
        where = where if access_key is None else access_where
        raise ConfigError(f"{where}: access_key and secret_key must be set together")
    default_keys = access_key is None
    if access_key is not None and secret_key is not None and not (access_key and secret_key):
        raise ConfigError(f"{where}: access_key and secret_key must not be empty")

    extra_order_id, where = pick("broker", "extra_order_id")
    if extra_order_id and not _ORDER_ID.fullmatch(extra_order_id.upper()):
        raise ConfigError(f"{where}: expected an order id of 40 hex digits, got {extra_order_id!r}")

    account = options.get("account") or ""
    if not account:
        raise ConfigError("--account is required: the account whose orders are served")

    extra_users = _users(data, path)
    primary = []
    if not (default_keys and extra_users):
        primary = [
            User(access_key or DEFAULT_ACCESS_KEY, secret_key or DEFAULT_SECRET_KEY, account)
        ]
    try:
        users = Users.of(primary + extra_users)
    except ValueError as e:
        raise ConfigError(f"{path}: [[gateway.users]]: {e}") from None

    domains = list(options.get("domain") or _strings(data, "gateway", "domain", path, text) or [])
    cors = CorsPolicy.of(
        _strings(data, "gateway", "cors_origins", path, text) or [],
        _strings(data, "gateway", "cors_methods", path, text),
        _strings(data, "gateway", "cors_headers", path, text),
    )
    tls_cert = options.get("tls-cert") or ""
    tls_key = options.get("tls-key") or ""
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--tls-cert and --tls-key must be given together")

    db_path, _ = pick("broker", "db_path")
    return Config(
        home=home,
        config_file=path,
        host=host,
        port=port,
        access_key=access_key or DEFAULT_ACCESS_KEY,
        secret_key=secret_key or DEFAULT_SECRET_KEY,
        account=account,
        validator_addr=pick("broker", "validator_addr")[0] or "",
        dht_gateway_addr=pick("broker", "dht_gateway_addr")[0] or "",
        extra_order_id=(extra_order_id or "").upper(),
        db_path=os.path.expanduser(db_path or os.path.join(home, "gateway")),
        debug=bool(options.get("debug")),
        default_keys=default_keys and not extra_users,
        users=users,
        domains=tuple(domains),
        cors=cors,
        listen=tuple(options.get("listen") or ()),
        tls_cert=tls_cert,
        tls_key=tls_key,
        extra_key_file=os.path.expanduser(pick("broker", "extra_key_file")[0] or ""),
        ca_file=os.path.expanduser(pick("broker", "ca_file")[0] or ""),
        network_timeout=_number(options, data, path, text, "broker", "timeout"),
        limits=ConnectionLimits(
            _number(options, data, path, text, "gateway", "header_timeout"),
            int(_number(options, data, path, text, "gateway", "min_body_rate")),
            int(_number(options, data, path, text, "gateway", "max_connections")),
        ),
        workers=_workers(options, data, path, text),
    )
