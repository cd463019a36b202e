"""End-to-end listening: HTTPS with a test CA, IPv6, and systemd's socket activation.

The CA is made in the test and verified by boto3; the activated socket is handed over as
systemd hands it (fd 3, ``LISTEN_FDS``, ``LISTEN_PID``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
from typing import Any, ClassVar

import boto3
from botocore.client import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.configured import ADMIN, ConfiguredCase, write_config
from tests.gateway import (
    ACCESS_KEY,
    ACCOUNT,
    SECRET_KEY,
    STOP_GRACE,
    TWISTD,
    _environment,
    free_port,
)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_test_ca(directory: str) -> tuple[str, str, str]:
    """Make a CA and a server certificate for localhost, 127.0.0.1 and ::1 in ``directory``.

    Returns the paths of the CA certificate, the server certificate and its key (PEM).
    """
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("lambgw test CA"))
        .issuer_name(_name("lambgw test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = tuple(os.path.join(directory, n) for n in ("ca.pem", "cert.pem", "key.pem"))
    pem = serialization.Encoding.PEM
    contents = [
        ca_cert.public_bytes(pem),
        cert.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    ]
    for path, content in zip(paths, contents, strict=True):
        with open(path, "wb") as f:
            f.write(content)
    return paths[0], paths[1], paths[2]


def client(endpoint: str, verify: str | bool = True) -> Any:
    """A path-style boto3 S3 client for ``endpoint``."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        verify=verify,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def ipv6_loopback() -> bool:
    """Whether this machine can listen on ::1."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


class HTTPSTests(ConfiguredCase):
    """The gateway address served over HTTPS, and a second listener on IPv6 loopback."""

    FLAGS = (
        "--tls-cert", "{home}/cert.pem", "--tls-key", "{home}/key.pem",
        "--listen", "tcp:{port2}:interface=\\:\\:1",
    )  # fmt: skip
    ca: ClassVar[str]

    @classmethod
    def prepare(cls, home: str) -> None:
        """Make the test CA and the gateway's certificate."""
        if not ipv6_loopback():
            raise SkipTest("no IPv6 loopback on this machine")
        cls.ca, _, _ = make_test_ca(home)

    def https(self) -> Any:
        """A boto3 client that verifies the gateway against the test CA."""
        return client(f"https://localhost:{self.gateway.port}", verify=self.ca)

    def setUp(self) -> None:
        """Start the gateway; the bucket is the account's order."""
        super().setUp()
        type(self).bucket = self.https().list_buckets()["Buckets"][0]["Name"]

    def test_boto3_verifies_and_round_trips(self) -> None:
        """boto3 verifying the test CA puts and gets an object over HTTPS."""
        s3 = self.https()
        s3.put_object(Bucket=self.bucket, Key=self.key("a"), Body=b"over tls")
        body = s3.get_object(Bucket=self.bucket, Key=self.key("a"))["Body"].read()
        self.assertEqual(body, b"over tls")

    def test_unknown_ca_refused(self) -> None:
        """A client that trusts only the system CAs refuses the test certificate."""
        from botocore.exceptions import SSLError

        with self.assertRaises(SSLError):
            client(f"https://localhost:{self.gateway.port}").list_buckets()

    def test_tls_12_or_newer(self) -> None:
        """The handshake gives TLS 1.2 or newer; a client capped at TLS 1.1 is refused."""
        context = ssl.create_default_context(cafile=self.ca)
        with (
            socket.create_connection(("127.0.0.1", self.gateway.port)) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            self.assertIn(tls.version(), ("TLSv1.2", "TLSv1.3"))
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(self.ca)
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
        with (
            socket.create_connection(("127.0.0.1", self.gateway.port)) as raw,
            self.assertRaises(ssl.SSLError),
        ):
            old.wrap_socket(raw, server_hostname="localhost")

    def test_plain_http_not_served(self) -> None:
        """The HTTPS address does not answer plain HTTP."""
        from botocore.exceptions import EndpointConnectionError, HTTPClientError

        with self.assertRaises((EndpointConnectionError, HTTPClientError)):
            client(f"http://127.0.0.1:{self.gateway.port}").list_buckets()

    def test_ipv6_listener(self) -> None:
        """boto3 reaches the same gateway on [::1] through --listen."""
        s3 = client(f"http://[::1]:{self.port2}")
        s3.put_object(Bucket=self.bucket, Key=self.key("v6"), Body=b"six")
        self.assertEqual(
            self.https().get_object(Bucket=self.bucket, Key=self.key("v6"))["Body"].read(),
            b"six",
        )


class SocketActivationTests(SynchronousTestCase):
    """``--listen systemd:domain=INET:index=0`` serves on a socket the gateway inherits."""

    def test_inherited_socket_served(self) -> None:
        """boto3 is answered on a listening socket passed as fd 3 with LISTEN_FDS/LISTEN_PID."""
        root = tempfile.mkdtemp(prefix="lambgw-e2e-")
        self.addCleanup(shutil.rmtree, root, True)
        write_config(root, "")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        argv = [
            *(*TWISTD, "-n", "--pidfile=", "lambgw", "--home", root, "--account", ACCOUNT),
            *("--gateway.address", f"127.0.0.1:{free_port()}", "--admin-listen", ADMIN),
            *("--listen", "systemd:domain=INET:index=0"),
        ]
        # As systemd does: the socket is fd 3 and LISTEN_PID is the gateway's own pid (bash: the
        # socket's own number may be 10 or more, which sh cannot redirect).
        script = (
            f'export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=s3; exec "$@" 3<&{sock.fileno()}'
        )
        with open(os.path.join(root, "gateway.log"), "wb") as log:
            process = subprocess.Popen(
                ["bash", "-c", script, "bash", *argv],
                pass_fds=[sock.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
                env=_environment(),
            )

        def stop() -> None:
            process.terminate()
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

        self.addCleanup(stop)
        sock.close()
        try:
            buckets = client(f"http://127.0.0.1:{port}").list_buckets()["Buckets"]
        except Exception as e:
            with open(os.path.join(root, "gateway.log"), encoding="utf-8") as f:
                self.fail(f"{e}\n{f.read()}")
        self.assertEqual(len(buckets), 1)
