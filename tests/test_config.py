"""Tests for the configuration: user.toml, flags over it, and one-line errors."""

from __future__ import annotations

import os
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lambgw.config import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_SECRET_KEY,
    KNOWN_KEYS,
    Config,
    ConfigError,
    load,
    parse_address,
)
from lambgw.options import GatewayOptions, S3gwOptions

ORDER = "D9A585E80A92439D5DFFB384901F359A572F4E1F"
EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "etc", "user.toml.example")


class ConfigCase(SynchronousTestCase):
    """Helpers: a temporary config home and a file in it."""

    def setUp(self) -> None:
        self.home = self.mktemp()
        os.makedirs(os.path.join(self.home, "config"))
        self.path = os.path.join(self.home, "config", "user.toml")

    def write(self, text: str) -> None:
        """Write ``text`` as the home's user.toml."""
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)

    def load(self, **flags: Any) -> Config:
        """Load the home's config with ``flags`` (dots spelled as double underscores)."""
        options: dict[str, Any] = {"home": self.home, "account": "demo"}
        options.update({k.replace("__", "."): v for k, v in flags.items()})
        return load(options)

    def error(self, text: str, **flags: Any) -> str:
        """The one line a broken ``text`` earns."""
        self.write(text)
        message = str(self.assertRaises(ConfigError, self.load, **flags))
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith(self.path + ": "), message)
        return message


class DefaultsTests(ConfigCase):
    """A missing file gives the documented defaults."""

    def test_missing_file_defaults(self) -> None:
        """With no file the gateway listens on 127.0.0.1:9002 with the default keys."""
        config = self.load()
        self.assertEqual((config.host, config.port), ("127.0.0.1", 9002))
        self.assertEqual(config.address, "127.0.0.1:9002")
        self.assertEqual(
            (config.access_key, config.secret_key), (DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY)
        )
        self.assertTrue(config.default_keys)

    def test_missing_file_embedded(self) -> None:
        """With no file the embedded network is used, under the home."""
        config = self.load()
        self.assertTrue(config.embedded)
        self.assertEqual(config.network_dir, os.path.join(self.home, "network"))
        self.assertEqual(config.db_path, os.path.join(self.home, "gateway"))
        self.assertEqual(config.extra_order_id, "")
        self.assertFalse(config.debug)

    def test_config_file_path(self) -> None:
        """The file is HOME/config/user.toml."""
        self.assertEqual(self.load().config_file, self.path)

    def test_account_required(self) -> None:
        """Without --account start-up stops with a line naming the flag."""
        error = self.assertRaises(ConfigError, load, {"home": self.home})
        self.assertIn("--account", str(error))

    def test_example_parses(self) -> None:
        """etc/user.toml.example loads, and its values are the defaults."""
        example = load({"home": self.home, "config": EXAMPLE, "account": "demo"})
        defaults = self.load()
        self.assertEqual(example.address, defaults.address)
        self.assertEqual(example.default_keys, defaults.default_keys)
        self.assertEqual(example.db_path, defaults.db_path)
        self.assertEqual(example.extra_order_id, "")
        self.assertTrue(example.embedded)

    def test_example_documents_every_key(self) -> None:
        """etc/user.toml.example mentions every key the gateway reads."""
        with open(EXAMPLE, encoding="utf-8") as f:
            text = f.read()
        for section, keys in KNOWN_KEYS.items():
            self.assertIn(f"[{section}]", text)
            for key in keys:
                self.assertRegex(text, rf"(?m)^#? ?{key} = ")


