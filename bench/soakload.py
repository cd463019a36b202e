"""The soak's workload: S3 clients that remember what each key may hold, and check it.

Each client owns its keys (``cN/kM``) and works on them one operation at a time with boto3:
PUT (small, large, empty), GET, ranged GET, LIST, DeleteObjects, multipart uploads, and
overwrites of the same keys over and over.  For each key it keeps the *candidates*: the
bodies the key may hold now.  An acknowledged write leaves one candidate, its own; a write
that failed (the gateway or the node was killed under it) adds its body, or absence for a
delete, to the candidates, since it may or may not have happened.  Every read must find one
of the candidates, whole: anything else is a violation (a lost write, a partial object, a
body from nowhere).

Bodies are made from a seed, so a client keeps only seeds, sizes and digests, and makes the
bytes again to check a range.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from attrs import define, field, frozen

MiB = 1 << 20
#: Keys per client: few, so that they are overwritten often.
KEYS_PER_CLIENT = 8
#: The part size of multipart uploads (S3's smallest part but the last).
PART_SIZE = 5 * MiB


@frozen
class Body:
    """A body a key may hold: made from ``seed``, ``size`` bytes, with its SHA-256."""

    seed: int
    size: int
    sha256: str

    @classmethod
    def make(cls, seed: int, size: int) -> tuple[Body, bytes]:
        """A new body and its bytes."""
        data = random.Random(seed).randbytes(size)
        return cls(seed, size, hashlib.sha256(data).hexdigest()), data

    def data(self) -> bytes:
        """The body's bytes, made again."""
        return random.Random(self.seed).randbytes(self.size)


#: What a key may hold: a body, or nothing (None).
Candidate = Body | None


@define
class Tally:
    """What the clients did: operations done and failed, and what was found wrong."""

    done: Counter[str] = field(factory=Counter)
    failed: Counter[str] = field(factory=Counter)
    violations: list[str] = field(factory=list)
    _lock: threading.Lock = field(factory=threading.Lock)

    def record(self, operation: str, ok: bool, why: str = "") -> None:
        """Count one operation; a failure by its operation and error."""
        with self._lock:
            if ok:
                self.done[operation] += 1
            else:
                self.failed[f"{operation}: {why}"] += 1

    def violation(self, what: str) -> None:
        """Note something that must never happen."""
        with self._lock:
            self.violations.append(what)


