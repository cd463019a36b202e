"""Tests of the read request and answer, which carry several whole objects at once."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from lambgw.network import errors, wire
from lambgw.network.interface import ObjectInfo


def _info(path: str, size: int) -> ObjectInfo:
    return ObjectInfo(order_id="O", path=path, size=size, etag="e", last_modified=1.5)


class ReadRequestTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """The objects named come back in order, paths of any UTF-8 included."""
        entries = [("O1", "a/b c"), ("O2", 'é\n"x"'), ("O1", "")]
        body = wire.read_request(entries)
        self.assertEqual(wire.parse_read_request(json.loads(body)), entries)

    def test_malformed_refused(self) -> None:
        """Anything but 1 to MAX_READ pairs of strings is a 400 BadRequest."""
        too_many = [["O", str(n)] for n in range(wire.MAX_READ + 1)]
        for value in (
            {},
            [],
            {"objects": []},
            {"objects": too_many},
            {"objects": "O/p"},
            {"objects": [["O"]]},
            {"objects": [["O", 1]]},
            {"objects": [{"order": "O", "path": "p"}]},
        ):
            with self.assertRaises(wire.ProtocolError) as raised:
                wire.parse_read_request(value)
            self.assertEqual((raised.exception.status, raised.exception.code), (400, "BadRequest"))


class ReadAnswerTests(SynchronousTestCase):
    def test_objects_errors_and_objects_not_sent(self) -> None:
        """Each object comes with its bytes, without them, or as its error, in order."""
        body = b"".join(
            [
                wire.read_entry(_info("a", 3), b"abc"),
                wire.read_error(errors.NoSuchPath("no object at b")),
                wire.read_entry(_info("c", 1 << 20), None),
                wire.read_entry(_info("d", 0), b""),
            ]
        )
        a, b, c, d = wire.parse_read_answer(body, 4)
        self.assertEqual(a, (_info("a", 3), b"abc"))
        assert isinstance(b, errors.NoSuchPath)
        self.assertEqual(str(b), "no object at b")
        self.assertEqual(c, (_info("c", 1 << 20), None))
        self.assertEqual(d, (_info("d", 0), b""))

    def test_malformed_answers_refused(self) -> None:
        """A cut, padded or garbled answer is a NetworkError, not a wrong object."""
        good = wire.read_entry(_info("a", 3), b"abc")
        for body, count in (
            (good[:-1], 1),  # bytes cut short
            (good + b"x", 1),  # more than the objects
            (good, 2),  # fewer objects than asked
            (b"not json\n", 1),
            (b'{"object": {}, "data": true}\n', 1),
        ):
            self.assertRaises(errors.NetworkError, wire.parse_read_answer, body, count)
