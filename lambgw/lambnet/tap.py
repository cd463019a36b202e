"""``twistd lambnet``: a network node serving a store directory over the network protocol.

::

    twistd -n lambnet --data DIR [--listen tcp:9100:interface=127.0.0.1]
                      [--tls-cert cert.pem --tls-key key.pem] [--debug]
                      [--multipart-expiry SECONDS]

``--listen`` is a Twisted server endpoint string; with ``--tls-cert`` and ``--tls-key`` a
``tcp:`` endpoint becomes an ``ssl:`` one.  Accounts, keys and orders are managed with
``python -m lambgw --data DIR``.  This is the only module of the node that touches the
global reactor.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application import service, strports
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from lambgw.allocator import fix_mmap_threshold, tune_collector
from lambgw.dispatch import lean_dispatch
from lambgw.lambnet.app import Node, NodeSite
from lambgw.network.completion import DEFAULT_UPLOAD_EXPIRY
from lambgw.network.store import Store
from lambgw.network.uploads import StoredUploads
from lambgw.spooldir import SpoolDirectory

log = Logger()

DEFAULT_LISTEN = "tcp:9100:interface=127.0.0.1"
#: How often the node looks for idle multipart uploads to abort, in seconds.
UPLOAD_SWEEP = 3600.0


class Options(usage.Options):
    """Command-line options of ``twistd lambnet``."""

    optParameters = [
        ["data", None, None, "The store directory served (created if needed)."],
        ["listen", None, DEFAULT_LISTEN, "Twisted server endpoint to listen on."],
        ["tls-cert", None, None, "PEM certificate (chain) to serve HTTPS with."],
        ["tls-key", None, None, "PEM private key of the certificate."],
        [
            "multipart-expiry",
            None,
            DEFAULT_UPLOAD_EXPIRY,
            "Seconds after which an idle multipart upload is aborted (default 7 days).",
            float,
        ],
    ]
    optFlags = [["debug", None, "Log every request."]]

    def postOptions(self) -> None:
        """Check the store directory and build the endpoint string."""
        if not self["data"]:
            raise usage.UsageError("--data DIR is required: the store to serve")
        self["data"] = os.path.abspath(os.path.expanduser(self["data"]))
        cert, key = self["tls-cert"], self["tls-key"]
        if bool(cert) != bool(key):
            raise usage.UsageError("--tls-cert and --tls-key go together")
        if cert:
            listen: str = self["listen"]
            if not listen.startswith("tcp:"):
                raise usage.UsageError("--tls-cert needs a tcp: endpoint in --listen")
            escaped = [os.path.abspath(p).replace(":", "\\:") for p in (cert, key)]
            self["listen"] = f"ssl:{listen[4:]}:certKey={escaped[0]}:privateKey={escaped[1]}"


class _ThreadPoolService(service.Service):
    """Starts and stops the store's thread pool with the node."""

    def __init__(self, pool: ThreadPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        """Start the pool."""
        super().startService()
        self.pool.start()

    def stopService(self) -> Deferred[None] | None:
        """Stop the pool."""
        super().stopService()
        self.pool.stop()
        return None


class _SpoolService(service.Service):
    """Removes the node's directory in ``incoming/`` when it stops, with what is left in it.

    It stops after the store's pool, whose stop waits for the threads writing bodies and
    moving them into the store: what is left then belongs to no stored object.  That covers
    a body whose connection is still open, which the reactor may not close before the
    process ends: one whose reading is paused while its hashing catches up, with nothing to
    write.
    """

    def __init__(self, spool: SpoolDirectory) -> None:
        self.spool = spool

    def stopService(self) -> None:
        """Remove the directory."""
        super().stopService()
        self.spool.release()


class _StoreService(service.Service):
    """Closes the store when the node stops, off the reactor.

    It is the node's first service, so it stops last: after the store's pool, whose stop
    waits for the calls in it.  Closing waits for the files the store is still unlinking.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def stopService(self) -> Deferred[None]:
        """Close the store in a thread of the reactor's pool."""
        super().stopService()
        closing: Deferred[None] = deferToThread(self.store.close)
        closing.addErrback(lambda f: log.failure("Could not close the store", f))
        return closing


def makeService(options: Options) -> service.IService:
    """Build the node: a thread pool for the store, and the listening site."""
    from twisted.internet import reactor

    fix_mmap_threshold()
    top = service.MultiService()
    store = Store(options["data"])
    pool = ThreadPool(minthreads=1, maxthreads=16, name="lambnet-store")
    uploads = StoredUploads(store, options["multipart-expiry"])
    node = Node(store, reactor, reactor, pool, uploads)  # type: ignore[arg-type]
    site = NodeSite(node)
    # Services stop in the reverse order: the listener, the pool, the spool, the store.
    _StoreService(store).setServiceParent(top)
    _SpoolService(site.spool).setServiceParent(top)
    _ThreadPoolService(pool).setServiceParent(top)
    TimerService(UPLOAD_SWEEP, node.expire_uploads).setServiceParent(top)
    if not options["debug"]:
        site.log = lambda request: None  # type: ignore[method-assign]
    listener: Any = strports.service(options["listen"], site)
    listener.setServiceParent(top)
    lean_dispatch(reactor)
    tune_collector()
    return top
