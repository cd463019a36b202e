"""A real listening lambgw started with a config file of the test's own and extra flags.

:class:`ConfiguredCase` is a :class:`~tests.gateway.GatewayCase` whose gateway reads the
``CONFIG`` text of the class from ``HOME/config/user.toml`` and gets the class's ``FLAGS``
(``{home}`` and ``{port}`` are filled in; ``{port}`` is the gateway address's port).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from tests.gateway import ACCOUNT, TWISTD, GatewayCase, GatewayProcess, _spawn, free_port

#: Where the admin pages of a test gateway listen: any free loopback port.
ADMIN = "tcp:0:interface=127.0.0.1"


def config_path(home: str) -> str:
    """The config file a gateway with config home ``home`` reads."""
    return os.path.join(home, "config", "user.toml")


def write_config(home: str, text: str) -> None:
    """Write ``text`` as the config file of ``home``, replacing it whole (as an editor does)."""
    path = config_path(home)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".new", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".new", path)


def spawn_lambgw(home: str, config: str, flags: Sequence[str]) -> GatewayProcess:
    """Start ``twistd -n lambgw`` on ``home`` with ``config`` as its file and ``flags``."""
    write_config(home, config)
    argv = [
        *(*TWISTD, "-n", "--pidfile=", "lambgw", "--home", home, "--account", ACCOUNT),
        *("--gateway.address", "127.0.0.1:{port}", "--admin-listen", ADMIN),
        *(f.replace("{home}", home) for f in flags),
    ]
    return _spawn(argv, home, "lambgw", "")


def send_signal(gateway: GatewayProcess, signum: signal.Signals) -> None:
    """Send a signal to a gateway process."""
    gateway._process.send_signal(signum)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


class ConfiguredCase(GatewayCase):
    """A case whose tests share a lambgw started with the class's ``CONFIG`` and ``FLAGS``."""

    CONFIG: ClassVar[str] = ""
    FLAGS: ClassVar[Sequence[str]] = ()
    home: ClassVar[str]
    #: A second free port, for tests that listen on a second endpoint (``{port2}``).
    port2: ClassVar[int]

    @classmethod
    def prepare(cls, home: str) -> None:
        """Make what the flags name (certificates, ...) before the gateway starts."""

    @classmethod
    def setUpClass(cls) -> None:
        """Start the gateway in a fresh temporary directory."""
        cls.root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        cls.scratch = os.path.join(cls.root, "scratch")
        os.makedirs(cls.scratch)
        cls.home = os.path.join(cls.root, "home")
        os.makedirs(cls.home)
        cls.port2 = free_port()
        try:
            cls.prepare(cls.home)
            flags = [f.replace("{port2}", str(cls.port2)) for f in cls.FLAGS]
            cls.gateway = spawn_lambgw(cls.home, cls.CONFIG, flags)
        except BaseException:
            shutil.rmtree(cls.root, ignore_errors=True)
            raise
