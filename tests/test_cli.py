"""The command line as a user runs it: subprocesses, real signals, real sockets."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from qf_exporter import __version__
from qf_exporter.simulator import QianfanSimulator, World
from tests.checks import assert_no_keys
from tests.config_text import AK, assert_refused, check
from tests.daemon import Daemon
from tests.helpers import ACCESS_KEY, SECRET_KEY, parse_samples, promtool_check_metrics, value

CMD = [sys.executable, "-m", "qf_exporter"]


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
    base.update(extra)
    return base


@pytest.fixture
def live_sim() -> Iterator[QianfanSimulator]:
    """A simulator on real time, for exporters in other processes."""
    world = World(time.time)
    now = time.time()
    add_big_job(world, now)
    world.add_job("job-live", "live job", created=now - 100)
    world.add_run("job-live", "task-live", created=now - 50, wait=0, duration=100_000)
    world.add_v1_run(10250, 6205, "sdk_test_7", created=now - 100, wait=0, duration=1000)
    with QianfanSimulator(world, {ACCESS_KEY: SECRET_KEY}) as simulator:
        yield simulator


def add_big_job(world: World, now: float) -> None:
    """job-big: 130 finished runs, two pages of DescribeFineTuningTasks."""
    world.add_job("job-big", "big job", created=now - 100)
    for i in range(130):
        world.add_run("job-big", f"task-{i:03d}", created=now - 5000 + i, wait=0, duration=600)


def write_config(tmp_path: Path, sim: QianfanSimulator, extra: str = "") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
accounts:
  - name: team
    endpoint: {sim.url}
    access_key: ${{QIANFAN_ACCESS_KEY}}
    secret_key_file: {tmp_path / "sk"}
    qps: 20
    jobs: [job-big, job-live]
    tasks:
      - {{task_id: 10250, job_id: 6205}}
{extra}
poll:
  interval: 30s
  timeout: 5s
""",
        encoding="utf-8",
    )
    (tmp_path / "sk").write_text(SECRET_KEY + "\n", encoding="utf-8")
    (tmp_path / "sk").chmod(0o600)
    path.chmod(0o600)
    return path


