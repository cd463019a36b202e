"""The network interface: what the gateway needs from the Lambda storage network.

Two implementations provide it: the embedded network (an in-process store) and the HTTP
client that speaks the network protocol to a ``lambnet`` node.  Every method returns a
Deferred; failures are the exceptions of :mod:`lambgw.network.errors`.

Paths are the object names inside an order (``str``, arbitrary UTF-8 up to 1024 bytes).
They are compared and listed in the byte order of their UTF-8 encoding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from attrs import field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from zope.interface import Interface

#: The largest path (object name) accepted, in bytes of UTF-8.
MAX_PATH_BYTES = 1024


def _frozen_mapping(value: Mapping[str, str]) -> Mapping[str, str]:
    return dict(value)


def _int_tuple(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


@frozen
class Order:
    """A storage contract of an account: capacity, space used and an expiry time."""

    order_id: str
    account: str
    capacity: int
    used: int
    created: float
    expires: float
    status: str = "active"

    @property
    def free(self) -> int:
        """Bytes that can still be stored in this order."""
        return max(0, self.capacity - self.used)

    def expired(self, now: float) -> bool:
        """Whether the order can no longer be written at time ``now``."""
        return now >= self.expires or self.status != "active"


@frozen
class Segment:
    """A spooled file that is one consecutive piece of an object's bytes.

    A single-part object has one segment; a multipart object has one per part, in order.
    A small object may come as bytes in memory rather than as a file.
    """

    path: str
    size: int
    #: The bytes themselves, for a small object kept in memory (then ``path`` is empty).
    data: bytes | None = None


@frozen
class NewObject:
    """What is known of an object about to be stored, besides its bytes."""

    size: int
    etag: str
    content_type: str = "binary/octet-stream"
    metadata: Mapping[str, str] = field(factory=dict, converter=_frozen_mapping)
    #: Other stored headers (Cache-Control, Content-Disposition, Content-Encoding,
    #: Content-Language, Expires), keyed by their lower-case names.
    headers: Mapping[str, str] = field(factory=dict, converter=_frozen_mapping)
    #: ``x-amz-checksum-*`` values, keyed by algorithm (``crc32``, ``sha256``, ...),
    #: base64 as S3 returns them.
    checksums: Mapping[str, str] = field(factory=dict, converter=_frozen_mapping)
    #: ``COMPOSITE`` or ``FULL_OBJECT`` when a checksum is present.
    checksum_type: str = ""
    #: The object's tags (S3 object tagging), key to value.
    tags: Mapping[str, str] = field(factory=dict, converter=_frozen_mapping)


@frozen
class ObjectInfo:
    """An object stored in an order."""

    order_id: str
    path: str
    size: int
    etag: str
    last_modified: float
    content_type: str = "binary/octet-stream"
    metadata: Mapping[str, str] = field(factory=dict, converter=_frozen_mapping)
    headers: Mapping[str, str] = field(factory=dict, converter=_frozen_mapping)
    checksums: Mapping[str, str] = field(factory=dict, converter=_frozen_mapping)
    checksum_type: str = ""
    #: Sizes of the parts, in order, for an object made by a multipart upload.
    part_sizes: Sequence[int] = field(factory=tuple, converter=_int_tuple)
    #: How many tags the object has (the tags themselves: :meth:`INetwork.get_tags`).
    tag_count: int = 0


class ListedObject(NamedTuple):
    """An object as a listing names it: what S3 lists of it, and no more.

    A plain tuple, not an :class:`ObjectInfo`: a page holds a thousand of them, built on
    every listing; :meth:`INetwork.head_object` gives the rest of an object.
    """

    path: str
    size: int
    etag: str
    last_modified: float


#: Builds a :class:`ListedObject` of a 4-tuple in C (``ListedObject._make`` does the same
#: through two Python calls): a page of a thousand costs a tenth of a millisecond.
_listed = functools.partial(tuple.__new__, ListedObject)


def listed_objects(
    paths: Iterable[str], sizes: Iterable[int], etags: Iterable[str], times: Iterable[float]
) -> list[ListedObject]:
    """The listed objects of a page's columns (each as long as the others)."""
    return list(map(_listed, zip(paths, sizes, etags, times, strict=True)))


