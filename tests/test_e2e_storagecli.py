"""The ``storagecli`` console script: the seed's command lines start the gateways and buy orders.

The script is written as pip writes console scripts, from the entry point ``setup.py``
declares, so the test runs what an installed ``storagecli`` runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from lambgw.tap import EXIT_CONFIG
from tests.gateway import (
    ACCOUNT,
    ADMIN_ANYWHERE,
    REPO,
    GatewayProcess,
    _environment,
    _spawn,
    start_lambgw,
    target_is_moto,
)

#: How a console script of pip's calls its entry point.
SCRIPT = """\
#!{python}
import re
import sys
from {module} import {function}
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit({function}())
"""


def write_console_script(directory: str) -> str:
    """Write the ``storagecli`` script of setup.py's entry point into ``directory``; its path."""
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        declared = re.search(r'"storagecli = ([\w.]+):(\w+)"', f.read())
    if declared is None:
        raise AssertionError("setup.py declares no storagecli console script")
    path = os.path.join(directory, "storagecli")
    with open(path, "w", encoding="utf-8") as f:
        f.write(SCRIPT.format(python=sys.executable, module=declared[1], function=declared[2]))
    os.chmod(path, 0o700)
    return path


class StoragecliTests(SynchronousTestCase):
    """``storagecli lambgw|s3gw run`` and ``storagecli order``, as the seed writes them."""

    def setUp(self) -> None:
        if target_is_moto():
            raise SkipTest("storagecli starts the gateway itself")
        self.root = tempfile.mkdtemp(prefix="lambgw-storagecli-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.root], check=False)
        self.home = os.path.join(self.root, "home")
        self.script = write_console_script(self.root)

    def storagecli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``storagecli ARGS`` to its end."""
        return subprocess.run(
            [self.script, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=_environment(),
            cwd=self.root,
        )

    def run_gateway(self, mode: str, *flags: str) -> GatewayProcess:
        """Start ``storagecli MODE run --account demo --home HOME FLAGS`` until it listens."""
        argv = [
            *(self.script, mode, "run", "--account", ACCOUNT, "--home", self.home),
            *("--gateway.address", "127.0.0.1:{port}", *ADMIN_ANYWHERE, *flags),
        ]
        os.makedirs(self.home, exist_ok=True)
        gateway = _spawn(argv, self.home, mode, "")
        self.addCleanup(gateway.stop)
        return gateway

    def stop(self, gateway: GatewayProcess) -> int:
        """Stop ``gateway`` with SIGTERM; its exit status."""
        gateway._process.send_signal(signal.SIGTERM)
        return gateway._process.wait(30)

    def test_help(self) -> None:
        """``run -h`` lists the flags under the storagecli command line."""
        for mode in ("lambgw", "s3gw"):
            done = self.storagecli(mode, "run", "-h")
            self.assertEqual(done.returncode, 0, done.stderr)
            self.assertIn(f"Usage: storagecli {mode} run", done.stdout)
            self.assertIn("--broker.extra_order_id", done.stdout)
            self.assertIn("foreground", done.stdout)

    def test_bad_command_lines(self) -> None:
        """An unknown flag or command exits with status 2 and says why on stderr."""
        done = self.storagecli("lambgw", "run", "--no-such-flag")
        self.assertEqual(done.returncode, 2)
        self.assertIn("--no-such-flag", done.stderr)
        done = self.storagecli("s3gw", "start")
        self.assertEqual(done.returncode, 2)
        self.assertIn("Usage: storagecli", done.stderr)

    def test_lambgw_run(self) -> None:
        """``storagecli lambgw run`` serves boto3, logs to stdout and stops on SIGTERM."""
        gateway = self.run_gateway("lambgw")
        s3 = gateway.s3_client()
        (bucket,) = [b["Name"] for b in s3.list_buckets()["Buckets"]]
        s3.put_object(Bucket=bucket, Key="test/hello", Body=b"hello")
        self.assertEqual(s3.get_object(Bucket=bucket, Key="test/hello")["Body"].read(), b"hello")
        # twistd ends by the signal it was stopped with, as a service manager expects.
        self.assertIn(self.stop(gateway), (0, -signal.SIGTERM))
        self.assertIn("S3 API on tcp:", gateway.output())
        self.assertIn("Server Shut Down.", gateway.output())
        self.assertFalse(os.path.exists(os.path.join(self.home, "twistd.pid")))

    def test_orders_and_s3gw_run(self) -> None:
        """``storagecli order buy|list`` manage the orders that ``s3gw run`` serves."""
        start_lambgw(self.home).stop()  # the account and its first order
        bought = self.storagecli(
            *("order", "buy", "--account", ACCOUNT, "--home", self.home, "--capacity", "1GiB")
        )
        self.assertEqual(bought.returncode, 0, bought.stderr)
        listed = self.storagecli(
            "order", "list", "--account", ACCOUNT, "--home", self.home, "--json"
        )
        orders = [o["order_id"] for o in json.loads(listed.stdout)]
        self.assertEqual(len(orders), 2)
        gateway = self.run_gateway("s3gw", "--broker.extra_order_id", orders[1])
        s3 = gateway.s3_client()
        s3.create_bucket(Bucket="awstest")
        s3.put_object(Bucket="awstest", Key="your-file", Body=b"bytes")
        self.assertEqual([b["Name"] for b in s3.list_buckets()["Buckets"]], ["awstest"])
        self.assertEqual(s3.get_object(Bucket="awstest", Key="your-file")["Body"].read(), b"bytes")

    def test_start_failure_exit_status(self) -> None:
        """A gateway that cannot start (an order not the account's) exits as twistd would (78)."""
        start_lambgw(self.home).stop()
        started = time.monotonic()
        done = subprocess.run(
            [
                *(self.script, "s3gw", "run", "--account", ACCOUNT, "--home", self.home),
                *("--broker.extra_order_id", "0" * 40, "--gateway.address", "127.0.0.1:0"),
                *ADMIN_ANYWHERE,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=_environment(),
            cwd=self.root,
        )
        self.assertEqual(done.returncode, EXIT_CONFIG, done.stdout + done.stderr)
        self.assertIn("Cannot start", done.stdout)
        self.assertLess(time.monotonic() - started, 30)
