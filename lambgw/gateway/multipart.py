"""Multipart uploads kept on disk, so that they survive restarts and serve several gateways.

Each upload is a directory under ``<db_path>/uploads`` named by its random id.  It holds the
manifest (``manifest.json``: where the object goes and what it will carry) and, for each part,
a data file ``<n>.<random>.data`` with a record ``<n>.json`` naming it.  Everything is
committed by ``rename``: a part is served only once its record is in place, so a crash in the
middle of a part leaves at most a file no record names, removed by :meth:`UploadStore.sweep`.
Completion first renames the directory to ``<id>.completing``: of two concurrent completions
(in one process or in two sharing the directory) only one wins the rename.

:class:`UploadStore` does the disk work and is called from a thread pool;
:class:`MultipartUploads` is its face on the reactor thread, and turns a completed upload
into an object on the network, the parts given as segments (moved, not copied, by the
embedded network).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import string
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

from attrs import asdict, define, evolve, field, frozen
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from lambgw.gateway.core import Gateway, check_key
from lambgw.network.interface import NewObject, ObjectInfo, Segment
from lambgw.protocol.checksums import combine_full_object, composite, decode_b64
from lambgw.protocol.errors import S3Error

log = Logger()

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Part numbers run from 1 to this, as in S3.
MAX_PART_NUMBER = 10000
#: The largest part, as in S3.
MAX_PART_SIZE = 5 * 1024**3
#: The smallest part but the last, as in S3.
MIN_PART_SIZE = 5 * 1024**2
#: Uploads idle this long (seconds) are aborted by :meth:`UploadStore.expire`.
DEFAULT_EXPIRY = 7 * 24 * 3600.0
#: Files no record names and completions left by a crash are cleaned up after this long.
STALE_AFTER = 3600.0

MANIFEST = "manifest.json"
#: Ids accepted in requests (those made earlier may hold ``_`` and ``-``).
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: What new ids are made of: letters and digits only, so that an id never starts with ``-``
#: (the aws cli would take it for an option) and needs no quoting anywhere.
_ID_ALPHABET = string.ascii_letters + string.digits
#: The length of new ids: 32 of 62 symbols, about 190 random bits.
_ID_LENGTH = 32
COMPLETING = ".completing"


def _no_such_upload(upload_id: str) -> S3Error:
    return S3Error(
        "NoSuchUpload",
        404,
        "The specified upload does not exist. The upload ID may be invalid, or the upload "
        "may have been aborted or completed.",
        upload_id,
    )


def check_part_number(value: str | int) -> int:
    """Return the part number of a request; ``InvalidArgument`` if it is not 1..10000."""
    text = str(value)
    if not text.isdigit() or not 1 <= int(text) <= MAX_PART_NUMBER:
        raise S3Error.of(
            "InvalidArgument",
            f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, inclusive.",
        )
    return int(text)


@frozen
class Upload:
    """An open multipart upload: where its object goes and what the object will carry."""

    upload_id: str
    account: str
    bucket: str
    key: str
    order_id: str
    path: str
    created: float
    content_type: str = "binary/octet-stream"
    metadata: Mapping[str, str] = field(factory=dict)
    headers: Mapping[str, str] = field(factory=dict)
    #: ``crc32``, ``sha256``, ... or empty.
    checksum_algorithm: str = ""
    #: ``COMPOSITE`` or ``FULL_OBJECT`` when there is an algorithm.
    checksum_type: str = ""
    #: The tags the object will have (``x-amz-tagging``).
    tags: Mapping[str, str] = field(factory=dict)


@frozen
class Part:
    """A part of an upload, as stored."""

    number: int
    size: int
    #: The MD5 of the part's bytes, in hex (its ETag, without quotes).
    etag: str
    last_modified: float
    #: The checksums of the part, keyed by algorithm, base64.
    checksums: Mapping[str, str] = field(factory=dict)
    #: The data file's name inside the upload's directory.
    file: str = ""


@frozen
class Completion:
    """What a completion asks: the part numbers and ETags, and their checksums if given."""

    number: int
    etag: str
    checksums: Mapping[str, str] = field(factory=dict)


@frozen
class Claim:
    """An upload taken for completion."""

    upload: Upload
    #: The parts the completion named, in order.
    parts: Sequence[Part]
    #: The upload's directory while it completes.
    directory: str
    #: The bytes of all its parts, named or not.
    held: int


def _write_json(path: str, value: Any, durable: bool) -> None:
    """Write ``value`` to ``path`` atomically: a temporary file, fsync, rename."""
    tmp = f"{path}.{secrets.token_hex(6)}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.rename(tmp, path)


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move(source: str, target: str) -> None:
    """Move a file by rename, copying only across file systems."""
    try:
        os.rename(source, target)
    except OSError:
        shutil.copyfile(source, target)
        os.unlink(source)


def final_etag(parts: Sequence[Part]) -> str:
    """Return the ETag of a multipart object: the MD5 of the parts' binary MD5s, ``-N``."""
    digest = hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in parts)).hexdigest()  # noqa: S324
    return f"{digest}-{len(parts)}"


