"""Sessions: requests authenticated by a key the gateway and a node share.

Checking an Ed25519 signature costs the node about as much as the rest of a small GET, so a
gateway signs one request per session, not one per request.  It opens a session with a
request signed by the account's key (:mod:`lambgw.network.signing`) that carries a fresh
X25519 public key; the node answers with a fresh key of its own and a session id.  Both
derive a 32-byte key with HKDF-SHA256 from the X25519 shared secret, bound to the account,
the session id and both public keys.  Each later request carries an HMAC-SHA256 of the same
string to sign under the scheme :data:`SESSION_SCHEME`, with the same date and body digest
rules; its nonce is its sequence number in the session (1, 2, 3...), which the node checks
against a sliding window (:class:`ReplayWindow`) as IPsec and DTLS do, so that refusing
replays costs memory per session, not per request.

Only the gateway and the node know the key: an eavesdropper sees two public keys, and an
active attacker who answers the opening in the node's place shares a key with the gateway,
not with the node, so it still cannot make a request the node accepts.  The node keeps its
sessions in memory (:class:`SessionTable`), bounded in number and in age, and forgets the
sessions of an account whose public key changes; a gateway whose session the node no longer
knows opens another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from attrs import define, field, frozen
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from lambgw.network import signing

#: Seconds a session lasts on the node after it is opened.
LIFETIME = 3600
#: Seconds before its end at which the gateway opens the next session.
RENEW_MARGIN = 60
#: The most sessions a node keeps; opening one more forgets the oldest.
MAX_SESSIONS = 16_384
#: The largest body of a request that opens a session.
MAX_OPEN_BODY = 1024
#: The length of a raw X25519 public key.
PUBLIC_KEY_SIZE = 32
#: Session ids: 32 lower-case hex digits.
SESSION_ID = re.compile(r"[0-9a-f]{32}")
#: The error code of a request in a session the node does not know (any more).
NO_SUCH_SESSION = "NoSuchSession"
#: The error code of a request whose sequence number is below its session's window.
STALE_SEQUENCE = "StaleSequence"
#: How many sequence numbers up to the highest it has accepted a session still accepts, once
#: each.  A session's requests reach the node out of order only as far as later ones overtake
#: them; a gateway process serves at most ``gateway.max_connections`` S3 requests at once
#: (1024 by default), each waiting for its node requests one at a time, so no more than that
#: many are in flight.  Four times that leaves room for a raised cap and for retries.  A
#: request overtaken by more (a cap far above the default, or none) is refused with
#: :data:`STALE_SEQUENCE` and sent once more with a fresh number: a round trip lost, not a
#: request.  The window is 4096 bits, 512 bytes, per session.
REPLAY_WINDOW = 4096
_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1
#: What the derived key is for: the first part of HKDF's ``info``.
_KDF_LABEL = b"LAMB1-SESSION"


def new_exchange() -> tuple[X25519PrivateKey, bytes]:
    """Return a fresh X25519 private key and its raw public key."""
    private = X25519PrivateKey.generate()
    return private, private.public_key().public_bytes_raw()


def derive(
    private: X25519PrivateKey,
    peer_public: bytes,
    account: str,
    session_id: str,
    client_public: bytes,
    node_public: bytes,
) -> bytes:
    """Return the session's MAC key; raise ``ValueError`` for an unusable peer key."""
    if len(peer_public) != PUBLIC_KEY_SIZE:
        raise ValueError("an X25519 public key is 32 bytes")
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    names = [_KDF_LABEL, account.encode("ascii"), session_id.encode("ascii")]
    info = b"\n".join([*names, client_public, node_public])
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def mac(key: bytes, request: signing.RequestToSign) -> bytes:
    """Return the HMAC-SHA256 of ``request``'s string to sign under the session scheme."""
    data = signing.string_to_sign(request, signing.SESSION_SCHEME)
    return hmac.new(key, data, hashlib.sha256).digest()


def sequence_nonce(sequence: int) -> str:
    """Return the nonce of the request numbered ``sequence`` in its session: 32 hex digits."""
    return f"{sequence:032x}"


def mac_headers(
    session_id: str,
    key: bytes,
    sequence: int,
    method: str,
    path: str,
    query: str,
    content_sha256: str,
    date: int,
) -> dict[str, str]:
    """Return the headers that authenticate request number ``sequence`` of ``session_id``."""
    nonce = sequence_nonce(sequence)
    request = signing.RequestToSign(method, path, query, date, nonce, content_sha256)
    tag = base64.b64encode(mac(key, request)).decode("ascii")
    return signing.headers_of(
        request, f"{signing.SESSION_SCHEME} session={session_id},signature={tag}"
    )


def verify_mac(key: bytes, signed: signing.Signed, now: float) -> None:
    """Check the date and the MAC of a session request; raise ``SignatureError`` if wrong."""
    signing.check_date(signed, now)
    if not hmac.compare_digest(mac(key, signed.request), signed.signature):
        raise signing.SignatureError("the request's MAC does not match its session's key")


class StaleSequence(Exception):
    """A request's sequence number is too far below its session's highest to be checked."""