class FileTests(ConfigCase):
    """Values come from the file, and flags win over it."""

    FULL = f"""
[gateway]
address = "192.0.2.1:9100"
access_key = "AK"
secret_key = "SK"

[broker]
validator_addr = "10.0.0.1:13659"
dht_gateway_addr = "10.0.0.2:13000"
extra_order_id = "{ORDER.lower()}"
db_path = "/srv/lambgw"

[other]
anything = 1
"""

    def test_values_from_file(self) -> None:
        """Every key of the file reaches the config."""
        self.write(self.FULL)
        config = self.load()
        self.assertEqual((config.host, config.port), ("192.0.2.1", 9100))
        self.assertEqual((config.access_key, config.secret_key), ("AK", "SK"))
        self.assertFalse(config.default_keys)
        self.assertEqual(config.validator_addr, "10.0.0.1:13659")
        self.assertEqual(config.dht_gateway_addr, "10.0.0.2:13000")
        self.assertFalse(config.embedded)
        self.assertEqual(config.db_path, "/srv/lambgw")

    def test_order_id_upper_case(self) -> None:
        """An order id written in lower case is kept in upper case."""
        self.write(self.FULL)
        self.assertEqual(self.load().extra_order_id, ORDER)

    def test_flags_override_file(self) -> None:
        """Each flag wins over the file's key of the same name."""
        self.write(self.FULL)
        config = self.load(
            gateway__address="127.0.0.2:9200",
            gateway__access_key="AK2",
            gateway__secret_key="SK2",
            broker__extra_order_id="A" * 40,
            broker__db_path="/var/lambgw",
            broker__validator_addr="",
            broker__dht_gateway_addr="",
            debug=True,
        )
        self.assertEqual(config.address, "127.0.0.2:9200")
        self.assertEqual((config.access_key, config.secret_key), ("AK2", "SK2"))
        self.assertEqual(config.extra_order_id, "A" * 40)
        self.assertEqual(config.db_path, "/var/lambgw")
        self.assertTrue(config.embedded)
        self.assertTrue(config.debug)

    def test_flag_over_bad_file_value(self) -> None:
        """A flag replaces a file value that would be refused."""
        self.write('[gateway]\naddress = "nonsense"\n')
        self.assertEqual(self.load(gateway__address="[::1]:9003").host, "::1")

    def test_config_flag(self) -> None:
        """--config reads another file, whatever the home."""
        other = self.mktemp() + ".toml"
        with open(other, "w") as f:
            f.write('[gateway]\naddress = "127.0.0.1:9300"\n')
        config = self.load(config=other)
        self.assertEqual((config.port, config.config_file), (9300, other))
        self.assertEqual(config.db_path, os.path.join(self.home, "gateway"))

    def test_other_sections_ignored(self) -> None:
        """Sections the gateway does not read are left to the storage CLI."""
        self.write('[cli]\nwhatever = true\n[gateway]\naddress = "127.0.0.1:9001"\n')
        self.assertEqual(self.load().port, 9001)

    def test_all_interfaces(self) -> None:
        """':PORT' listens on every interface."""
        self.write('[gateway]\naddress = ":9002"\n')
        self.assertEqual(self.load().host, "0.0.0.0")  # noqa: S104


