"""The digests a node computes over a streamed body when its client asks (``digests``).

A gateway that relays a body without reading it asks the node for the body's MD5 (the
object's S3 ETag) and the checksums its S3 client asked for.  :class:`BodyDigests` holds
them while the body arrives (:mod:`lambgw.lambnet.incoming` feeds them) and then completes
the object's description with them, checking them against the values the S3 client
declared, which the description ``expect``s.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

from attrs import evolve

from lambgw.lanes import Buffer
from lambgw.network import wire
from lambgw.network.errors import DigestMismatch
from lambgw.network.interface import NewObject
from lambgw.protocol.checksums import new_checksum

#: The name of the MD5 among the digests.
MD5 = "md5"


def _declared(name: str, value: str) -> bytes:
    """The raw bytes of an expected digest, given in base64."""
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise wire.ProtocolError(400, "BadRequest", f"the expected {name} is not base64") from None


class BodyDigests:
    """The MD5 and checksums asked of a body, computed as it arrives.

    Either :meth:`update` sees every piece of the body, in order, or :meth:`update_md5` (if
    the MD5 is asked) and :meth:`update_checksums` each do: they may run in different
    threads, each in one thread at a time.
    """

    def __init__(self, names: Sequence[str]) -> None:
        """Compute the digests ``names`` (as :func:`lambgw.network.wire.parse_digests` reads)."""
        self.md5 = hashlib.md5(usedforsecurity=False) if MD5 in names else None
        self.checksums = [new_checksum(name) for name in names if name != MD5]

    def update(self, data: Buffer) -> None:
        """Add ``data`` to every digest."""
        if self.md5 is not None:
            self.md5.update(data)
        self.update_checksums(data)

    def update_md5(self, data: Buffer) -> None:
        """Add ``data`` to the MD5."""
        assert self.md5 is not None
        self.md5.update(data)

    def update_checksums(self, data: Buffer) -> None:
        """Add ``data`` to the checksums."""
        for checksum in self.checksums:
            checksum.update(data)

    def describe(self, new: NewObject, expect: Mapping[str, str]) -> NewObject:
        """``new`` with the computed ETag and checksums, if they are the ``expect``ed ones.

        ``expect`` maps names of computed digests to their base64 values.  A description
        that gives an etag with the MD5 asked, or a checksum that was computed, is refused
        (400 ``BadRequest``), as is an expected digest that was not asked; a digest that is
        not the expected one raises :class:`DigestMismatch` with S3's message.
        """
        computed = {checksum.name: checksum for checksum in self.checksums}
        unknown = set(expect) - set(computed) - ({MD5} if self.md5 is not None else set())
        if unknown:
            raise wire.ProtocolError(
                400, "BadRequest", f"digests expected but not asked: {', '.join(sorted(unknown))}"
            )
        given = set(new.checksums) & set(computed)
        if given:
            raise wire.ProtocolError(
                400,
                "BadRequest",
                f"checksums both given and asked: {', '.join(sorted(given))}",
            )
        etag = new.etag
        if self.md5 is not None:
            if etag:
                raise wire.ProtocolError(
                    400, "BadRequest", "the etag of an object whose MD5 is asked must be empty"
                )
            digest = self.md5.digest()
            if MD5 in expect and not hmac.compare_digest(_declared(MD5, expect[MD5]), digest):
                raise DigestMismatch(
                    "The Content-MD5 you specified did not match what we received."
                )
            etag = digest.hex()
        for name, checksum in computed.items():
            if name in expect and not hmac.compare_digest(
                _declared(name, expect[name]), checksum.digest()
            ):
                raise DigestMismatch(
                    f"The {name.upper()} you specified did not match the calculated checksum."
                )
        checksums = {**new.checksums, **{name: c.b64() for name, c in computed.items()}}
        return evolve(new, etag=etag, checksums=checksums)
