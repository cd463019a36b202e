"""The ``multipart/form-data`` body of a browser upload (S3's POST Object), read as it streams.

S3 takes the form's fields up to the ``file`` field and the file's bytes; anything after the
file is ignored.  :class:`FormHead` reads the fields before the file, in memory and bounded;
:class:`FilePartDecoder` then cuts the file's bytes from the rest of the stream, without
holding more than a delimiter's length of it.  The decoder has the shape of the
``aws-chunked`` decoder, so the spool runs it like one.
"""

from __future__ import annotations

import re

from lambgw.protocol.errors import S3Error

#: The most bytes of the form before the file's bytes (fields and part headers), as in S3.
MAX_PRE_DATA = 20 * 1024
#: The most fields before the file.
MAX_FIELDS = 100
#: The longest boundary RFC 2046 allows.
MAX_BOUNDARY = 70

_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')


def malformed() -> S3Error:
    """The error of a body that is not well-formed ``multipart/form-data``."""
    return S3Error.of(
        "MalformedPOSTRequest",
        "The body of your POST request is not well-formed multipart/form-data.",
    )


def form_boundary(content_type: str | None) -> bytes | None:
    """The boundary of a ``multipart/form-data`` content type; ``None`` if it is not one."""
    if content_type is None:
        return None
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    for match in _PARAM.finditer(";" + params):
        if match[1].lower() == "boundary":
            value = match[2] if match[2] is not None else match[3].strip()
            if 0 < len(value) <= MAX_BOUNDARY and value.isascii():
                return value.encode("ascii")
            raise malformed()
    raise malformed()


def _disposition(value: str) -> dict[str, str]:
    kind, _, rest = value.partition(";")
    if kind.strip().lower() != "form-data":
        raise malformed()
    params: dict[str, str] = {}
    for match in _PARAM.finditer(";" + rest):
        raw = match[2] if match[2] is not None else match[3].strip()
        params.setdefault(match[1].lower(), re.sub(r"\\(.)", r"\1", raw))
    return params


class FormHead:
    """Reads the fields of a form up to its ``file`` field; fed the body piece by piece.

    :meth:`feed` returns ``None`` while the fields are still coming, then the bytes that
    follow the file field's headers (the start of the file).  Field names are lower-cased.
    What comes before the file is at most :data:`MAX_PRE_DATA` bytes, so it is parsed again
    from the start as it grows.
    """

    def __init__(self, boundary: bytes) -> None:
        self._dash = b"--" + boundary
        self._delimiter = b"\r\n--" + boundary
        self._buffer = b""
        #: The fields before the file, by lower-case name (the first of a name counts).
        self.fields: dict[str, str] = {}
        #: The name the browser gave the file, and the content type of its part.
        self.filename = ""
        self.file_content_type = ""

    def feed(self, data: bytes) -> bytes | None:
        """Take more of the body; the start of the file's bytes once they are reached."""
        self._buffer += data
        rest = self._parse()
        if rest is None and len(self._buffer) > MAX_PRE_DATA:
            raise _too_large()
        return rest

    def _parse(self) -> bytes | None:
        buffer = self._buffer
        at = buffer.find(self._dash)
        if at < 0:
            return None
        position = at + len(self._dash)
        fields: dict[str, str] = {}
        while True:
            after = buffer[position : position + 2]
            if len(after) < 2:
                return None
            if after == b"--":
                raise S3Error.of(
                    "InvalidArgument", "POST requires exactly one file upload per request."
                )
            if after != b"\r\n":
                raise malformed()
            end = buffer.find(b"\r\n\r\n", position + 2)
            if end < 0:
                return None
            name, headers = _part_headers(buffer[position + 2 : end])
            start = end + 4
            if name == "file":
                if start > MAX_PRE_DATA:
                    raise _too_large()
                self.fields = fields
                self.filename = headers.get("filename", "")
                self.file_content_type = headers.get("content-type", "")
                self._buffer = b""
                return buffer[start:]
            value_end = buffer.find(self._delimiter, start)
            if value_end < 0:
                return None
            try:
                value = buffer[start:value_end].decode("utf-8")
            except UnicodeDecodeError:
                raise malformed() from None
            fields.setdefault(name, value)
            if len(fields) > MAX_FIELDS:
                raise _too_large()
            position = value_end + len(self._delimiter)


def _part_headers(block: bytes) -> tuple[str, dict[str, str]]:
    """The field name of a part, and its file name and content type if given."""
    try:
        lines = block.decode("utf-8").split("\r\n")
    except UnicodeDecodeError:
        raise malformed() from None
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise malformed()
        headers[name.strip().lower()] = value.strip()
    disposition = _disposition(headers.get("content-disposition", ""))
    if "name" not in disposition:
        raise malformed()
    found = {"content-type": headers.get("content-type", "")}
    if "filename" in disposition:
        found["filename"] = disposition["filename"]
    return disposition["name"].lower(), found


def _too_large() -> S3Error:
    return S3Error.of(
        "MaxPostPreDataLengthExceeded",
        "Your POST request fields preceding the upload file were too large.",
    )


class FilePartDecoder:
    """Cuts the file's bytes out of the rest of a form: everything before its delimiter.

    ``feed`` returns the file's bytes known so far; what follows the file is dropped.
    ``finish`` fails if the delimiter never came (the body was cut).
    """

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._tail = b""
        self._done = False

    def feed(self, data: bytes) -> list[memoryview]:
        """Return the next bytes of the file, holding back what may start the delimiter."""
        if self._done:
            return []
        tail, delimiter, keep = self._tail, self._delimiter, len(self._delimiter) - 1
        # A delimiter that starts in the held-back bytes ends within ``keep`` bytes of data.
        at = (tail + data[:keep]).find(delimiter)
        if at >= 0:
            self._done = True
            return [memoryview(tail)[:at]] if at else []
        at = data.find(delimiter)
        if at >= 0:
            self._done, self._tail = True, b""
            pieces = [memoryview(tail), memoryview(data)[:at]]
        elif len(data) >= keep:
            self._tail = bytes(data[len(data) - keep :])
            pieces = [memoryview(tail), memoryview(data)[: len(data) - keep]]
        else:
            combined = tail + data
            cut = max(0, len(combined) - keep)
            self._tail = combined[cut:]
            pieces = [memoryview(combined)[:cut]]
        return [piece for piece in pieces if len(piece)]

    def finish(self) -> dict[str, str]:
        """Check that the file ended with its delimiter; no trailers."""
        if not self._done:
            raise malformed()
        return {}
