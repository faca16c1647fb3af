"""``--web.listen-address``: parse HOST:PORT and open the listening sockets.

As exporter-toolkit (Go's net.Listen): an empty host listens on every IPv4 and IPv6
address, through one dual-stack socket on ``::`` (IPV6_V6ONLY off), or on ``0.0.0.0``
where the machine has no IPv6; a name is resolved and the first address is used.
"""

from __future__ import annotations

import errno
import socket

BACKLOG = 128


class ListenError(Exception):
    """A socket could not be opened (for example: the port is in use)."""


def parse_listen(address: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` → (host without brackets, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--web.listen-address {address!r} is not HOST:PORT")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"--web.listen-address {address!r} is not HOST:PORT")
    if ":" in host and not host.startswith("["):
        raise ValueError(f"--web.listen-address {address!r}: write an IPv6 host as [{host}]")
    return host.strip("[]"), int(port)


def show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket for one address; ListenError says why not."""
    try:
        if not host:
            return _dual_stack(port)
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, sockaddr = infos[0]
        return _listen(socket.socket(family, kind, proto), sockaddr)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {show(host, port)}: {exc.strerror}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ListenError(f"cannot listen on {show(host, port)}: {reason}") from None


def _dual_stack(port: int) -> socket.socket:
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError as exc:
        if exc.errno not in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
            raise
        return _listen(socket.socket(socket.AF_INET, socket.SOCK_STREAM), ("0.0.0.0", port))
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        return _listen(sock, ("::", port))
    except OSError as exc:
        # IPv6 present but not configured (no address can be bound): IPv4 only.
        if exc.errno != errno.EADDRNOTAVAIL:
            raise
        return _listen(socket.socket(socket.AF_INET, socket.SOCK_STREAM), ("0.0.0.0", port))


def _listen(sock: socket.socket, sockaddr: tuple[object, ...]) -> socket.socket:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