@define
class ReplayWindow:
    """The sequence numbers a session has accepted, as a sliding anti-replay window.

    As in IPsec (RFC 4303, section 3.4.3): ``_highest`` is the highest number accepted, and
    bit ``i`` of ``_seen`` is set once ``_highest - i`` was.  A number above ``_highest``
    slides the window up, however far (the MAC proves the gateway sent it); one of the
    :data:`REPLAY_WINDOW` numbers up to ``_highest`` is accepted once; one below those is
    refused as stale, since whether it was seen is forgotten.  The bits are one int of at
    most :data:`REPLAY_WINDOW` bits, so a check is a few operations on it whatever the
    number of requests.
    """

    _highest: int = 0
    _seen: int = 0

    def check(self, sequence: int) -> None:
        """Accept ``sequence`` once; raise ``SignatureError`` (replay) or ``StaleSequence``."""
        if sequence < 1:
            raise signing.SignatureError("sequence numbers start at 1")
        ahead = sequence - self._highest
        if ahead > 0:
            # A jump past the whole window keeps none of the old bits (nor shifts by it).
            self._seen = (self._seen << ahead | 1) & _WINDOW_MASK if ahead < REPLAY_WINDOW else 1
            self._highest = sequence
            return
        if -ahead >= REPLAY_WINDOW:
            raise StaleSequence(
                f"sequence number {sequence} is {REPLAY_WINDOW} or more below the session's "
                f"highest, {self._highest}: send the request again with a new one"
            )
        bit = 1 << -ahead
        if self._seen & bit:
            raise signing.SignatureError(
                "the request was replayed (its sequence number was already used)"
            )
        self._seen |= bit


@frozen
class NodeSession:
    """A session as the node keeps it."""

    account: str
    key: bytes
    #: The account's public key that signed the opening: the session ends when it changes.
    owner: object
    expires: float
    #: The sequence numbers of the session's requests accepted so far: state, not part of
    #: the session's value, so left out of its equality and hash.
    window: ReplayWindow = field(factory=ReplayWindow, eq=False)


class SessionTable:
    """The sessions a node knows, by id: at most ``capacity``, each for ``lifetime`` seconds.

    Sessions are kept in the order they were opened, which is also the order they expire,
    so opening one drops the expired ones from the front, and the oldest when full.
    """

    def __init__(self, capacity: int = MAX_SESSIONS, lifetime: int = LIFETIME) -> None:
        """Keep up to ``capacity`` sessions of ``lifetime`` seconds."""
        self.capacity = capacity
        self.lifetime = lifetime
        self._sessions: OrderedDict[str, NodeSession] = OrderedDict()

    def __len__(self) -> int:
        """How many sessions are kept (some may have expired)."""
        return len(self._sessions)

    def open(
        self, account: str, owner: object, client_public: bytes, now: float
    ) -> tuple[str, bytes]:
        """Open a session for ``account``; return its id and the node's public key.

        Raise ``ValueError`` if ``client_public`` is not a usable X25519 key.
        """
        private, node_public = new_exchange()
        session_id = secrets.token_hex(16)
        key = derive(private, client_public, account, session_id, client_public, node_public)
        sessions = self._sessions
        while sessions and (
            len(sessions) >= self.capacity or next(iter(sessions.values())).expires <= now
        ):
            sessions.popitem(last=False)
        sessions[session_id] = NodeSession(account, key, owner, now + self.lifetime)
        return session_id, node_public

    def get(self, session_id: str, now: float) -> NodeSession | None:
        """Return the session ``session_id`` if it is kept and has not expired."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires <= now:
            del self._sessions[session_id]
            return None
        return session

    def forget(self, session_id: str) -> None:
        """Drop the session ``session_id``, if kept."""
        self._sessions.pop(session_id, None)


@define
class ClientSession:
    """A session as the gateway keeps it: its id, its key, when to renew it, its count."""

    session_id: str
    key: bytes
    #: The gateway's clock time after which it opens another session.
    renew_at: float
    #: How many of the gateway's requests were numbered in the session.
    _numbered: int = 0

    def next_sequence(self) -> int:
        """Return the sequence number of the next request sent in the session."""
        self._numbered += 1
        return self._numbered


class SessionKeeper:
    """The gateway's session with a node: opened when first needed and when old, once at a time.

    ``opener`` opens a session on the node.  Requests that need a session while one is being
    opened wait for it, and share its failure if it fails.
    """

    def __init__(self, clock: IReactorTime, opener: Callable[[], Awaitable[ClientSession]]) -> None:
        """Open sessions with ``opener``; ``clock`` tells when one is due for renewal."""
        self._clock = clock
        self._opener = opener
        self._session: ClientSession | None = None
        self._waiting: list[Deferred[ClientSession]] | None = None

    async def current(self) -> ClientSession:
        """Return the session to use now, opening one if there is none or it is old."""
        session = self._session
        if session is not None and self._clock.seconds() < session.renew_at:
            return session
        if self._waiting is not None:
            waiter: Deferred[ClientSession] = Deferred()
            self._waiting.append(waiter)
            return await waiter
        self._waiting = []
        try:
            session = await self._opener()
        except BaseException:
            failure = Failure()
            waiting, self._waiting = self._waiting, None
            for waiter in waiting:
                waiter.errback(failure)
            raise
        self._session = session
        waiting, self._waiting = self._waiting, None
        for waiter in waiting:
            waiter.callback(session)
        return session

    def forget(self, session: ClientSession) -> None:
        """Stop using ``session`` (the node no longer knows it): the next request opens one."""
        if self._session is session:
            self._session = None
