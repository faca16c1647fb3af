"""Sharding: replicas export every run exactly once and split the requests, by an
assignment that is the same in every process."""

from __future__ import annotations

from collections.abc import Callable

from qf_exporter.app import Exporter
from qf_exporter.polling.shard import Shard
from qf_exporter.simulator import QianfanSimulator, World
from tests.helpers import ManualClock, value
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


