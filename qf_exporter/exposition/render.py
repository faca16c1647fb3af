"""Rendering run metrics to the Prometheus text format, once per snapshot change.

prometheus_client's generic path builds a Metric object per family and a Sample
per value on every scrape; at 10,000 runs (160,000 samples) that costs seconds.
Run metrics change only when a poll brings new data, so they are rendered here
straight to text when a snapshot changes (``store.py`` keeps that text, and its
compressed form, for every scrape to serve). The tests render the same metrics the
generic way (``tests/generic_collector.py``) and check that both parse to exactly
the same samples; the benchmark compares their speed.

Every metric name of the run series is defined in ``FAMILIES`` below.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, cast

from qf_exporter.polling.snapshot import Snapshot
from qf_exporter.qianfan.models import STATUSES, Run

_READ = (
    " Read from the Qianfan API in the background every poll.interval "
    "(poll.finished_interval once the run is final); a scrape never calls Qianfan."
)

# Each label is the ``Run`` field of the same name.
BASE_LABELS = ("account", "api", "job_id", "task_id")
INFO_LABELS = (
    "job_name",
    "task_name",
    "model",
    "train_mode",
    "parameter_scale",
    "version",
    "upstream_status",
    "team",
    "console_url",
)


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    # For a plain gauge per run: the ``Run`` field it shows (absent when ``None``).
    attribute: str | None = None


# The order here is the order on the page.
INFO = Family("qianfan_finetune_run_info", "Training run metadata (value 1)." + _READ)
STATUS = Family(
    "qianfan_finetune_run_status",
    "Training run status: one series per status "
    "(waiting, running, succeeded, stopped, failed, unknown), 1 for the current one." + _READ,
)
PROGRESS = Family(
    "qianfan_finetune_run_progress_ratio",
    "Training progress from 0 to 1, absent when the API gives none." + _READ,
    "progress",
)
DURATION = Family(
    "qianfan_finetune_run_duration_seconds",
    "How long the run has run: V1 runTime; V2 finish (or read) time minus creation." + _READ,
    "duration",
)
TRAIN_DURATION = Family(
    "qianfan_finetune_run_train_duration_seconds",
    "Time spent training (V1 trainTime)." + _READ,
    "train_duration",
)
START = Family(
    "qianfan_finetune_run_start_timestamp_seconds",
    "When the run started (V1 startTime, V2 createTime), absent when unset." + _READ,
    "start_time",
)
FINISH = Family(
    "qianfan_finetune_run_finish_timestamp_seconds",
    "When the run finished, absent while it is not finished." + _READ,
    "finish_time",
)
ESTIMATED_FINISH = Family(
    "qianfan_finetune_run_estimated_finish_timestamp_seconds",
    "When a running run with progress from 1% to 99% is expected to finish. Once the "
    "exporter has seen its progress change twice: time of the latest change + "
    "(1 - progress) / rate, the rate measured over the last (up to 6) changes it saw; "
    "before that: start + (read time - start) / progress. Never before the read time; "
    "absent for other runs." + _READ,
    "estimated_finish",
)
EVALUATION = Family(
    "qianfan_finetune_run_evaluation_ratio",
    "Evaluation score of a finished run from 0 to 1, by metric (BLEU-4, ROUGE-1, ...)." + _READ,
)
CHECKPOINTS = Family(
    "qianfan_finetune_run_checkpoints",
    "Number of checkpoints the run has saved." + _READ,
    "checkpoints",
)
CHECKPOINT_STEP = Family(
    "qianfan_finetune_run_checkpoint_step",
    "Training step of the latest checkpoint." + _READ,
    "checkpoint_step",
)
TRAINING_LOSS = Family(
    "qianfan_finetune_run_training_loss",
    "Training loss at the latest checkpoint." + _READ,
    "training_loss",
)
PERPLEXITY = Family(
    "qianfan_finetune_run_perplexity",
    "Perplexity at the latest checkpoint." + _READ,
    "perplexity",
)
TRAINING_LOSS_MIN = Family(
    "qianfan_finetune_run_training_loss_min",
    "Lowest finite training loss of any of the run's checkpoints." + _READ,
    "training_loss_min",
)
TRAINING_LOSS_RECENT_MIN = Family(
    "qianfan_finetune_run_training_loss_recent_min",
    "Lowest finite training loss of the run's latest 3 checkpoints (by step) that have one; "
    "absent while fewer have one. When it is above qianfan_finetune_run_training_loss_min, "
    "each of those 3 checkpoints is worse than the run's best." + _READ,
    "training_loss_recent_min",
)
LOSS_NOT_FINITE = Family(
    "qianfan_finetune_run_loss_not_finite",
    "1 when the latest checkpoint's training loss or perplexity is not a finite number "
    "(NaN or infinite; those values give no loss or perplexity series), else 0." + _READ,
    "loss_not_finite",
)
ERROR = Family(
    "qianfan_finetune_run_error_info",
    "The error Qianfan reports for the run (value 1), message cut to 200 characters." + _READ,
)
LAST_READ = Family(
    "qianfan_finetune_run_last_read_timestamp_seconds",
    "When the exporter last read this run from the Qianfan API.",
    "last_read",
)
VDL_LINK = Family(
    "qianfan_finetune_run_vdl_link_info",
    "The run's VisualDL training visualisation page (value 1), where the API gives one."
    + _READ,
)

FAMILIES = (
    INFO,
    STATUS,
    PROGRESS,
    DURATION,
    TRAIN_DURATION,
    START,
    FINISH,
    ESTIMATED_FINISH,
    EVALUATION,
    CHECKPOINTS,
    CHECKPOINT_STEP,
    TRAINING_LOSS,
    PERPLEXITY,
    TRAINING_LOSS_MIN,
    TRAINING_LOSS_RECENT_MIN,
    LOSS_NOT_FINITE,
    ERROR,
    LAST_READ,
    VDL_LINK,
)
_VALUE_FAMILIES = tuple(f for f in FAMILIES if f.attribute is not None)


def escape(value: str) -> str:
    """A label value as the text format wants it (what prometheus_client does)."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _help(family: Family) -> bytes:
    text = family.help.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {family.name} {text}\n# TYPE {family.name} gauge\n".encode()


