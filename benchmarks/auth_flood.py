"""``python -m benchmarks.auth_flood``: a correct scraper's service while clients flood
the exporter with wrong passwords (the table in docs/security.md).

A ``--demo`` exporter with basic auth (a bcrypt hash of cost 10, as
``htpasswd -nBC 10`` makes) runs in a child process. The correct client scrapes
``/metrics`` once (so its password was checked before), then ``--attackers``
keep-alive connections send a fresh wrong password on every request, as fast as
they are answered, from another process, while the correct client scrapes again
for ``--seconds``, ``--pause`` seconds apart. With ``--rate-limit`` the web config also sets
``rate_limit: {interval: 100ms, burst: 20}``; with ``--addresses N`` the attackers
come from N other loopback addresses; with ``--cold`` the correct password was not
checked before the flood (``--order flood-first``: the flood runs a second before the
correct client's first scrape; ``client-first``: that scrape is sent as the flood
starts); with ``--reconnect`` every attacker's request is on a new connection.
Printed: how many of the correct client's scrapes were answered 200, their median and
p95, what the attackers got (by status), and the exporter's CPU seconds over the flood.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import bcrypt
import requests

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening.*address=https?://(\S+):(\d+)")
USER, PASSWORD = "prometheus", "correct horse battery staple"


def start_exporter(web_config: Path) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "qf_exporter", "--demo", "--web.listen-address=127.0.0.1:0",
         f"--web.config.file={web_config}"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if match := LISTENING.search(line):
            # Keep reading what it logs, so that a full pipe never stalls it.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, int(match.group(2))
    raise SystemExit("the exporter did not start")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _source(n: int, addresses: int) -> tuple[str, int]:
    """127.0.0.1 (the correct client's address), or one of ``addresses`` others."""
    return (f"127.0.0.{2 + n % addresses}" if addresses else "127.0.0.1", 0)


async def _attacker(port: int, n: int, stop: float, seen: Counter[int], addresses: int,
                    reconnect: bool) -> None:
    source = _source(n, addresses)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=source)
    i = 0
    while time.monotonic() < stop:
        i += 1
        token = base64.b64encode(f"{USER}:wrong-{n}-{i}".encode()).decode()
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}"
                     "\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        seen[status] += 1
        if reconnect or b"connection: close" in head.lower():
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                           local_addr=source)
    writer.close()


async def _attack(port: int, attackers: int, seconds: float, addresses: int,
                  reconnect: bool) -> Counter[int]:
    seen: Counter[int] = Counter()
    stop = time.monotonic() + seconds
    results = await asyncio.gather(
        *(_attacker(port, n, stop, seen, addresses, reconnect) for n in range(attackers)),
        return_exceptions=True,
    )
    seen[0] += sum(isinstance(r, BaseException) for r in results)  # 0: a connection lost
    return seen


def attack_child(port: int, attackers: int, seconds: float, addresses: int,
                 reconnect: bool) -> None:
    seen = asyncio.run(_attack(port, attackers, seconds, addresses, reconnect))
    print(" ".join(f"{status}:{count}" for status, count in sorted(seen.items())))


def scrape(port: int, seconds: float, pause: float) -> tuple[list[float], Counter[int]]:
    session = requests.Session()
    session.auth = (USER, PASSWORD)
    times: list[float] = []
    codes: Counter[int] = Counter()
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        began = time.perf_counter()
        try:
            code = session.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code
        except requests.RequestException:
            code = 0
        codes[code] += 1
        if code == 200:
            times.append(time.perf_counter() - began)
        time.sleep(pause)
    return times, codes


def run(a: argparse.Namespace) -> None:
    attackers, seconds, rate_limit, pause = a.attackers, a.seconds, a.rate_limit, a.pause
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    with tempfile.TemporaryDirectory() as directory:
        web = Path(directory) / "web.yml"
        text = f"basic_auth_users:\n  {USER}: '{hashed}'\n"
        if rate_limit:
            text += "rate_limit: {interval: 100ms, burst: 20}\n"
        web.write_text(text)
        proc, port = start_exporter(web)
        try:
            # The first check runs bcrypt, the rest are cached; --cold starts with the flood.
            idle = [] if a.cold else scrape(port, 3.0, pause)[0]
            cpu = cpu_seconds(proc.pid)
            child = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.auth_flood", "--attack-child",
                 str(port), str(attackers), str(seconds + 1), str(a.addresses),
                 str(int(a.reconnect))],
                cwd=ROOT, stdout=subprocess.PIPE, text=True,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
            )
            if a.order == "flood-first":
                time.sleep(1.0)  # let the flood build up before scraping
            times, codes = scrape(port, seconds, pause)
            flood, _ = child.communicate(timeout=seconds + 60)
            cpu = cpu_seconds(proc.pid) - cpu
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"attackers={attackers} addresses={a.addresses or 'shared'} rate_limit={rate_limit} "
          f"cold={a.cold} order={a.order} reconnect={a.reconnect}")
    report(idle, times, codes, flood.strip(), cpu, seconds)


def report(idle: list[float], times: list[float], codes: Counter[int], flood: str,
           cpu: float, seconds: float) -> None:
    total = sum(codes.values())

    def ms(values: list[float], q: float) -> str:
        if not values:
            return "-"
        ordered = sorted(values)
        return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"

    if idle:
        print(f"  idle: median {statistics.median(idle) * 1000:.1f} ms, {len(idle)} scrapes")
    print(f"  correct client: {codes[200]}/{total} answered 200 ({dict(codes)}), "
          f"median {ms(times, 0.5)} ms, p95 {ms(times, 0.95)} ms, slowest {ms(times, 1.0)} ms "
          f"(the first: {times[0] * 1000 if times else 0:.0f} ms)")
    print(f"  attackers' answers (status:count): {flood}")
    print(f"  exporter CPU: {cpu:.1f} s over {seconds + 1:.0f} s of flood")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attackers", type=int, default=60)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rate-limit", action="store_true")
    p.add_argument("--pause", type=float, default=0.05,
                   help="seconds between the correct client's scrapes (0.2 is under the limit)")
    p.add_argument("--addresses", type=int, default=0,
                   help="attack from this many other loopback addresses (0: the client's)")
    p.add_argument("--cold", action="store_true",
                   help="the correct password is not checked before the flood starts")
    p.add_argument("--order", choices=("flood-first", "client-first"), default="flood-first",
                   help="whether the flood runs a second before the correct client scrapes")
    p.add_argument("--reconnect", action="store_true",
                   help="attackers open a new connection for every request")
    p.add_argument("--attack-child", nargs=5,
                   metavar=("PORT", "N", "SECONDS", "ADDRESSES", "RECONNECT"))
    a = p.parse_args()
    if a.attack_child:
        port, n, seconds, addresses, reconnect = a.attack_child
        attack_child(int(port), int(n), float(seconds), int(addresses), reconnect == "1")
    else:
        run(a)


if __name__ == "__main__":
    main()
