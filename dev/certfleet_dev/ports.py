"""Free loopback ports for the services tests start.

Ports come from the kernel (bind port 0) rather than a fixed range, so parallel runs and
leftover processes never collide on a hard-coded number.
"""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1", *, udp: bool = False) -> int:
    """Return a port that is free on ``host`` for TCP (and UDP too when ``udp``).

    DNS servers listen on both protocols with one number, so ``udp=True`` keeps asking
    until the kernel's TCP pick is also free for UDP.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
        if not udp or _udp_free(host, port):
            return port
    raise RuntimeError(f"no free loopback port found on {host} (udp={udp})")


def _udp_free(host: str, port: int) -> bool:
    """True when ``port`` can be bound for UDP on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