HEADERS = {f.name: _help(f) for f in FAMILIES}


# For each status, the values of the six status series, in STATUSES order.
_STATUS_FLAGS = {
    status: tuple("1" if state == status else "0" for state in STATUSES) for status in STATUSES
}


def _label_writer() -> Callable[[Run], tuple[str, str]]:
    """``_labels``, written once from ``BASE_LABELS`` and ``INFO_LABELS``.

    It is generated, as ``dataclasses`` generates ``__init__``, because it is the hot
    path at 10,000 runs: f-strings over locals make the label sets in half the time
    that ``%`` or ``str.format`` over a tuple of the values take.
    """
    names = (*BASE_LABELS, *INFO_LABELS)

    def label_set(part: tuple[str, ...]) -> str:  # account="{account}",api="{api}",...
        return ",".join(f'{name}="{{{name}}}"' for name in part)

    source = "\n".join((
        "def _labels(run):",
        f"    labels = ({', '.join(f'run.{name}' for name in names)})",
        # Almost no label value needs escaping: check them all at once, escape only then.
        "    raw = ''.join(labels)",
        "    if '\\\\' in raw or '\"' in raw or '\\n' in raw:",
        "        labels = tuple(map(escape, labels))",
        f"    {', '.join(names)} = labels",
        f"    return f'{{{{{label_set(BASE_LABELS)}', f',{label_set(INFO_LABELS)}}}}} 1'",
    ))
    namespace: dict[str, Any] = {"escape": escape}
    exec(source, namespace)
    return cast(Callable[[Run], tuple[str, str]], namespace["_labels"])


# The run's base label set (``{account=...,task_id="..."``) and its info labels
# (``,job_name=...} 1``).
_labels = _label_writer()


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused meanwhile (as it was again after).

    Rendering makes many objects (~200,000 at 10,000 runs) and no cycles, and the
    collections they would trigger cost ~15 % of the time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def render_families(runs: list[Run], only: Sequence[int] | None = None) -> tuple[bytes, ...]:
    """The lines of ``runs`` (already in key order), one piece per family in page order,
    or per family of ``only`` (indices into ``FAMILIES``, in that order)."""
    labelled = [(run, *_labels(run)) for run in runs]
    families = FAMILIES if only is None else [FAMILIES[i] for i in only]
    return tuple("".join(_LINES[family.name](labelled)).encode("utf-8") for family in families)


# A chunk: per run, (run, its base labels ``{account=...,task_id="..."``, the rest of
# its info line ``,job_name=...} 1``).
_Chunk = list[tuple[Run, str, str]]


def _value_lines(family: Family) -> Callable[[_Chunk], list[str]]:
    name, get = family.name, attrgetter(family.attribute or "")

    # Values as ``repr``: the shortest round-trip form, what prometheus_client writes too.
    def lines(chunk: _Chunk) -> list[str]:
        return [f"{name}{base}}} {v!r}\n" for run, base, _ in chunk if (v := get(run)) is not None]

    return lines


def _info_lines(chunk: _Chunk) -> list[str]:
    return [f"{INFO.name}{base}{info}\n" for _, base, info in chunk]


_STATE_LABELS = tuple(f',status="{state}"}} ' for state in STATUSES)


def _status_lines(chunk: _Chunk) -> list[str]:
    # The six lines of a run as one string: a sixth of the objects.
    w, r, s, st, f, u = _STATE_LABELS
    flags = _STATUS_FLAGS
    return [
        f"{p}{w}{g[0]}\n{p}{r}{g[1]}\n{p}{s}{g[2]}\n{p}{st}{g[3]}\n{p}{f}{g[4]}\n{p}{u}{g[5]}\n"
        for run, base, _ in chunk
        if (p := f"{STATUS.name}{base}", g := flags[run.status])
    ]


