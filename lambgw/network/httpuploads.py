"""The multipart uploads of the HTTP network: the upload requests of the network protocol.

:class:`MultipartOverHTTP` is a part of :class:`~lambgw.network.http.HTTPNetwork`, kept in
a module of its own.  A part is sent like an object (its spooled file streamed, its digest
and description in a signed trailer); completion sends only the list of parts, and the
node makes the object of the parts it holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from lambgw.network import signing, wire
from lambgw.network.completion import UPLOAD_ID
from lambgw.network.errors import NoSuchUpload
from lambgw.network.httpbody import SegmentsProducer, remove_segments
from lambgw.network.httpupload import StreamedUpload, trailer_maker
from lambgw.network.interface import (
    CompletedPart,
    IUpload,
    MultipartUpload,
    NewObject,
    ObjectInfo,
    PartInfo,
    PartsPage,
    Segment,
    UploadsPage,
)


class _Client(Protocol):
    """What the upload requests use of the HTTP network."""

    _key: Any
    _cooperator: task.Cooperator
    _reactor: IReactorFromThreads
    _threadpool: ThreadPool

    def _url(self, account: str, rest: str, query: dict[str, str] | None = None) -> str: ...

    def _check_account(self, account: str) -> None: ...

    def _sign(self, method: str, target: str, content_sha256: str) -> dict[str, str]: ...

    async def _send(
        self,
        method: str,
        target: str,
        body: Any = None,
        content_sha256: str = signing.EMPTY_SHA256,
        headers: dict[str, str] | None = None,
        unbuffered: bool = False,
        signed: dict[str, str] | None = None,
    ) -> Any: ...

    async def _json(self, target: str) -> Any: ...


def _upload_path(order_id: str, upload_id: str, rest: str = "") -> str:
    """The path of an upload under the order (the id checked: it becomes a path segment)."""
    if not UPLOAD_ID.fullmatch(upload_id):
        raise NoSuchUpload(f"no upload {upload_id!r}")
    return f"/{order_id}/uploads/{upload_id}{rest}"


async def _post_json(client: _Client, target: str, value: bytes) -> Any:
    """POST the JSON ``value``; return the node's JSON answer."""
    answer = await client._send("POST", target, value, hashlib.sha256(value).hexdigest())
    return json.loads(answer)


