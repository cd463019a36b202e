"""``storagecli``: the storage CLI's command lines for the gateways and the orders.

::

    storagecli lambgw run --account A [FLAGS]                          # twistd -n lambgw ...
    storagecli s3gw run --account A --broker.extra_order_id O [FLAGS]  # twistd -n s3gw ...
    storagecli lambgw run -h                                           # the flags
    storagecli order list --account A [--json]                         # python -m lambgw order ...
    storagecli order buy --account A --capacity 10GiB --days 30

``run`` starts the same service as ``twistd -n lambgw|s3gw`` with the same flags, through
twistd itself: in the foreground, logging to stdout, stopped by SIGTERM or Ctrl-C.  It writes
no pid file.  Exit status: 0 once stopped, 1 if the gateway could not start (its reason is
logged), 2 for a bad command line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

from attrs import define
from twisted.application.service import IService, IServiceMaker
from twisted.python import usage
from twisted.scripts import twistd
from zope.interface import implementer

from lambgw import admin
from lambgw.options import GatewayOptions, LambgwOptions, S3gwOptions
from lambgw.tap import EXIT_FAILURE, GatewayService, make_service

T = TypeVar("T")

PROG = "storagecli"
_RUNS = "Runs in the foreground and logs to stdout, as twistd -n {} does with these flags."


class LambgwRunOptions(LambgwOptions):
    """``storagecli lambgw run``: the flags of ``twistd -n lambgw``."""

    synopsis = f"Usage: {PROG} lambgw run --account A [flags]"
    longdesc = "S3 gateway: every order of the account is a bucket. " + _RUNS.format("lambgw")


class S3gwRunOptions(S3gwOptions):
    """``storagecli s3gw run``: the flags of ``twistd -n s3gw``."""

    synopsis = f"Usage: {PROG} s3gw run --account A --broker.extra_order_id O [flags]"
    longdesc = "S3 gateway: ordinary buckets inside one order. " + _RUNS.format("s3gw")


#: The gateways ``run`` starts, by name.
GATEWAYS: dict[str, type[LambgwRunOptions | S3gwRunOptions]] = {
    "lambgw": LambgwRunOptions,
    "s3gw": S3gwRunOptions,
}
USAGE = f"""\
Usage: {PROG} lambgw run --account A [flags]
       {PROG} s3gw run --account A --broker.extra_order_id O [flags]
       {PROG} lambgw|s3gw run -h
       {PROG} order list|buy ... (as python -m lambgw order ...)
"""


@implementer(IServiceMaker)
@define
class GatewayMaker:
    """The twistd plugin of one gateway, keeping the service it makes."""

    tapname: str
    description: str
    options: Callable[[], GatewayOptions]
    service: IService | None = None

    def makeService(self, options: usage.Options) -> IService:
        """Make the gateway's service, as the twistd plugin does."""
        assert isinstance(options, GatewayOptions)
        made = make_service(options)
        self.service = made
        return made


class ServerOptions(twistd.ServerOptions):
    """twistd's options, whose one command is the gateway ``maker`` makes."""

    def __init__(self, maker: GatewayMaker) -> None:
        self._maker = maker
        super().__init__()

    def _getPlugins(self, interface: type[T], package: object = None) -> Iterable[T]:
        return [cast(T, self._maker)]


def run_gateway(mode: str, flags: Sequence[str]) -> int:
    """Run gateway ``mode`` with ``flags`` until it stops; the exit status."""
    options_class = GATEWAYS[mode]
    if "-h" in flags or "--help" in flags:
        print(options_class(), end="")
        return 0
    maker = GatewayMaker(mode, str(options_class.longdesc), options_class)
    config = ServerOptions(maker)
    try:
        config.parseOptions(["--nodaemon", "--pidfile=", mode, *flags])
    except usage.UsageError as e:
        print(f"{PROG} {mode} run: error: {e} (see {PROG} {mode} run -h)", file=sys.stderr)
        return 2
    twistd.runApp(config)
    if maker.service is None:
        return EXIT_FAILURE
    # A lone gateway says how its start went; a supervisor of --workers stops them itself.
    return maker.service.exit_status if isinstance(maker.service, GatewayService) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: the process's); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(args) >= 2 and args[0] in GATEWAYS and args[1] == "run":
            return run_gateway(args[0], args[2:])
        if args and args[0] == "order":
            return admin.main(args, prog=PROG)
    except SystemExit as e:
        return _status(e)
    wanted_help = args in (["-h"], ["--help"])
    print(USAGE, end="", file=sys.stdout if wanted_help else sys.stderr)
    return 0 if wanted_help else 2


def _status(exit_: SystemExit) -> int:
    """The exit status of a ``SystemExit``, its message (if any) printed on stderr."""
    code: Any = exit_.code
    if code is None or isinstance(code, int):
        return code or 0
    print(f"{PROG}: {code}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
