r"""Incremental decoding of ``Content-Encoding: aws-chunked`` request bodies.

The body is a series of chunks, ``<hex size>[;chunk-signature=<sig>]\r\n<data>\r\n``,
ended by a chunk of size zero, then optional trailer lines (``name:value\r\n``, the last
possibly ``x-amz-trailer-signature:<sig>``) and an empty line. The decoder takes the body
in pieces as they arrive and gives back the payload bytes as soon as they may be used:
at once for unsigned chunks, after the chunk's signature is checked for signed ones (so
it holds at most one chunk).
"""

from __future__ import annotations

import enum
import hashlib
import re
from typing import Final

from attrs import define, field

from lambgw.protocol.errors import S3Error
from lambgw.protocol.sigv4 import EMPTY_SHA256, ChunkSigner

#: The largest chunk the decoder accepts, by default.
DEFAULT_MAX_CHUNK: Final = 16 * 1024 * 1024
#: The longest chunk header line (size and signature); real ones are about 90 bytes.
MAX_LINE: Final = 1024
#: The largest trailer (all its lines together).
MAX_TRAILER: Final = 16 * 1024

TRAILER_SIGNATURE: Final = "x-amz-trailer-signature"

_SIZE: Final = re.compile(rb"[0-9a-fA-F]{1,16}")
_SIGNATURE_PREFIX: Final = b"chunk-signature="


class _State(enum.Enum):
    HEADER = "chunk header"
    DATA = "chunk data"
    DATA_END = "end of chunk data"
    TRAILER = "trailer"
    DONE = "end of body"


def _malformed(message: str) -> S3Error:
    return S3Error.of("InvalidArgument", f"Malformed aws-chunked body: {message}.")


