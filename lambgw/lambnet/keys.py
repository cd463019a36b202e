"""Where account keys live: public keys in the node's store, private keys in the config home.

The node keeps ``DATA/keys/ACCOUNT.pub`` (PEM) for every account allowed to sign requests;
the gateway reads ``HOME/keys/ACCOUNT.key`` (PKCS#8 PEM, optionally encrypted) unless
``--broker.extra_key_file`` names another file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lambgw.network import signing


def public_key_path(data_dir: str, account: str) -> str:
    """The file of ``account``'s public key in the store ``data_dir``."""
    if not signing.valid_account(account):
        raise ValueError(f"not a valid account name: {account!r}")
    return os.path.join(data_dir, "keys", f"{account}.pub")


def private_key_path(home: str, account: str) -> str:
    """The default file of ``account``'s private key under the config home."""
    if not signing.valid_account(account):
        raise ValueError(f"not a valid account name: {account!r}")
    return os.path.join(os.path.expanduser(home), "keys", f"{account}.key")


def read_private_key(path: str, password: bytes | None = None) -> Ed25519PrivateKey:
    """Read the private key at ``path``; raise ``ValueError`` saying what is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read the account key {path}: {e.strerror}") from None
    try:
        return signing.load_private_key(data, password)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def ensure_key_pair(
    home: str, data_dir: str, account: str, password: bytes | None = None
) -> tuple[str, Ed25519PublicKey]:
    """Make ``account``'s key pair unless its private key exists; publish its public key.

    Returns the private key's file and the public key, which is (re)written to the store.
    """
    key_file = private_key_path(home, account)
    if os.path.exists(key_file):
        key = read_private_key(key_file, password)
    else:
        key = signing.generate_key()
        os.makedirs(os.path.dirname(key_file), mode=0o700, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(signing.private_key_pem(key, password))
    public = key.public_key()
    public_file = public_key_path(data_dir, account)
    os.makedirs(os.path.dirname(public_file), exist_ok=True)
    temporary = f"{public_file}.{os.getpid()}.tmp"
    with open(temporary, "wb") as f:
        f.write(signing.public_key_pem(public))
    os.replace(temporary, public_file)
    return key_file, public


#: Seconds during which a public key read from disk is used without looking at its file.
KEY_RECHECK = 1.0


class PublicKeys:
    """The public keys of a store's accounts, read from disk and cached by modification time.

    A key's file is looked at again at most every ``recheck`` seconds, so a replaced key is
    in use within that time, and a busy node does not stat the file for every request.
    """

    def __init__(
        self,
        data_dir: str,
        clock: Callable[[], float] = time.monotonic,
        recheck: float = KEY_RECHECK,
    ) -> None:
        """Read keys from ``data_dir/keys``; ``clock`` times the rechecks."""
        self._data_dir = data_dir
        self._clock = clock
        self._recheck = recheck
        #: account -> (when its file was last looked at, its mtime, its key).
        self._cache: dict[str, tuple[float, float, Ed25519PublicKey]] = {}

    def get(self, account: str) -> Ed25519PublicKey | None:
        """Return ``account``'s public key, or ``None`` if it has none (or it is unreadable)."""
        now = self._clock()
        cached = self._cache.get(account)
        if cached is not None and now - cached[0] < self._recheck:
            return cached[2]
        path = public_key_path(self._data_dir, account)
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            self._cache.pop(account, None)
            return None
        if cached is not None and cached[1] == mtime:
            self._cache[account] = (now, mtime, cached[2])
            return cached[2]
        try:
            with open(path, "rb") as f:
                key = signing.load_public_key(f.read())
        except (OSError, ValueError):
            return None
        self._cache[account] = (now, mtime, key)
        return key
