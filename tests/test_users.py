"""Tests of the key table (``lambgw.users``) and of the users, domains and CORS in the config."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from lambgw.config import DEFAULT_ACCESS_KEY, Config, ConfigError, load
from lambgw.options import load_for_mode
from lambgw.protocol.errors import S3Error
from lambgw.users import Accounts, User, Users

ALICE = User("alice-key", "alice-secret", "alice")
BOB = User("bob-key", "bob-secret", "bob")


class UsersTests(SynchronousTestCase):
    """The key table."""

    def test_lookups(self) -> None:
        """A key gives its secret and account; an unknown key gives None."""
        users = Users.of([ALICE, BOB])
        self.assertEqual(users.secret("bob-key"), "bob-secret")
        self.assertEqual(users.account("alice-key"), "alice")
        self.assertIsNone(users.secret("carol-key"))
        self.assertIsNone(users.account("carol-key"))

    def test_duplicate_key_refused(self) -> None:
        """An access key given twice is a ValueError."""
        self.assertRaises(ValueError, Users.of, [ALICE, User("alice-key", "x", "other")])

    def test_accounts_once_each(self) -> None:
        """Accounts are listed once each, in the order given."""
        users = Users.of([ALICE, BOB, User("alice-2", "s", "alice")])
        self.assertEqual(users.accounts, ["alice", "bob"])


class AccountsTests(SynchronousTestCase):
    """What serves each account, found by key."""

    def setUp(self) -> None:
        """A registry that records what it makes."""
        self.made: list[str] = []

        def make(account: str) -> str:
            self.made.append(account)
            return f"server of {account}"

        self.accounts = Accounts(make, Users.of([ALICE, BOB]))

    def test_made_once(self) -> None:
        """An account's server is made on first use, once."""
        self.assertEqual(self.accounts.for_key("alice-key"), "server of alice")
        self.assertEqual(self.accounts.for_account("alice"), "server of alice")
        self.assertEqual(self.made, ["alice"])
        self.assertEqual(self.accounts.serving(), ["server of alice"])

    def test_unknown_key(self) -> None:
        """A key not in the table is InvalidAccessKeyId."""
        with self.assertRaises(S3Error) as caught:
            self.accounts.for_key("carol-key")
        self.assertEqual(caught.exception.code, "InvalidAccessKeyId")

    def test_table_replaced(self) -> None:
        """A new table takes effect at once: a removed key no longer reaches its account."""
        self.accounts.users = Users.of([BOB])
        self.assertIsNone(self.accounts.secret("alice-key"))
        self.assertRaises(S3Error, self.accounts.for_key, "alice-key")


class ConfigUsersTests(SynchronousTestCase):
    """The ``[gateway]`` keys for users, domains and CORS."""

    def load(self, text: str, **options: object) -> Config:
        """Load ``text`` as the config file, with ``options`` as flags."""
        home = self.mktemp()
        os.makedirs(os.path.join(home, "config"))
        with open(os.path.join(home, "config", "user.toml"), "w", encoding="utf-8") as f:
            f.write(text)
        return load({"home": home, "account": "demo", **options})

    def test_users_with_gateway_keys(self) -> None:
        """The [gateway] pair acts for --account beside the listed users."""
        config = self.load(
            '[gateway]\naccess_key = "a"\nsecret_key = "s"\n'
            '[[gateway.users]]\naccess_key = "alice-key"\nsecret_key = "x"\naccount = "alice"\n'
        )
        self.assertEqual(config.users.account("a"), "demo")
        self.assertEqual(config.users.account("alice-key"), "alice")

    def test_users_alone_no_default_keys(self) -> None:
        """With users and no [gateway] pair, the default keys are not accepted."""
        config = self.load(
            '[[gateway.users]]\naccess_key = "alice-key"\nsecret_key = "x"\naccount = "alice"\n'
        )
        self.assertIsNone(config.users.secret(DEFAULT_ACCESS_KEY))
        self.assertFalse(config.default_keys)

    def test_user_missing_secret(self) -> None:
        """A user without a secret key is refused, naming the entry."""
        with self.assertRaises(ConfigError) as caught:
            self.load('[[gateway.users]]\naccess_key = "k"\naccount = "alice"\n')
        self.assertIn("[[gateway.users]] #1: secret_key", str(caught.exception))

    def test_duplicate_user_key(self) -> None:
        """A user with the [gateway] access key is refused."""
        with self.assertRaises(ConfigError):
            self.load(
                '[gateway]\naccess_key = "a"\nsecret_key = "s"\n'
                '[[gateway.users]]\naccess_key = "a"\nsecret_key = "x"\naccount = "alice"\n'
            )

    def test_domains_and_cors(self) -> None:
        """A domain may be one string; CORS origins and methods are read."""
        config = self.load(
            '[gateway]\ndomain = "s3.example.com"\ncors_origins = ["https://a.example"]\n'
            'cors_methods = ["get"]\n'
        )
        self.assertEqual(config.domains, ("s3.example.com",))
        cors = config.cors
        self.assertEqual((cors.origins, cors.methods), (("https://a.example",), ("GET",)))

    def test_domain_flag_wins(self) -> None:
        """--domain replaces the file's domains."""
        config = self.load('[gateway]\ndomain = ["a.example"]\n', domain=["b.example"])
        self.assertEqual(config.domains, ("b.example",))

    def test_cors_origins_not_strings(self) -> None:
        """cors_origins must be strings."""
        self.assertRaises(ConfigError, self.load, "[gateway]\ncors_origins = [1]\n")

    def test_tls_needs_both(self) -> None:
        """--tls-cert without --tls-key is refused."""
        self.assertRaises(ConfigError, self.load, "", **{"tls-cert": "c.pem"})

    def test_s3gw_single_account(self) -> None:
        """s3gw refuses users of another account: it serves one account's order."""
        home = self.mktemp()
        os.makedirs(os.path.join(home, "config"))
        with open(os.path.join(home, "config", "user.toml"), "w", encoding="utf-8") as f:
            f.write('[[gateway.users]]\naccess_key = "k"\nsecret_key = "s"\naccount = "alice"\n')
        options = {"home": home, "account": "demo", "broker.extra_order_id": "A" * 40}
        with self.assertRaises(ConfigError) as caught:
            load_for_mode(options, single_order=True)
        self.assertIn("alice", str(caught.exception))