def _evaluation_lines(chunk: _Chunk) -> list[str]:
    return [
        f'{EVALUATION.name}{base},metric="{escape(metric)}"}} {score!r}\n'
        for run, base, _ in chunk
        for metric, score in run.evaluation
    ]


def _error_lines(chunk: _Chunk) -> list[str]:
    return [
        f'{ERROR.name}{base},error_code="{escape(run.error_code)}",'
        f'error_message="{escape(run.error_message)}"}} 1\n'
        for run, base, _ in chunk
        if run.has_error
    ]


def _vdl_lines(chunk: _Chunk) -> list[str]:
    return [
        f'{VDL_LINK.name}{base},vdl_link="{escape(run.vdl_link)}"}} 1\n'
        for run, base, _ in chunk
        if run.vdl_link
    ]


# How each family's lines are made.
_LINES: dict[str, Callable[[_Chunk], list[str]]] = {
    f.name: _value_lines(f) for f in _VALUE_FAMILIES
} | {
    INFO.name: _info_lines,
    STATUS.name: _status_lines,
    EVALUATION.name: _evaluation_lines,
    ERROR.name: _error_lines,
    VDL_LINK.name: _vdl_lines,
}


# --- health metrics that change only with the snapshot --------------------------------

_HEALTH_HELP = {
    "qianfan_up": "1 when the latest poll of the account reached Qianfan and its credentials "
    "were accepted (an authoritative answer such as no such job counts); 0 when every call "
    "failed (connection, timeout, auth, server, rate limit, unreadable answer) or the job "
    "listing failed.",
    "qianfan_target_up": "1 when the latest read of the target (a V2 job id, or a V1 "
    "task/job pair) succeeded; targets are read in the background every poll.interval.",
    "qianfan_target_last_success_timestamp_seconds": "When the target (a V2 job id, or a V1 "
    "task/job pair) was last read successfully.",
    "qianfan_target_error_info": "The reason the latest read of the target failed (value 1, "
    "present only while qianfan_target_up is 0).",
    "qianfan_last_successful_poll_timestamp_seconds": "End of the latest poll of the "
    "account that reached Qianfan with accepted credentials.",
    "qianfan_poll_duration_seconds": "Wall time of the account's latest poll.",
    "qianfan_poll_lag_seconds": "How far behind its schedule the account's most overdue "
    "due target was at the latest poll (0 when every target is read on time); above 0 "
    "for long means qps cannot hold poll.interval.",
    "qianfan_rate_budget_qps": "Requests per second this replica may send for the "
    "account: its qps divided by --total-shards (the shards share one access key).",
    "qianfan_discovered_jobs": "Jobs that discovery (discover: true) currently polls for "
    "the account: those DescribeFineTuningJobs lists that pass the filters and this shard "
    "owns.",
}


def render_health(snapshot: Snapshot, accounts: Iterable[str]) -> bytes:
    """Per-account and per-target health from one snapshot.

    Rendered with the run metrics, not per scrape: at 1,000 targets prometheus_client
    spends ~4 ms a scrape formatting ``qianfan_target_up`` alone, under the GIL.
    ``qianfan_up`` is there for every configured account, even before its first poll.
    """
    lines: dict[str, list[str]] = {name: [] for name in _HEALTH_HELP}
    for name in sorted(accounts):
        state = snapshot.accounts.get(name)
        account = escape(name)
        lines["qianfan_up"].append(
            f'qianfan_up{{account="{account}"}} {1 if state is not None and state.up else 0}'
        )
        if state is None:
            continue
        for (api, target), target_state in sorted(state.targets.items()):
            labels = (f'account="{account}",api="{escape(api)}",target="{escape(target)}",'
                      f'team="{escape(target_state.team)}"')
            lines["qianfan_target_up"].append(
                f"qianfan_target_up{{{labels}}} {1 if target_state.up else 0}"
            )
            if target_state.last_success is not None:
                lines["qianfan_target_last_success_timestamp_seconds"].append(
                    f"qianfan_target_last_success_timestamp_seconds{{{labels}}} "
                    f"{target_state.last_success!r}"
                )
            if not target_state.up and target_state.reason:
                lines["qianfan_target_error_info"].append(
                    f'qianfan_target_error_info{{{labels},'
                    f'reason="{escape(target_state.reason)}"}} 1'
                )
        budget = state.budget
        for metric, number in (
            ("qianfan_last_successful_poll_timestamp_seconds", state.last_success),
            ("qianfan_poll_duration_seconds", state.poll_duration),
            ("qianfan_poll_lag_seconds", budget.lag if budget is not None else None),
            ("qianfan_rate_budget_qps", budget.qps if budget is not None else None),
            ("qianfan_discovered_jobs", state.discovered_jobs),
        ):
            if number is not None:
                lines[metric].append(f'{metric}{{account="{account}"}} {number!r}')
    parts = []
    for metric, help_text in _HEALTH_HELP.items():
        parts.append(f"# HELP {metric} {help_text}\n# TYPE {metric} gauge")
        parts.extend(lines[metric])
    parts.append("")
    return "\n".join(parts).encode("utf-8")
