"""Tests for the admin command: accounts and orders through ``main``."""

from __future__ import annotations

import io
import json
import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from lambgw.admin import format_size, main, parse_size


class SizeTests(SynchronousTestCase):
    def test_units(self) -> None:
        """Binary units are powers of 1024, decimal ones powers of 1000."""
        self.assertEqual(parse_size("10GiB"), 10 * 1024**3)
        self.assertEqual(parse_size("10 gb"), 10 * 1000**3)
        self.assertEqual(parse_size("1.5KiB"), 1536)
        self.assertEqual(parse_size("512"), 512)
        self.assertEqual(parse_size("2TB"), 2 * 10**12)

    def test_refused(self) -> None:
        """Unknown units, garbage and zero are refused."""
        for text in ["10XB", "GiB", "", "-1", "0", "1e3"]:
            self.assertRaises(ValueError, parse_size, text)

    def test_format(self) -> None:
        """Sizes print in binary units with one decimal."""
        self.assertEqual(
            [format_size(n) for n in (0, 1023, 1024, 10 * 1024**3, 3 * 1024**5)],
            ["0 B", "1023 B", "1.0 KiB", "10.0 GiB", "3072.0 TiB"],
        )


class CommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.home = self.mktemp()
        os.makedirs(self.home)

    def run_main(self, *argv: str) -> tuple[int, str, str]:
        """Run the command with ``--home``; return its status, stdout and stderr."""
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        status = main([*argv, "--home", self.home])
        return status, out.getvalue(), err.getvalue()

    def test_buy_and_list(self) -> None:
        """Bought orders are listed with their capacity, usage, expiry and status."""
        self.assertEqual(self.run_main("account", "create", "--account", "demo")[0], 0)
        status, out, _ = self.run_main(
            "order", "buy", "--account", "demo", "--capacity", "10GiB", "--days", "30"
        )
        self.assertEqual(status, 0)
        order_id = out.splitlines()[1].split()[0]
        status, out, _ = self.run_main("order", "list", "--account", "demo")
        header, row = out.splitlines()
        self.assertEqual(header.split(), ["ORDER", "ID", "CAPACITY", "USED", "EXPIRES", "STATUS"])
        self.assertEqual(row.split()[0], order_id)
        self.assertIn("10.0 GiB", row)
        self.assertEqual(row.split()[-1], "active")
        self.assertTrue(os.path.exists(os.path.join(self.home, "network", "index.sqlite3")))

    def test_list_json(self) -> None:
        """``--json`` prints the orders for scripts, sizes in bytes."""
        self.run_main("account", "create", "--account", "demo")
        self.run_main("order", "buy", "--account", "demo", "--capacity", "1MB", "--days", "1")
        status, out, _ = self.run_main("order", "list", "--account", "demo", "--json")
        [order] = json.loads(out)
        self.assertEqual(status, 0)
        self.assertEqual(
            sorted(order), ["capacity", "created", "expires", "order_id", "status", "used"]
        )
        self.assertEqual((order["capacity"], order["used"]), (10**6, 0))
        self.assertEqual(len(order["order_id"]), 40)
        self.assertTrue(order["expires"].endswith("Z"))

    def test_data_option(self) -> None:
        """``--data`` puts the network somewhere else than under the home."""
        data = os.path.join(self.home, "elsewhere")
        self.run_main("account", "create", "--account", "demo", "--data", data)
        self.assertTrue(os.path.exists(os.path.join(data, "index.sqlite3")))
        self.assertFalse(os.path.exists(os.path.join(self.home, "network")))

    def test_unknown_account(self) -> None:
        """Listing an unknown account fails with one line on stderr and status 1."""
        self.run_main("account", "create", "--account", "demo")
        status, out, err = self.run_main("order", "list", "--account", "nobody")
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(len(err.splitlines()), 1)
        self.assertIn("nobody", err)

    def test_no_store_made_by_a_read(self) -> None:
        """In a home without a store, every command but account create fails and makes none."""
        for argv in (
            ("order", "list", "--account", "demo"),
            ("order", "buy", "--account", "demo", "--capacity", "1MB"),
            ("account", "key", "--account", "demo"),
            ("store", "sweep"),
        ):
            status, out, err = self.run_main(*argv)
            self.assertEqual((status, out), (1, ""), argv)
            self.assertIn("no network data in", err)
            self.assertIn("--home", err)
        self.assertEqual(os.listdir(self.home), [])

    def test_account_exists(self) -> None:
        """Creating an account twice fails with status 1."""
        self.run_main("account", "create", "--account", "demo")
        status, _, err = self.run_main("account", "create", "--account", "demo")
        self.assertEqual(status, 1)
        self.assertIn("already exists", err)

    def test_bad_capacity(self) -> None:
        """A capacity that is not a size is a usage error, status 2."""
        status, _, err = self.run_main("order", "buy", "--account", "demo", "--capacity", "lots")
        self.assertEqual(status, 2)
        self.assertIn("not a size", err)