def final_checksum(upload: Upload, parts: Sequence[Part]) -> str | None:
    """Return the whole object's checksum (composite or full-object) if every part has one."""
    name = upload.checksum_algorithm
    if not name or any(name not in p.checksums for p in parts):
        return None
    digests = [decode_b64(name, p.checksums[name]) for p in parts]
    if upload.checksum_type == "FULL_OBJECT":
        combined = combine_full_object(
            name, [(d, p.size) for d, p in zip(digests, parts, strict=True)]
        )
        return base64.b64encode(combined).decode("ascii")
    return composite(name, digests)


def choose_parts(requested: Sequence[Completion], stored: Mapping[int, Part]) -> list[Part]:
    """Return the stored parts a completion names, checked as S3 checks them."""
    if not requested:
        raise S3Error.of("MalformedXML", "The XML you provided named no part.")
    chosen: list[Part] = []
    previous = 0
    for wanted in requested:
        if wanted.number <= previous:
            raise S3Error.of(
                "InvalidPartOrder",
                "The list of parts was not in ascending order. Parts must be ordered by "
                "part number, each named once.",
            )
        previous = wanted.number
        part = stored.get(wanted.number)
        if part is None or wanted.etag.strip().strip('"') != part.etag:
            raise S3Error.of(
                "InvalidPart",
                f"Part {wanted.number} could not be found, or its ETag does not match.",
            )
        for name, value in wanted.checksums.items():
            if part.checksums.get(name) not in (None, value):
                raise S3Error.of(
                    "InvalidPart", f"The {name.upper()} of part {wanted.number} does not match."
                )
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < MIN_PART_SIZE:
            raise S3Error.of(
                "EntityTooSmall",
                f"Part {part.number} is {part.size} bytes: every part but the last must be at "
                f"least {MIN_PART_SIZE} bytes.",
            )
    return chosen


