"""Sharding: replicas export every run exactly once and split the requests, by an
assignment that is the same in every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from qf_exporter.app import Exporter
from qf_exporter.polling.shard import Shard
from qf_exporter.simulator import QianfanSimulator, World
from tests.helpers import REPO, ManualClock, value
from tests.scale_out.common import (
    DAY,
    ExportedRun,
    acct,
    exported,
    requested,
    samples_of,
    targets_up,
)


def test_shards_export_every_run_once_and_split_the_requests(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    now = clock()
    configured = tuple(f"job-c{j:02d}" for j in range(20))
    discovered = [f"job-d{j:02d}" for j in range(40)]
    runs: set[ExportedRun] = set()
    for j, job_id in enumerate((*configured, *discovered)):
        world.add_job(job_id, created=now - DAY)
        for r in range(1 + j % 3):
            world.add_run(job_id, f"task-{job_id}-{r}", created=now - 1000 + r,
                          duration=100 * DAY)
            runs.add(ExportedRun("default", "v2", job_id, f"task-{job_id}-{r}"))
    pairs = tuple((7000 + k, 9000 + k) for k in range(9))
    for v1_task, v1_job in pairs:
        world.add_v1_run(v1_task, v1_job, created=now - 100, duration=DAY)
        runs.add(ExportedRun("default", "v1", str(v1_job), str(v1_task)))
    assert len(runs) == 9 + sum(1 + j % 3 for j in range(60))

    replicas = [
        make_exporter(acct(sim, jobs=configured, tasks=pairs, discover=True),
                      shard=Shard(i, 3))
        for i in range(3)
    ]
    shares: list[set[ExportedRun]] = []
    v2_reads: list[set[str]] = []
    v1_reads: list[set[str]] = []
    for replica in replicas:
        since = len(sim.logged())
        replica.poller.poll_all()
        samples = samples_of(replica)
        assert value(samples, "qianfan_up") == 1
        shares.append(exported(samples))
        tasks = requested(sim, "DescribeFineTuningTasks", since)
        details = requested(sim, "jobDetail", since)
        assert len(tasks) == len(set(tasks)) and len(details) == len(set(details))
        v2_reads.append(set(tasks))
        v1_reads.append(set(details))
        assert requested(sim, "DescribeFineTuningJobs", since) == [""]  # each lists all
        assert set(targets_up(samples)) == set(tasks) | set(details)
        assert {run.job_id for run in shares[-1] if run.api == "v2"} == set(tasks)

    for i in range(3):
        assert shares[i] and v2_reads[i] and v1_reads[i], f"shard {i} got nothing"
        for k in range(i + 1, 3):
            assert not shares[i] & shares[k]
            assert not v2_reads[i] & v2_reads[k]
            assert not v1_reads[i] & v1_reads[k]
    assert set().union(*shares) == runs
    assert set().union(*v2_reads) == {*configured, *discovered}
    assert set().union(*v1_reads) == {f"{t}/{j}" for t, j in pairs}
    for i, replica in enumerate(replicas):
        assert value(samples_of(replica), "qianfan_exporter_shard_info", shard=str(i),
                     total_shards="3") == 1


def test_shard_assignment_is_fixed_across_processes() -> None:
    expected = {  # sha256 of "account\0target": the same in every process and release
        ("default", "job-a"): 0,
        ("default", "job-c"): 1,
        ("default", "10250/6205"): 2,
        ("team-b", "7263/4612"): 0,
    }
    for (account_name, target), owner in expected.items():
        assert [i for i in range(3) if Shard(i, 3).owns(account_name, target)] == [owner]
    assert [i for i in range(5) if Shard(i, 5).owns("prod", "job-fleet00042")] == [3]
    assert all(Shard().owns("default", t) for t in ("job-a", "10250/6205"))

    names = [f"job-{k:04d}" for k in range(600)]
    here = [next(i for i in range(4) if Shard(i, 4).owns("default", n)) for n in names]
    assert all(90 <= here.count(i) <= 210 for i in range(4))  # each shard gets a fair share
    script = (
        "import json, sys; from qf_exporter.polling.shard import Shard; "
        "names = json.loads(sys.argv[1]); "
        "print(json.dumps([next(i for i in range(4) if Shard(i, 4).owns('default', n)) "
        "for n in names]))"
    )
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", script, json.dumps(names)], env=env,
                             capture_output=True, text=True, check=True, timeout=60,
                             cwd=REPO)
        assert json.loads(out.stdout) == here

    for index, total in ((3, 3), (-1, 3), (0, 0)):
        # The message is the one the command line reports for bad flags.
        with pytest.raises(ValueError, match=f"--shard={index} --total-shards={total}"):
            Shard(index, total)