def millis(seconds: float) -> int:
    """A time rounded to the millisecond, the precision S3 lists (half a millisecond up).

    Written as SQLite writes it (``CAST(t * 1000 + 0.5 AS INTEGER)``, the same IEEE
    operations), so both give the same millisecond for every time.
    """
    return int(seconds * 1000 + 0.5)


@frozen
class ListPage:
    """One page of an order's listing, in byte order of the paths."""

    objects: Sequence[ListedObject]
    common_prefixes: Sequence[str]
    is_truncated: bool
    #: The last path or common prefix returned: pass it as ``marker`` to go on.
    next_marker: str | None


@frozen
class MultipartUpload:
    """An open multipart upload of an object to ``path`` in an order."""

    upload_id: str
    order_id: str
    path: str
    created: float
    content_type: str = "binary/octet-stream"
    metadata: Mapping[str, str] = field(factory=dict, converter=_frozen_mapping)
    headers: Mapping[str, str] = field(factory=dict, converter=_frozen_mapping)
    #: ``crc32``, ``sha256``, ... or empty.
    checksum_algorithm: str = ""
    #: ``COMPOSITE`` or ``FULL_OBJECT`` when there is an algorithm.
    checksum_type: str = ""
    #: When a part was last stored (or the upload created).
    last_active: float = 0.0
    #: How many parts are stored, and their bytes.
    parts: int = 0
    size: int = 0


@frozen
class PartInfo:
    """A stored part of a multipart upload."""

    number: int
    size: int
    #: The MD5 of the part's bytes, in hex (its ETag, without quotes).
    etag: str
    last_modified: float
    #: The part's checksums, keyed by algorithm, base64.
    checksums: Mapping[str, str] = field(factory=dict, converter=_frozen_mapping)


@frozen
class CompletedPart:
    """A part named by a completion: its number, ETag and any checksums given with it."""

    number: int
    etag: str
    checksums: Mapping[str, str] = field(factory=dict, converter=_frozen_mapping)


@frozen
class UploadsPage:
    """One page of an order's open uploads, by path then by time created."""

    uploads: Sequence[MultipartUpload]
    common_prefixes: Sequence[str]
    is_truncated: bool
    next_key_marker: str
    next_upload_id_marker: str


@frozen
class PartsPage:
    """One page of an upload's parts, by part number."""

    upload: MultipartUpload
    parts: Sequence[PartInfo]
    is_truncated: bool
    #: The last part number returned (the marker given, if none).
    next_marker: int


class IObjectBody(Interface):
    """The bytes of an object (or of a range of it), ready to stream."""

    def deliver(consumer: IConsumer) -> Deferred[None]:
        """Write the bytes to ``consumer`` with backpressure.

        Registers a producer on the consumer, unregisters it when done, and fires when
        every byte is written; fails if the bytes cannot be read.  Cancelling the Deferred
        stops the transfer.
        """

    def close() -> None:
        """Release what the body holds (open files, connections) if never delivered."""


