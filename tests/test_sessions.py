"""Tests of node sessions: key exchange, MACed requests, replay window, table, gateway's keeper.

The protocol tests drive the node in memory (``tests.test_network_http.Harness``) with raw
requests, so that they check what the node accepts whatever the client does; the client
tests count what the gateway's network sends.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import attrs
from treq import content
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from lambgw.network import errors, sessions, signing, wire
from lambgw.network.httpbody import BytesProducer
from lambgw.network.interface import Segment
from tests.linecount import lines_run
from tests.test_network_http import Harness, _new

NOW = 1_764_000_000


def _open(h: Harness, account: str, key: Any, body: bytes | None = None) -> Any:
    """Open a session of ``account`` on the node with a raw request; the answer and its key.

    Returns ``(response, answer, derived key)``; the key is ``None`` unless the node
    opened a session.
    """
    private, public = sessions.new_exchange()
    if body is None:
        body = json.dumps({"key": base64.b64encode(public).decode("ascii")}).encode("ascii")
    path = f"/{wire.VERSION}/accounts/{account}/sessions"
    digest = hashlib.sha256(body).hexdigest()
    headers = signing.sign(key, account, "POST", path, "", digest, int(h.clock.seconds()))
    response, answer = _request(h, "POST", path, "", headers, body)
    if response.code != 201:
        return response, answer, None
    node_public = base64.b64decode(answer["key"])
    derived = sessions.derive(private, node_public, account, answer["session"], public, node_public)
    return response, answer, derived


def _request(
    h: Harness, method: str, path: str, query: str, headers: dict[str, str], body: bytes = b""
) -> tuple[Any, Any]:
    """Send a request to the node as given; its response and its JSON answer."""
    raw = Headers({name.encode(): [value.encode()] for name, value in headers.items()})
    url = f"http://node.example{path}{'?' + query if query else ''}".encode()
    producer = BytesProducer(body) if body else None
    response = h.run(h.agent.request(method.encode(), url, raw, producer))
    data = h.run(content(response))
    return response, json.loads(data) if data else None


def _mac(
    h: Harness,
    session_id: str,
    key: bytes,
    method: str,
    path: str,
    query: str = "",
    digest: str = signing.EMPTY_SHA256,
    sequence: int = 1,
) -> dict[str, str]:
    return sessions.mac_headers(
        session_id, key, sequence, method, path, query, digest, int(h.clock.seconds())
    )


class ExchangeTests(SynchronousTestCase):
    def test_both_ends_derive_one_key(self) -> None:
        """The gateway and the node derive the same key, bound to the account and the id."""
        client, client_public = sessions.new_exchange()
        node, node_public = sessions.new_exchange()
        args = (client_public, node_public)
        mine = sessions.derive(client, node_public, "demo", "a" * 32, *args)
        theirs = sessions.derive(node, client_public, "demo", "a" * 32, *args)
        self.assertEqual(mine, theirs)
        self.assertEqual(len(mine), 32)
        self.assertNotEqual(mine, sessions.derive(client, node_public, "demo", "b" * 32, *args))
        self.assertNotEqual(mine, sessions.derive(client, node_public, "other", "a" * 32, *args))

    def test_unusable_keys_refused(self) -> None:
        """A key of the wrong length, or one of small order, is refused."""
        private, public = sessions.new_exchange()
        for bad in (b"\x01" * 31, b"\x00" * 32):
            self.assertRaises(
                ValueError, sessions.derive, private, bad, "demo", "a" * 32, bad, public
            )

    def test_mac_covers_the_request(self) -> None:
        """A MACed request verifies with its key; any change to what it covers breaks it."""
        key = os.urandom(32)
        headers = sessions.mac_headers(
            "a" * 32, key, 7, "GET", "/p", "b=2&a=1", signing.EMPTY_SHA256, NOW
        )
        self.assertTrue(headers["authorization"].startswith("LAMB1-HMAC-SHA256 session=aaaa"))
        self.assertEqual(headers[signing.NONCE_HEADER], "0" * 31 + "7")
        signed = signing.parse("GET", "/p", "a=1&b=2", headers)
        self.assertEqual((signed.session, signed.account), ("a" * 32, ""))
        sessions.verify_mac(key, signed, NOW)
        for method, path, query in [
            ("PUT", "/p", "a=1&b=2"),
            ("GET", "/q", "a=1&b=2"),
            ("GET", "/p", "a=1"),
        ]:
            changed = signing.parse(method, path, query, headers)
            self.assertRaises(signing.SignatureError, sessions.verify_mac, key, changed, NOW)
        self.assertRaises(signing.SignatureError, sessions.verify_mac, os.urandom(32), signed, NOW)
        self.assertRaises(signing.SignatureError, sessions.verify_mac, key, signed, NOW + 301)
        # A MACed request is not a signed one.
        self.assertRaises(
            signing.SignatureError, signing.verify, signing.generate_key().public_key(), signed, NOW
        )


W = sessions.REPLAY_WINDOW


class WindowTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.window = sessions.ReplayWindow()

    def assertReplayed(self, sequence: int) -> None:
        error = self.assertRaises(signing.SignatureError, self.window.check, sequence)
        self.assertIn("replayed", str(error))

    def test_in_order(self) -> None:
        """Sequence numbers in order are each accepted once."""
        for sequence in range(1, 2 * W):
            self.window.check(sequence)
        for sequence in range(W, 2 * W):
            self.assertReplayed(sequence)

    def test_out_of_order_accepted_once(self) -> None:
        """Numbers within the window arriving late are accepted, each once."""
        highest = W + 100
        self.window.check(highest)
        for sequence in (highest - 1, 200, highest - W + 1, 150):
            self.window.check(sequence)
            self.assertReplayed(sequence)
        self.assertReplayed(highest)
        self.window.check(highest - 2)

    def test_stale(self) -> None:
        """A number a whole window below the highest is refused as stale, even if never sent."""
        self.window.check(W + 10)
        self.assertRaises(sessions.StaleSequence, self.window.check, 10)
        self.assertRaises(sessions.StaleSequence, self.window.check, 1)
        self.window.check(11)
        self.assertReplayed(11)

    def test_jump_ahead(self) -> None:
        """A jump ahead, however far, is accepted and leaves the numbers below in the window."""
        self.window.check(1)
        far = 2**128 - 1
        self.window.check(far)
        self.assertRaises(sessions.StaleSequence, self.window.check, 2)
        self.window.check(far - 1)
        self.window.check(far - W + 1)
        self.assertReplayed(far)
        self.assertReplayed(far - 1)
        self.window.check(far - 7)

    def test_zero_refused(self) -> None:
        """Sequence numbers start at 1."""
        self.assertRaises(signing.SignatureError, self.window.check, 0)
        self.window.check(1)

    def test_memory_bounded(self) -> None:
        """After a million requests, some out of order, the window holds no more than W bits."""
        check = self.window.check
        for sequence in range(1, 1_000_000, 2):
            check(sequence + 1)
            check(sequence)
        self.assertReplayed(999_000)
        size = sum(sys.getsizeof(value) for value in attrs.astuple(self.window, recurse=False))
        self.assertLessEqual(size, W // 8 + 200)

    def test_work_per_check_independent_of_count(self) -> None:
        """A check runs the same Python lines after 10 or 100,000 requests: no scans."""

        def lines_run_after(count: int) -> int:
            window = sessions.ReplayWindow()
            for sequence in range(2, 2 * count + 1, 2):
                window.check(sequence)

            def checks() -> None:
                window.check(2 * count + 2)
                window.check(2 * count - 7)

            return lines_run(checks)

        self.assertEqual(lines_run_after(10), lines_run_after(100_000))


class TableTests(SynchronousTestCase):
    def key(self) -> bytes:
        return sessions.new_exchange()[1]

    def test_bounded(self) -> None:
        """Opening a session past the capacity forgets the oldest."""
        table = sessions.SessionTable(capacity=3, lifetime=100)
        ids = [table.open("demo", None, self.key(), NOW)[0] for _ in range(4)]
        self.assertEqual(len(table), 3)
        self.assertIsNone(table.get(ids[0], NOW))
        self.assertEqual([table.get(i, NOW) is not None for i in ids[1:]], [True] * 3)

    def test_expire(self) -> None:
        """A session ends after its lifetime; opening another drops the expired ones."""
        table = sessions.SessionTable(capacity=10, lifetime=100)
        first = table.open("demo", None, self.key(), NOW)[0]
        second = table.open("demo", None, self.key(), NOW + 50)[0]
        self.assertIsNotNone(table.get(first, NOW + 99))
        self.assertIsNone(table.get(first, NOW + 100))
        table.open("demo", None, self.key(), NOW + 200)
        self.assertEqual(len(table), 1)
        self.assertIsNone(table.get(second, NOW + 200))

    def test_bad_client_key(self) -> None:
        """An unusable client key opens nothing."""
        table = sessions.SessionTable()
        self.assertRaises(ValueError, table.open, "demo", None, b"\x00" * 32, NOW)
        self.assertEqual(len(table), 0)


class ClientSessionTests(SynchronousTestCase):
    def test_numbered_from_one(self) -> None:
        """A gateway numbers the requests of each session 1, 2, 3..."""
        first = sessions.ClientSession("a" * 32, b"k", 100.0)
        second = sessions.ClientSession("b" * 32, b"k", 100.0)
        self.assertEqual([first.next_sequence() for _ in range(3)], [1, 2, 3])
        self.assertEqual(second.next_sequence(), 1)


class KeeperTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.opening: list[Deferred[sessions.ClientSession]] = []
        self.keeper = sessions.SessionKeeper(self.clock, self.opener)

    def opener(self) -> Deferred[sessions.ClientSession]:
        d: Deferred[sessions.ClientSession] = Deferred()
        self.opening.append(d)
        return d

    def current(self) -> Deferred[sessions.ClientSession]:
        return Deferred.fromCoroutine(self.keeper.current())

    def test_one_opening_for_all(self) -> None:
        """Requests that need a session while one is opened wait for it: one opening."""
        waiting = [self.current() for _ in range(3)]
        self.assertEqual(len(self.opening), 1)
        session = sessions.ClientSession("a" * 32, b"k", 100.0)
        self.opening[0].callback(session)
        self.assertEqual([self.successResultOf(d) for d in waiting], [session] * 3)
        self.assertIs(self.successResultOf(self.current()), session)
        self.assertEqual(len(self.opening), 1)

    def test_failure_shared_then_retried(self) -> None:
        """A failed opening fails every waiting request; the next request opens again."""
        waiting = [self.current() for _ in range(2)]
        self.opening[0].errback(errors.NetworkUnavailable("down"))
        for d in waiting:
            self.failureResultOf(d, errors.NetworkUnavailable)
        self.current()
        self.assertEqual(len(self.opening), 2)

    def test_renewed_and_forgotten(self) -> None:
        """A session is replaced when due, and at once when forgotten."""
        d = self.current()
        first = sessions.ClientSession("a" * 32, b"k", 100.0)
        self.opening[0].callback(first)
        self.successResultOf(d)
        self.clock.advance(100)
        self.current()
        self.assertEqual(len(self.opening), 2)
        second = sessions.ClientSession("b" * 32, b"k", 300.0)
        self.opening[1].callback(second)
        self.keeper.forget(first)  # an older session: nothing changes
        self.assertIs(self.successResultOf(self.current()), second)
        self.keeper.forget(second)
        self.current()
        self.assertEqual(len(self.opening), 3)


class _Counting(Resource):
    """Passes every request on to ``inner``, keeping each one's scheme and error code."""

    isLeaf = True

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[tuple[str, str]] = []
        #: Called before each request is passed on.
        self.before: Callable[[], None] | None = None

    def object_handler(self, method: bytes, path: bytes) -> None:
        """No request is answered past :meth:`render`: each goes the usual way."""

    def render(self, request: Any) -> Any:
        if self.before is not None:
            self.before()
        answer = self.inner.render(request)
        scheme = (request.getHeader("authorization") or "").split(" ")[0]
        code = request.responseHeaders.getRawHeaders(wire.ERROR_HEADER) or [""]
        self.seen.append((scheme, code[0]))
        return answer


