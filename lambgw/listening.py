r"""Where the S3 API listens: the address, and the endpoints given with ``--listen``.

``[gateway] address`` is HTTP, or HTTPS with ``--tls-cert`` and ``--tls-key``.  ``--listen``
takes what ``twistd`` and ``twist`` take: ``tcp:9002:interface=\:\:1`` (IPv6),
``ssl:9443:privateKey=key.pem:certKey=cert.pem``, ``systemd:domain=INET:index=0`` (a socket
passed by systemd), ``unix:/run/lambgw.sock``.  Every TLS listener refuses protocol versions
older than TLS 1.2.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet import endpoints
from twisted.internet.interfaces import IStreamServerEndpoint

from lambgw.config import Config

#: Context options that turn off every protocol version before TLS 1.2.
OLD_PROTOCOLS = SSL.OP_NO_SSLv2 | SSL.OP_NO_SSLv3 | SSL.OP_NO_TLSv1 | SSL.OP_NO_TLSv1_1


def quote(value: str) -> str:
    r"""Escape a value for an endpoint description (``:``, ``=`` and ``\`` are special)."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def address_description(config: Config) -> str:
    """The endpoint description of ``[gateway] address``: HTTPS if a certificate is set."""
    interface = quote(config.host)
    if config.tls_cert:
        return (
            f"ssl:{config.port}:interface={interface}"
            f":privateKey={quote(config.tls_key)}:certKey={quote(config.tls_cert)}"
        )
    return f"tcp:{config.port}:interface={interface}"


def listen_descriptions(config: Config) -> list[str]:
    """Every endpoint description the S3 API listens on, the address first."""
    return [address_description(config), *config.listen]


def require_modern_tls(endpoint: Any) -> None:
    """Make a TLS endpoint refuse anything older than TLS 1.2; leave others alone."""
    factory = getattr(endpoint, "_sslContextFactory", None)
    if factory is None:
        return
    # CertificateOptions makes its context once and hands the same one to every connection.
    context: SSL.Context = factory.getContext()
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(OLD_PROTOCOLS)


def server_endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """The endpoint a description names, TLS 1.2 at least if it is a TLS one.

    Raises ValueError with a readable message for a description that cannot be used.
    """
    try:
        endpoint = endpoints.serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError, IndexError, OSError, SSL.Error) as e:
        raise ValueError(f"cannot listen on {description!r}: {e}") from None
    require_modern_tls(endpoint)
    return endpoint
