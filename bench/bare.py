"""A bare twisted.web resource: the floor the gateway's CPU per request is measured against.

It keeps the body of each PUT in memory under its path and answers a GET of the path with
it: no authentication, no hashing, no storage, no log, twisted.web's own channel and
request.  Its CPU per request, measured beside the gateway's by ``bench.cpu``, is what this
machine charges twisted.web for a request at that moment, so the gateway's figure over it
does not move with the machine's speed as the absolute figure does.  Run as
``python -m bench.bare PORT``.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import reactor
from twisted.web.http import Request as HTTPRequest
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

#: The most bodies kept: the one written longest ago is dropped beyond it.
MAX_OBJECTS = 100_000
#: The largest body kept, in bytes (a larger PUT is answered 413).
MAX_BODY = 1 << 20


class BareResource(Resource):
    """Keeps what is PUT at a path and gives it back on GET."""

    isLeaf = True

    def __init__(self, max_objects: int = MAX_OBJECTS) -> None:
        """Begin with nothing stored; keep ``max_objects`` bodies at most."""
        super().__init__()
        self.bodies: dict[bytes, bytes] = {}
        self._max_objects = max_objects

    def render_PUT(self, request: Request) -> bytes:
        """Keep the body (at most ``MAX_BODY`` bytes) under the request's path."""
        assert request.content is not None
        body = request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            request.setResponseCode(413)
            return b""
        self.bodies.pop(request.path, None)
        if len(self.bodies) >= self._max_objects:
            del self.bodies[next(iter(self.bodies))]
        self.bodies[request.path] = body
        request.setHeader(b"etag", b'"0"')
        return b""

    def render_GET(self, request: Request) -> bytes:
        """The body last PUT at the request's path (404 if none)."""
        body = self.bodies.get(request.path)
        if body is None:
            request.setResponseCode(404)
            return b""
        return body


class QuietSite(Site):
    """A site that logs no request."""

    def log(self, request: HTTPRequest) -> None:
        """Log nothing: the floor includes no access log."""


def main(argv: list[str]) -> None:
    """Serve on ``127.0.0.1:PORT`` until killed."""
    site: Any = QuietSite(BareResource())
    reactor.listenTCP(int(argv[0]), site, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