class ErrorTests(ConfigCase):
    """Every kind of bad input gives one line: file, key, line, what is wrong."""

    def test_toml_syntax(self) -> None:
        """A TOML syntax error names the file and the line."""
        message = self.error('[gateway]\naddress = "127.0.0.1:9002\n')
        self.assertIn("line 2", message)

    def test_not_utf8(self) -> None:
        """A file that is not UTF-8 is refused in one line."""
        with open(self.path, "wb") as f:
            f.write(b'[gateway]\naddress = "\xff"\n')
        message = str(self.assertRaises(ConfigError, self.load))
        self.assertIn("UTF-8", message)
        self.assertNotIn("\n", message)

    def test_wrong_type(self) -> None:
        """A number where a string belongs names the key, its line and the types."""
        message = self.error("[gateway]\n\naddress = 9002\n")
        self.assertIn("line 3: [gateway] address: expected a string, got int", message)

    def test_wrong_type_broker(self) -> None:
        """A boolean db_path is refused at its line."""
        message = self.error("[broker]\ndb_path = true\n")
        self.assertIn("line 2: [broker] db_path: expected a string, got bool", message)

    def test_unknown_key(self) -> None:
        """A misspelt key is refused, naming its line and the known keys."""
        message = self.error('[broker]\nvalidator_addr = ""\nextra_orderid = "x"\n')
        self.assertIn("line 3: [broker] extra_orderid: unknown key", message)
        self.assertIn("extra_order_id", message)

    def test_section_not_table(self) -> None:
        """A key named like a section is refused at its line."""
        message = self.error('gateway = "127.0.0.1:9002"\n')
        self.assertIn("line 1: gateway: expected a [gateway] table", message)

    def test_bad_address(self) -> None:
        """An address without a port is refused at its line."""
        message = self.error('[gateway]\naddress = "localhost"\n')
        self.assertIn("line 2: [gateway] address: expected HOST:PORT", message)

    def test_port_out_of_range(self) -> None:
        """A port above 65535 is refused at its line."""
        message = self.error('[gateway]\naddress = "127.0.0.1:70000"\n')
        self.assertIn("line 2: [gateway] address: port 70000 is out of range", message)

    def test_bare_ipv6(self) -> None:
        """An IPv6 host without brackets is refused."""
        message = self.error('[gateway]\naddress = "::1"\n')
        self.assertIn("line 2: [gateway] address: an IPv6 host goes in brackets", message)

    def test_access_key_alone(self) -> None:
        """An access_key without secret_key is refused at the access_key's line."""
        message = self.error('[gateway]\naddress = ":9002"\naccess_key = "AK"\n')
        self.assertIn("line 3: [gateway] access_key: ", message)
        self.assertIn("must be set together", message)

    def test_secret_key_alone(self) -> None:
        """A secret_key without access_key is refused at the secret_key's line."""
        message = self.error('[gateway]\nsecret_key = "SK"\n')
        self.assertIn("line 2: [gateway] secret_key: ", message)
        self.assertIn("must be set together", message)

    def test_empty_keys(self) -> None:
        """Empty access and secret keys are refused."""
        message = self.error('[gateway]\naccess_key = ""\nsecret_key = ""\n')
        self.assertIn("[gateway] secret_key: access_key and secret_key must not be empty", message)

    def test_bad_order_id(self) -> None:
        """An order id that is not 40 hex digits is refused at its line."""
        message = self.error('[broker]\n\n\nextra_order_id = "' + "G" * 40 + '"\n')
        self.assertIn("line 4: [broker] extra_order_id: expected an order id", message)

    def test_bad_flag_names_flag(self) -> None:
        """A bad value given as a flag names the flag."""
        error = self.assertRaises(ConfigError, self.load, gateway__address="nope")
        self.assertTrue(str(error).startswith("--gateway.address: "), str(error))


class AddressTests(SynchronousTestCase):
    """parse_address splits HOST:PORT."""

    def test_bracketed_ipv6(self) -> None:
        """[::1]:9002 is host ::1."""
        self.assertEqual(parse_address("[::1]:9002"), ("::1", 9002))

    def test_negative_port(self) -> None:
        """A negative port is not a port."""
        self.assertRaises(ValueError, parse_address, "127.0.0.1:-1")

    @given(
        host=st.from_regex(r"[a-z0-9][a-z0-9.\-]{0,20}", fullmatch=True),
        port=st.integers(0, 65535),
    )
    def test_round_trip(self, host: str, port: int) -> None:
        """Any host name and valid port come back as written."""
        self.assertEqual(parse_address(f"{host}:{port}"), (host, port))


class OptionsTests(ConfigCase):
    """The twistd options stop start-up with one line on a bad config."""

    def test_bad_file_exits(self) -> None:
        """ParseOptions with a broken file raises SystemExit with the one line."""
        self.write('[gateway]\naddress = "127.0.0.1:99999"\n')
        exit_ = self.assertRaises(
            SystemExit, GatewayOptions().parseOptions, ["--home", self.home, "--account", "d"]
        )
        message = str(exit_.code)
        self.assertNotIn("\n", message)
        self.assertRegex(
            message, re.escape(self.path) + r": line 2: \[gateway\] address: port 99999"
        )

    def test_good_file_parses(self) -> None:
        """ParseOptions merges the file and the flags into ``config``."""
        self.write('[gateway]\naddress = "127.0.0.1:9400"\n')
        options = GatewayOptions()
        options.parseOptions(
            ["--home", self.home, "--account", "d", "--broker.extra_order_id", ORDER, "--debug"]
        )
        self.assertEqual(options.config.port, 9400)
        self.assertEqual(options.config.extra_order_id, ORDER)
        self.assertTrue(options.config.debug)

    def test_s3gw_needs_order(self) -> None:
        """s3gw without an order stops with a line naming the flag and the file."""
        exit_ = self.assertRaises(
            SystemExit, S3gwOptions().parseOptions, ["--home", self.home, "--account", "d"]
        )
        self.assertIn("--broker.extra_order_id", str(exit_.code))
        self.assertIn(self.path, str(exit_.code))
