"""Who owns a run (README, "Configuration", `team`): the team of a job, a V1 pair, a discovery
rule or the account, on the run's info series and on its target's health."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from qf_exporter.app import Exporter
from qf_exporter.config.file import Config, Discovery, TeamRule, V1Target, V2Job
from qf_exporter.config.patterns import compile_pattern
from qf_exporter.simulator import QianfanSimulator, World
from tests.helpers import FAST_POLL, ManualClock, series
from tests.scale_out.common import DAY, acct, samples_of


def _teams(exporter: Exporter) -> tuple[dict[str, str], dict[str, str]]:
    """The ``team`` of each run (by task id) and of each target (by name)."""
    samples = samples_of(exporter)
    runs = {dict(k)["task_id"]: dict(k)["team"]
            for k in series(samples, "qianfan_finetune_run_info")}
    targets = {dict(k)["target"]: dict(k)["team"] for k in series(samples, "qianfan_target_up")}
    return runs, targets


def test_the_file_names_the_owner_else_a_rule_else_the_account(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    for job_id, name in (("job-owned", "nlp-chat"), ("job-plain", "ranking"),
                         ("job-ruled", "nlp-summarise"), ("job-cv", "vision-detect"),
                         ("job-nobody", "nlp-legacy")):
        world.add_job(job_id, name, created=clock() - DAY)
        world.add_run(job_id, f"task-{job_id}", created=clock() - 100, duration=10_000)
    world.add_v1_run(10250, 6205)
    world.add_v1_run(10251, 6206)
    rules = (TeamRule(compile_pattern("^nlp-"), "nlp"), TeamRule(compile_pattern("^vision"), "cv"))
    account = acct(
        sim, team="platform", discover=True, discovery=Discovery(teams=rules),
        # job-owned's name matches a rule, but the file names its owner; job-nobody's
        # owner is named as nobody.
        jobs=(V2Job("job-owned", "search"), "job-plain", V2Job("job-nobody", "")),
        tasks=((10250, 6205), (10251, 6206)),
    )
    account = replace(account, tasks=(V1Target(10250, 6205, team="speech"),
                                      V1Target(10251, 6206)))
    exporter = make_exporter(account)
    exporter.poller.poll_all()

    runs, targets = _teams(exporter)
    expected = {"job-owned": "search", "job-plain": "platform", "job-ruled": "nlp",
                "job-cv": "cv", "job-nobody": "", "10250/6205": "speech",
                "10251/6206": "platform"}
    assert targets == expected
    assert runs == {f"task-{job}": team for job, team in expected.items() if job[0] == "j"} | {
        "10250": "speech", "10251": "platform"}


def test_a_reload_moves_the_runs_to_their_new_owner(
    world: World, sim: QianfanSimulator, clock: ManualClock,
    make_exporter: Callable[..., Exporter]
) -> None:
    world.add_job("job-a", "nlp-a", created=clock() - DAY)
    world.add_run("job-a", "task-a", created=clock() - 100, duration=10_000)
    exporter = make_exporter(acct(sim, jobs=(V2Job("job-a", "nlp"),)))
    exporter.poller.poll_all()
    assert _teams(exporter) == ({"task-a": "nlp"}, {"job-a": "nlp"})

    # Before the first poll under the new settings, the kept runs already show the owner.
    exporter.poller.reload(Config(accounts=(acct(sim, jobs=("job-a",), team="cv"),),
                                  poll=FAST_POLL))
    assert _teams(exporter) == ({"task-a": "cv"}, {"job-a": "cv"})
    exporter.poller.poll_all()
    assert _teams(exporter) == ({"task-a": "cv"}, {"job-a": "cv"})

    # Only a job's owner changes: the account's other settings are the same.
    exporter.poller.reload(Config(accounts=(acct(sim, jobs=(V2Job("job-a", "nlp"),),
                                                 team="cv"),), poll=FAST_POLL))
    assert _teams(exporter) == ({"task-a": "nlp"}, {"job-a": "nlp"})
