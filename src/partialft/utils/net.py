"""Network checks that fail in seconds: the machines partialft runs on are often offline."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from urllib.parse import urlparse


def _probe(host: str, port: int, timeout: float, result: list[bool]) -> None:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        result.append(True)
    except OSError:
        result.append(False)


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the download host of ``url`` answers within ``timeout`` seconds (DNS included)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []
    # a thread bounds the wait: getaddrinfo ignores socket timeouts on some systems
    thread = threading.Thread(target=_probe, args=(parsed.hostname, port, timeout, result),
                              daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(result and result[0])


@contextmanager
def socket_timeout(seconds: float):
    """Bound every socket operation of a download (torchvision's urlopen has no timeout)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)
