"""A TCP relay from the host's loopback into the node's network namespace.

The node namespace has no link to the host (netns.py), so kubectl, helm and the tests reach
the API server, or any Service, through this: it listens on 127.0.0.1 in the host's namespace,
then joins the node's, where every connection it opens to the target is made. A socket keeps
the namespace it was made in, so one process serves both sides.

    python -m quantcore.devcluster.relay --netns-of PID --target 10.213.0.2:6443 --port-file F
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import socket
import sys
from pathlib import Path

from quantcore.devservices.process import ChildProcess, ProcessError

CLONE_NEWNET = 0x40000000
CHUNK = 1 << 16


class RelayError(RuntimeError):
    """The relay did not start; the message carries its output."""


def start(*, holder: int, target: str, log: Path, timeout: float = 15.0) -> tuple[int, int]:
    """Starts a relay process to `target` (host:port inside the node namespace); returns its
    pid and the loopback port it listens on."""
    port_file = log.with_suffix(".port")
    port_file.unlink(missing_ok=True)
    process = ChildProcess(
        f"relay to {target}",
        [
            sys.executable,
            "-m",
            "quantcore.devcluster.relay",
            *("--netns-of", str(holder), "--target", target),
            *("--port-file", str(port_file)),
        ],
        log,
    )
    process.start()
    try:
        process.wait_ready(
            lambda: port_file.exists() and bool(port_file.read_text().strip()),
            timeout,
            "a listening port",
        )
    except ProcessError as error:
        raise RelayError(str(error)) from error
    return process.pid, int(port_file.read_text())


def _join_network_namespace(pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into the network namespace of {pid}: {os.strerror(errno)}")
    finally:
        os.close(fd)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


async def _serve(listener: socket.socket, host: str, port: int) -> None:
    async def relay(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(host, port)
        except OSError as error:
            print(f"relay: cannot reach {host}:{port}: {error}", flush=True)
            client_writer.close()
            return
        try:
            await asyncio.gather(
                _pipe(client_reader, target_writer), _pipe(target_reader, client_writer)
            )
        finally:
            target_writer.close()
            client_writer.close()

    server = await asyncio.start_server(relay, sock=listener)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantcore.devcluster.relay")
    parser.add_argument("--netns-of", type=int, required=True, help="a pid in the namespace")
    parser.add_argument("--target", required=True, help="host:port inside the namespace")
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="loopback port (0: any free one)")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    listener = socket.create_server(("127.0.0.1", args.port))
    _join_network_namespace(args.netns_of)  # from here on, new sockets are the node's
    args.port_file.write_text(str(listener.getsockname()[1]))
    asyncio.run(_serve(listener, host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
