"""What the scale-out tests share: an account with a budget that does not slow them
down, and the runs and targets an exposition shows."""

from __future__ import annotations

from typing import NamedTuple

from qf_exporter.app import Exporter
from qf_exporter.config.file import Account
from qf_exporter.simulator import QianfanSimulator
from tests.helpers import Samples, account, parse_samples, series

DAY = 86400.0


class ExportedRun(NamedTuple):
    """One run as the exporter labels it (equal to the plain 4-tuple)."""

    account: str
    api: str
    job_id: str
    task_id: str


def acct(sim: QianfanSimulator, **kw: object) -> Account:
    """An account on ``sim`` with a budget that does not slow the tests down."""
    kw.setdefault("qps", 1000.0)
    return account(sim, **kw)  # type: ignore[arg-type]


def samples_of(exporter: Exporter) -> Samples:
    return parse_samples(exporter.exposition())


def exported(samples: Samples, **labels: str) -> set[ExportedRun]:
    """Every exported run (whose info series has ``labels``)."""
    runs = set()
    for lbls in series(samples, "qianfan_finetune_run_info", **labels):
        d = dict(lbls)
        runs.add(ExportedRun(d["account"], d["api"], d["job_id"], d["task_id"]))
    return runs


def targets_up(samples: Samples, **labels: str) -> dict[str, float]:
    return {dict(k)["target"]: v for k, v in series(samples, "qianfan_target_up", **labels).items()}


def requested(sim: QianfanSimulator, action: str, since: int = 0) -> list[str]:
    """The targets of ``action`` requests the simulator answered, after entry ``since``."""
    return [e.target for e in sim.logged()[since:] if e.action == action]
