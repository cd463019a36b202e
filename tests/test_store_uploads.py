"""Tests for multipart uploads in the embedded network's store: parts, charges, completion."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from lambgw.network.errors import (
    BadDigest,
    EntityTooSmall,
    InvalidPart,
    InvalidPartOrder,
    NoSuchOrder,
    NoSuchPath,
    NoSuchUpload,
    PreconditionFailed,
    QuotaExceeded,
    UploadExists,
)
from lambgw.network.interface import CompletedPart, NewObject, Segment
from lambgw.network.store import Store
from lambgw.network.uploads import StoredUploads
from tests.test_store import Clock

MiB = 1 << 20


def md5(data: bytes) -> str:
    """The hex MD5 of ``data``."""
    return hashlib.md5(data).hexdigest()


class StoredUploadsTests(SynchronousTestCase):
    """Parts are object files charged as stored; completion makes the object of them."""

    def setUp(self) -> None:
        base = self.mktemp()
        self.spool = os.path.join(base, "spool")
        os.makedirs(self.spool)
        self.clock = Clock()
        self.store = Store(os.path.join(base, "net"), clock=self.clock, durable=False)
        self.addCleanup(self.store.close)
        self.uploads = StoredUploads(self.store, expiry=3600.0)
        self.order = self.store.ensure_account("demo", 64 * MiB, 30)[0].order_id
        self.store.ensure_account("other", 64 * MiB, 30)
        self.counter = 0

    def segment(self, data: bytes) -> Segment:
        """Spool ``data`` into a new file."""
        self.counter += 1
        path = os.path.join(self.spool, f"part{self.counter}")
        with open(path, "wb") as f:
            f.write(data)
        return Segment(path, len(data))

    def create(self, path: str = "a/key", **kwargs: Any) -> str:
        """Open an upload to ``path``; return its id."""
        return self.uploads.create(
            "demo", self.order, path, NewObject(0, "", "text/plain"), **kwargs
        ).upload_id

    def part(self, upload_id: str, number: int, data: bytes, path: str = "a/key") -> None:
        """Store ``data`` as part ``number``."""
        self.uploads.upload_part(
            "demo", self.order, path, upload_id, number, self.segment(data), md5(data), {}
        )

    def used(self) -> int:
        """The order's space used."""
        return self.store.order("demo", self.order).used

    def object_files(self) -> list[str]:
        """Every file under the store's ``objects`` directory, once discarded ones are gone."""
        self.store.files.drain()
        root = os.path.join(self.store.root, "objects")
        return sorted(n for _, _, names in os.walk(root) for n in names)

    def named(self, *parts: tuple[int, bytes]) -> list[CompletedPart]:
        """The completion list of ``(number, data)`` pairs."""
        return [CompletedPart(n, f'"{md5(data)}"') for n, data in parts]

    def read(self, path: str, first: int = 0, last: int | None = None) -> bytes:
        """Read bytes of an object through ``open_range``."""
        _, ranges = self.store.open_range("demo", self.order, path, first, last)
        out = b""
        for r in ranges:
            r.file.seek(r.offset)
            out += r.file.read(r.length)
            r.file.close()
        return out

    def test_random_ids(self) -> None:
        """Upload ids are random, 32 letters and digits."""
        ids = {self.create() for _ in range(50)}
        self.assertEqual(len(ids), 50)
        for upload_id in ids:
            self.assertRegex(upload_id, r"^[A-Za-z0-9]{32}$")

    def test_kept_id_is_unique(self) -> None:
        """An upload brought over keeps its id, which cannot be taken twice."""
        self.assertEqual(self.create(upload_id="old-id_1"), "old-id_1")
        self.assertRaises(UploadExists, self.create, upload_id="old-id_1")

    def test_part_moved_and_charged(self) -> None:
        """A part is moved into the store (not copied) and charged at once."""
        upload_id = self.create()
        segment = self.segment(b"x" * 1000)
        self.uploads.upload_part("demo", self.order, "a/key", upload_id, 1, segment, md5(b""), {})
        self.assertFalse(os.path.exists(segment.path))
        self.assertEqual(len(self.object_files()), 1)
        self.assertEqual(self.used(), 1000)

    def test_resent_part_replaces(self) -> None:
        """A re-sent part number replaces the older part and its charge."""
        upload_id = self.create()
        self.part(upload_id, 1, b"x" * 1000)
        self.part(upload_id, 1, b"y" * 10)
        page = self.uploads.list_parts("demo", self.order, "a/key", upload_id)
        self.assertEqual([(p.number, p.size) for p in page.parts], [(1, 10)])
        self.assertEqual(self.used(), 10)
        self.assertEqual(len(self.object_files()), 1)

    def test_part_beyond_capacity(self) -> None:
        """A part that does not fit is refused: nothing stored, nothing charged, spool gone."""
        upload_id = self.create()
        self.part(upload_id, 1, b"x" * 60 * MiB)
        segment = self.segment(b"y" * 5 * MiB)
        self.assertRaises(
            QuotaExceeded,
            self.uploads.upload_part,
            *("demo", self.order, "a/key", upload_id, 2, segment, "e", {}),
        )
        self.assertEqual(self.used(), 60 * MiB)
        self.assertEqual(len(self.object_files()), 1)
        self.assertFalse(os.path.exists(segment.path))

    def test_part_of_another_path_or_account(self) -> None:
        """A part for another path, or sent by another account, finds no upload."""
        upload_id = self.create()
        self.assertRaises(NoSuchUpload, self.part, upload_id, 1, b"x", path="b/key")
        self.assertRaises(
            NoSuchOrder,
            self.uploads.upload_part,
            *("other", self.order, "a/key", upload_id, 1, self.segment(b"x"), "e", {}),
        )
        self.assertEqual((self.used(), self.object_files()), (0, []))

    def test_list_parts_in_pages(self) -> None:
        """Parts are listed by number from a marker, a page at a time."""
        upload_id = self.create()
        for number in (3, 1, 2):
            self.part(upload_id, number, b"p%d" % number)
        page = self.uploads.list_parts("demo", self.order, "a/key", upload_id, 0, 2)
        self.assertEqual(([p.number for p in page.parts], page.is_truncated), ([1, 2], True))
        page = self.uploads.list_parts("demo", self.order, "a/key", upload_id, page.next_marker)
        self.assertEqual(([p.number for p in page.parts], page.is_truncated), ([3], False))
        self.assertEqual((page.upload.parts, page.upload.size), (3, 6))

    def test_list_uploads(self) -> None:
        """Open uploads are listed by path with a prefix, in pages with both markers."""
        first = self.create("a/1")
        self.clock.now += 1
        second = self.create("a/1")
        self.create("b/2")
        page = self.uploads.list_uploads("demo", self.order, "a/", max_uploads=1)
        self.assertEqual([u.upload_id for u in page.uploads], [first])
        self.assertTrue(page.is_truncated)
        page = self.uploads.list_uploads(
            "demo", self.order, "a/", "", page.next_key_marker, page.next_upload_id_marker
        )
        self.assertEqual([u.upload_id for u in page.uploads], [second])
        page = self.uploads.list_uploads("demo", self.order, delimiter="/")
        self.assertEqual(page.common_prefixes, ["a/", "b/"])

    def test_abort_frees_everything(self) -> None:
        """Abort removes every part's file and gives the space back; the id is gone."""
        upload_id = self.create()
        self.part(upload_id, 1, b"x" * 100)
        self.part(upload_id, 2, b"y" * 100)
        self.uploads.abort("demo", self.order, "a/key", upload_id)
        self.assertEqual((self.used(), self.object_files()), (0, []))
        self.assertRaises(
            NoSuchUpload,
            self.uploads.complete,
            *("demo", self.order, "a/key", upload_id, self.named((1, b"x" * 100))),
        )

    def test_complete_by_reference(self) -> None:
        """The object is made of the parts' own files; parts left out are freed."""
        upload_id = self.create()
        one, two, three = b"a" * 5 * MiB, b"b" * 5 * MiB, b"tail"
        for number, data in ((1, one), (2, two), (3, three)):
            self.part(upload_id, number, data)
        inodes = {os.stat(os.path.join(r, n)).st_ino for r, _, ns in os.walk(self.store.root +
                  "/objects") for n in ns}  # fmt: skip
        info = self.uploads.complete(
            "demo", self.order, "a/key", upload_id, self.named((1, one), (3, three))
        )
        self.assertEqual(info.size, len(one) + len(three))
        self.assertRegex(info.etag, r"^[0-9a-f]{32}-2$")
        self.assertEqual(info.part_sizes, (len(one), len(three)))
        self.assertEqual(self.used(), info.size)
        _, ranges = self.store.open_range("demo", self.order, "a/key")
        self.assertEqual(len(ranges), 2)
        for r in ranges:
            self.assertIn(os.fstat(r.file.fileno()).st_ino, inodes)
            r.file.close()
        self.assertEqual(len(self.object_files()), 2)
        self.assertEqual(self.read("a/key", len(one) - 2, len(one) + 1), b"aata")
        self.assertEqual(self.uploads.list_uploads("demo", self.order).uploads, [])

    def test_complete_replaces_object_charged_once(self) -> None:
        """Completing over an existing object charges the new size only."""
        self.store.put(
            "demo", self.order, "a/key", [self.segment(b"old" * 100)], NewObject(300, "e")
        )
        upload_id = self.create()
        self.part(upload_id, 1, b"new")
        self.uploads.complete("demo", self.order, "a/key", upload_id, self.named((1, b"new")))
        self.assertEqual(self.used(), 3)
        self.assertEqual(self.read("a/key"), b"new")

    def test_complete_over_small_object_frees_its_bytes(self) -> None:
        """An object kept in the index that a completion replaces leaves nothing there."""
        self.store.put("demo", self.order, "a/key", [Segment("", 3, b"old")], NewObject(3, "e"))
        held = "SELECT COUNT(*) FROM small_files"
        self.assertEqual(self.store.index.connection().execute(held).fetchone()[0], 1)
        upload_id = self.create()
        self.part(upload_id, 1, b"new")
        self.uploads.complete("demo", self.order, "a/key", upload_id, self.named((1, b"new")))
        self.assertEqual(self.store.index.connection().execute(held).fetchone()[0], 0)
        self.assertEqual((self.used(), self.read("a/key")), (3, b"new"))

    def test_completion_conditions(self) -> None:
        """If-None-Match and If-Match are checked by the completion; a refusal keeps the upload."""
        upload_id = self.create()
        self.part(upload_id, 1, b"new")
        named = self.named((1, b"new"))
        complete = self.uploads.complete
        self.assertRaises(
            NoSuchPath, complete, "demo", self.order, "a/key", upload_id, named, None, False, "e"
        )
        self.store.put("demo", self.order, "a/key", [self.segment(b"old")], NewObject(3, "e"))
        self.assertRaises(
            PreconditionFailed, complete, "demo", self.order, "a/key", upload_id, named, None, True
        )
        self.assertRaises(
            PreconditionFailed,
            *(complete, "demo", self.order, "a/key", upload_id, named, None, False, "other"),
        )
        info = complete("demo", self.order, "a/key", upload_id, named, None, False, "e")
        self.assertEqual((info.size, self.read("a/key"), self.used()), (3, b"new", 3))

    def test_repeated_completion(self) -> None:
        """The same completion again answers the same object; another list is refused."""
        upload_id = self.create()
        self.part(upload_id, 1, b"data")
        named = self.named((1, b"data"))
        info = self.uploads.complete("demo", self.order, "a/key", upload_id, named)
        self.clock.now += 60
        again = self.uploads.complete("demo", self.order, "a/key", upload_id, named)
        self.assertEqual(again, info)
        self.assertEqual(self.used(), 4)
        self.assertRaises(
            NoSuchUpload,
            self.uploads.complete,
            *("demo", self.order, "a/key", upload_id, [CompletedPart(1, md5(b"other"))]),
        )

    def test_bad_completions_leave_upload_open(self) -> None:
        """A wrong part list fails as S3 fails it; the upload and its charge stay as they were."""
        upload_id = self.create()
        small, last = b"s" * 100, b"t"
        self.part(upload_id, 1, small)
        self.part(upload_id, 2, last)
        cases = [
            (InvalidPart, [CompletedPart(1, md5(b"wrong"))]),
            (InvalidPart, [CompletedPart(4, md5(last))]),
            (InvalidPartOrder, self.named((2, last), (1, small))),
            (EntityTooSmall, self.named((1, small), (2, last))),
        ]
        for error, named in cases:
            self.assertRaises(
                error, self.uploads.complete, "demo", self.order, "a/key", upload_id, named
            )
        self.assertEqual(self.used(), 101)
        page = self.uploads.list_parts("demo", self.order, "a/key", upload_id)
        self.assertEqual(len(page.parts), 2)

    def test_full_checksum_mismatch(self) -> None:
        """A full-object checksum that differs from the parts' is BadDigest."""
        upload_id = self.uploads.create(
            "demo", self.order, "a/key", NewObject(0, "", checksum_type="FULL_OBJECT"), "crc32"
        ).upload_id
        self.uploads.upload_part(
            "demo", self.order, "a/key", upload_id, 1, self.segment(b"x"), md5(b"x"),
            {"crc32": "jEPWVg=="},
        )  # fmt: skip
        self.assertRaises(
            BadDigest,
            self.uploads.complete,
            *("demo", self.order, "a/key", upload_id, self.named((1, b"x")), {"crc32": "AAAAAA=="}),
        )

    def test_racing_completions_charge_once(self) -> None:
        """Two completions at once both answer the object, charged once."""
        upload_id = self.create()
        self.part(upload_id, 1, b"data")
        named = self.named((1, b"data"))
        results: list[Any] = []
        threads = [
            threading.Thread(
                target=lambda: results.append(
                    self.uploads.complete("demo", self.order, "a/key", upload_id, named)
                )
            )
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(len({r.etag for r in results}), 1)
        self.assertEqual(len(results), 4)
        self.assertEqual(self.used(), 4)

    def test_expiry(self) -> None:
        """Idle uploads are aborted after the expiry, completion records forgotten."""
        idle = self.create()
        self.part(idle, 1, b"x" * 100)
        done = self.create("done")
        self.part(done, 1, b"y", path="done")
        self.uploads.complete("demo", self.order, "done", done, self.named((1, b"y")))
        self.clock.now += 1800
        busy = self.create("busy")
        self.part(busy, 1, b"z" * 10, path="busy")
        self.clock.now += 1801
        self.assertEqual(self.uploads.expire(), 1)
        self.assertEqual(self.used(), 11)
        self.assertEqual(
            [u.upload_id for u in self.uploads.list_uploads("demo", self.order).uploads], [busy]
        )
        self.assertRaises(
            NoSuchUpload,
            self.uploads.complete,
            *("demo", self.order, "done", done, self.named((1, b"y"))),
        )

    def test_sweep_keeps_parts(self) -> None:
        """The sweep of unreferenced files keeps the files of open uploads' parts."""
        upload_id = self.create()
        self.part(upload_id, 1, b"x")
        self.assertEqual(self.store.sweep(min_age=-1), 0)
        self.assertEqual(len(self.object_files()), 1)
