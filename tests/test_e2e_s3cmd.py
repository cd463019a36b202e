"""End-to-end tests with s3cmd (SigV4, and SigV2 in one test) against a listening gateway."""

from __future__ import annotations

import os
import shutil
import subprocess

from tests.gateway import ClientTests, GatewayCase, MiB

S3CFG = """\
[default]
access_key = {access_key}
secret_key = {secret_key}
host_base = 127.0.0.1:{port}
host_bucket = 127.0.0.1:{port}
use_https = False
signature_v2 = {v2}
bucket_location = us-east-1
check_ssl_certificate = False
"""


class _S3cmdTests(ClientTests):
    """The s3cmd tests, run in both modes."""

    def s3cmd_run(self, *args: str, v2: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``s3cmd -c CFG ARGS`` with a config made for this gateway."""
        config = os.path.join(self.root, f"s3cfg-v2-{v2}")
        if not os.path.exists(config):
            with open(config, "w") as f:
                f.write(
                    S3CFG.format(
                        access_key=self.gateway.access_key,
                        secret_key=self.gateway.secret_key,
                        port=self.gateway.port,
                        v2=v2,
                    )
                )
        s3cmd = shutil.which("s3cmd") or "s3cmd"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return subprocess.run(
            [s3cmd, "-c", config, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def s3cmd(self, *args: str, v2: bool = False) -> str:
        """Run s3cmd; its stdout (fails the test if it fails)."""
        done = self.s3cmd_run(*args, v2=v2)
        if done.returncode != 0:
            self.fail(f"s3cmd {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done.stdout

    def url(self, key: str) -> str:
        """``s3://BUCKET/KEY``."""
        return f"s3://{self.bucket}/{key}"

    def round_trip(self, size: int, v2: bool = False) -> None:
        """Upload ``size`` random bytes with ``s3cmd put`` and download them with ``get``."""
        source = self.new_file(size)
        copy = self.scratch_path("download")
        self.s3cmd("put", source, self.url(self.key("object")), v2=v2)
        self.s3cmd("get", "--force", self.url(self.key("object")), copy, v2=v2)
        self.assertSameFile(source, copy)

    def put(self, key: str) -> None:
        """Store a few bytes at ``key`` with ``s3cmd put``."""
        self.s3cmd("put", self.new_file(5, f"{self._testMethodName}-{len(key)}"), self.url(key))

    def test_ls_lists_the_bucket(self) -> None:
        """``s3cmd ls`` lists the bucket."""
        self.assertIn(f"s3://{self.bucket}", self.s3cmd("ls").split())

    def test_round_trip_empty(self) -> None:
        """A 0-byte file comes back byte-identical."""
        self.round_trip(0)

    def test_round_trip_one_byte(self) -> None:
        """A 1-byte file comes back byte-identical."""
        self.round_trip(1)

    def test_round_trip_5mib(self) -> None:
        """A 5 MiB file comes back byte-identical."""
        self.round_trip(5 * MiB)

    def test_round_trip_100mib_multipart(self) -> None:
        """A 100 MiB file, uploaded in 15 MiB parts, comes back byte-identical."""
        self.round_trip(100 * MiB)

    def test_round_trip_signature_v2(self) -> None:
        """With ``signature_v2 = True`` a 1 MiB file goes up and comes back byte-identical."""
        self.round_trip(MiB, v2=True)

    def test_ls_prefix(self) -> None:
        """``s3cmd ls s3://b/prefix/`` shows the sub-prefixes and the objects under it."""
        for name in ("a.txt", "sub/c.txt", "sub/deeper/d.txt"):
            self.put(self.key(name))
        lines = [line.split() for line in self.s3cmd("ls", self.url(self.key(""))).splitlines()]
        self.assertIn(["DIR", self.url(self.key("sub/"))], lines)
        self.assertEqual(
            [line[-1] for line in lines if line[0] != "DIR"], [self.url(self.key("a.txt"))]
        )

    def test_metadata_round_trip(self) -> None:
        """A Content-Type and an ``x-amz-meta-*`` header given to put show in ``s3cmd info``."""
        key = self.key("meta")
        self.s3cmd(
            *("put", "--no-guess-mime-type", "--mime-type=text/x-e2e"),
            *("--add-header=x-amz-meta-colour:blue", self.new_file(10), self.url(key)),
        )
        info = self.s3cmd("info", self.url(key))
        self.assertRegex(info, r"MIME type:\s+text/x-e2e")
        self.assertRegex(info, r"x-amz-meta-colour:\s+blue")

    def test_del_deletes(self) -> None:
        """``s3cmd del`` removes the object."""
        self.put(self.key("doomed"))
        self.s3cmd("del", self.url(self.key("doomed")))
        self.assertNotIn("doomed", self.s3cmd("ls", self.url(self.key(""))))

    def test_del_recursive(self) -> None:
        """``s3cmd del --recursive`` removes everything under a prefix."""
        for name in ("r/1", "r/2/3"):
            self.put(self.key(name))
        self.s3cmd("del", "--recursive", self.url(self.key("r/")))
        self.assertEqual(self.s3cmd("ls", "--recursive", self.url(self.key(""))).strip(), "")

    def test_cp_copies(self) -> None:
        """``s3cmd cp`` makes a server-side copy with the same bytes."""
        source = self.new_file(1000)
        copy = self.scratch_path("copy")
        self.s3cmd("put", source, self.url(self.key("original")))
        self.s3cmd("cp", self.url(self.key("original")), self.url(self.key("copy")))
        self.s3cmd("get", self.url(self.key("copy")), copy)
        self.assertSameFile(source, copy)


class S3cmdLambgwTests(_S3cmdTests, GatewayCase):
    """s3cmd against lambgw: the bucket is an order id."""

    mode = "lambgw"


class S3cmdS3gwTests(_S3cmdTests, GatewayCase):
    """s3cmd against s3gw: ordinary buckets inside one order."""

    mode = "s3gw"

    def test_mb_rb(self) -> None:
        """``s3cmd mb`` makes a listed bucket and ``rb`` removes it."""
        self.s3cmd("mb", "s3://s3cmd-made")
        self.assertIn("s3://s3cmd-made", self.s3cmd("ls").split())
        self.s3cmd("rb", "s3://s3cmd-made")
        self.assertNotIn("s3://s3cmd-made", self.s3cmd("ls").split())
