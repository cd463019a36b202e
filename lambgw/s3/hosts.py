"""Virtual-hosted-style addressing: the bucket named by the ``Host`` header.

With a domain ``s3.example.com`` configured, ``BUCKET.s3.example.com/key`` addresses the key
``key`` of bucket ``BUCKET``, as ``s3.example.com/BUCKET/key`` (path style) does.  A request to
the domain itself, or to any other host (an IP address, ``localhost``), is path style.  Host
names are case-insensitive, so the bucket is taken in lower case; order ids are accepted in
either case.  No Twisted here: the functions take and give plain values.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

from attrs import evolve

from lambgw.protocol.errors import S3Error
from lambgw.s3.request import Target, parse_target


def normalize_domain(domain: str) -> str:
    """A configured domain in the form hosts are compared with: lower case, no dots around."""
    return domain.strip().strip(".").lower()


def host_name(host: str) -> str:
    """The name part of a ``Host`` header value: lower case, without the port or final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    name, _, port = host.rpartition(":")
    if name and port.isdigit():
        host = name
    return host.rstrip(".")


def bucket_from_host(host: str | None, domains: Iterable[str]) -> str | None:
    """The bucket a ``Host`` header names under one of ``domains``, or None for path style."""
    if not host or not domains:
        return None
    name = host_name(host)
    for domain in domains:
        suffix = "." + normalize_domain(domain)
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def virtual_target(raw_uri: bytes, bucket: str) -> Target:
    """The target of a virtual-hosted request: ``bucket`` from the host, the whole path as key.

    The key keeps every ``/`` of the path but the first; checks as :func:`parse_target`.
    """
    target = parse_target(raw_uri)
    if not bucket or "/" in bucket:
        raise S3Error("InvalidURI", 400, "Couldn't parse the specified URI: bad host name.")
    key = unquote_to_bytes(target.raw_path).decode("utf-8")[1:]
    return evolve(target, bucket=bucket, key=key)


def request_target(raw_uri: bytes, host: str | None, domains: Iterable[str]) -> Target:
    """The target of a request, virtual-hosted if ``host`` is under one of ``domains``."""
    bucket = bucket_from_host(host, domains)
    if bucket is None:
        return parse_target(raw_uri)
    return virtual_target(raw_uri, bucket)