class IUpload(Interface):
    """An object's bytes streaming to the network as they arrive; stored only when finished.

    Nothing is stored unless :meth:`finish` succeeds; after :meth:`abort`, a failure of the
    network, or a failed ``finish``, no trace of the object remains and nothing is charged.
    """

    def throttle(pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """Call ``pause`` when the network can take no more bytes for now, ``resume`` when it can.

        Once the upload has failed, ``resume`` is called and further bytes are dropped.
        """

    def write(data: bytes) -> None:
        """Send more of the object's bytes (on the reactor thread)."""

    def finish(new: NewObject, content_sha256: str) -> Deferred[ObjectInfo]:
        """Store the object that ``new`` describes, made of the bytes written.

        ``content_sha256`` is the SHA-256 those bytes must have (hex): the network checks
        them against it and fails with ``BadDigest``, storing nothing, if they differ.  It
        may be ``UNSIGNED-PAYLOAD`` instead: then no SHA-256 is checked.  With the MD5
        among the upload's ``digests``, ``new.etag`` is empty: the network makes the ETag.
        """

    def abort() -> None:
        """Give up the upload: nothing is stored."""

    def direct(resumed: Callable[[], None], failed: Callable[[], None]) -> Deferred[Any]:
        """Fire with a socket the object's next bytes may be written into directly, or ``None``.

        It fires once the upload is being sent; with a socket (a Twisted TCP transport),
        the caller may write the bytes into it itself (with splice(2)) after what the
        transport holds, reporting them with :meth:`sent_directly`; ``resumed`` is called
        whenever the transport can write again, and ``failed`` if the upload fails (the
        socket is then of no use), until :meth:`indirect`.
        """

    def sent_directly(count: int) -> None:
        """``count`` more bytes of the object were written into the socket of :meth:`direct`."""

    def indirect() -> None:
        """The object's bytes come through :meth:`write` again."""


class INetwork(Interface):
    """Accounts, orders and objects on the Lambda storage network."""

    def orders(account: str) -> Deferred[Sequence[Order]]:
        """All orders of ``account``, in the order they were bought."""

    def order(account: str, order_id: str) -> Deferred[Order]:
        """One order of ``account``; fails with ``NoSuchOrder`` if it is not the account's."""

    def put_object(
        account: str,
        order_id: str,
        path: str,
        segments: Sequence[Segment],
        new: NewObject,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> Deferred[ObjectInfo]:
        """Store an object made of the spooled ``segments``, atomically.

        The segment files are consumed (moved or deleted) whether this succeeds or not.
        Replaces an existing object at ``path`` unless ``if_none_match``, in which case an
        existing object fails it with ``PreconditionFailed``.  With ``if_match`` (an etag,
        or ``*`` for any), only an object with that etag is replaced: another etag fails
        with ``PreconditionFailed``, no object with ``NoSuchPath``; the check and the
        write are one step.  Fails with ``QuotaExceeded`` if the order cannot hold it and
        ``OrderExpired`` if the order has expired.
        """

    def open_upload(
        account: str,
        order_id: str,
        path: str,
        described: NewObject,
        if_none_match: bool = False,
        if_match: str | None = None,
        digests: Sequence[str] = (),
        expect: Mapping[str, str] | None = None,
    ) -> IUpload | None:
        """Start streaming an object to ``path``, if this network streams.

        ``described`` is the object as known before its bytes: its size, content type,
        metadata and headers (its etag and checksums come with :meth:`IUpload.finish`).

        ``digests`` are digests of the bytes the network computes for the object: ``md5``
        (its ETag is then the MD5's lower-case hex, and the etag given to ``finish`` must be
        empty) and checksum algorithms (``crc32``, ``crc32c``, ``crc64nvme``, ``sha1``,
        ``sha256``: their base64 values join the object's checksums, which must not give
        them).  ``expect`` maps some of ``digests`` to the values the S3 client declared,
        in base64 (for ``md5``, as in ``Content-MD5``): if one differs, the upload fails
        with ``DigestMismatch``, whose message is S3's, and nothing is stored.

        ``None`` means the network stores spooled files instead (:meth:`put_object`).  The
        upload's outcome is that of :meth:`put_object` with the same arguments.
        """

    def head_object(account: str, order_id: str, path: str) -> Deferred[ObjectInfo]:
        """What is stored at ``path``; fails with ``NoSuchPath`` if nothing is."""

    def get_object(
        account: str, order_id: str, path: str, first: int = 0, last: int | None = None
    ) -> Deferred[tuple[ObjectInfo, IObjectBody]]:
        """The object at ``path`` and its bytes ``first`` to ``last`` (inclusive).

        ``last`` of ``None`` means to the end.  The caller validates the range.
        """

    def delete_object(
        account: str, order_id: str, path: str, if_match: str | None = None
    ) -> Deferred[bool]:
        """Remove the object at ``path``; fires with whether there was one.

        With ``if_match``, as for :meth:`put_object`: only an object with that etag.
        """

    def copy_object(
        account: str,
        src_order_id: str,
        src_path: str,
        dst_order_id: str,
        dst_path: str,
        replace: NewObject | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Deferred[ObjectInfo]:
        """Copy an object inside the network, between orders of one account.

        With ``replace``, its content type, metadata and headers replace the source's
        (its size, etag and tags are ignored).  The copy has the source's tags, or
        ``tags`` when given.  Charged to the destination order.
        """

    def get_tags(account: str, order_id: str, path: str) -> Deferred[Mapping[str, str]]:
        """The tags of the object at ``path``; fails with ``NoSuchPath`` if there is none."""

    def put_tags(account: str, order_id: str, path: str, tags: Mapping[str, str]) -> Deferred[None]:
        """Replace the tags of the object at ``path`` (none: remove them).

        The object is otherwise unchanged; fails with ``NoSuchPath`` if there is none.
        """

    def list_objects(
        account: str,
        order_id: str,
        prefix: str = "",
        delimiter: str = "",
        marker: str = "",
        max_keys: int = 1000,
    ) -> Deferred[ListPage]:
        """Up to ``max_keys`` objects and common prefixes after ``marker``, in byte order."""

    def create_upload(
        account: str,
        order_id: str,
        path: str,
        described: NewObject,
        checksum_algorithm: str = "",
        upload_id: str = "",
    ) -> Deferred[MultipartUpload]:
        """Open a multipart upload of an object to ``path``, under a new random id.

        ``described`` is what the object will carry (content type, metadata, headers; its
        ``checksum_type`` goes with ``checksum_algorithm``).  ``upload_id``, if given, is
        the id to keep (an upload brought over from an earlier gateway's disk); it fails
        with ``UploadExists`` if that id is taken.
        """

    def upload_part(
        account: str,
        order_id: str,
        path: str,
        upload_id: str,
        number: int,
        segment: Segment,
        etag: str,
        checksums: Mapping[str, str],
    ) -> Deferred[PartInfo]:
        """Store the spooled ``segment`` as part ``number`` (consumed either way).

        A part stored earlier under that number is replaced.  The part's bytes count
        against the order's capacity at once (``QuotaExceeded`` if they do not fit).
        Fails with ``NoSuchUpload`` unless the upload is open and is for ``path``.
        """

    def open_part(
        account: str,
        order_id: str,
        path: str,
        upload_id: str,
        number: int,
        size: int,
        digests: Sequence[str] = (),
        expect: Mapping[str, str] | None = None,
    ) -> IUpload | None:
        """Start streaming part ``number`` of ``size`` bytes, if this network streams.

        ``None`` means the network stores spooled files instead (:meth:`upload_part`).
        The upload's :meth:`IUpload.finish` takes the part's size, ETag and checksums as a
        :class:`NewObject` and fires with the stored part described as an object (its
        size, ETag, checksums and the time it was stored); its outcome is that of
        :meth:`upload_part`.  ``digests`` and ``expect`` are as for :meth:`open_upload`:
        the network computes the part's ETag and checksums, and checks them.
        """

    def list_uploads(
        account: str,
        order_id: str,
        prefix: str = "",
        delimiter: str = "",
        key_marker: str = "",
        upload_id_marker: str = "",
        max_uploads: int = 1000,
    ) -> Deferred[UploadsPage]:
        """A page of the order's open uploads, after the markers, as S3 lists them."""

    def list_parts(
        account: str,
        order_id: str,
        path: str,
        upload_id: str,
        marker: int = 0,
        max_parts: int = 1000,
    ) -> Deferred[PartsPage]:
        """The upload and up to ``max_parts`` of its parts numbered above ``marker``."""

    def abort_upload(account: str, order_id: str, path: str, upload_id: str) -> Deferred[None]:
        """Remove the upload and every part of it, giving their space back."""

    def complete_upload(
        account: str,
        order_id: str,
        path: str,
        upload_id: str,
        parts: Sequence[CompletedPart],
        checksums: Mapping[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> Deferred[ObjectInfo]:
        """Make the object at ``path`` of the named parts, atomically, by reference.

        No byte is copied: the object is its parts' files.  The parts not named are
        removed; the object's size is what stays charged.  Fails with ``InvalidPart``,
        ``InvalidPartOrder`` or ``EntityTooSmall`` (the upload stays open) if the list is
        wrong, ``BadDigest`` if the upload's full-object checksum is among
        ``checksums`` (the whole object's checksums the client gave, by algorithm) and
        differs.  A completion repeated with the same part list answers the same
        object again (for as long as the network keeps uploads); a different list fails
        with ``NoSuchUpload``.  The write's conditions are checked in the same transaction:
        ``if_none_match``, no object at ``path``; ``if_match``, the object there has that
        etag (``*``: any); else ``PreconditionFailed`` (``NoSuchPath`` for no object).
        """
