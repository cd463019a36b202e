"""Tests for ``[broker] timeout`` and ``--broker.timeout``: the network's silence timeout."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from lambgw.config import ConfigError
from lambgw.network.http import SILENCE_TIMEOUT
from lambgw.options import GatewayOptions
from tests.test_config import ConfigCase


class NetworkTimeoutTests(ConfigCase):
    """The silence timeout comes from the file or the flag, within 1 to 3600 seconds."""

    def test_default(self) -> None:
        """Without the key or the flag the timeout is the network client's default."""
        self.assertEqual(self.load().network_timeout, SILENCE_TIMEOUT)

    def test_from_file(self) -> None:
        """An integer in the file is the timeout in seconds."""
        self.write("[broker]\ntimeout = 5\n")
        self.assertEqual(self.load().network_timeout, 5.0)

    def test_fraction_from_file(self) -> None:
        """A float in the file is accepted."""
        self.write("[broker]\ntimeout = 2.5\n")
        self.assertEqual(self.load().network_timeout, 2.5)

    def test_flag_wins(self) -> None:
        """--broker.timeout overrides the file."""
        self.write("[broker]\ntimeout = 5\n")
        self.assertEqual(self.load(broker__timeout="2").network_timeout, 2.0)

    def test_too_small(self) -> None:
        """A timeout below one second is refused at its line, with the range."""
        message = self.error("[broker]\n\ntimeout = 0.5\n")
        self.assertIn("line 3: [broker] timeout: expected seconds from 1 to 3600, got 0.5", message)

    def test_too_large(self) -> None:
        """A timeout above an hour is refused."""
        message = self.error("[broker]\ntimeout = 3601\n")
        self.assertIn("[broker] timeout: expected seconds from 1 to 3600, got 3601", message)

    def test_not_a_number(self) -> None:
        """A string in the file is refused, naming its type."""
        message = self.error('[broker]\ntimeout = "30"\n')
        self.assertIn("[broker] timeout: expected seconds from 1 to 3600, got str", message)

    def test_boolean(self) -> None:
        """A boolean is not a number of seconds."""
        message = self.error("[broker]\ntimeout = true\n")
        self.assertIn("got bool", message)

    def test_bad_flag(self) -> None:
        """A flag that is not a number names the flag."""
        error = self.assertRaises(ConfigError, self.load, broker__timeout="soon")
        self.assertEqual(
            str(error), "--broker.timeout: expected seconds from 1 to 3600, got 'soon'"
        )

    def test_flag_out_of_range(self) -> None:
        """A flag out of range names the flag and the range."""
        error = self.assertRaises(ConfigError, self.load, broker__timeout="0")
        self.assertEqual(str(error), "--broker.timeout: expected seconds from 1 to 3600, got 0")


class TimeoutOptionTests(SynchronousTestCase):
    """The twistd option reaches the configuration."""

    def test_option(self) -> None:
        """``--broker.timeout 2`` gives a configuration with a 2 s silence timeout."""
        options = GatewayOptions()
        options.parseOptions(["--home", self.mktemp(), "--account", "d", "--broker.timeout", "2"])
        self.assertEqual(options.config.network_timeout, 2.0)

    def test_option_out_of_range_exits(self) -> None:
        """An out-of-range ``--broker.timeout`` stops start-up with one line."""
        exit_ = self.assertRaises(
            SystemExit,
            GatewayOptions().parseOptions,
            ["--home", self.mktemp(), "--account", "d", "--broker.timeout", "9999"],
        )
        expected = "--broker.timeout: expected seconds from 1 to 3600, got 9999"
        self.assertIn(expected, str(exit_.code))