@define
class AwsChunkedDecoder:
    """Decodes an aws-chunked body fed in arbitrary pieces.

    ``signer`` checks the chunk signatures (None for unsigned chunks); ``expect_trailer``
    allows trailer headers after the last chunk; ``decoded_length`` is the
    ``x-amz-decoded-content-length`` the payload must have, if the request gave one.
    """

    _signer: ChunkSigner | None = field(alias="signer")
    _expect_trailer: bool = field(alias="expect_trailer")
    _decoded_length: int | None = field(default=None, alias="decoded_length")
    _max_chunk: int = field(default=DEFAULT_MAX_CHUNK, alias="max_chunk")
    _state: _State = field(default=_State.HEADER, init=False)
    _pending: bytearray = field(factory=bytearray, init=False)
    _remaining: int = field(default=0, init=False)
    _chunk_signature: str = field(default="", init=False)
    _chunk_hash: hashlib._Hash | None = field(default=None, init=False)
    _held: list[memoryview] = field(factory=list, init=False)
    _total: int = field(default=0, init=False)
    _trailer_size: int = field(default=0, init=False)
    _trailers: dict[str, str] = field(factory=dict, init=False)
    _canonical_trailer: list[bytes] = field(factory=list, init=False)
    _trailer_signature: str | None = field(default=None, init=False)

    @property
    def decoded_total(self) -> int:
        """Return the number of payload bytes decoded so far."""
        return self._total

    def feed(self, data: bytes) -> list[memoryview]:
        """Decode the next piece of the body; return the payload pieces now usable, in order.

        The pieces are views of ``data``, which must not be changed afterwards.
        Raises :class:`S3Error` on malformed framing or a bad chunk signature.
        """
        view = memoryview(data)
        out: list[memoryview] = []
        pos = 0
        end = len(data)
        while pos < end:
            if self._state is _State.DATA:
                take = min(self._remaining, end - pos)
                piece = view[pos : pos + take]
                pos += take
                self._remaining -= take
                self._total += take
                if self._chunk_hash is None:
                    out.append(piece)
                else:
                    self._chunk_hash.update(piece)
                    self._held.append(piece)
                if self._remaining == 0:
                    self._end_chunk_data(out)
                continue
            if self._state is _State.DONE:
                raise _malformed("data after the end of the body")
            line, pos = self._take_line(data, pos, end)
            if line is not None:
                self._on_line(line)
        return out

    def finish(self) -> dict[str, str]:
        """End the body; return its trailer headers (lower-case names, signature excluded).

        Raises ``IncompleteBody`` if the body ended early or its length differs from
        ``decoded_length``, ``SignatureDoesNotMatch`` if a signed trailer was not signed.
        """
        if self._state is not _State.DONE:
            raise S3Error.of(
                "IncompleteBody",
                f"The request body ended in the {self._state.value} of an aws-chunked body.",
            )
        if self._decoded_length is not None and self._total != self._decoded_length:
            raise _length_mismatch()
        return dict(self._trailers)

    def _take_line(self, data: bytes, pos: int, end: int) -> tuple[bytes | None, int]:
        """Return the next line (without its CR LF) and the position after it, if complete."""
        limit = MAX_LINE if self._state is not _State.TRAILER else MAX_TRAILER
        newline = data.find(b"\n", pos, min(end, pos + limit + 2))
        if newline < 0:
            self._pending += data[pos : min(end, pos + limit + 2)]
            if len(self._pending) > limit + 1:
                raise _malformed(f"{self._state.value} line too long")
            return None, end
        line = bytes(self._pending) + data[pos:newline] if self._pending else data[pos:newline]
        self._pending.clear()
        if len(line) > limit + 1:
            raise _malformed(f"{self._state.value} line too long")
        if not line.endswith(b"\r"):
            raise _malformed(f"{self._state.value} line not ended by CR LF")
        return line[:-1], newline + 1

    def _on_line(self, line: bytes) -> None:
        if self._state is _State.HEADER:
            self._on_chunk_header(line)
        elif self._state is _State.DATA_END:
            if line:
                raise _malformed("chunk data longer than its size")
            self._state = _State.HEADER
        else:
            self._on_trailer_line(line)

    def _on_chunk_header(self, line: bytes) -> None:
        size_text, _, extension = line.partition(b";")
        if not _SIZE.fullmatch(size_text):
            raise _malformed(f"invalid chunk size {size_text[:32]!r}")
        size = int(size_text, 16)
        if size > self._max_chunk:
            raise _malformed(f"chunk of {size} bytes is larger than {self._max_chunk}")
        if self._decoded_length is not None and self._total + size > self._decoded_length:
            raise _length_mismatch()
        if self._signer is not None:
            if not extension.startswith(_SIGNATURE_PREFIX):
                raise S3Error.of("SignatureDoesNotMatch", "A chunk of a signed body is unsigned.")
            self._chunk_signature = extension[len(_SIGNATURE_PREFIX) :].decode("ascii", "replace")
            self._chunk_hash = hashlib.sha256()
        if size == 0:
            if self._signer is not None:
                self._signer.verify_chunk(self._chunk_signature, EMPTY_SHA256)
            self._state = _State.TRAILER
            return
        self._remaining = size
        self._state = _State.DATA

    def _end_chunk_data(self, out: list[memoryview]) -> None:
        if self._signer is not None and self._chunk_hash is not None:
            self._signer.verify_chunk(self._chunk_signature, self._chunk_hash.hexdigest())
            out.extend(self._held)
            self._held.clear()
        self._state = _State.DATA_END

    def _on_trailer_line(self, line: bytes) -> None:
        if not line:
            self._end_trailer()
            return
        if not self._expect_trailer:
            raise _malformed("trailer headers where none were announced")
        self._trailer_size += len(line) + 2
        if self._trailer_size > MAX_TRAILER:
            raise _malformed("trailer too large")
        name_bytes, colon, value_bytes = line.partition(b":")
        try:
            name = name_bytes.decode("ascii").strip().lower()
            value = value_bytes.decode("ascii").strip()
        except UnicodeDecodeError as e:
            raise _malformed("trailer header not ASCII") from e
        if not colon or not name:
            raise _malformed("trailer header without a name")
        if name == TRAILER_SIGNATURE:
            self._trailer_signature = value
            return
        if self._trailer_signature is not None:
            raise _malformed("trailer header after the trailer signature")
        self._trailers[name] = value
        self._canonical_trailer.append(f"{name}:{value}\n".encode("ascii"))

    def _end_trailer(self) -> None:
        if self._signer is not None and self._expect_trailer:
            if self._trailer_signature is None:
                raise S3Error.of(
                    "SignatureDoesNotMatch", "The trailer of a signed body is unsigned."
                )
            self._signer.verify_trailer(self._trailer_signature, b"".join(self._canonical_trailer))
        self._state = _State.DONE


def _length_mismatch() -> S3Error:
    return S3Error.of(
        "IncompleteBody",
        "The decoded length of the body does not match x-amz-decoded-content-length.",
    )
