"""A trivial HTTP server that bounds what the benchmark client itself can do.

It drains every PUT body without looking at it and remembers only its size; a GET of
the same path answers that many zero bytes.  No hashing, no storage, no checks: the
client's figures against it are its ceiling on this machine.  Run as
``python -m bench.sink PORT``.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_ZEROS = memoryview(bytes(16 << 20))
_sizes: dict[str, int] = {}


class SinkHandler(BaseHTTPRequestHandler):
    """Answers PUT by draining the body and GET with zeros."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        """Log nothing: the sink must cost as little as possible."""

    def do_PUT(self) -> None:
        """Drain the body in large reads and answer 200."""
        remaining = int(self.headers.get("Content-Length", "0"))
        _sizes[self.path] = remaining
        buffer = bytearray(4 << 20)
        view = memoryview(buffer)
        while remaining:
            got = self.rfile.readinto(view[: min(remaining, len(buffer))])
            if not got:
                return
            remaining -= got
        self.wfile.write(b'HTTP/1.1 200 OK\r\nETag: "0"\r\nContent-Length: 0\r\n\r\n')

    def do_GET(self) -> None:
        """Answer with as many zero bytes as the last PUT of this path had."""
        size = _sizes.get(self.path, 0)
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
        if size <= 65536:
            self.wfile.write(head + _ZEROS[:size].tobytes())
            return
        self.wfile.write(head)
        while size:
            step = min(size, len(_ZEROS))
            self.wfile.write(_ZEROS[:step])
            size -= step


def main(argv: list[str]) -> None:
    """Serve on ``127.0.0.1:PORT`` until killed."""
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", int(argv[0])), SinkHandler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
