"""The simulated Qianfan on loopback: lifecycle, fault switches, counts, and HTTP.

``QianfanSimulator`` owns a world (``scenario``), its gateway (``gateway``: signatures
and a per-access-key budget over trailing one-second windows), its faults
(``faults``) and what it saw (``Stats``, the request log). ``_Handler`` only does
HTTP: it routes a request to its action, lets the simulator authenticate it, budget
it and pick a fault, and writes the answer the action (``actions``, where the field
table of each answer lives) or the fault made, in the real error shapes. It logs
every request before answering it (so a client that has its answer can count on the
counts), knows its open connections (``stop()`` closes them, ``wait_idle()`` waits
for them to end), and writes each answer in one piece without Nagle's delay, as a
real gateway would. It is shipped for ``--demo`` and is the tests' backbone.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from qf_exporter.simulator import actions
from qf_exporter.simulator.actions import Ask, Failure, Result
from qf_exporter.simulator.faults import (
    FAULT_KINDS,
    After,
    Call,
    Fault,
    huge_numbers,
    request_id,
)
from qf_exporter.simulator.gateway import Budget, Denied, Signed, authenticate
from qf_exporter.simulator.scenario import World

__all__ = ["FAULT_KINDS", "Fault", "Logged", "QianfanSimulator", "Stats"]


@dataclass
class Logged:
    action: str
    access_key: str  # "" when the gateway refused the signature
    target: str
    arrived: float  # the gateway's stamp (arrival_clock) when the request arrived
    status: int  # the HTTP status sent; 0 when the connection was closed without an answer


@dataclass
class Stats:
    """What the simulator saw. Tests read it; the lock guards every field."""

    requests: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    auth_failures: int = 0
    log: deque[Logged] = field(default_factory=lambda: deque(maxlen=100_000))


class _Connections:
    """The open client connections and the threads serving them (see ``wait_idle``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[socket.socket, threading.Thread] = {}

    def add(self, conn: socket.socket, thread: threading.Thread) -> None:
        with self._lock:
            self._prune()
            self._open[conn] = thread

    def threads(self) -> list[threading.Thread]:
        with self._lock:
            self._prune()
            return list(self._open.values())

    def shut_all(self) -> None:
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def _prune(self) -> None:
        for conn, thread in list(self._open.items()):
            if not thread.is_alive():
                del self._open[conn]


class _Server(ThreadingHTTPServer):
    """One thread per connection, each known to the simulator (see ``wait_idle``)."""

    daemon_threads = True
    request_queue_size = 128
    connections: _Connections

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve, args=(request, client_address), daemon=True,
            name="qianfan-simulator-connection",
        )
        thread.start()
        self.connections.add(request, thread)

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout) or a connection the simulator closed on
        # purpose ("close", stop()) is part of the game, not a server error.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class QianfanSimulator:
    """A simulated Qianfan on loopback. ``start()``, use ``url``, ``stop()``.

    The HTTP handler calls only ``authenticate``, ``over_budget``, ``take_fault``,
    ``answer``, ``record`` and ``count_refusal``; tests and the demo use the rest.
    """

    def __init__(
        self,
        world: World,
        credentials: dict[str, str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        qps: float | None = None,
        latency: float = 0.0,
        wall_clock: Callable[[], float] = time.time,
        arrival_clock: Callable[[], float] = time.monotonic,
        log_size: int = 100_000,
    ) -> None:
        self.world = world
        self.credentials = dict(credentials)  # access key -> secret key
        self.qps = qps  # enforce this budget per access key (None: do not)
        self.latency = latency
        # Some answers leave out pageInfo.nextMarker: the reference names it only as
        # returned when isTruncated is true, and a client must cope without it.
        self.send_next_marker = True
        self.wall_clock = wall_clock
        # What the gateway stamps arrivals with, for its per-key budget: real time,
        # or a test's manual clock that a test moves in step with the exporter's
        # budget (tests/fake_time.py, ``LockstepBudget``).
        self.arrival_clock = arrival_clock
        # Called with each request's arrival stamp and whether the budget refused it,
        # so a benchmark can check the gateway's decisions without changing them.
        self.on_budget: Callable[[float, bool], None] | None = None
        self.stats = Stats(log=deque(maxlen=log_size))
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._budget = Budget()
        self._connections = _Connections()
        handler = type("Handler", (_Handler,), {"sim": self})
        self._server = _Server((host, port), handler)
        self._server.connections = self._connections
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> QianfanSimulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="qianfan-simulator",
            daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close every open connection, as a crashed gateway would.

        Clients with a kept-alive connection see it closed, and new connections to
        the port are refused.
        """
        if self._thread:
            self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        with self._lock:
            for fault in self.faults:
                fault.released.set()
        self._connections.shut_all()
        self.wait_idle(timeout=5)

    @property
    def connections(self) -> int:
        """How many client connections are open now."""
        return len(self._connections.threads())

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every client connection is closed and its thread has ended.

        False if ``timeout`` passed first. Clients must close their connections
        (kept-alive ones stay open until they do).
        """
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            threads = self._connections.threads()
            if not threads:
                return True
            for thread in threads:
                thread.join(None if end is None else max(0.0, end - time.monotonic()))
                if thread.is_alive():
                    return False

    def __enter__(self) -> QianfanSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults and counts ------------------------------------------------------------

    def add_fault(self, kind: str, **kw: Any) -> Fault:
        """Switch on a fault of ``kind`` (a name in ``FAULT_KINDS``; see ``faults``)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        fault = Fault(kind, **kw)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            for fault in self.faults:
                fault.released.set()
            self.faults.clear()

    def request_count(self, action: str | None = None) -> int:
        with self._lock:
            if action is None:
                return sum(self.stats.requests.values())
            return self.stats.requests[action]

    def logged(self) -> list[Logged]:
        with self._lock:
            return list(self.stats.log)

    # --- what the HTTP handler asks -------------------------------------------------------

    def authenticate(self, request: Signed) -> str | Denied:
        """The request's access key, or why the gateway refuses it."""
        return authenticate(request, self.credentials, self.wall_clock())

    def over_budget(self, access_key: str, arrived: float) -> bool:
        """True when this arrival makes a trailing one-second window exceed ``qps``."""
        throttled = self.qps is not None and self._budget.over(access_key, arrived, self.qps)
        if throttled:
            with self._lock:
                self.stats.throttled += 1
        if self.on_budget is not None:
            self.on_budget(arrived, throttled)
        return throttled

    def take_fault(self, action: str, target: str, access_key: str) -> Fault | None:
        """The first fault that hits this request, its count taken down by one."""
        with self._lock:
            for fault in self.faults:
                if fault.matches(action, target, access_key):
                    if fault.count is not None:
                        fault.count -= 1
                    return fault
        return None

    def answer(self, action: str, body: dict[str, Any], odd: bool = False,
               huge: bool = False) -> actions.Answer:
        """What ``action`` answers to ``body`` now (``odd``: runs' fields mistyped;
        ``huge``: their times and steps too large for a float)."""
        ask = Ask(body, self.world.clock(), odd=odd, next_marker=self.send_next_marker)
        answer = actions.ACTIONS[action](self.world, ask)
        if huge and isinstance(answer, Result):
            return Result(huge_numbers(answer.value))
        return answer

    def record(self, entry: Logged) -> None:
        """Count and log a request (before its answer goes out)."""
        with self._lock:
            self.stats.requests[entry.action] += 1
            self.stats.log.append(entry)

    def count_refusal(self) -> None:
        with self._lock:
            self.stats.auth_failures += 1


@dataclass
class _Entry:
    """The request being answered, for the request log (once known)."""

    action: str
    access_key: str = ""
    target: str = ""


class _Handler(BaseHTTPRequestHandler):
    """HTTP only: parse, route, authenticate, budget, pick a fault, write the answer.

    It is also the ``faults.Reply`` the fault table writes through.
    """

    sim: QianfanSimulator
    protocol_version = "HTTP/1.1"
    server_version = "qianfan-simulator"
    # Headers and body go out in one write, without Nagle's delay: a real gateway
    # does not make a kept-alive client wait for its delayed ACK (~40 ms) per answer.
    disable_nagle_algorithm = True
    wbufsize = -1  # buffered; BaseHTTPRequestHandler flushes after each request
    _entry: _Entry | None = None  # logged (once) when its answer starts
    _arrived = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests and the demo have their own logs

    def do_GET(self) -> None:
        self._entry = None
        self.answer_json(405, {"requestId": request_id(), "code": "MethodNotAllowed",
                               "message": "use POST"})

    def parse_request(self) -> bool:
        # The arrival is stamped as soon as the request line is in, before the headers
        # are parsed: the gateway's budget counts arrivals.
        self._arrived = self.sim.arrival_clock()
        return super().parse_request()

    def do_POST(self) -> None:
        self._entry = None
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = parse_qsl(split.query, keep_blank_values=True)
        action = actions.route(path, dict(query).get("Action", ""))
        if action is None:
            self.answer_json(404, {"requestId": request_id(), "code": "NotFound",
                                   "message": "no such API"})
            return
        # Every request is logged before its answer goes out, so that a client that
        # has its answer can count on the simulator's counts including it.
        entry = self._entry = _Entry(action)
        access_key = self.sim.authenticate(Signed(self.command, path, query, self._headers()))
        if isinstance(access_key, Denied):
            self.refuse(access_key.code, access_key.message)
            return
        entry.access_key = access_key
        body = _json_object(raw_body)
        v1 = action == actions.V1_ACTION
        if body is None:
            self.answer_error(v1, 400, "InappropriateJSON", 500001, "request body is not JSON")
            return
        entry.target = actions.target(action, body)
        self._serve(entry, body)

    def _serve(self, entry: _Entry, body: dict[str, Any]) -> None:
        """Answer an authenticated request: the budget, then a fault, then the action."""
        v1 = entry.action == actions.V1_ACTION
        if self.sim.over_budget(entry.access_key, self._arrived):
            self.answer_error(v1, 429, "RequestLimitExceeded", 18,
                              "Open api qps request limit reached")
            return
        if self.sim.latency:
            time.sleep(self.sim.latency)
        fault = self.sim.take_fault(entry.action, entry.target, entry.access_key)
        after = After.ANSWER if fault is None else fault.answer(
            self, Call(entry.action, entry.access_key,
                       self.sim.credentials.get(entry.access_key, "")))
        if after is After.NOTHING:
            return
        answer = self.sim.answer(entry.action, body, odd=after is After.ODD_ANSWER,
                                 huge=after is After.HUGE_NUMBERS)
        if isinstance(answer, Failure):
            self.answer_error(v1, answer.status, answer.code, answer.number, answer.message)
        elif v1:
            self.answer_json(200, {"log_id": request_id(), "result": answer.value})
        else:
            self.answer_json(200, {"requestId": request_id(), "result": answer.value})

    def _headers(self) -> dict[str, str]:
        """The request's headers by lower-case name (the first of repeated ones)."""
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), value)
        return headers

    def _log(self, status: int) -> None:
        entry, self._entry = self._entry, None  # once per request
        if entry is not None:
            self.sim.record(Logged(entry.action, entry.access_key, entry.target,
                                   self._arrived, status))

    # --- writing (the faults' Reply) ------------------------------------------------------

    def refuse(self, code: str, message: str) -> None:
        self.sim.count_refusal()
        self._log(403)
        self.send_response(403)
        self.send_header("X-Bce-Error-Code", code)
        self.send_header("X-Bce-Error-Message", message)
        self.send_header("X-Bce-Request-Id", request_id())
        self.send_header("Content-Length", "0")
        self.end_headers()

    def answer_error(self, v1: bool, status: int, code: str, number: int, message: str) -> int:
        if v1:  # the V1 API answers errors with HTTP 200
            return self.answer_json(200, {"error_code": number, "error_msg": message,
                                          "log_id": request_id()})
        return self.answer_json(status, {"requestId": request_id(), "code": code or str(number),
                                         "message": message})

    def answer_json(self, status: int, data: Any,
                    headers: Mapping[str, str] | None = None) -> int:
        body = json.dumps(data, ensure_ascii=False).encode()
        return self.answer_raw(status, body, headers)

    def answer_raw(self, status: int, body: bytes,
                   headers: Mapping[str, str] | None = None) -> int:
        self.begin(status, {"Content-Length": str(len(body)), **(headers or {})},
                   keep_alive=True)
        self.wfile.write(body)
        return status

    def begin(self, status: int, headers: Mapping[str, str], keep_alive: bool = False) -> None:
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not keep_alive:
            self.close_connection = True  # the body that follows may never end

    def write(self, chunk: bytes) -> None:
        self.wfile.write(chunk)
        self.wfile.flush()

    def drop(self) -> None:
        self._log(0)
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """A request body as a JSON object (empty: ``{}``); None when it is not one."""
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
