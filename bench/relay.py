"""The kernel's own ceiling for a download relayed through a second process.

A gateway over a lambnet node serves a GET through two TCP connections: the node sends the
file, the gateway relays it to the client.  How fast can that be on this machine at best?
``python -m bench.relay [MiB] [--rounds N]`` measures it with no Python in the data path:
a process sends a file with ``sendfile(2)``, a second one relays it with ``splice(2)``
through a pipe (as :class:`lambgw.network.splice.SpliceRelay` does), and a client reads it
with ``recv_into`` into one buffer; the same client also reads the file sent to it
straight.  Rounds alternate the two; the medians and their ratio are printed.  The ratio is
the most a relaying gateway can reach against one that sends its files itself, with the
client, the relay and the sender sharing this machine's cores.
"""

from __future__ import annotations

import argparse
import fcntl
import multiprocessing
import os
import socket
import statistics
import tempfile
import time
from multiprocessing.queues import Queue

MiB = 1 << 20
#: The pipe between the relay's two sockets, as the gateway asks for.
PIPE_SIZE = 1 << 20


def _send_file(path: str, ports: Queue[int]) -> None:
    """Serve the file at ``path`` to each connection, with ``sendfile``."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        ports.put(server.getsockname()[1])
        size = os.path.getsize(path)
        while True:
            client, _ = server.accept()
            with client, open(path, "rb") as f:
                sent = 0
                while sent < size:
                    sent += os.sendfile(client.fileno(), f.fileno(), sent, size - sent)


def _relay(upstream: int, ports: Queue[int]) -> None:
    """Relay each connection's download from ``upstream`` through a pipe, with ``splice``."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        ports.put(server.getsockname()[1])
        while True:
            client, _ = server.accept()
            source = socket.create_connection(("127.0.0.1", upstream))
            pipe_out, pipe_in = os.pipe()
            fcntl.fcntl(pipe_in, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            try:
                while True:
                    got = os.splice(source.fileno(), pipe_in, PIPE_SIZE)
                    if not got:
                        break
                    while got:
                        got -= os.splice(pipe_out, client.fileno(), got)
            finally:
                for fd in (pipe_out, pipe_in):
                    os.close(fd)
                source.close()
                client.close()


def _download(port: int, size: int) -> float:
    """Read a whole download from ``port``; MB/s."""
    buffer = bytearray(MiB)
    received = 0
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        while chunk := conn.recv_into(buffer):
            received += chunk
    took = time.perf_counter() - start
    if received != size:
        raise RuntimeError(f"received {received} bytes of {size}")
    return size / took / 1e6


def relay_ceiling(size: int, rounds: int = 5) -> tuple[float, float]:
    """Median MB/s of a ``size``-byte file sent straight and through a relay, alternately."""
    context = multiprocessing.get_context("fork")
    ports: Queue[int] = context.Queue()
    with tempfile.NamedTemporaryFile(prefix="relay-") as f:
        f.write(os.urandom(size))
        f.flush()
        processes = [context.Process(target=_send_file, args=(f.name, ports), daemon=True)]
        processes[0].start()
        try:
            direct = ports.get(timeout=30)
            processes.append(context.Process(target=_relay, args=(direct, ports), daemon=True))
            processes[1].start()
            relayed = ports.get(timeout=30)
            straight, through = [], []
            for _ in range(rounds):
                straight.append(_download(direct, size))
                through.append(_download(relayed, size))
        finally:
            for process in processes:
                process.terminate()
                process.join()
    return statistics.median(straight), statistics.median(through)


def describe(size: int, straight: float, through: float) -> str:
    """One line stating the ceiling."""
    return (
        f"kernel relay ceiling, {size // MiB} MiB with no Python in the path: straight "
        f"{straight:,.0f} MB/s, relayed {through:,.0f} MB/s, relayed / straight "
        f"{through / straight:.2f}"
    )


def main() -> None:
    """Print the ceiling for the size asked (256 MiB by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mib", nargs="?", type=int, default=256, help="file size in MiB")
    parser.add_argument("--rounds", type=int, default=5, help="downloads of each kind")
    args = parser.parse_args()
    size = args.mib * MiB
    print(describe(size, *relay_ceiling(size, args.rounds)))


if __name__ == "__main__":
    main()
