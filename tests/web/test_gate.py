"""Failed logins cannot crowd out real ones: a password checked before is answered from
the cache while bcrypt work is queued, checks that are not cached hold a bounded share
of the request slots and of the bcrypt pool, and ``rate_limit`` is per client address.

bcrypt is replaced by a version that blocks until the test lets it go, so "queued" is a
state the test holds, not a race; other clients come from other loopback addresses
(127.0.0.2, ...), which Linux routes to the server on 127.0.0.1. Asserted are counts
(bcrypt runs, answers by status), never times (benchmarks/auth_flood.py measures those).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import selectors
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest

from qf_exporter.web.gate import Gate, client_key
from qf_exporter.web.routes import ExporterHTTPServer
from qf_exporter.web.server import Limits, Request
from qf_exporter.web.webconfig.basic_auth import CheckCache
from qf_exporter.web.webconfig.live import LiveWebConfig
from qf_exporter.web.webconfig.schema import RateLimit, WebConfig
from tests.conftest import EmptyServer
from tests.webconfig_fixtures import hashpw

RIGHT = ("alice", "wonderland")


class Client:
    """One keep-alive connection from ``source``, speaking raw HTTP/1.1."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20,
                                             source_address=(source, 0))
        self.file = self.sock.makefile("rb")

    def send(self, path: str = "/metrics", auth: tuple[str, str] | None = None) -> None:
        head = f"GET {path} HTTP/1.1\r\nHost: x\r\n"
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            head += f"Authorization: Basic {token}\r\n"
        self.sock.sendall((head + "\r\n").encode())

    def status(self) -> int:
        """The next answer's status (its body read and dropped); 0 if the connection ended."""
        line = self.file.readline()
        if not line:
            return 0
        length = 0
        while (header := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = header.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        self.file.read(length)
        return int(line.split()[1])

    def get(self, path: str = "/metrics", auth: tuple[str, str] | None = None) -> int:
        self.send(path, auth)
        return self.status()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class BlockedBcrypt:
    """bcrypt.checkpw that counts its runs and blocks each until ``release``."""

    def __init__(self) -> None:
        self.runs = 0
        self.started = threading.Semaphore(0)
        self.gate = threading.Event()
        self._real = bcrypt.checkpw

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.runs += 1
        self.started.release()
        assert self.gate.wait(60), "the test never let the check go"
        return self._real(password, hashed)

    def wait_started(self, count: int) -> None:
        for _ in range(count):
            assert self.started.acquire(timeout=20), f"fewer than {count} checks started"

    def release(self) -> None:
        self.gate.set()


@pytest.fixture
def blocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[BlockedBcrypt]:
    fake = BlockedBcrypt()
    monkeypatch.setattr(bcrypt, "checkpw", fake)
    yield fake
    fake.release()  # never leave an auth thread waiting


@pytest.fixture
def auth_server(empty_server: EmptyServer) -> Callable[..., ExporterHTTPServer]:
    def start(limits: Limits | None = None, rate_limit: RateLimit | None = None
              ) -> ExporterHTTPServer:
        config = WebConfig(users={"alice": hashpw("wonderland").encode()},
                           rate_limit=rate_limit)
        return empty_server(web_config=config, limits=limits or Limits())

    return start


def answers(clients: list[Client], count: int) -> Counter[int]:
    """The statuses of the first ``count`` answers to arrive, on any of the clients."""
    seen: Counter[int] = Counter()
    with selectors.DefaultSelector() as selector:
        for client in clients:
            selector.register(client.sock, selectors.EVENT_READ, client)
        while sum(seen.values()) < count:
            ready = selector.select(timeout=20)
            assert ready, f"only {sum(seen.values())} of {count} answers arrived: {seen}"
            for key, _ in ready:
                seen[key.data.status()] += 1
                selector.unregister(key.fileobj)
    return seen


def test_a_checked_password_is_served_while_60_wrong_ones_wait(
    auth_server: Callable[..., ExporterHTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = auth_server()
    scraper = Client(server.port)
    assert scraper.get(auth=RIGHT) == 200  # checked once with the real bcrypt, then cached
    fake = BlockedBcrypt()
    monkeypatch.setattr(bcrypt, "checkpw", fake)
    attackers = [Client(server.port) for _ in range(60)]
    try:
        for n, attacker in enumerate(attackers):
            attacker.send(auth=("alice", f"wrong-{n}"))
        fake.wait_started(1)
        # One check per address at a time: the other 59 wait their turn, holding no
        # request slot, while the cached password is answered.
        for _ in range(20):
            assert scraper.get(auth=RIGHT) == 200
        assert fake.runs == 1
        assert len(server.gate.queue) == 59
        # (The scraper's last slot may not be given back yet when its answer arrives.)
        assert server.http.in_flight + server.http.light_in_flight <= 1
        fake.release()
        # Each connection's first check is its own, in turn for the address ...
        assert answers(attackers, 60) == {401: 60}
        assert fake.runs == 60
        # ... then connections that failed share the address's 10 checks and one a
        # second: every other answer is a 429 without a bcrypt run.
        for n, attacker in enumerate(attackers):
            attacker.send(auth=("alice", f"again-{n}"))
        again = answers(attackers, 60)
        assert again[429] >= 45 and again[401] + again[429] == 60, again
        assert fake.runs == 60 + again[401]
        assert scraper.get(auth=RIGHT) == 200
    finally:
        fake.release()
        for client in [scraper, *attackers]:
            client.close()


def test_checks_from_many_addresses_wait_their_turn_without_a_slot(
    auth_server: Callable[..., ExporterHTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 8 request slots: 2 checks at a time; 12 waiting hold none of the slots.
    server = auth_server(Limits(max_requests=8))
    assert server.gate.max_checks == 2
    scraper = Client(server.port)
    assert scraper.get(auth=RIGHT) == 200
    fake = BlockedBcrypt()
    monkeypatch.setattr(bcrypt, "checkpw", fake)
    attackers = [Client(server.port, f"127.0.0.{10 + n}") for n in range(12)]
    try:
        for n, attacker in enumerate(attackers):
            attacker.send(auth=("alice", f"wrong-{n}"))
        fake.wait_started(2)
        for path in ("/metrics", "/-/healthy", "/"):
            assert scraper.get(path, auth=RIGHT) == 200
        anonymous = Client(server.port, "127.0.0.2")
        assert anonymous.get() == 401  # no credentials: refused, no bcrypt run
        anonymous.close()
        assert fake.runs == 2
        assert len(server.gate.queue) == 10
        # (The scraper's last slot may not be given back yet when its answer arrives.)
        assert server.http.in_flight + server.http.light_in_flight <= 1
        fake.release()
        assert answers(attackers, 12) == {401: 12}
        assert fake.runs == 12
    finally:
        fake.release()
        for client in [scraper, *attackers]:
            client.close()


def test_rate_limit_is_per_client_address(empty_server: EmptyServer) -> None:
    server = empty_server(web_config=WebConfig(rate_limit=RateLimit(3600.0, 2)))
    first, second = Client(server.port, "127.0.0.2"), Client(server.port, "127.0.0.3")
    try:
        assert [first.get("/-/healthy") for _ in range(3)] == [200, 200, 429]
        assert [second.get("/-/healthy") for _ in range(3)] == [200, 200, 429]
    finally:
        first.close()
        second.close()


def test_an_authorised_user_keeps_its_own_bucket_at_a_shared_address(
    auth_server: Callable[..., ExporterHTTPServer],
) -> None:
    server = auth_server(rate_limit=RateLimit(3600.0, 3))
    scraper, flood = Client(server.port), Client(server.port)
    try:
        assert scraper.get(auth=RIGHT) == 200  # a bcrypt check: from the address's bucket
        codes = [flood.get(auth=("alice", f"wrong-{n}")) for n in range(5)]
        assert codes == [401, 401, 429, 429, 429]
        # The address's bucket is empty, the authorised user's is not (and is bounded).
        assert [scraper.get(auth=RIGHT) for _ in range(4)] == [200, 200, 200, 429]
    finally:
        scraper.close()
        flood.close()


def test_a_scraper_not_yet_cached_is_checked_at_the_address_of_a_flood(
    auth_server: Callable[..., ExporterHTTPServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = auth_server()
    server.gate.close()
    server.gate = Gate(check_burst=1, check_interval=3600.0)  # no refill during the test
    fake = BlockedBcrypt()
    fake.release()  # counts, does not block
    monkeypatch.setattr(bcrypt, "checkpw", fake)
    flood = [Client(server.port) for _ in range(20)]
    try:
        for n, attacker in enumerate(flood):  # each connection fails its own check
            assert attacker.get(auth=("alice", f"first-{n}")) == 401
        assert flood[0].get(auth=("alice", "second")) == 401  # the address's one check
        for n, attacker in enumerate(flood):
            attacker.send(auth=("alice", f"again-{n}"))
        assert answers(flood, 20) == {429: 20}
        assert fake.runs == 21
        # The flood goes on; a scraper on a new connection is checked, then cached.
        for n, attacker in enumerate(flood):
            attacker.send(auth=("alice", f"more-{n}"))
        scraper = Client(server.port)
        assert [scraper.get(auth=RIGHT) for _ in range(3)] == [200, 200, 200]
        assert answers(flood, 20) == {429: 20}
        assert fake.runs == 22
        scraper.close()
    finally:
        for client in flood:
            client.close()


def test_a_scraper_not_yet_cached_waits_its_turn_behind_a_reconnecting_flood(
    auth_server: Callable[..., ExporterHTTPServer], blocked: BlockedBcrypt
) -> None:
    server = auth_server()
    # Every request of the flood on a new connection: each is a first check.
    flood = [Client(server.port) for _ in range(20)]
    scraper = Client(server.port)
    try:
        for n, attacker in enumerate(flood):
            attacker.send(auth=("alice", f"wrong-{n}"))
        blocked.wait_started(1)
        scraper.send(auth=RIGHT)
        anonymous = Client(server.port)
        assert anonymous.get() == 401  # no credentials: no wait, no bcrypt run
        anonymous.close()
        assert len(server.gate.queue) == 20  # 19 of the flood and the scraper
        blocked.release()
        assert scraper.status() == 200  # in its turn, not a 429
        assert answers(flood, 20) == {401: 20}
        assert blocked.runs == 21
        # Cached now: the flood's new connections wait for bcrypt, the scraper does not.
        for attacker in flood:
            attacker.close()
        flood = [Client(server.port) for _ in range(20)]
        for n, attacker in enumerate(flood):
            attacker.send(auth=("alice", f"more-{n}"))
        assert [scraper.get(auth=RIGHT) for _ in range(3)] == [200, 200, 200]
        assert answers(flood, 20) == {401: 20}
    finally:
        for client in [scraper, *flood]:
            client.close()


def test_connections_that_failed_are_refused_while_first_checks_wait(
    auth_server: Callable[..., ExporterHTTPServer], blocked: BlockedBcrypt
) -> None:
    server = auth_server()
    failed = Client(server.port)
    blocked.release()
    assert failed.get(auth=("alice", "wrong")) == 401  # its first check, now it failed
    blocked.gate.clear()
    waiting = [Client(server.port) for _ in range(3)]
    try:
        for n, client in enumerate(waiting):
            client.send(auth=("alice", f"first-{n}"))
        blocked.wait_started(2)  # the failed one's, then the first of the three
        # The address's first checks wait; a connection that failed is refused at once.
        assert failed.get(auth=("alice", "again")) == 429
        assert blocked.runs == 2
        blocked.release()
        assert answers(waiting, 3) == {401: 3}
        assert blocked.runs == 4
    finally:
        for client in [failed, *waiting]:
            client.close()


# --- the gate on its own ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(client: str, auth: tuple[str, str] | None = None) -> Request:
    headers = {}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["authorization"] = f"Basic {token}"
    return Request("GET", "/metrics", "/metrics", headers, client)


CONNECTIONS = itertools.count(1)


def statuses(gate: Gate, config: WebConfig, requests: list[Request]) -> list[int]:
    """The answers to ``requests`` sent one after another on one new connection."""
    connection = next(CONNECTIONS)

    async def run() -> list[int]:
        out = []
        for one in requests:
            one.connection = connection
            refused = await gate.admit(config, one)
            out.append(200 if refused is None else refused.status)
        return out

    return asyncio.run(run())


def test_an_address_over_its_share_of_failed_checks_is_refused_without_bcrypt() -> None:
    clock = FakeClock()
    gate = Gate(check_burst=3, check_interval=1.0, clock=clock)
    config = WebConfig(users={"alice": hashpw("wonderland").encode()})
    try:
        # One connection: its first check is its own, then the address's 3 apply.
        wrong = [request("10.0.0.1", ("alice", f"wrong-{n}")) for n in range(6)]
        assert statuses(gate, config, wrong) == [401, 401, 401, 401, 429, 429]
        assert gate.checks_started == 4
        # A wrong password checked before is answered from the cache, for free.
        assert statuses(gate, config, wrong[:1]) == [401]
        clock.now += 1.0  # one more check a second
        more = [request("10.0.0.1", ("alice", f"more-{n}")) for n in range(3)]
        assert statuses(gate, config, more) == [401, 401, 429]  # a new connection's own
        assert gate.checks_started == 6
        # Another address has a share of its own; a right password is given back.
        right = [request("10.0.0.2", RIGHT)]
        right += [request("10.0.0.2", ("bob", f"x{n}")) for n in range(5)]
        assert statuses(gate, config, right) == [200, 401, 401, 401, 401, 429]
        # A password checked before passes even from an address over its share.
        assert statuses(gate, config, [request("10.0.0.1", RIGHT)]) == [200]
        assert gate.checks_started == 11
    finally:
        gate.close()


def test_a_check_keeps_its_place_after_its_client_leaves(blocked: BlockedBcrypt) -> None:
    gate = Gate(max_checks=1)
    config = WebConfig(users={"alice": hashpw("wonderland").encode()})

    async def run() -> None:
        loop = asyncio.get_running_loop()
        first = asyncio.create_task(gate.admit(config, request("10.0.0.1", ("alice", "x"))))
        await loop.run_in_executor(None, blocked.wait_started, 1)
        first.cancel()  # the client went away; its bcrypt run goes on
        refused = await gate.admit(config, request("10.0.0.2", ("alice", "y")))
        assert refused is not None and refused.status == 429
        assert gate.checking == {"10.0.0.1"}
        blocked.release()
        await loop.run_in_executor(None, lambda: gate.close(wait=True))
        assert gate.checking == set()  # freed when the run ended

    asyncio.run(run())
    assert blocked.runs == 1


def test_a_spray_of_addresses_keeps_the_tables_bounded() -> None:
    clock = FakeClock()
    gate = Gate(max_clients=100, check_burst=1, clock=clock)
    limited = WebConfig(rate_limit=RateLimit(3600.0, 1))
    try:
        spray = [request(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}") for n in range(20_000)]
        assert set(statuses(gate, limited, spray)) == {200}
        assert len(gate.buckets) == 100
        # The most recent keep their state: a second request from them is over the limit.
        assert statuses(gate, limited, spray[-3:]) == [429, 429, 429]
        config = WebConfig(users={"alice": hashpw("wonderland").encode()})
        wrong = [request(f"10.9.{n >> 8}.{n & 255}", ("alice", f"w{n}")) for n in range(300)]
        assert set(statuses(gate, config, wrong)) == {401}
        assert len(gate.budgets) == 100
    finally:
        gate.close()


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("", ""),
        ("not-an-address", "not-an-address"),
    ],
)
def test_client_key(address: str, key: str) -> None:
    assert client_key(address) == key


# --- the cache ---------------------------------------------------------------------------


def test_wrong_passwords_never_evict_a_right_one() -> None:
    config = WebConfig(users={"alice": hashpw("wonderland").encode()},
                       cache=CheckCache(successes=4, failures=8))
    assert config.check(*RIGHT)
    for n in range(50):
        assert not config.check("alice", f"wrong-{n}")
    assert config.cached(*RIGHT) is True
    assert config.cached("alice", "wrong-49") is False
    assert config.cached("alice", "wrong-0") is None  # evicted: only 8 failures kept
    assert len(config.cache) == 9


def test_the_cache_outlives_a_reload_but_not_a_changed_password(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: '{hashpw('wonderland')}'\n")
    live = LiveWebConfig(str(path))
    assert live.current().check(*RIGHT)
    path.write_text(path.read_text() + "# touched\n")
    reloaded = live.current()
    assert reloaded.cached(*RIGHT) is True
    path.write_text(f"basic_auth_users:\n  alice: '{hashpw('other')}'\n")
    changed = live.current()
    assert changed is not reloaded
    assert changed.cached(*RIGHT) is None
    assert not changed.check(*RIGHT)
