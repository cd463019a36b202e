"""Who may use the gateway: access keys, each with its secret and the account it reaches.

One gateway can serve several accounts: each access key belongs to one account and reaches
only that account's orders.  :class:`Users` is the key table (a value, replaced whole when the
configuration is reloaded); :class:`Accounts` holds what serves each account, made on first
use and found from the access key a request was signed with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Generic, TypeVar

from attrs import define, field, frozen

from lambgw.protocol.errors import S3Error

T = TypeVar("T")


@frozen
class User:
    """An access key, its secret key and the account it acts for."""

    access_key: str
    secret_key: str
    account: str


@frozen
class Users:
    """The access keys a gateway accepts, by access key."""

    by_key: Mapping[str, User]

    @classmethod
    def of(cls, users: Iterable[User]) -> Users:
        """The table of ``users``; ValueError if an access key is given twice."""
        by_key: dict[str, User] = {}
        for user in users:
            if user.access_key in by_key:
                raise ValueError(f"access key {user.access_key!r} is given twice")
            by_key[user.access_key] = user
        return cls(by_key)

    def secret(self, access_key: str) -> str | None:
        """The secret key of ``access_key``, or None if it is not a key of this gateway."""
        user = self.by_key.get(access_key)
        return user.secret_key if user is not None else None

    def account(self, access_key: str) -> str | None:
        """The account ``access_key`` acts for, or None if it is not a key of this gateway."""
        user = self.by_key.get(access_key)
        return user.account if user is not None else None

    @property
    def accounts(self) -> list[str]:
        """The accounts the keys act for, each once, in the order first given."""
        return list(dict.fromkeys(user.account for user in self.by_key.values()))


@define
class Accounts(Generic[T]):
    """What serves each account (``make(account)``, made once), found by access key."""

    make: Callable[[str], T]
    users: Users
    _made: dict[str, T] = field(factory=dict)

    def for_account(self, account: str) -> T:
        """What serves ``account``, made now if it was not yet."""
        if account not in self._made:
            self._made[account] = self.make(account)
        return self._made[account]

    def for_key(self, access_key: str) -> T:
        """What serves the account of ``access_key``; ``InvalidAccessKeyId`` if it has none."""
        account = self.users.account(access_key)
        if account is None:
            raise S3Error.of(
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            )
        return self.for_account(account)

    def secret(self, access_key: str) -> str | None:
        """The secret key of ``access_key`` in the current table."""
        return self.users.secret(access_key)

    def serving(self) -> list[T]:
        """Everything made so far, one per account."""
        return list(self._made.values())