def error_name(error: BaseException) -> str:
    """A short name for a failed call: the S3 error code, or the exception's type."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(error).__name__


def check_read(key: str, candidates: list[Candidate], found: Candidate | str) -> str | None:
    """Why what a read found of ``key`` is wrong (None if it is one of the candidates).

    ``found`` is the body read, or a SHA-256 that matched none.
    """
    if found in candidates:
        return None
    if found is None:
        return f"{key}: missing, but an acknowledged write put it there"
    if isinstance(found, str):
        sizes = sorted({c.size for c in candidates if c is not None})
        return f"{key}: a body that no write sent (sha256 {found[:16]}, sizes sent {sizes})"
    return f"{key}: {found.size} bytes of an older write, overwritten since"


@define
class SoakClient:
    """One S3 client of the soak, with the candidates of each of its keys."""

    number: int
    s3: Any
    bucket: str
    tally: Tally
    rng: random.Random
    #: The candidates of each key, once it has been written.
    keys: dict[str, list[Candidate]] = field(factory=dict)
    _seed: int = 0

    def _next_seed(self) -> int:
        self._seed += 1
        return self.number * 10**9 + self._seed

    def _key(self) -> str:
        return f"c{self.number}/k{self.rng.randrange(KEYS_PER_CLIENT)}"

    def _size(self) -> int:
        roll = self.rng.random()
        if roll < 0.05:
            return 0
        if roll < 0.75:
            return self.rng.randint(1, 64 * 1024)
        if roll < 0.92:
            return self.rng.randint(256 * 1024, 2 * MiB)
        return self.rng.randint(6 * MiB, 12 * MiB)

    def _wrote(self, key: str, candidate: Candidate, acknowledged: bool) -> None:
        if acknowledged:
            self.keys[key] = [candidate]
        else:
            self.keys.setdefault(key, [None])
            if candidate not in self.keys[key]:
                self.keys[key].append(candidate)

    def step(self) -> None:
        """Do one operation, chosen at random, and check what it read."""
        operations: list[tuple[float, Callable[[], None]]] = [
            (30, self.put),
            (20, self.get),
            (12, self.ranged_get),
            (8, self.list),
            (8, self.delete_objects),
            (4, self.multipart),
        ]
        (operation,) = self.rng.choices(
            [o for _, o in operations], weights=[w for w, _ in operations]
        )
        name = operation.__name__
        try:
            operation()
        except Exception as e:
            self.tally.record(name, False, error_name(e))
            time.sleep(0.2)  # the gateway or the node is likely down: do not spin
        else:
            self.tally.record(name, True)

    def put(self) -> None:
        """PUT a new body to one of the keys (often one already written)."""
        key = self._key()
        body, data = Body.make(self._next_seed(), self._size())
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        except Exception:
            self._wrote(key, body, False)
            raise
        self._wrote(key, body, True)

    def _written_key(self) -> str | None:
        return self.rng.choice(sorted(self.keys)) if self.keys else None

    def get(self) -> None:
        """GET a key written before; it must hold one of its candidates, whole."""
        key = self._written_key()
        if key is not None:
            self.check(key, self.read(key))

    def read(self, key: str) -> Candidate | str:
        """The body ``key`` holds (None if it holds none), or the digest of a body unknown."""
        try:
            answer = self.s3.get_object(Bucket=self.bucket, Key=key)
        except Exception as e:
            if error_name(e) == "NoSuchKey":
                return None
            raise
        digest = hashlib.sha256(answer["Body"].read()).hexdigest()
        for candidate in self.keys.get(key, []):
            if candidate is not None and candidate.sha256 == digest:
                return candidate
        return digest

    def check(self, key: str, found: Candidate | str) -> None:
        """Note a violation if ``found`` is none of ``key``'s candidates."""
        wrong = check_read(key, self.keys.get(key, [None]), found)
        if wrong is not None:
            self.tally.violation(wrong)

    def ranged_get(self) -> None:
        """GET a byte range of a key; it must be that range of one of the candidates."""
        key = self._written_key()
        bodies = [c for c in self.keys.get(key or "", []) if c is not None and c.size]
        if key is None or not bodies:
            return
        size = self.rng.choice(bodies).size
        start = self.rng.randrange(size)
        end = min(size - 1, start + self.rng.randint(0, 256 * 1024))
        try:
            answer = self.s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}")
        except Exception as e:
            if error_name(e) in ("NoSuchKey", "InvalidRange") and None in self.keys[key]:
                return
            if error_name(e) == "InvalidRange" and any(b.size <= start for b in bodies):
                return
            raise
        got = answer["Body"].read()
        if not any(got == c.data()[start : end + 1] for c in bodies):
            self.tally.violation(f"{key}: bytes {start}-{end} are of no write")

    def list(self) -> None:
        """LIST the client's keys: every key listed is a candidate, every sure one is there."""
        listed: dict[str, int] = {}
        token: dict[str, str] = {}
        while True:
            page = self.s3.list_objects_v2(
                Bucket=self.bucket, Prefix=f"c{self.number}/", MaxKeys=5, **token
            )
            listed.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
            if not page.get("IsTruncated"):
                break
            token = {"ContinuationToken": page["NextContinuationToken"]}
        for key, size in listed.items():
            sizes = {c.size for c in self.keys.get(key, []) if c is not None}
            if size not in sizes:
                self.tally.violation(f"{key}: listed with {size} bytes, written {sorted(sizes)}")
        for key, candidates in self.keys.items():
            if None not in candidates and key not in listed:
                self.tally.violation(f"{key}: acknowledged but not listed")

    def delete_objects(self) -> None:
        """Delete one to three keys with one DeleteObjects request."""
        keys = sorted({self._key() for _ in range(self.rng.randint(1, 3))})
        try:
            answer = self.s3.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys]}
            )
        except Exception:
            for key in keys:
                self._wrote(key, None, False)
            raise
        deleted = {d["Key"] for d in answer.get("Deleted", [])}
        for key in keys:
            self._wrote(key, None, key in deleted)
        if len(deleted) != len(keys):
            raise RuntimeError(f"DeleteObjects refused {sorted(set(keys) - deleted)}")

    def multipart(self) -> None:
        """Upload a key in two or three parts; the body counts once completion is answered."""
        key = self._key()
        parts = self.rng.randint(2, 3)
        size = (parts - 1) * PART_SIZE + self.rng.randint(1, MiB)
        body, data = Body.make(self._next_seed(), size)
        upload = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        done = []
        try:
            for number in range(1, parts + 1):
                piece = data[(number - 1) * PART_SIZE : number * PART_SIZE]
                answer = self.s3.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number, Body=piece
                )
                done.append({"PartNumber": number, "ETag": answer["ETag"]})
        except Exception:
            self.abort(key, upload)
            raise
        try:
            self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done}
            )
        except Exception:
            self._wrote(key, body, False)
            raise
        self._wrote(key, body, True)

    def abort(self, key: str, upload: str) -> None:
        """Abort an upload whose part failed (left open if that fails too)."""
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
        except Exception as e:
            self.tally.record("abort", False, error_name(e))