@define
class UploadStore:
    """The uploads directory: blocking disk work, safe to share between processes."""

    root: str
    clock: Callable[[], float] = time.time
    durable: bool = True

    def __attrs_post_init__(self) -> None:
        os.makedirs(self.root, exist_ok=True)

    def _dir(self, upload_id: str) -> str:
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise _no_such_upload(upload_id)
        return os.path.join(self.root, upload_id)

    def create(self, upload: Upload) -> Upload:
        """Start an upload like ``upload`` under a new random id; return it."""
        upload_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))
        upload = evolve(upload, upload_id=upload_id, created=self.clock())
        directory = self._dir(upload.upload_id)
        os.mkdir(directory)
        _write_json(os.path.join(directory, MANIFEST), asdict(upload), self.durable)
        return upload

    def _manifest(self, directory: str, upload_id: str) -> Upload:
        try:
            data = _read_json(os.path.join(directory, MANIFEST))
        except (FileNotFoundError, NotADirectoryError):
            raise _no_such_upload(upload_id) from None
        data["upload_id"] = upload_id
        return Upload(**data)

    def get(self, upload_id: str) -> Upload:
        """Return the open upload ``upload_id``, or raise ``NoSuchUpload``."""
        return self._manifest(self._dir(upload_id), upload_id)

    def _parts(self, directory: str) -> dict[int, Part]:
        parts = {}
        for name in os.listdir(directory):
            stem, _, ext = name.partition(".")
            if ext != "json" or not stem.isdigit():
                continue
            try:
                data = _read_json(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            parts[int(stem)] = Part(**data)
        return parts

    def parts(self, upload_id: str) -> list[Part]:
        """Return the parts of an open upload, by part number."""
        directory = self._dir(upload_id)
        self._manifest(directory, upload_id)
        return [p for _, p in sorted(self._parts(directory).items())]

    def add_part(self, upload_id: str, part: Part, source: str | bytes) -> tuple[Part, int]:
        """Store ``part``: the spooled file ``source`` moved in, or the bytes ``source``.

        Returns the part and the size of the part it replaced (0 if none).

        The data file is in place (and synced) before its record: a crash in between
        leaves a file that no record names.  Fails with ``NoSuchUpload`` (``source`` is
        then left to the caller) if the upload is not open.
        """
        directory = self._dir(upload_id)
        self._manifest(directory, upload_id)
        name = f"{part.number}.{secrets.token_hex(8)}.data"
        data = os.path.join(directory, name)
        try:
            if isinstance(source, bytes):
                with open(data, "xb") as f:
                    f.write(source)
            else:
                _move(source, data)
        except FileNotFoundError:
            raise _no_such_upload(upload_id) from None
        if self.durable:
            _fsync(data)
        part = evolve(part, file=name, last_modified=self.clock())
        record = os.path.join(directory, f"{part.number}.json")
        try:
            old: Part | None = Part(**_read_json(record))
        except FileNotFoundError:
            old = None
        try:
            _write_json(record, asdict(part), self.durable)
        except FileNotFoundError:
            # Aborted or completed meanwhile.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(data)
            raise _no_such_upload(upload_id) from None
        if self.durable:
            _fsync(directory)
        if old is not None and old.file != name:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, old.file))
        return part, old.size if old is not None else 0

    def begin_complete(self, upload_id: str, requested: Sequence[Completion]) -> Claim:
        """Take the upload for completion, with the parts ``requested``.

        Only one caller gets it: the directory is renamed to ``<id>.completing``.  If the
        requested parts are wrong the upload is given back and the error raised.
        """
        directory = self._dir(upload_id)
        taken = directory + COMPLETING
        try:
            os.rename(directory, taken)
        except (FileNotFoundError, OSError):
            raise _no_such_upload(upload_id) from None
        try:
            os.utime(taken)
            upload = self._manifest(taken, upload_id)
            stored = self._parts(taken)
            chosen = choose_parts(requested, stored)
        except BaseException:
            self.give_back(upload_id)
            raise
        return Claim(upload, chosen, taken, sum(p.size for p in stored.values()))

    def give_back(self, upload_id: str) -> None:
        """Reopen an upload whose completion failed."""
        directory = self._dir(upload_id)
        with contextlib.suppress(FileNotFoundError):
            os.rename(directory + COMPLETING, directory)

    def link_segments(self, taken: str, parts: Sequence[Part], spool_dir: str) -> list[Segment]:
        """Hard links to the parts' files in ``spool_dir``, for the network to consume.

        The upload keeps its own names, so it can be given back if the network fails.
        """
        segments = []
        try:
            for part in parts:
                link = os.path.join(spool_dir, f"{secrets.token_hex(16)}.part")
                try:
                    os.link(os.path.join(taken, part.file), link)
                except OSError:
                    shutil.copyfile(os.path.join(taken, part.file), link)
                segments.append(Segment(link, part.size))
        except BaseException:
            for segment in segments:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(segment.path)
            raise
        return segments

    def finish_complete(self, upload_id: str) -> None:
        """Remove a completed upload."""
        shutil.rmtree(self._dir(upload_id) + COMPLETING, ignore_errors=True)

    def abort(self, upload_id: str) -> Upload:
        """Remove an open upload and its parts; return its manifest."""
        directory = self._dir(upload_id)
        upload = self._manifest(directory, upload_id)
        gone = f"{directory}.aborted.{secrets.token_hex(4)}"
        try:
            os.rename(directory, gone)
        except FileNotFoundError:
            raise _no_such_upload(upload_id) from None
        shutil.rmtree(gone, ignore_errors=True)
        return upload

    def uploads(self) -> list[tuple[Upload, list[Part], float]]:
        """Every open upload with its parts and the time of its last activity."""
        found = []
        for name in os.listdir(self.root):
            if name.startswith(".") or "." in name:
                continue
            directory = os.path.join(self.root, name)
            try:
                upload = self._manifest(directory, name)
                parts = self._parts(directory)
                active = os.stat(directory).st_mtime
            except (S3Error, FileNotFoundError, NotADirectoryError):
                continue
            found.append((upload, [p for _, p in sorted(parts.items())], active))
        return found

    def reserved(self) -> dict[str, int]:
        """Return the bytes held by open uploads, by order id."""
        held: dict[str, int] = {}
        for upload, parts, _ in self.uploads():
            held[upload.order_id] = held.get(upload.order_id, 0) + sum(p.size for p in parts)
        return held

    def expire(self, max_idle: float) -> list[Upload]:
        """Abort the uploads idle longer than ``max_idle`` seconds; return them."""
        now = self.clock()
        expired = []
        for upload, _, active in self.uploads():
            if now - active > max_idle:
                with contextlib.suppress(S3Error):
                    expired.append(self.abort(upload.upload_id))
        return expired

    def sweep(self, min_age: float = STALE_AFTER) -> int:
        """Clean up after crashes; return how many entries were removed or reopened.

        Temporary files, data files no record names and aborted directories older than
        ``min_age`` go; a completion older than that was interrupted and is given back.
        """
        now = self.clock()
        cleaned = 0
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            try:
                age = now - os.stat(path).st_mtime
            except FileNotFoundError:
                continue
            if age < min_age:
                if "." not in name:
                    cleaned += self._sweep_upload(path, now, min_age)
                continue
            if name.endswith(COMPLETING):
                self.give_back(name[: -len(COMPLETING)])
                cleaned += 1
            elif ".aborted." in name:
                shutil.rmtree(path, ignore_errors=True)
                cleaned += 1
            elif "." not in name:
                cleaned += self._sweep_upload(path, now, min_age)
        return cleaned

    def sweep_spool(self, spool_dir: str, min_age: float = STALE_AFTER) -> int:
        """Delete bodies left in ``spool_dir`` by requests cut short by a crash.

        A file untouched (neither written nor linked) for ``min_age`` seconds belongs to
        no request in progress.  Returns how many files were deleted.
        """
        now = self.clock()
        cleaned = 0
        for entry in os.scandir(spool_dir):
            with contextlib.suppress(FileNotFoundError):
                stat = entry.stat(follow_symlinks=False)
                if entry.is_file() and now - max(stat.st_mtime, stat.st_ctime) >= min_age:
                    os.unlink(entry.path)
                    cleaned += 1
        return cleaned

    def _sweep_upload(self, directory: str, now: float, min_age: float) -> int:
        try:
            names = os.listdir(directory)
            named = {p.file for p in self._parts(directory).values()}
        except (FileNotFoundError, NotADirectoryError):
            return 0
        cleaned = 0
        for name in names:
            if not (name.endswith(".tmp") or (name.endswith(".data") and name not in named)):
                continue
            path = os.path.join(directory, name)
            with contextlib.suppress(FileNotFoundError):
                if now - os.stat(path).st_mtime >= min_age:
                    os.unlink(path)
                    cleaned += 1
        return cleaned