class _Recording:
    """An agent that passes every request on to ``agent``, keeping its method, URL and headers."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.sent: list[tuple[bytes, bytes, Headers]] = []

    def request(
        self, method: bytes, uri: bytes, headers: Headers, bodyProducer: Any = None
    ) -> Deferred[Any]:
        self.sent.append((method, uri, headers.copy()))
        result: Deferred[Any] = self.agent.request(method, uri, headers, bodyProducer)
        return result


class NodeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness(self.mktemp())
        self.order = self.h.order.order_id
        self.path = f"/{wire.VERSION}/accounts/demo/orders/{self.order}"

    def test_session_requests_served(self) -> None:
        """A request MACed in an opened session is served like a signed one."""
        response, answer, key = _open(self.h, "demo", self.h.key)
        self.assertEqual(response.code, 201)
        self.assertEqual(answer["lifetime"], sessions.LIFETIME)
        response, order = _request(
            self.h, "GET", self.path, "", _mac(self.h, answer["session"], key, "GET", self.path)
        )
        self.assertEqual((response.code, order["order_id"]), (200, self.order))

    def test_replay_refused(self) -> None:
        """A MACed request sent again within the window is refused."""
        _, answer, key = _open(self.h, "demo", self.h.key)
        headers = _mac(self.h, answer["session"], key, "GET", self.path)
        self.assertEqual(_request(self.h, "GET", self.path, "", headers)[0].code, 200)
        response, error = _request(self.h, "GET", self.path, "", headers)
        self.assertEqual((response.code, error["code"]), (401, "Unauthorized"))
        self.assertIn("replayed", error["message"])

    def test_stale_sequence_refused(self) -> None:
        """A number a whole window below the session's highest is refused as StaleSequence."""
        _, answer, key = _open(self.h, "demo", self.h.key)

        def get(sequence: int) -> tuple[Any, Any]:
            headers = _mac(self.h, answer["session"], key, "GET", self.path, sequence=sequence)
            return _request(self.h, "GET", self.path, "", headers)

        self.assertEqual(get(W + 5)[0].code, 200)
        response, error = get(5)
        self.assertEqual((response.code, error["code"]), (401, sessions.STALE_SEQUENCE))
        self.assertEqual(get(6)[0].code, 200)

    def test_refused_request_keeps_its_number(self) -> None:
        """A request refused for its body does not use up its sequence number."""
        _, answer, key = _open(self.h, "demo", self.h.key)
        path, query = f"{self.path}/object", "path=a"
        digest = hashlib.sha256(b"data").hexdigest()
        headers = _mac(self.h, answer["session"], key, "PUT", path, query, digest)
        headers[wire.OBJECT_HEADER] = wire.header_json(wire.new_to_json(_new(b"data")))
        response, error = _request(self.h, "PUT", path, query, headers, b"atad")
        self.assertEqual((response.code, error["code"]), (400, "BadDigest"))
        self.assertEqual(_request(self.h, "PUT", path, query, headers, b"data")[0].code, 201)

    def test_wrong_key_refused(self) -> None:
        """A request MACed with another key than its session's is refused."""
        _, answer, _ = _open(self.h, "demo", self.h.key)
        headers = _mac(self.h, answer["session"], os.urandom(32), "GET", self.path)
        response, error = _request(self.h, "GET", self.path, "", headers)
        self.assertEqual((response.code, error["code"]), (401, "Unauthorized"))

    def test_other_accounts_session_refused(self) -> None:
        """A session opened by one account gives no access to another's orders."""
        other = signing.generate_key()
        self.h.store.create_account("other")
        with open(os.path.join(self.h.store.root, "keys", "other.pub"), "wb") as f:
            f.write(signing.public_key_pem(other.public_key()))
        _, answer, key = _open(self.h, "other", other)
        headers = _mac(self.h, answer["session"], key, "GET", self.path)
        response, error = _request(self.h, "GET", self.path, "", headers)
        self.assertEqual((response.code, error["code"]), (403, "AccessDenied"))
        # Nor can an account open a session with another's key.
        response, error, _ = _open(self.h, "demo", other)
        self.assertEqual((response.code, error["code"]), (401, "Unauthorized"))

    def test_unknown_session(self) -> None:
        """A session the node does not know is answered NoSuchSession."""
        headers = _mac(self.h, "f" * 32, os.urandom(32), "GET", self.path)
        response, error = _request(self.h, "GET", self.path, "", headers)
        self.assertEqual((response.code, error["code"]), (401, "NoSuchSession"))

    def test_key_change_ends_sessions(self) -> None:
        """Replacing the account's public key ends the sessions opened with the old one."""
        _, answer, key = _open(self.h, "demo", self.h.key)
        path = os.path.join(self.h.store.root, "keys", "demo.pub")
        with open(path, "wb") as f:
            f.write(signing.public_key_pem(signing.generate_key().public_key()))
        os.utime(path, (1, 1))
        self.h.clock.advance(2)
        headers = _mac(self.h, answer["session"], key, "GET", self.path)
        response, error = _request(self.h, "GET", self.path, "", headers)
        self.assertEqual((response.code, error["code"]), (401, "NoSuchSession"))

    def test_opening_needs_the_account_key(self) -> None:
        """A session cannot open another: opening takes the account's own signature."""
        _, answer, key = _open(self.h, "demo", self.h.key)
        path = f"/{wire.VERSION}/accounts/demo/sessions"
        body = json.dumps({"key": base64.b64encode(sessions.new_exchange()[1]).decode()}).encode()
        digest = hashlib.sha256(body).hexdigest()
        headers = _mac(self.h, answer["session"], key, "POST", path, digest=digest)
        response, error = _request(self.h, "POST", path, "", headers, body)
        self.assertEqual((response.code, error["code"]), (401, "Unauthorized"))

    def test_bad_opening_refused(self) -> None:
        """An opening without a usable X25519 key is refused, and opens nothing."""
        for body in [b"{}", b"[]", b'{"key": "AAAA"}', b'{"key": 5}', b"not json", b"x" * 2000]:
            response, error, _ = _open(self.h, "demo", self.h.key, body)
            self.assertEqual((response.code, error["code"]), (400, "BadRequest"), body)
        self.assertEqual(len(self.h.node._sessions), 0)

    def test_streamed_body_needs_the_account_key(self) -> None:
        """A body whose digest follows it in a trailer cannot be sent in a session."""
        _, answer, key = _open(self.h, "demo", self.h.key)
        path, query = f"{self.path}/object", "path=a&size=1"
        headers = _mac(self.h, answer["session"], key, "PUT", path, query, signing.TRAILER)
        response, error = _request(self.h, "PUT", path, query, headers, b"x" * 100)
        self.assertEqual((response.code, error["code"]), (400, "BadRequest"))
        self.assertEqual(self.h.store.order("demo", self.order).used, 0)


class ClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness(self.mktemp())
        site = self.h.agent._serverFactory
        self.counting = _Counting(site.resource)
        site.resource = self.counting
        self.order = self.h.order.order_id

    def put(self, path: str, data: bytes) -> Any:
        segment = Segment("", len(data), data)
        return self.h.run(
            self.h.network.put_object("demo", self.order, path, [segment], _new(data))
        )

    def test_one_signature_per_session(self) -> None:
        """The gateway signs one opening with the account's key; its requests are MACed."""
        self.put("a", b"data")
        for _ in range(3):
            self.h.run(self.h.network.head_object("demo", self.order, "a"))
        self.assertEqual(
            self.counting.seen, [("LAMB1-ED25519", "")] + [("LAMB1-HMAC-SHA256", "")] * 4
        )

    def test_forgotten_session_opened_again(self) -> None:
        """A request in a session the node has forgotten (a restart) is sent again in a new one."""
        self.put("a", b"data")
        self.h.node._sessions = sessions.SessionTable()
        info = self.put("b", b"more")
        self.assertEqual(info.size, 4)
        self.assertEqual(
            self.counting.seen[2:],
            [
                ("LAMB1-HMAC-SHA256", "NoSuchSession"),
                ("LAMB1-ED25519", ""),
                ("LAMB1-HMAC-SHA256", ""),
            ],
        )
        self.assertEqual(self.h.store.order("demo", self.order).used, 8)

    def test_replayed_request_refused(self) -> None:
        """A PUT of the gateway captured and sent again verbatim is refused, and changes nothing."""
        recording = _Recording(self.h.agent)
        self.h.network._agent = recording
        self.put("a", b"data")
        self.h.run(self.h.network.delete_object("demo", self.order, "a"))
        method, url, headers = recording.sent[1]  # after the opening
        self.assertEqual(method, b"PUT")
        response = self.h.run(self.h.agent.request(method, url, headers, BytesProducer(b"data")))
        error = json.loads(self.h.run(content(response)))
        self.assertEqual((response.code, error["code"]), (401, "Unauthorized"))
        self.assertIn("replayed", error["message"])
        self.assertEqual(self.h.store.order("demo", self.order).used, 0)
        self.h.run(self.h.network.head_object("demo", self.order, "a")).trap(errors.NoSuchPath)

    def overtake(self) -> None:
        """Have the node accept a request of the gateway's session a whole window later."""
        client = self.h.network._sessions._session
        assert client is not None
        node = self.h.node._sessions.get(client.session_id, self.h.clock.seconds())
        assert node is not None
        for _ in range(W):
            client.next_sequence()
        node.window.check(client.next_sequence())

    def test_overtaken_request_sent_again(self) -> None:
        """A request overtaken by a whole window is sent once more in its session, numbered anew."""
        self.put("a", b"data")

        def overtake_once() -> None:
            self.counting.before = None
            self.overtake()

        self.counting.before = overtake_once
        self.assertEqual(self.put("b", b"more").size, 4)
        self.assertEqual(
            self.counting.seen[2:],
            [("LAMB1-HMAC-SHA256", sessions.STALE_SEQUENCE), ("LAMB1-HMAC-SHA256", "")],
        )
        self.assertEqual(self.h.store.order("demo", self.order).used, 8)

    def test_stale_sent_again_once(self) -> None:
        """A request refused as stale twice is not sent a third time."""
        self.put("a", b"data")
        self.counting.before = self.overtake
        failure = self.put("b", b"more")
        failure.trap(errors.NetworkError)
        self.assertIn(sessions.STALE_SEQUENCE, str(failure.value))
        self.assertEqual(
            self.counting.seen[2:], [("LAMB1-HMAC-SHA256", sessions.STALE_SEQUENCE)] * 2
        )
        self.assertEqual(self.h.store.order("demo", self.order).used, 4)

    def test_session_nonces_not_kept(self) -> None:
        """The node keeps the nonce of the opening only: a session's requests are numbered."""
        self.put("a", b"data")
        for _ in range(50):
            self.h.run(self.h.network.head_object("demo", self.order, "a"))
        self.assertEqual(len(self.counting.seen), 52)
        self.assertEqual(len(self.h.node._nonces), 1)

    def test_renewed_before_it_ends(self) -> None:
        """A session is replaced before the node's lifetime for it runs out."""
        self.put("a", b"data")
        self.h.clock.advance(sessions.LIFETIME - sessions.RENEW_MARGIN)
        self.h.run(self.h.network.head_object("demo", self.order, "a"))
        schemes = [scheme for scheme, _ in self.counting.seen]
        self.assertEqual(schemes[2:], ["LAMB1-ED25519", "LAMB1-HMAC-SHA256"])
        self.assertNotIn("NoSuchSession", [code for _, code in self.counting.seen])

    def test_key_revoked(self) -> None:
        """With the account's key replaced on the node, the gateway's requests are refused."""
        self.put("a", b"data")
        path = os.path.join(self.h.store.root, "keys", "demo.pub")
        with open(path, "wb") as f:
            f.write(signing.public_key_pem(signing.generate_key().public_key()))
        os.utime(path, (1, 1))
        self.h.clock.advance(2)
        failure = self.h.run(self.h.network.head_object("demo", self.order, "a"))
        failure.trap(errors.NetworkError)
        self.assertIn("Unauthorized", str(failure.value))