def test_version() -> None:
    out = subprocess.run([*CMD, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"qf-exporter {__version__}"


def test_once_prints_every_metric(tmp_path: Path, live_sim: QianfanSimulator) -> None:
    config = write_config(tmp_path, live_sim)
    out = subprocess.run([*CMD, f"--config.file={config}", "--once"], capture_output=True,
                         env=env(QIANFAN_ACCESS_KEY=ACCESS_KEY), timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    samples = parse_samples(out.stdout)
    assert value(samples, "qianfan_up", account="team") == 1
    runs = {dict(k)["task_id"] for (n, k) in samples if n == "qianfan_finetune_run_info"}
    assert len(runs) == 132  # 130 runs over two pages, one live run, one V1 run
    assert value(samples, "qianfan_finetune_run_status", task_id="task-live",
                 status="running") == 1
    assert value(samples, "qianfan_api_requests_total", action="DescribeFineTuningTasks") == 3
    promtool_check_metrics(out.stdout)
    assert_no_keys(out.stdout, out.stderr)


def test_once_exits_1_when_a_target_is_unreadable(tmp_path: Path,
                                                  live_sim: QianfanSimulator) -> None:
    config = write_config(tmp_path, live_sim)
    text = config.read_text().replace("jobs: [job-big, job-live]", "jobs: [job-live, job-gone]")
    config.write_text(text)
    out = subprocess.run([*CMD, f"--config.file={config}", "--once"], capture_output=True,
                         env=env(QIANFAN_ACCESS_KEY=ACCESS_KEY), timeout=60)
    assert out.returncode == 1
    samples = parse_samples(out.stdout)
    assert value(samples, "qianfan_target_up", target="job-gone") == 0
    assert value(samples, "qianfan_target_up", target="job-live") == 1
    assert value(samples, "qianfan_target_error_info", target="job-gone", reason="client") == 1
    # Qianfan answered "no such job": it was reached with the credentials, so the account
    # is up; --once still fails, because one target could not be read.
    assert value(samples, "qianfan_up", account="team") == 1


def test_demo_once_has_runs_in_every_final_and_live_status() -> None:
    out = subprocess.run([*CMD, "--demo", "--once"], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    samples = parse_samples(out.stdout)
    statuses = {dict(k)["status"] for (n, k), v in samples.items()
                if n == "qianfan_finetune_run_status" and v == 1}
    assert statuses == {"waiting", "running", "succeeded", "stopped", "failed", "unknown"}
    promtool_check_metrics(out.stdout)


def test_config_check(tmp_path: Path, live_sim: QianfanSimulator) -> None:
    config = write_config(tmp_path, live_sim)
    ok = subprocess.run([*CMD, f"--config.file={config}", "--config.check"],
                        capture_output=True, text=True, env=env(QIANFAN_ACCESS_KEY=ACCESS_KEY))
    assert ok.returncode == 0 and "configuration is valid" in ok.stdout
    bad = subprocess.run([*CMD, f"--config.file={config}", "--config.check"],
                         capture_output=True, text=True, env=env())
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "accounts[0].access_key: environment variable QIANFAN_ACCESS_KEY is not set"
    ]
    assert "Traceback" not in bad.stderr


# Run main() and print which of the heavy libraries it imported (none of them is
# needed to print the version or to check a configuration).
HEAVY_PROBE = (
    "import atexit, sys; atexit.register(lambda: print(sorted("
    "{m.split('.')[0] for m in sys.modules} & {'requests', 'apscheduler'}), file=sys.stderr)); "
    "from qf_exporter.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize("check", [False, True])
def test_version_and_config_check_import_neither_requests_nor_apscheduler(
        tmp_path: Path, check: bool) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("accounts:\n  - name: team\n    access_key: ak\n"
                      f"    secret_key_file: {tmp_path / 'sk'}\n    jobs: [job-a]\n")
    (tmp_path / "sk").write_text("sk\n")
    for path in (config, tmp_path / "sk"):
        path.chmod(0o600)
    args = [f"--config.file={config}", "--config.check"] if check else ["--version"]
    out = subprocess.run([sys.executable, "-c", HEAVY_PROBE, *args], capture_output=True,
                         text=True, env=env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "[]"


def test_bad_flags_exit_2() -> None:
    shard = "--shard must be between 0 and --total-shards - 1"
    for args, said in ((["--config.file=x.yaml", "--shard=3", "--total-shards=2"], shard),
                       (["--config.file=x.yaml", "--total-shards=0"], shard),
                       (["--demo", "--web.listen-address=nope"], "nope"), ([], "--config.file")):
        out = subprocess.run([*CMD, *args], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2, args
        assert "Traceback" not in out.stderr
        assert said in out.stderr, (args, out.stderr)


class Running:
    """An exporter subprocess whose stderr is read in the background (so it never blocks)."""

    def __init__(self, args: list[str], **kw: str) -> None:
        self.proc = subprocess.Popen([*CMD, "--web.listen-address=127.0.0.1:0", *args],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True, env=env(**kw))
        self.lines: list[str] = []
        self.address: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            match = re.search(r'address"?[=:] ?"?(http://127\.0\.0\.1:\d+)', line)
            if match:
                self.address.put(match.group(1))
        self.address.put("")

    def base(self) -> str:
        base = self.address.get(timeout=60)
        assert base, "the exporter did not start listening:\n" + "".join(self.lines)
        return base

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        return code, "".join(self.lines)


def wait_ready(base: str) -> None:
    """Readiness flips after the first poll; poll /-/ready until it does (bounded)."""
    session = requests.Session()
    for _ in range(600):
        if session.get(base + "/-/ready", timeout=5).status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError("never ready")


def test_demo_serves_and_sigterm_stops_cleanly() -> None:
    running = Running(["--demo", "--log.format=json"])
    base = running.base()
    try:
        wait_ready(base)
        samples = parse_samples(requests.get(base + "/metrics", timeout=5).content)
        assert value(samples, "qianfan_up", account="demo") == 1
        assert requests.get(base + "/-/healthy", timeout=5).status_code == 200
        assert "demo" in requests.get(base + "/", timeout=5).text
    finally:
        started = time.monotonic()
        code, err = running.stop()
    assert code == 0 and time.monotonic() - started < 10
    assert "Traceback" not in err
    for line in err.strip().splitlines():
        json.loads(line)  # every log line is JSON


def test_reload_by_sighup_and_http(tmp_path: Path, live_sim: QianfanSimulator) -> None:
    config = write_config(tmp_path, live_sim)
    running = Running([f"--config.file={config}", "--log.level=debug", "--web.enable-lifecycle"],
                      QIANFAN_ACCESS_KEY=ACCESS_KEY)
    base = running.base()
    try:
        wait_ready(base)

        def reload_ok() -> float | None:
            samples = parse_samples(requests.get(base + "/metrics", timeout=5).content)
            return value(samples, "qianfan_config_last_reload_successful")

        assert reload_ok() == 1
        good = config.read_text()
        config.write_text(good.replace("qps: 20", "qps: 0"))
        answer = requests.post(base + "/-/reload", timeout=10)
        assert answer.status_code == 500 and "accounts[0].qps: must be > 0" in answer.text
        assert reload_ok() == 0
        # The old configuration keeps running.
        samples = parse_samples(requests.get(base + "/metrics", timeout=5).content)
        assert value(samples, "qianfan_target_up", target="job-live") == 1

        config.write_text(good.replace("jobs: [job-big, job-live]", "jobs: [job-live]"))
        running.proc.send_signal(signal.SIGHUP)
        for _ in range(200):
            if reload_ok() == 1:
                break
            time.sleep(0.05)
        assert reload_ok() == 1
        wait_ready(base)
        for _ in range(200):
            samples = parse_samples(requests.get(base + "/metrics", timeout=5).content)
            if value(samples, "qianfan_target_up", target="job-big") is None:
                break
            time.sleep(0.05)
        assert value(samples, "qianfan_target_up", target="job-big") is None
    finally:
        code, err = running.stop()
    assert code == 0
    assert "level=debug" in err  # debug logging was on...
    assert_no_keys(err)  # ...and still no credentials


def tight_budget_config(tmp_path: Path, sim: QianfanSimulator, name: str,
                        jobs: list[str], pairs: list[tuple[int, int]], qps: int,
                        keys: bool = False) -> Path:
    """A config with ``qps`` and ``interval: 2s``, and no timeout (it defaults); the
    keys come from the environment, or from the file with ``keys``."""
    account = {"name": "team", "endpoint": sim.url, "qps": qps, "jobs": jobs,
               "tasks": [{"task_id": t, "job_id": j} for t, j in pairs]}
    if keys:
        account.update(access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"accounts": [account], "poll": {"interval": "2s"}}),
                    encoding="utf-8")
    path.chmod(0o600)
    return path


def tight_world(jobs: list[str], pairs: list[tuple[int, int]]) -> World:
    """job-big (two pages) and one running run in every other job and pair."""
    world = World(time.time)
    now = time.time()
    add_big_job(world, now)
    for job in jobs[1:]:
        world.add_job(job, created=now - 100)
        world.add_run(job, f"task-{job}", created=now - 50, wait=0, duration=100_000)
    for task, job_id in pairs:
        world.add_v1_run(task, job_id, created=now - 100, wait=0, duration=100_000)
    return world


def test_once_waits_for_a_tight_budget_and_reads_everything(tmp_path: Path) -> None:
    """The issue's account: interval 2s, qps 3, no timeout, about 10 requests a cycle
    (so a cycle needs about 3 s): --config.check passes, and --once waits its turns,
    reads every target, counts no failure and exits 0. The gateway enforces qps 3."""
    jobs = ["job-big", "job-alpha", "job-beta"]
    pairs = [(100 + k, 200 + k) for k in range(4)]
    with QianfanSimulator(tight_world(jobs, pairs), {ACCESS_KEY: SECRET_KEY},
                          qps=3) as sim:
        config = tight_budget_config(tmp_path, sim, "tight.yaml", jobs, pairs, qps=3)
        keys = env(QIANFAN_ACCESS_KEY=ACCESS_KEY, QIANFAN_SECRET_KEY=SECRET_KEY)
        check = subprocess.run([*CMD, f"--config.file={config}", "--config.check"],
                               capture_output=True, text=True, env=keys, timeout=60)
        assert check.returncode == 0, check.stderr
        out = subprocess.run([*CMD, f"--config.file={config}", "--once"],
                             capture_output=True, env=keys, timeout=120)
        assert out.returncode == 0, out.stderr.decode()
        samples = parse_samples(out.stdout)
        targets = [k for (n, k) in samples if n == "qianfan_target_up"]
        assert len(targets) == 7
        assert all(samples[("qianfan_target_up", k)] == 1 for k in targets)
        failed = [v for (n, _), v in samples.items()
                  if n == "qianfan_api_request_failures_total"]
        assert failed and sum(failed) == 0
        # two pages of job-big, a list and a detail for each other job, four V1 reads
        assert sim.request_count() == 2 + 2 * 2 + 4
        assert sim.stats.throttled == 0


def test_two_shards_share_the_accounts_quota(tmp_path: Path) -> None:
    """Two real processes, --total-shards=2, of an account whose quota is 4 a second at
    one gateway: each uses 2 a second, so together they never go over and the gateway
    refuses nothing."""
    jobs = ["job-big", *(f"job-{k}" for k in range(6))]
    pairs = [(100 + k, 200 + k) for k in range(8)]
    with QianfanSimulator(tight_world(jobs, pairs), {ACCESS_KEY: SECRET_KEY},
                          qps=4) as sim:
        config = tight_budget_config(tmp_path, sim, "shards.yaml", jobs, pairs, qps=4)
        keys = env(QIANFAN_ACCESS_KEY=ACCESS_KEY, QIANFAN_SECRET_KEY=SECRET_KEY)
        shards = [
            subprocess.Popen([*CMD, f"--config.file={config}", "--once", f"--shard={i}",
                              "--total-shards=2"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=keys)
            for i in range(2)
        ]
        outputs = [shard.communicate(timeout=120) for shard in shards]
        read: list[str] = []
        for shard, (stdout, stderr) in zip(shards, outputs, strict=True):
            assert shard.returncode == 0, stderr.decode()
            samples = parse_samples(stdout)
            assert value(samples, "qianfan_rate_budget_qps", account="team") == 2
            read += [dict(k)["target"] for (n, k) in samples if n == "qianfan_target_up"]
        assert sorted(read) == sorted([*jobs, *(f"{t}/{j}" for t, j in pairs)])
        assert sim.request_count() == 2 + 2 * 6 + 8
        assert sim.stats.throttled == 0


def test_the_daemon_on_a_tight_budget_reads_late_never_down(tmp_path: Path) -> None:
    """The same account polled by the daemon: every scrape shows every target up and
    no failure, while the lag rises above 0 (a cycle needs about 3.5 s of a 2 s
    interval), and one log line gives the numbers."""
    jobs = ["job-big", "job-alpha", "job-beta"]
    pairs = [(100 + k, 200 + k) for k in range(4)]
    with QianfanSimulator(tight_world(jobs, pairs), {ACCESS_KEY: SECRET_KEY},
                          qps=3) as sim:
        config = tight_budget_config(tmp_path, sim, "tight.yaml", jobs, pairs, qps=3,
                                     keys=True)
        daemon = Daemon([f"--config.file={config}", "--web.listen-address=127.0.0.1:0"])
        lags: list[float] = []
        try:
            url = f"http://127.0.0.1:{daemon.port}/metrics"
            for _ in range(600):  # until the second poll has ended, at most a minute
                samples = parse_samples(requests.get(url, timeout=30).content)
                ups = [v for (n, _), v in samples.items() if n == "qianfan_target_up"]
                assert 0 not in ups
                assert sum(v for (n, _), v in samples.items()
                           if n == "qianfan_api_request_failures_total") == 0
                lags.append(value(samples, "qianfan_poll_lag_seconds", account="team") or 0)
                if lags[-1] > 0:
                    break
                time.sleep(0.1)
        finally:
            _, log = daemon.stop()
        assert lags[-1] > 0, lags
        assert log.count("the request budget cannot hold poll.interval") == 1
        assert "requests_per_cycle=10 budget_qps=3.0 interval=2.0" in log
        assert sim.stats.throttled == 0


# --- a config file that is not a regular file is refused, not waited on ------------


def test_fifo_as_config_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    assert_refused(check(fifo), f"{fifo}: not a regular file (a FIFO)")


def test_fifo_as_secret_key_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "sk"
    os.mkfifo(fifo)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"accounts:\n  - {{name: prod, access_key: {AK}, secret_key_file: {fifo}, "
        "jobs: [job-a]}\n",
        encoding="utf-8",
    )
    assert_refused(
        check(config), f"accounts[0].secret_key_file: {fifo} is not a regular file (a FIFO)"
    )


def test_device_as_config_file_is_refused() -> None:
    assert_refused(check("/dev/zero"), "/dev/zero: not a regular file (a character device)")

