"""The node's root resource: object requests (and reads of several) go straight to their handlers.

Klein binds a werkzeug URL map and matches every request against all the protocol's routes,
wraps the handler in several Deferreds and watches the connection twice; for the object
requests, which are nearly all the node serves, that cost more than the handler itself.
:class:`NodeResource` recognises their one path shape by splitting it and runs the
:class:`~lambgw.lambnet.app.Node` handler the Klein route names, with the same error rendering
(:meth:`Node.render_error`) and the same cancellation when the client goes away.  Any other
path (or one with escapes, which Klein decodes) is left to Klein unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from lambgw.network import wire

if TYPE_CHECKING:
    from lambgw.lambnet.app import Node

log = Logger()

_Handler = Callable[[Request, str, str], Coroutine[Any, Any, bytes | None]]


def object_route(path: bytes, prefix: bytes) -> tuple[str, str] | None:
    """``(account, order_id)`` of ``PREFIX{account}/orders/{order_id}/object``, else ``None``.

    ``None`` also for segments with escapes or that are not ASCII: Klein decodes those.
    """
    if not path.startswith(prefix) or not path.endswith(b"/object") or b"%" in path:
        return None
    parts = path[len(prefix) : -len(b"/object")].split(b"/")
    if len(parts) != 3 or parts[1] != b"orders" or not parts[0] or not parts[2]:
        return None
    try:
        return parts[0].decode("ascii"), parts[2].decode("ascii")
    except UnicodeDecodeError:
        return None


def read_route(path: bytes, prefix: bytes) -> str | None:
    """The account of ``PREFIX{account}/read`` (several objects read at once), else ``None``."""
    suffix = b"/" + wire.READ_PATH.encode("ascii")
    if not path.startswith(prefix) or not path.endswith(suffix) or b"%" in path:
        return None
    account = path[len(prefix) : -len(suffix)]
    if not account or b"/" in account:
        return None
    try:
        return account.decode("ascii")
    except UnicodeDecodeError:
        return None


class NodeResource(Resource):
    """Serves ``node``: its object requests directly, everything else through its Klein app."""

    isLeaf = True

    def __init__(self, node: Node) -> None:
        """Dispatch to ``node``'s handlers."""
        super().__init__()
        self._node = node
        self._klein = node.app.resource()
        self._prefix = f"/{wire.VERSION}/accounts/".encode("ascii")
        self._handlers: dict[bytes, _Handler] = {
            b"GET": node.get,
            b"HEAD": node.get,
            b"PUT": node.put,
            b"DELETE": node.delete,
        }

    def object_handler(self, method: bytes, path: bytes) -> tuple[_Handler, str, str] | None:
        """The handler, account and order of an object request; ``None`` for any other."""
        handler = self._handlers.get(method)
        route = None if handler is None else object_route(path, self._prefix)
        return None if handler is None or route is None else (handler, *route)

    def render(self, request: Request) -> Any:
        """Answer an object request (or a read of several) here; hand any other to Klein."""
        found = self.object_handler(request.method, request.path)
        if found is None and request.method == b"POST":
            account = read_route(request.path, self._prefix)
            if account is not None:
                found = (self._read, account, "")
        if found is None:
            return self._klein.render(request)
        return self.serve(request, *found)

    def _read(self, request: Request, account: str, order_id: str) -> Any:
        """The read of several objects (``order_id`` is not used: each names its own)."""
        return self._node.read(request, account)

    def serve(self, request: Request, handler: _Handler, account: str, order_id: str) -> Any:
        """Answer an object request with ``handler``, as :meth:`object_handler` found it."""
        exchange = _Exchange(request, self._node)
        request.notifyFinish().addBoth(exchange.over)
        exchange.run(handler(request, account, order_id))
        return NOT_DONE_YET


class _Exchange:
    """One object request: its handler's result written, or its failure rendered."""

    def __init__(self, request: Request, node: Node) -> None:
        self._request = request
        self._node = node
        self._finished = False
        self._running: Deferred[bytes | None] | None = None

    def run(self, handling: Coroutine[Any, Any, bytes | None]) -> None:
        """Run the handler's coroutine; answer with what it gives."""
        self._running = Deferred.fromCoroutine(handling)
        self._running.addCallbacks(self._answer, self._failed)

    def over(self, result: object) -> None:
        """The request is finished, or its connection lost: then the handler is cancelled."""
        self._finished = True
        if isinstance(result, Failure) and self._running is not None:
            self._running.cancel()

    def _answer(self, body: bytes | None) -> None:
        if self._finished:
            return
        request = self._request
        if body is not None and not request.responseHeaders.hasHeader(b"content-length"):
            # An answer of known length goes as one piece, not as chunks with an end chunk.
            request.setHeader(b"content-length", b"%d" % len(body))
        if body:
            request.write(body)
        request.finish()

    def _failed(self, failure: Failure) -> None:
        if self._finished:
            if not failure.check(CancelledError):
                log.failure("A request failed after it was over", failure)
            return
        # A length set for the answer the handler meant to give does not describe the error.
        self._request.responseHeaders.removeHeader(b"content-length")
        self._answer(self._node.render_error(self._request, failure))