@define
class MultipartUploads:
    """The uploads of one gateway, used from the reactor thread.

    Disk work runs in ``pool``.  The bytes held by open uploads are kept per order (from
    this process's own work, and afresh from disk on :meth:`refresh`) so that uploads can
    be checked against an order's free capacity without waiting.
    """

    gateway: Gateway
    store: UploadStore
    reactor: IReactorFromThreads
    pool: ThreadPool
    _reserved: dict[str, int] = field(factory=dict)

    def _call(self, f: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        return deferToThreadPool(self.reactor, self.pool, f, *args, **kwargs)

    def reserved(self, order_id: str) -> int:
        """Return the bytes held by the open uploads into ``order_id``, as last known."""
        return self._reserved.get(order_id, 0)

    def _hold(self, order_id: str, delta: int) -> None:
        self._reserved[order_id] = max(0, self._reserved.get(order_id, 0) + delta)

    def check_room(self, bucket: str, order_id: str, size: int) -> None:
        """Refuse a part that cannot fit beside the order's objects and open uploads."""
        order = self.gateway.orders.known(order_id)
        if order is None:
            return
        free = order.free - self.reserved(order_id)
        if size > free:
            raise S3Error(
                "QuotaExceeded",
                403,
                f"The part of {size} bytes does not fit in order {order_id}: {max(free, 0)} "
                f"bytes free beside its objects and open uploads.",
                f"/{bucket}",
            )

    @inlineCallbacks
    def refresh(self) -> Any:
        """Recount the bytes held by open uploads from disk."""
        self._reserved = yield self._call(self.store.reserved)

    @inlineCallbacks
    def create(self, upload: Upload) -> Any:
        """Start an upload like ``upload`` (bucket resolved here); fire with it."""
        bucket = yield self.gateway.bucket(upload.bucket)
        check_key(upload.key, bucket.prefix)
        upload = evolve(
            upload,
            account=self.gateway.account,
            order_id=bucket.order_id,
            path=bucket.prefix + upload.key,
        )
        created: Upload = yield self._call(self.store.create, upload)
        return created

    @inlineCallbacks
    def get(self, upload_id: str, bucket: str, key: str) -> Any:
        """Fire with the open upload ``upload_id`` of this account into ``bucket``/``key``."""
        upload: Upload = yield self._call(self.store.get, upload_id)
        if (upload.account, upload.bucket, upload.key) != (self.gateway.account, bucket, key):
            raise _no_such_upload(upload_id)
        return upload

    @inlineCallbacks
    def add_part(self, upload: Upload, part: Part, source: str | bytes) -> Any:
        """Store a spooled file (or bytes) as a part of ``upload``; fire with the stored part."""
        stored, replaced = yield self._call(self.store.add_part, upload.upload_id, part, source)
        self._hold(upload.order_id, stored.size - replaced)
        return stored

    @inlineCallbacks
    def parts(self, upload: Upload) -> Any:
        """Fire with the parts of ``upload``, by part number."""
        parts: list[Part] = yield self._call(self.store.parts, upload.upload_id)
        return parts

    @inlineCallbacks
    def abort(self, upload: Upload) -> Any:
        """Abort ``upload``: its parts are deleted and their bytes given back."""
        parts: list[Part] = yield self._call(self.store.parts, upload.upload_id)
        yield self._call(self.store.abort, upload.upload_id)
        self._hold(upload.order_id, -sum(p.size for p in parts))

    @inlineCallbacks
    def uploads(self, bucket: str) -> Any:
        """Fire with the open uploads of this account into ``bucket``."""
        found = yield self._call(self.store.uploads)
        return [u for u, _, _ in found if (u.account, u.bucket) == (self.gateway.account, bucket)]

    @inlineCallbacks
    def complete(
        self,
        upload: Upload,
        requested: Sequence[Completion],
        full_checksum: str | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> Any:
        """Make the object of ``upload`` from the requested parts; fire with its info.

        Only one completion of an upload runs; another fails with ``NoSuchUpload``.  If
        the network refuses the object (its conditions too), the upload stays open.
        """
        store = self.store
        claim: Claim = yield self._call(store.begin_complete, upload.upload_id, requested)
        upload, parts = claim.upload, claim.parts
        try:
            size = sum(p.size for p in parts)
            checksum = final_checksum(upload, parts)
            if full_checksum is not None and checksum is not None and full_checksum != checksum:
                raise S3Error.of(
                    "BadDigest",
                    f"The {upload.checksum_algorithm.upper()} you specified did not match "
                    "the calculated checksum.",
                )
            new = NewObject(
                size=size,
                etag=final_etag(parts),
                content_type=upload.content_type,
                metadata=upload.metadata,
                headers=upload.headers,
                checksums={upload.checksum_algorithm: checksum} if checksum else {},
                checksum_type=upload.checksum_type if checksum else "",
                tags=upload.tags,
            )
            segments = yield self._call(
                store.link_segments, claim.directory, parts, self.gateway.spool_dir
            )
            info: ObjectInfo = yield self.gateway.put_object(
                upload.bucket, upload.key, segments, new, if_none_match, if_match
            )
        except BaseException:
            yield self._call(store.give_back, upload.upload_id)
            raise
        yield self._call(store.finish_complete, upload.upload_id)
        self._hold(upload.order_id, -claim.held)
        return info

    @inlineCallbacks
    def expire(self, max_idle: float = DEFAULT_EXPIRY) -> Any:
        """Abort uploads idle longer than ``max_idle``, clean up after crashes, recount.

        Crashes leave temporary files in the uploads and bodies in the spool directory.
        """
        expired: list[Upload] = yield self._call(self.store.expire, max_idle)
        for upload in expired:
            log.info(
                "Aborted the idle upload {upload_id} of {bucket}/{key}",
                upload_id=upload.upload_id,
                bucket=upload.bucket,
                key=upload.key,
            )
        yield self._call(self.store.sweep)
        yield self._call(self.store.sweep_spool, self.gateway.spool_dir)
        yield self.refresh()
