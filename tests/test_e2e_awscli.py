"""End-to-end tests with the aws cli (``aws s3`` and ``aws s3api``) against a listening gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from twisted.trial.unittest import SkipTest

from tests.gateway import ClientTests, GatewayCase, MiB


def _configure(config_dir: str, *settings: tuple[str, str]) -> dict[str, str]:
    """Run ``aws configure`` as a user types it, then ``aws configure set`` each setting.

    Returns the environment that makes the aws cli use that configuration only.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = os.path.join(config_dir, "config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.path.join(config_dir, "credentials")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    aws = [sys.executable, "-m", "awscli", "configure"]
    answers = "accesskey\nsecretkey\n\n\n"
    subprocess.run(aws, input=answers, text=True, env=env, check=True, capture_output=True)
    for name, value in settings:
        subprocess.run([*aws, "set", name, value], env=env, check=True, capture_output=True)
    return env


class _AwsCliTests(ClientTests):
    """The aws cli tests, run in both modes."""

    env: dict[str, str]

    @classmethod
    def setUpClass(cls) -> None:
        """Start the gateway and configure the aws cli for it as ``aws configure`` does."""
        super().setUpClass()
        config_dir = os.path.join(cls.root, "aws")
        os.makedirs(config_dir)
        cls.env = _configure(config_dir)

    def aws(self, *args: str, check: bool = True, endpoint: str = "") -> str:
        """Run ``aws --endpoint-url ENDPOINT ARGS``; its stdout (fails the test if it fails)."""
        done = self.aws_run(*args, endpoint=endpoint)
        if check and done.returncode != 0:
            self.fail(f"aws {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done.stdout

    def aws_run(self, *args: str, endpoint: str = "") -> subprocess.CompletedProcess[str]:
        """Run ``aws --endpoint-url ENDPOINT ARGS`` and return what happened."""
        argv = [sys.executable, "-m", "awscli", "--endpoint-url", endpoint or self.gateway.endpoint]
        return subprocess.run(
            [*argv, *args], env=self.env, capture_output=True, text=True, timeout=300, check=False
        )

    def s3api(self, *args: str) -> Any:
        """Run ``aws s3api ARGS`` and parse its JSON answer."""
        out = self.aws("s3api", *args)
        return json.loads(out) if out.strip() else {}

    def url(self, key: str, bucket: str = "") -> str:
        """``s3://BUCKET/KEY``."""
        return f"s3://{bucket or self.bucket}/{key}"

    def round_trip(self, size: int) -> None:
        """Upload ``size`` random bytes with ``aws s3 cp`` and download them back."""
        source = self.new_file(size)
        copy = self.scratch_path("download")
        self.aws("s3", "cp", source, self.url(self.key("object")))
        self.aws("s3", "cp", self.url(self.key("object")), copy)
        self.assertSameFile(source, copy)

    def put(self, key: str, body: bytes = b"content", *args: str) -> None:
        """Store ``body`` at ``key`` with ``aws s3api put-object`` (extra ``args`` passed on)."""
        path = self.scratch_path(f"put-{len(body)}")
        with open(path, "wb") as f:
            f.write(body)
        self.s3api("put-object", "--bucket", self.bucket, "--key", key, "--body", path, *args)

    def test_ls_lists_the_bucket(self) -> None:
        """``aws s3 ls`` lists the bucket."""
        names = [line.split()[-1] for line in self.aws("s3", "ls").splitlines()]
        self.assertIn(self.bucket, names)

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
        """A 100 MiB file, uploaded in parts, comes back byte-identical."""
        self.round_trip(100 * MiB)

    def test_ls_prefix(self) -> None:
        """``aws s3 ls s3://b/prefix/`` shows the sub-prefixes and the objects under it."""
        for name in ("a.txt", "b.txt", "sub/c.txt", "sub/deeper/d.txt"):
            self.put(self.key(name))
        lines = self.aws("s3", "ls", self.url(self.key(""))).splitlines()
        self.assertIn("PRE sub/", [line.strip() for line in lines])
        self.assertEqual(
            sorted(line.split()[-1] for line in lines if not line.strip().startswith("PRE")),
            ["a.txt", "b.txt"],
        )

    def test_list_objects_v2_delimiter(self) -> None:
        """``list-objects-v2`` with a delimiter gives CommonPrefixes and the direct objects."""
        for name in ("x/1", "x/2", "y/1", "z"):
            self.put(self.key(name))
        prefix = self.key("")
        listing = self.s3api(
            "list-objects-v2", "--bucket", self.bucket, "--prefix", prefix, "--delimiter", "/"
        )
        self.assertEqual(
            [p["Prefix"] for p in listing["CommonPrefixes"]], [prefix + "x/", prefix + "y/"]
        )
        self.assertEqual([o["Key"] for o in listing["Contents"]], [prefix + "z"])

    def test_metadata_round_trip(self) -> None:
        """User metadata and Content-Type given to ``aws s3 cp`` come back from head-object."""
        source = self.new_file(10)
        key = self.key("meta")
        self.aws(
            *("s3", "cp", source, self.url(key)),
            *("--metadata", "colour=blue,owner=e2e", "--content-type", "text/x-e2e"),
        )
        head = self.s3api("head-object", "--bucket", self.bucket, "--key", key)
        self.assertEqual(head["Metadata"], {"colour": "blue", "owner": "e2e"})
        self.assertEqual(head["ContentType"], "text/x-e2e")
        self.assertEqual(head["ContentLength"], 10)

    def test_range_reads(self) -> None:
        """``get-object --range`` returns the asked bytes, suffix ranges included."""
        key = self.key("ranged")
        self.put(key, b"0123456789")
        out = self.scratch_path("range")
        for spec, expected in (("bytes=2-5", b"2345"), ("bytes=-3", b"789"), ("bytes=7-", b"789")):
            answer = self.s3api(
                "get-object", "--bucket", self.bucket, "--key", key, "--range", spec, out
            )
            with open(out, "rb") as f:
                self.assertEqual(f.read(), expected, spec)
            self.assertEqual(answer["ContentLength"], len(expected))

    def test_rm_deletes(self) -> None:
        """``aws s3 rm`` removes the object: head-object then fails."""
        key = self.key("doomed")
        self.put(key)
        self.aws("s3", "rm", self.url(key))
        head = self.aws_run("s3api", "head-object", "--bucket", self.bucket, "--key", key)
        self.assertNotEqual(head.returncode, 0)
        self.assertIn("404", head.stderr)

    def test_cp_copies_inside_the_bucket(self) -> None:
        """``aws s3 cp s3://b/k s3://b/k2`` makes a server-side copy."""
        source = self.new_file(1000)
        copy = self.scratch_path("copy")
        self.aws("s3", "cp", source, self.url(self.key("original")))
        self.aws("s3", "cp", self.url(self.key("original")), self.url(self.key("copy")))
        self.aws("s3", "cp", self.url(self.key("copy")), copy)
        self.assertSameFile(source, copy)

    def test_delete_objects(self) -> None:
        """``s3api delete-objects`` removes every listed key and only those."""
        for name in ("d1", "d2", "keep"):
            self.put(self.key(name))
        doomed = {"Objects": [{"Key": self.key("d1")}, {"Key": self.key("d2")}]}
        answer = self.s3api(
            "delete-objects", "--bucket", self.bucket, "--delete", json.dumps(doomed)
        )
        self.assertEqual(
            sorted(d["Key"] for d in answer["Deleted"]), [self.key("d1"), self.key("d2")]
        )
        listing = self.s3api("list-objects-v2", "--bucket", self.bucket, "--prefix", self.key(""))
        self.assertEqual([o["Key"] for o in listing["Contents"]], [self.key("keep")])

    def test_rm_recursive(self) -> None:
        """``aws s3 rm --recursive`` removes everything under a prefix."""
        for name in ("r/1", "r/2", "r/3/4"):
            self.put(self.key(name))
        self.aws("s3", "rm", "--recursive", self.url(self.key("r/")))
        listing = self.s3api("list-objects-v2", "--bucket", self.bucket, "--prefix", self.key(""))
        self.assertEqual(listing.get("KeyCount", 0), 0)

    def test_get_if_none_match_not_modified(self) -> None:
        """``get-object --if-none-match ETAG`` is answered 304 Not Modified."""
        key = self.key("etagged")
        self.put(key)
        etag = self.s3api("head-object", "--bucket", self.bucket, "--key", key)["ETag"]
        done = self.aws_run(
            *("s3api", "get-object", "--bucket", self.bucket, "--key", key),
            *("--if-none-match", etag, self.scratch_path("cond")),
        )
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("304", done.stderr)


class AwsCliLambgwTests(_AwsCliTests, GatewayCase):
    """aws cli against lambgw: the bucket is an order id."""

    mode = "lambgw"

    def test_seed_examples(self) -> None:
        """The seed's aws cli commands work verbatim with its 64MB multipart threshold."""
        config_dir = os.path.join(self.root, "aws-seed")
        os.makedirs(config_dir)
        self.env = _configure(config_dir, ("default.s3.multipart_threshold", "64MB"))
        endpoint = f"--endpoint=http://localhost:{self.gateway.port}/"
        order = self.gateway.order_id
        source = self.new_file(3 * MiB, "your-file")
        copy = self.scratch_path("new-file")
        argv = [sys.executable, "-m", "awscli", "s3", endpoint]

        def run(*args: str) -> str:
            done = subprocess.run(
                [*argv, *args], env=self.env, capture_output=True, text=True, check=False
            )
            self.assertEqual(done.returncode, 0, done.stderr)
            return done.stdout

        self.assertIn(order, run("ls"))
        run("cp", source, f"s3://{order}/test/")
        self.assertIn("your-file", run("ls", f"s3://{order}/test/"))
        run("cp", f"s3://{order}/test/your-file", copy)
        self.assertSameFile(source, copy)
        run("rm", f"s3://{order}/test/your-file")
        self.assertNotIn("your-file", run("ls", f"s3://{order}/test/"))

    def test_cp_copies_across_orders(self) -> None:
        """``aws s3 cp`` from one order to another of the account copies the object."""
        other = self.gateway.buy_order()
        source = self.new_file(1000)
        copy = self.scratch_path("copy")
        self.aws("s3", "cp", source, self.url(self.key("original")))
        self.aws("s3", "cp", self.url(self.key("original")), self.url(self.key("copy"), other))
        self.aws("s3", "cp", self.url(self.key("copy"), other), copy)
        self.assertSameFile(source, copy)

    def test_bought_order_is_listed(self) -> None:
        """An order bought while the gateway runs shows up in ``aws s3 ls``."""
        other = self.gateway.buy_order()
        self.assertIn(other, self.aws("s3", "ls"))

    def test_mb_of_other_name_refused(self) -> None:
        """``aws s3 mb`` of a name that is not an order fails: orders are bought."""
        if self.gateway.is_moto:
            raise SkipTest("moto creates any bucket")
        done = self.aws_run("s3", "mb", "s3://awstest")
        self.assertNotEqual(done.returncode, 0)
        self.assertNotIn("awstest", self.aws("s3", "ls"))


class AwsCliS3gwTests(_AwsCliTests, GatewayCase):
    """aws cli against s3gw: ordinary buckets inside one order."""

    mode = "s3gw"

    def test_mb_cp_ls_rb(self) -> None:
        """``mb``, ``cp``, ``ls``, ``rm`` and ``rb`` of a new bucket work in turn."""
        source = self.new_file(100, "your-file")
        self.aws("s3", "mb", "s3://awstest")
        self.assertIn("awstest", self.aws("s3", "ls").split())
        self.aws("s3", "cp", source, "s3://awstest/your-file")
        self.assertIn("your-file", self.aws("s3", "ls", "s3://awstest"))
        self.aws("s3", "rm", "s3://awstest/your-file")
        self.aws("s3", "rb", "s3://awstest")
        self.assertNotIn("awstest", self.aws("s3", "ls").split())
