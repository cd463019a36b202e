"""The embedded network's store written by several processes at once, as ``--workers`` does.

Each process opens its own :class:`Store` on one directory (a fresh one: they race to create
it too) and overwrites, copies, deletes and stores multipart objects at the same few paths,
small objects in groups of writes committed together.
Afterwards every object reads whole (its bytes are what its ETag says) and the order's used
bytes are the sum of the stored sizes; no object file is left that no row names.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import multiprocessing.synchronize
import os
import random
import secrets

from twisted.trial.unittest import SynchronousTestCase

from lambgw.network.errors import NoSuchPath
from lambgw.network.interface import NewObject, Segment
from lambgw.network.store import Store

#: The processes writing at once, the operations each makes, the paths they share.
PROCESSES = 4
OPERATIONS = 120
PATHS = [f"shared/{n}" for n in range(5)]


def _spooled(directory: str, data: bytes) -> Segment:
    path = os.path.join(directory, secrets.token_hex(8) + ".part")
    with open(path, "wb") as f:
        f.write(data)
    return Segment(path, len(data))


def writer(root: str, spool: str, seed: int, start: multiprocessing.synchronize.Event) -> None:
    """One process's share of the writes."""
    start.wait(30)
    store = Store(root, durable=False)
    (order,) = store.ensure_account("demo", 10**9, 30)
    chance = random.Random(seed)
    for _ in range(OPERATIONS):
        path = chance.choice(PATHS)
        action = chance.random()
        if action < 0.4:
            data = bytes([chance.randrange(256)]) * chance.randrange(1, 50_000)
            etag = hashlib.md5(data).hexdigest()
            if len(data) >= 4096:
                segment = _spooled(spool, data)
                store.put("demo", order.order_id, path, [segment], NewObject(len(data), etag))
                continue
            # Small objects in memory are committed in groups, as the write lanes do.
            with store.index.group():
                for grouped in [path, *chance.sample(PATHS, chance.randrange(3))]:
                    segment = Segment("", len(data), data)
                    store.put(
                        "demo", order.order_id, grouped, [segment], NewObject(len(data), etag)
                    )
        elif action < 0.6:
            parts = [bytes([chance.randrange(256)]) * chance.randrange(1, 30_000) for _ in "abc"]
            digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts))
            new = NewObject(sum(map(len, parts)), f"{digest.hexdigest()}-3")
            segments = [_spooled(spool, p) for p in parts]
            store.put("demo", order.order_id, path, segments, new)
        elif action < 0.75:
            with contextlib.suppress(NoSuchPath):
                store.copy("demo", order.order_id, chance.choice(PATHS), order.order_id, path)
        else:
            store.delete("demo", order.order_id, path)
    store.close()


class ProcessesTests(SynchronousTestCase):
    """Several processes writing one store."""

    def test_concurrent_writers_keep_the_store_whole(self) -> None:
        """Every object reads whole and the used bytes are the sum of the stored sizes."""
        base = self.mktemp()
        root, spool = os.path.join(base, "network"), os.path.join(base, "spool")
        os.makedirs(spool)
        context = multiprocessing.get_context("spawn")
        start = context.Event()
        processes = [
            context.Process(target=writer, args=(root, spool, seed, start))
            for seed in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        start.set()
        for process in processes:
            process.join(240)
            self.assertEqual(process.exitcode, 0)

        store = Store(root)
        self.addCleanup(store.close)
        (order,) = store.orders("demo")
        page = store.list("demo", order.order_id, max_keys=1000)
        self.assertEqual(order.used, sum(info.size for info in page.objects))
        for listed in page.objects:
            info, ranges = store.open_range("demo", order.order_id, listed.path)
            data = b""
            for piece in ranges:
                with piece.file:
                    piece.file.seek(piece.offset)
                    data += piece.file.read(piece.length)
            self.assertEqual(len(data), info.size)
            if info.part_sizes:
                sizes, at, digests = info.part_sizes, 0, b""
                for size in sizes:
                    digests += hashlib.md5(data[at : at + size]).digest()
                    at += size
                expected = f"{hashlib.md5(digests).hexdigest()}-{len(sizes)}"
            else:
                expected = hashlib.md5(data).hexdigest()
            self.assertEqual(info.etag, expected)
        self.assertEqual(store.sweep(min_age=0), 0)
        self.assertEqual(os.listdir(spool), [])
