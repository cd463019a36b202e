"""The multipart figures: a large upload in parts sent concurrently, its completion, peak RSS.

Parts are signed and sent as boto3's transfer manager sends them (SigV4, SHA-256 of each
part, a CRC32 checksum header), ``concurrency`` at a time over their own connections.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable
from http.client import HTTPConnection

from bench.client import (
    BenchError,
    Payload,
    PreparedRequest,
    connect,
    object_path,
    perform,
)
from bench.servers import RssSampler, Target, memory_status, reset_peak_rss

MiB = 1 << 20
MB = 1_000_000


def _upload_id(answer: bytes) -> str:
    found = re.search(rb"<UploadId>([^<]+)</UploadId>", answer)
    if found is None:
        raise BenchError(f"CreateMultipartUpload answered no UploadId: {answer[:200]!r}")
    return found.group(1).decode()


def _send_parts(
    target: Target, path: str, upload_id: str, payload: Payload, parts: int, concurrency: int
) -> dict[int, str]:
    """Upload ``parts`` copies of ``payload`` as parts 1..N; return their ETags."""
    signer = target.signer()
    etags: dict[int, str] = {}
    errors: list[BaseException] = []
    numbers = iter(range(1, parts + 1))
    lock = threading.Lock()

    def work() -> None:
        conn = connect(target.endpoint)
        try:
            while not errors:
                with lock:
                    number = next(numbers, None)
                if number is None:
                    return
                query = [("partNumber", str(number)), ("uploadId", upload_id)]
                request = signer.prepare("PUT", path, query, payload=payload)
                conn.request(request.method, request.target, body=request.body,
                             headers=dict(request.headers))  # fmt: skip
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise BenchError(f"UploadPart {number}: {response.status}")
                etag = response.getheader("ETag") or ""
                with lock:
                    etags[number] = etag
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchError(f"a part failed: {errors[0]!r}") from errors[0]
    return etags


def _complete_request(
    target: Target, path: str, upload_id: str, etags: dict[int, str]
) -> PreparedRequest:
    xml = "<CompleteMultipartUpload>" + "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{etags[n]}</ETag></Part>" for n in sorted(etags)
    ) + "</CompleteMultipartUpload>"  # fmt: skip
    return target.signer().prepare(
        "POST", path, [("uploadId", upload_id)], payload=Payload.of(xml.encode())
    )


def _upload(
    conn: HTTPConnection,
    target: Target,
    path: str,
    payload: Payload,
    parts: int,
    concurrency: int,
) -> tuple[float, float]:
    """Upload ``parts`` copies of ``payload`` to ``path``: (seconds in all, of completion)."""
    start = time.perf_counter()
    upload_id = _upload_id(perform(conn, target.signer().prepare("POST", path, [("uploads", "")])))
    etags = _send_parts(target, path, upload_id, payload, parts, concurrency)
    before_complete = time.perf_counter()
    answer = perform(conn, _complete_request(target, path, upload_id, etags))
    done = time.perf_counter()
    if b"<Error>" in answer:
        raise BenchError(f"CompleteMultipartUpload failed: {answer[:300]!r}")
    return done - start, done - before_complete


def measure_multipart(
    size: int, part_size: int, concurrency: int, payload_of: Callable[[int], Payload]
) -> Callable[[Target], dict[str, tuple[float, str]]]:
    """A measure of one ``size`` upload in ``part_size`` parts, ``concurrency`` at a time.

    Each run uploads a new key, uploads it again over the first object, then deletes it.
    Returns the figures ``mp_upload`` (MB/s of the first upload, parts and completion),
    ``mp_complete`` (milliseconds its CompleteMultipartUpload took), ``mp_complete_over``
    (the same over the existing object), ``mp_delete`` (milliseconds the DELETE took)
    and ``mp_rss`` (the server's peak RSS in MiB).
    """
    if size % part_size:
        raise ValueError("size must be a whole number of parts")
    runs = itertools.count()
    parts = size // part_size

    def measure(target: Target) -> dict[str, tuple[float, str]]:
        payload = payload_of(part_size)
        path = object_path(target.bucket, f"bench/multipart-{next(runs)}")
        resettable = reset_peak_rss(target.pid)
        before = memory_status(target.pid)["VmRSS"]
        conn = connect(target.endpoint)
        try:
            with RssSampler(target.pid) as sampler:
                took, complete = _upload(conn, target, path, payload, parts, concurrency)
                _, complete_over = _upload(conn, target, path, payload, parts, concurrency)
                start = time.perf_counter()
                perform(conn, target.signer().prepare("DELETE", path))
                delete = time.perf_counter() - start
        finally:
            conn.close()
        peak = sampler.peak
        if resettable:
            peak = max(peak, memory_status(target.pid)["VmHWM"])
        return {
            "mp_upload": (size / took / MB, f"{parts} parts"),
            "mp_complete": (complete * 1000, ""),
            "mp_complete_over": (complete_over * 1000, ""),
            "mp_delete": (delete * 1000, ""),
            "mp_rss": (peak / MiB, f"RSS before {before / MiB:.0f} MiB"),
        }

    return measure
