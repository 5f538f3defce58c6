"""Free loopback ports, so services started by several people or test runs never collide."""

from __future__ import annotations

import socket
import time

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1."""
    # Hold every socket open until all are chosen so the kernel hands out distinct ports.
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def is_listening(port: int, host: str = LOOPBACK) -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until_closed(port: int, timeout: float = 10.0) -> bool:
    """Wait for a stopped service to release its port; False if it is still taken."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_listening(port):
            return True
        time.sleep(0.1)
    return False