class MultipartOverHTTP:
    """The multipart upload methods of the HTTP network."""

    def create_upload(
        self: _Client,
        account: str,
        order_id: str,
        path: str,
        described: NewObject,
        checksum_algorithm: str = "",
        upload_id: str = "",
    ) -> Deferred[MultipartUpload]:
        """Open a multipart upload on the node."""

        async def run() -> MultipartUpload:
            self._check_account(account)
            target = self._url(account, f"/{order_id}/uploads", {"path": path})
            request = {
                "described": wire.new_to_json(described),
                "checksum_algorithm": checksum_algorithm,
                "upload_id": upload_id,
            }
            answer = await _post_json(self, target, json.dumps(request).encode("utf-8"))
            return wire.upload_from_json(answer)

        return Deferred.fromCoroutine(run())

    def upload_part(
        self: _Client,
        account: str,
        order_id: str,
        path: str,
        upload_id: str,
        number: int,
        segment: Segment,
        etag: str,
        checksums: Mapping[str, str],
    ) -> Deferred[PartInfo]:
        """Stream the spooled ``segment`` to the node as a part; the segment is removed after."""

        async def run() -> PartInfo:
            try:
                self._check_account(account)
                query = {"path": path, "number": str(number), "size": str(segment.size)}
                target = self._url(account, _upload_path(order_id, upload_id, "/part"), query)
                signed = self._sign("PUT", target, signing.TRAILER)
                new = NewObject(segment.size, etag, checksums=checksums)
                room = wire.trailer_room(new)
                trailer = trailer_maker(self._key, signing.signature_of(signed), new, room)
                body = SegmentsProducer([segment], self._cooperator, trailer=(trailer, room))
                answer = await self._send("PUT", target, body, signed=signed)
                return wire.part_from_json(json.loads(answer))
            finally:
                await deferToThreadPool(self._reactor, self._threadpool, remove_segments, [segment])

        return Deferred.fromCoroutine(run())

    def open_part(
        self: _Client,
        account: str,
        order_id: str,
        path: str,
        upload_id: str,
        number: int,
        size: int,
        digests: Sequence[str] = (),
        expect: Mapping[str, str] | None = None,
    ) -> IUpload | None:
        """Start a PUT of a part to the node whose body is the part's bytes as they come.

        Signed now; the part's digest, ETag and checksums follow the bytes in a signed
        trailer, as for a streamed object, as do ``digests`` and ``expect`` (see
        :meth:`INetwork.open_part`).
        """
        self._check_account(account)
        query = {"path": path, "number": str(number), "size": str(size)}
        if digests:
            query[wire.DIGESTS_PARAMETER] = wire.format_digests(digests)
        target = self._url(account, _upload_path(order_id, upload_id, "/part"), query)
        signed = self._sign("PUT", target, signing.TRAILER)
        room = wire.trailer_room(NewObject(size, ""), expect)
        upload = StreamedUpload(self._key, signing.signature_of(signed), size, room, expect)

        async def run() -> ObjectInfo:
            answer = await self._send("PUT", target, upload, signed=signed)
            part = wire.part_from_json(json.loads(answer))
            return ObjectInfo(
                order_id=order_id,
                path=path,
                size=part.size,
                etag=part.etag,
                last_modified=part.last_modified,
                checksums=part.checksums,
            )

        upload.answered(Deferred.fromCoroutine(run()))
        return upload

    def list_uploads(
        self: _Client,
        account: str,
        order_id: str,
        prefix: str = "",
        delimiter: str = "",
        key_marker: str = "",
        upload_id_marker: str = "",
        max_uploads: int = 1000,
    ) -> Deferred[UploadsPage]:
        """A page of the order's open uploads."""

        async def run() -> UploadsPage:
            self._check_account(account)
            query = {
                "prefix": prefix,
                "delimiter": delimiter,
                "key-marker": key_marker,
                "upload-id-marker": upload_id_marker,
            }
            query = {k: v for k, v in query.items() if v}
            query["max-uploads"] = str(max_uploads)
            target = self._url(account, f"/{order_id}/uploads", query)
            return wire.uploads_page_from_json(await self._json(target))

        return Deferred.fromCoroutine(run())

    def list_parts(
        self: _Client,
        account: str,
        order_id: str,
        path: str,
        upload_id: str,
        marker: int = 0,
        max_parts: int = 1000,
    ) -> Deferred[PartsPage]:
        """The upload and a page of its parts."""

        async def run() -> PartsPage:
            self._check_account(account)
            query = {"path": path, "marker": str(marker), "max-parts": str(max_parts)}
            target = self._url(account, _upload_path(order_id, upload_id), query)
            return wire.parts_page_from_json(await self._json(target))

        return Deferred.fromCoroutine(run())

    def abort_upload(
        self: _Client, account: str, order_id: str, path: str, upload_id: str
    ) -> Deferred[None]:
        """Remove the upload and its parts on the node."""

        async def run() -> None:
            self._check_account(account)
            target = self._url(account, _upload_path(order_id, upload_id), {"path": path})
            await self._send("DELETE", target)

        return Deferred.fromCoroutine(run())

    def complete_upload(
        self: _Client,
        account: str,
        order_id: str,
        path: str,
        upload_id: str,
        parts: Sequence[CompletedPart],
        checksums: Mapping[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> Deferred[ObjectInfo]:
        """Ask the node to make the object of the named parts."""

        async def run() -> ObjectInfo:
            self._check_account(account)
            rest = _upload_path(order_id, upload_id, "/complete")
            target = self._url(account, rest, {"path": path})
            answer = await _post_json(
                self,
                target,
                wire.completion_to_json(parts, checksums or {}, if_none_match, if_match),
            )
            return wire.info_from_json(answer)

        return Deferred.fromCoroutine(run())
