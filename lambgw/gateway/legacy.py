"""Multipart uploads left on the gateway's disk by an earlier release, brought into the network.

Releases before the network kept multipart uploads kept each one in a directory of the
gateway's ``uploads/`` (``<id>/manifest.json``, and per part ``<n>.json`` naming a data file
``<n>.<random>.data``; ``<id>.completing`` while a completion ran, ``<id>.aborted.<x>`` once
aborted).  At start each open upload is opened in the network under the same id (so that the
client holding it goes on), its parts sent as parts (the embedded network moves the files in),
and its directory removed.  A start interrupted half way goes on where it stopped: the upload
exists in the network already, and the parts already moved are no longer on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Generator
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from lambgw.network import errors as net
from lambgw.network.completion import UPLOAD_ID
from lambgw.network.interface import INetwork, NewObject, Segment

log = Logger()

MANIFEST = "manifest.json"
COMPLETING = ".completing"


@frozen
class LegacyPart:
    """A part of an upload on disk: its record and data file."""

    number: int
    size: int
    etag: str
    checksums: dict[str, str]
    record: str
    data: str


@frozen
class LegacyUpload:
    """An upload on disk, as an earlier release left it."""

    upload_id: str
    directory: str
    manifest: dict[str, Any]
    parts: list[LegacyPart]


def read_uploads(root: str) -> list[LegacyUpload]:
    """The uploads left in ``root`` (aborted ones are removed, interrupted completions reopened)."""
    found: list[LegacyUpload] = []
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return found
    for name in names:
        path = os.path.join(root, name)
        if ".aborted." in name:
            shutil.rmtree(path, ignore_errors=True)
            continue
        if name.endswith(COMPLETING):
            upload_id = name[: -len(COMPLETING)]
            with contextlib.suppress(OSError):
                os.rename(path, os.path.join(root, upload_id))
            name, path = upload_id, os.path.join(root, upload_id)
        if not UPLOAD_ID.fullmatch(name) or not os.path.isdir(path):
            continue
        try:
            with open(os.path.join(path, MANIFEST), encoding="utf-8") as f:
                manifest = json.load(f)
        except (OSError, ValueError):
            continue
        found.append(LegacyUpload(name, path, manifest, _parts(path)))
    return found


def _parts(directory: str) -> list[LegacyPart]:
    parts = []
    for name in sorted(os.listdir(directory)):
        stem, _, ext = name.partition(".")
        if ext != "json" or not stem.isdigit():
            continue
        record = os.path.join(directory, name)
        try:
            with open(record, encoding="utf-8") as f:
                data = json.load(f)
            file = os.path.join(directory, data["file"])
            if os.stat(file).st_size != data["size"]:
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        parts.append(
            LegacyPart(int(stem), data["size"], data["etag"], dict(data["checksums"]), record, file)
        )
    return sorted(parts, key=lambda p: p.number)


@inlineCallbacks
def adopt_uploads(
    network: INetwork, account: str, root: str, reactor: IReactorFromThreads, pool: ThreadPool
) -> Generator[Deferred[Any], Any, int]:
    """Bring the uploads of ``account`` left in ``root`` into ``network``; how many were.

    An upload the network cannot take now (it is unreachable, or the order is full) stays
    on disk for the next start; one whose order is gone is removed.
    """
    uploads: list[LegacyUpload] = yield deferToThreadPool(reactor, pool, read_uploads, root)
    adopted = 0
    for upload in uploads:
        manifest = upload.manifest
        if manifest.get("account") != account:
            continue
        try:
            yield _adopt(network, account, upload)
        except (net.NoSuchOrder, net.NoSuchUpload):
            log.warn(
                "The upload {upload_id} on disk is gone from the network (its order, or the "
                "upload itself, completed or aborted meanwhile): removed",
                upload_id=upload.upload_id,
            )
        except net.NetworkError as e:
            log.warn(
                "The upload {upload_id} on disk could not be moved into the network "
                "(kept for the next start): {why}",
                upload_id=upload.upload_id,
                why=str(e),
            )
            continue
        else:
            adopted += 1
        yield deferToThreadPool(reactor, pool, shutil.rmtree, upload.directory, True)
    if adopted:
        log.info(
            "Moved {count} multipart uploads from {root} into the network", count=adopted, root=root
        )
    return adopted


@inlineCallbacks
def _adopt(
    network: INetwork, account: str, upload: LegacyUpload
) -> Generator[Deferred[Any], Any, None]:
    manifest = upload.manifest
    order_id, path = str(manifest["order_id"]), str(manifest["path"])
    described = NewObject(
        size=0,
        etag="",
        content_type=manifest.get("content_type", "binary/octet-stream"),
        metadata=manifest.get("metadata", {}),
        headers=manifest.get("headers", {}),
        checksum_type=manifest.get("checksum_type", ""),
    )
    # The upload exists already if an earlier start stopped half way through it.
    with contextlib.suppress(net.UploadExists):
        yield network.create_upload(
            account,
            order_id,
            path,
            described,
            manifest.get("checksum_algorithm", ""),
            upload.upload_id,
        )
    for part in upload.parts:
        yield network.upload_part(
            account,
            order_id,
            path,
            upload.upload_id,
            part.number,
            Segment(part.data, part.size),
            part.etag,
            part.checksums,
        )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part.record)
