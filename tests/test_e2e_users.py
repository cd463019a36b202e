"""End-to-end: one gateway serving several accounts, and the keys reloaded on SIGHUP."""

from __future__ import annotations

import http.client
import os
import signal
import urllib.parse
from typing import Any

import boto3
from botocore.client import Config
from botocore.exceptions import ClientError

from lambgw.network.store import Store
from tests.configured import ConfiguredCase, send_signal, wait_for, write_config
from tests.gateway import ACCESS_KEY, SECRET_KEY


def users_config(alice_secret: str = "alice-secret") -> str:  # noqa: S107 - test keys
    """A config with the default keys for account demo, and alice and bob on their own."""
    return f"""
[gateway]
access_key = "{ACCESS_KEY}"
secret_key = "{SECRET_KEY}"

[[gateway.users]]
access_key = "alice-key"
secret_key = "{alice_secret}"
account = "alice"

[[gateway.users]]
access_key = "bob-key"
secret_key = "bob-secret"
account = "bob"
"""


class UsersCase(ConfiguredCase):
    """A gateway with the users of :func:`users_config`."""

    CONFIG = users_config()

    def client(self, access_key: str, secret_key: str) -> Any:
        """A path-style boto3 client signing with the given keys."""
        return boto3.client(
            "s3",
            endpoint_url=self.gateway.endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def buckets(self, s3: Any) -> list[str]:
        """The names of the buckets a client sees."""
        return [b["Name"] for b in s3.list_buckets()["Buckets"]]

    def assertRefused(self, codes: tuple[str, ...], call: Any, **kwargs: Any) -> None:
        """Assert that a boto3 call fails with one of ``codes``."""
        with self.assertRaises(ClientError) as caught:
            call(**kwargs)
        self.assertIn(caught.exception.response["Error"]["Code"], codes)


class AccountsTests(UsersCase):
    """Each key reaches only its own account's orders."""

    alice: Any
    bob: Any

    def setUp(self) -> None:
        """Start the gateway; clients for alice and bob."""
        super().setUp()
        self.alice = self.client("alice-key", "alice-secret")
        self.bob = self.client("bob-key", "bob-secret")

    def test_each_sees_own_buckets(self) -> None:
        """Each account sees its own first order, and no other account's."""
        alice, bob = self.buckets(self.alice), self.buckets(self.bob)
        demo = self.buckets(self.gateway.s3_client())
        self.assertEqual((len(alice), len(bob), len(demo)), (1, 1, 1))
        log = self.gateway.output()
        for account, (order,) in (("alice", alice), ("bob", bob), ("demo", demo)):
            self.assertIn(f"Account {account}: order {order}, 0 B used of 10.0 GiB, active", log)
        self.assertEqual(len({alice[0], bob[0], demo[0]}), 3)

    def test_own_order_works(self) -> None:
        """A user stores and reads objects in its own order."""
        (order,) = self.buckets(self.alice)
        self.alice.put_object(Bucket=order, Key=self.key("a"), Body=b"alice's")
        body = self.alice.get_object(Bucket=order, Key=self.key("a"))["Body"].read()
        self.assertEqual(body, b"alice's")

    def test_other_account_order_refused(self) -> None:
        """Bob's key is refused on alice's order: to read, write, list and upload in parts."""
        (order,) = self.buckets(self.alice)
        self.alice.put_object(Bucket=order, Key=self.key("secret"), Body=b"x")
        refused = ("NoSuchBucket", "AccessDenied")
        self.assertRefused(refused, self.bob.get_object, Bucket=order, Key=self.key("secret"))
        self.assertRefused(refused, self.bob.put_object, Bucket=order, Key="k", Body=b"y")
        self.assertRefused(refused, self.bob.list_objects_v2, Bucket=order)
        self.assertRefused(refused, self.bob.create_multipart_upload, Bucket=order, Key="m")
        self.assertRefused(refused, self.bob.delete_object, Bucket=order, Key=self.key("secret"))
        body = self.alice.get_object(Bucket=order, Key=self.key("secret"))["Body"].read()
        self.assertEqual(body, b"x")

    def test_part_for_another_accounts_upload(self) -> None:
        """A part, listing, abort or completion of alice's upload by bob finds no upload."""
        (alice_order,) = self.buckets(self.alice)
        (bob_order,) = self.buckets(self.bob)
        store = Store(os.path.join(self.gateway.home, "network"))
        self.addCleanup(store.close)
        orders = (("alice", alice_order), ("bob", bob_order))
        before = [store.order(a, o).used for a, o in orders]
        key = self.key("mp")
        upload_id = self.alice.create_multipart_upload(Bucket=alice_order, Key=key)["UploadId"]
        for bucket, codes in ((alice_order, ("NoSuchBucket",)), (bob_order, ("NoSuchUpload",))):
            ids = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
            self.assertRefused(codes, self.bob.upload_part, PartNumber=1, Body=b"b" * 1000, **ids)
            self.assertRefused(codes, self.bob.list_parts, **ids)
            self.assertRefused(codes, self.bob.abort_multipart_upload, **ids)
            parts = {"Parts": [{"PartNumber": 1, "ETag": '"x"'}]}
            self.assertRefused(
                codes, self.bob.complete_multipart_upload, MultipartUpload=parts, **ids
            )
        listed = self.alice.list_parts(Bucket=alice_order, Key=key, UploadId=upload_id)
        self.assertEqual(listed.get("Parts", []), [])
        self.assertEqual([store.order(a, o).used for a, o in orders], before)
        self.alice.abort_multipart_upload(Bucket=alice_order, Key=key, UploadId=upload_id)

    def test_unknown_key_refused(self) -> None:
        """A key in no table is InvalidAccessKeyId."""
        self.assertRefused(("InvalidAccessKeyId",), self.client("carol", "x").list_buckets)


class ReloadTests(UsersCase):
    """SIGHUP re-reads the config file without a restart."""

    def reload(self, config: str, log_line: str) -> None:
        """Write ``config``, send SIGHUP and wait for ``log_line`` in the gateway's output."""
        before = self.gateway.output().count(log_line)
        write_config(self.home, config)
        send_signal(self.gateway, signal.SIGHUP)
        wait_for(lambda: self.gateway.output().count(log_line) > before)

    def test_new_secret_taken(self) -> None:
        """After a new secret and SIGHUP, the old secret is refused and the new one works."""
        self.addCleanup(self.reload, users_config(), "Reloaded")
        old = self.client("alice-key", "alice-secret")
        order = self.buckets(old)[0]
        self.reload(users_config("alice-new"), "Reloaded")
        self.assertRefused(("SignatureDoesNotMatch",), old.list_buckets)
        self.assertEqual(self.buckets(self.client("alice-key", "alice-new")), [order])
        self.assertTrue(self.gateway.running())

    def test_bad_file_keeps_config(self) -> None:
        """A file that cannot be read on SIGHUP is logged once and the running keys stay."""
        self.addCleanup(write_config, self.home, users_config())
        self.reload("[gateway\n", "Reload refused")
        self.assertEqual(self.gateway.output().count("Reload refused"), 1)
        self.assertEqual(len(self.buckets(self.client("alice-key", "alice-secret"))), 1)
        self.assertTrue(self.gateway.running())

    def test_added_user_served(self) -> None:
        """A user added to the file gets its account served after SIGHUP."""
        self.addCleanup(self.reload, users_config(), "Reloaded")
        carol = self.client("carol-key", "carol-secret")
        self.assertRefused(("InvalidAccessKeyId",), carol.list_buckets)
        added = users_config() + (
            '\n[[gateway.users]]\naccess_key = "carol-key"\nsecret_key = "carol-secret"\n'
            'account = "carol"\n'
        )
        self.reload(added, "Reloaded")
        self.assertEqual(len(self.buckets(carol)), 1)

    def test_connection_kept(self) -> None:
        """A keep-alive connection opened before SIGHUP is still served after it."""
        self.addCleanup(self.reload, users_config(), "Reloaded")
        url = urllib.parse.urlsplit(
            self.client("bob-key", "bob-secret").generate_presigned_url("list_buckets")
        )
        connection = http.client.HTTPConnection("127.0.0.1", self.gateway.port, timeout=10)
        self.addCleanup(connection.close)

        def list_buckets() -> int:
            connection.request("GET", f"{url.path}?{url.query}")
            response = connection.getresponse()
            response.read()
            return response.status

        self.assertEqual(list_buckets(), 200)
        sock = connection.sock
        self.reload(users_config("alice-new"), "Reloaded")
        self.assertEqual(list_buckets(), 200)
        self.assertIs(connection.sock, sock)
