"""The command-line options of the ``lambgw`` and ``s3gw`` plugins, and the mode checks.

Flags are named as the storage CLI's config keys are (``--gateway.address``,
``--broker.validator_addr``, ...); :func:`load_for_mode` merges them with the config file
(:mod:`lambgw.config`) and refuses a configuration that does not suit the mode.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from lambgw.config import LIMIT_FLAGS, Config, ConfigError, load
from lambgw.network.completion import DEFAULT_UPLOAD_EXPIRY
from lambgw.observe.access import FORMATS

#: Where the admin pages (metrics, health, status) listen unless told otherwise.
DEFAULT_ADMIN_LISTEN = "tcp:9003:interface=127.0.0.1"
#: Seconds the requests in flight have to finish when the gateway is stopped.
DEFAULT_SHUTDOWN_GRACE = 30.0


class GatewayOptions(usage.Options):
    """Command-line options of both gateways, named as the storage CLI names them."""

    optParameters = [
        ["home", None, None, "Config home (default ~/.lambda_storagecli)."],
        ["config", None, None, "Config file (default HOME/config/user.toml)."],
        ["account", None, None, "The account whose orders are served."],
        ["gateway.address", None, None, "Where the S3 API listens, HOST:PORT."],
        ["gateway.access_key", None, None, "The access key S3 clients sign with."],
        ["gateway.secret_key", None, None, "The secret key S3 clients sign with."],
        ["broker.validator_addr", None, None, "The network's address (empty: embedded)."],
        ["broker.dht_gateway_addr", None, None, "The network's DHT gateway address."],
        ["broker.extra_order_id", None, None, "s3gw: the order that holds the buckets."],
        ["broker.db_path", None, None, "Gateway data (spool, state); default HOME/gateway."],
        ["broker.extra_key_file", None, None, "The account's key (default HOME/keys/ACCOUNT.key)."],
        ["broker.ca_file", None, None, "CA certificates (PEM) of an https network address."],
        [
            "broker.timeout",
            None,
            None,
            "Seconds without progress after which a request to the network is given up "
            "(1 to 3600; default 30).",
        ],
        *LIMIT_FLAGS,
        ["tls-cert", None, None, "Serve the gateway address over HTTPS with this certificate."],
        ["tls-key", None, None, "The private key of --tls-cert (PEM)."],
        [
            "multipart.expiry",
            None,
            DEFAULT_UPLOAD_EXPIRY,
            "Seconds after which the embedded network aborts an idle multipart upload "
            "(default 7 days; a lambnet node has its own --multipart-expiry).",
            float,
        ],
        ["access-log-format", None, "text", "The access log's format: text or json."],
        [
            "access-log",
            None,
            "",
            "A file the access log is appended to, in batches (reopened on SIGHUP); "
            "empty: the access lines go to the twistd log.",
        ],
        [
            "admin-listen",
            None,
            DEFAULT_ADMIN_LISTEN,
            "Where /metrics, /healthz, /readyz and the status page listen (a Twisted "
            "endpoint description; empty: nowhere).",
        ],
        [
            "workers",
            None,
            None,
            'Gateway processes sharing the S3 listeners: a number, or "auto" for one per '
            "core (default 1: this process serves alone).",
        ],
        [
            "shutdown-grace",
            None,
            DEFAULT_SHUTDOWN_GRACE,
            "Seconds the requests in flight have to finish on SIGTERM.",
            float,
        ],
    ]
    optFlags = [
        ["debug", None, "Record where each Deferred was made and fired, for tracebacks (slow)."]
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["domain"] = []

    def parseOptions(self, options: Any = None) -> None:
        """Parse, keeping the arguments: workers are started with the same ones."""
        self.arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def opt_listen(self, description: str) -> None:
        """Also serve the S3 API on a Twisted endpoint (tcp:, ssl:, systemd:, ...); repeatable."""
        self["listen"].append(description)

    def opt_domain(self, domain: str) -> None:
        """Serve BUCKET.DOMAIN as bucket BUCKET (virtual-hosted style); repeatable."""
        self["domain"].append(domain)

    #: Whether the daemon serves one order (s3gw) rather than every order (lambgw).
    single_order = False
    config: Config

    def postOptions(self) -> None:
        """Merge the config file with the flags; stop with one line if anything is wrong."""
        if self["access-log-format"] not in FORMATS:
            raise usage.UsageError(f"--access-log-format must be one of {', '.join(FORMATS)}")
        try:
            self.config = load_for_mode(self, self.single_order)
        except ConfigError as e:
            raise SystemExit(f"{sys.argv[0] if sys.argv else 'twistd'}: {e}") from None


def load_for_mode(options: Any, single_order: bool) -> Config:
    """Load the configuration and check that it suits the mode; raise ConfigError if not."""
    config = load(options)
    if single_order and not config.extra_order_id:
        raise ConfigError(
            "s3gw needs the order that holds its buckets: --broker.extra_order_id ORDERID "
            f"or [broker] extra_order_id in {config.config_file}"
        )
    others = sorted(set(config.users.accounts) - {config.account})
    if others and not config.embedded:
        raise ConfigError(
            f"{config.config_file}: [[gateway.users]]: account {others[0]}: over a network "
            f"address the gateway signs as account {config.account} only"
        )
    if single_order and others:
        raise ConfigError(
            f"{config.config_file}: [[gateway.users]]: s3gw serves the order of account "
            f"{config.account} only; account {others[0]} cannot use it"
        )
    return config


class LambgwOptions(GatewayOptions):
    """``twistd lambgw --account A``: every order of the account is a bucket."""


class S3gwOptions(GatewayOptions):
    """``twistd s3gw --account A --broker.extra_order_id O``: one order, ordinary buckets."""

    single_order = True
