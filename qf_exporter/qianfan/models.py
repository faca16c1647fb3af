"""Parsed models of Qianfan's answers: one ``Run`` per training run.

This is where every field of the API is read, and where its quirks are absorbed:
field names in any case and either spelling, "0000-00-00..." sentinels for unset
times, zone-less V1 times in Beijing time, percentages as strings in every shape,
and status values nobody has heard of. Parsing never raises on odd values: a
field that cannot be read is absent from the model. Only an answer of the wrong
*shape* (not an object, a list that is not a list) raises ``InvalidResponse``.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Protocol

from qf_exporter.qianfan import console
from qf_exporter.qianfan.errors import InvalidResponse

STATUSES = ("waiting", "running", "succeeded", "stopped", "failed", "unknown")
FINAL_STATUSES = frozenset({"succeeded", "stopped", "failed"})

_V1_STATUS = {"running": "running", "finish": "succeeded", "stop": "stopped", "fail": "failed"}
_V2_STATUS = {
    "waiting": "waiting",
    "running": "running",
    "done": "succeeded",
    "stopped": "stopped",
    "failed": "failed",
}

BEIJING = timezone(timedelta(hours=8))
# Label values are upstream strings; very long ones are cut so that one odd run
# cannot blow up every scrape. Error messages are cut shorter: the exported
# qianfan_finetune_run_error_info keeps at most 200 characters of one.
MAX_LABEL_LENGTH = 256
MAX_ERROR_MESSAGE_LENGTH = 200
# qianfan_finetune_run_training_loss_recent_min is the lowest loss of this many latest
# checkpoints: above 1.5x the run's best, the loss has diverged for that many checkpoints.
RECENT_CHECKPOINTS = 3
# Per-run fan-outs an upstream answer cannot widen: one run exports at most this many
# evaluation series (the first by name), and its loss health is read from at most this
# many checkpoints (the last in the list, which the API keeps in the order it saved
# them); qianfan_finetune_run_checkpoints still counts them all.
MAX_EVALUATION_METRICS = 100
MAX_CHECKPOINTS = 10_000
# Times outside 1970-01-01 .. 9999-12-31 are unreadable, like any other odd value.
LATEST_TIME = 253402300799.0


class V1Ids(Protocol):
    """What parsing needs of a configured V1 pair (the configuration's ``V1Target`` is
    one): the ids a V1 run is labelled with, whatever the answer echoes."""

    @property
    def task_id(self) -> int: ...

    @property
    def job_id(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Checkpoint:
    step: float | None
    perplexity: float | None
    training_loss: float | None
    # The loss or the perplexity is there but not a finite number (NaN, Infinity, "nan").
    not_finite: bool = False


@dataclass(frozen=True, slots=True)
class Run:
    """One training run, as the exporter shows it. Immutable: snapshots share them."""

    account: str
    api: str  # "v1" or "v2"
    job_id: str
    task_id: str
    status: str
    upstream_status: str
    job_name: str = ""
    task_name: str = ""
    model: str = ""
    train_mode: str = ""
    parameter_scale: str = ""
    version: str = ""
    vdl_link: str = ""
    team: str = ""  # the owner of the run's target, from the configuration
    progress: float | None = None
    duration: float | None = None
    train_duration: float | None = None
    start_time: float | None = None
    finish_time: float | None = None
    evaluation: tuple[tuple[str, float], ...] = ()
    checkpoints: int | None = None
    checkpoint_step: float | None = None
    training_loss: float | None = None
    perplexity: float | None = None
    error_code: str = ""
    error_message: str = ""
    last_read: float = 0.0
    # Loss health over the whole checkpointList (V2; None where there is no such value).
    training_loss_min: float | None = None  # lowest finite loss of any checkpoint
    training_loss_recent_min: float | None = None  # lowest of the latest RECENT_CHECKPOINTS
    loss_not_finite: int | None = None  # 1: the latest checkpoint's loss or perplexity is
    # NaN or infinite, else 0 (every V2 run)
    # Estimated finish (qf_exporter.polling.estimate), and the progress changes it was made from:
    # (read time at which a new progress value was first seen, that value), oldest first.
    estimated_finish: float | None = None
    progress_history: tuple[tuple[float, float], ...] = ()
    # A digest of the answer's fields the run was parsed from (``fingerprint``; b"" when
    # not kept), so that a read that finds them unchanged need not parse them again.
    source: bytes = field(default=b"", compare=False, repr=False)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.account, self.api, self.job_id, self.task_id)

    @property
    def console_url(self) -> str:
        """The run's page in the Qianfan console (see console.py)."""
        return console.run_page(self.api, self.train_mode, self.job_id, self.task_id)

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def settled(self) -> bool:
        """Final, with a duration its own times fix (or none): parsing the same fields
        again would give the same run but for ``last_read``."""
        return self.final and (self.finish_time is not None or self.start_time is None)

    @property
    def has_error(self) -> bool:
        """Qianfan reports an error: a code other than 0, or a message."""
        return self.error_code not in ("", "0") or bool(self.error_message)



@dataclass(frozen=True)
class Job:
    """A fine-tuning job (V2), as ``DescribeFineTuningJobs`` lists it."""

    job_id: str
    name: str = ""
    model: str = ""
    train_mode: str = ""
    create_time: float | None = None


@dataclass(frozen=True)
class Page:
    """One page of a V2 listing."""

    items: tuple[Mapping[str, Any], ...]  # as the answer holds them, not copied
    truncated: bool
    next_marker: str | None
    last_id: str | None = None  # the last item's id: the marker when nextMarker is missing


# --- field readers -------------------------------------------------------------------


class Fields:
    """Case-insensitive access to one JSON object, accepting several spellings."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        self._by_lower = {str(k).lower(): v for k, v in raw.items()}

    def has(self, name: str) -> bool:
        """Whether the object has the key in any case, whatever its value."""
        return name.lower() in self._by_lower

    def with_detail(self, detail: Any) -> Fields:
        """These fields and every field of a run's ``detail`` that they lack
        (``runProgress``, ``vdlLink``, ...). Their own fields are kept."""
        if not isinstance(detail, Mapping):
            return self
        have = {str(key).lower() for key, value in self.raw.items() if value is not None}
        merged = dict(self.raw)
        for key, value in detail.items():
            if str(key).lower() not in have:
                merged[str(key)] = value
        return Fields(merged)

    def get(self, *names: str) -> Any:
        for name in names:
            value = self._by_lower.get(name.lower())
            if value is not None:
                return value
        return None

    def text(self, *names: str, limit: int = MAX_LABEL_LENGTH) -> str:
        # Job names, models, statuses repeat across runs: one string each, not one per run.
        return sys.intern(cut(_string(self.get(*names)), limit))

    def ident(self, name: str) -> str:
        """An id (a run's, a job's): a label value like ``text``, but two ids that
        differ only past the cut or in lone surrogates stay two (``distinct_label``)."""
        return distinct_label(_string(self.get(name)))


def _string(value: Any) -> str:
    """A JSON scalar as text ("" for null, objects and arrays)."""
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def cut(text: str, limit: int) -> str:
    """A label value: at most ``limit`` characters, and always encodable as UTF-8.

    JSON can carry lone surrogates (``"\\ud800"``); they would make the exposition
    unencodable, so they become U+FFFD like any other undecodable text.
    """
    text = text if len(text) <= limit else text[:limit]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def distinct_label(text: str, limit: int = MAX_LABEL_LENGTH) -> str:
    """``cut(text, limit)``, but two texts that differ only past the cut, or only in
    lone surrogates, still give two values: an altered text ends in ``~`` and 8 hex
    digits of its hash, so that one series does not overwrite another."""
    value = cut(text, limit)
    if value == text:
        return value
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return cut(text, limit - 9) + "~" + digest


def number_or_none(value: Any) -> float | None:
    """A finite number from an int, float or numeric string; otherwise ``None``."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, int | float):
            result = float(value)  # an int of 309 digits or more: OverflowError
        elif isinstance(value, str):
            result = float(value.strip())
        else:
            return None
    except (ValueError, OverflowError):
        return None
    return result if math.isfinite(result) else None


def not_finite(value: Any) -> bool:
    """Whether a value is a number that is not finite: NaN or an infinity, as a JSON
    number (Python's parser reads ``NaN``, ``Infinity``, ``1e999``) or as a string
    (``"nan"``, ``"NaN"``, ``"-inf"``, ``"Infinity"``). Missing, empty and other
    non-numbers are unknown, not "not finite"."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, str):
        try:
            return not math.isfinite(float(value.strip()))
        except ValueError:
            return False
    return False


def percent(value: Any) -> float | None:
    """A percentage as a ratio: ``"17.03%"`` → 0.1703.

    A bare number (``17.03`` or ``"17.03"``) is read in the field's own unit, which
    for every percentage field of the API is percent. Empty, ``"-"``, or anything
    else that is not a number gives ``None``: no series rather than NaN.
    """
    if isinstance(value, str):
        value = value.strip().removesuffix("%").strip()
    parsed = number_or_none(value)
    if parsed is None:
        return None
    # Divide in decimal: "30.83%" is 0.3083, not 0.30829999999999996 (what 30.83 / 100
    # gives in binary floating point), so the exported value reads as the API wrote it.
    return float(Decimal(repr(parsed)) / 100)


_SENTINEL = re.compile(r"^0{4}-0{2}-0{2}")


def timestamp(value: Any, naive_zone: timezone) -> float | None:
    """Seconds since the epoch, or ``None`` for unset and unreadable times.

    Times without a zone are taken to be in ``naive_zone`` (Beijing for both APIs:
    the V1 API writes local times, and a V2 time without ``Z`` would be the same).
    Numbers are epoch seconds (milliseconds when they are that large).
    """
    if isinstance(value, str):
        seconds = _time_text(value, naive_zone)
    else:
        seconds = number_or_none(value)  # bools, huge ints and non-numbers: None
        if seconds is not None and seconds > 1e11:
            seconds /= 1000.0
    if seconds is None or not 0 < seconds <= LATEST_TIME:
        return None
    return seconds


def _time_text(value: str, naive_zone: timezone) -> float | None:
    text = value.strip()
    if not text or _SENTINEL.match(text):
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=naive_zone)
        return parsed.timestamp()
    except (ValueError, OverflowError):  # (year 1 or 9999 shifted out of range by a zone)
        return None


def map_status(raw: str, api: str) -> str:
    table = _V1_STATUS if api == "v1" else _V2_STATUS
    return table.get(raw.strip().lower(), "unknown")


def json_object(value: Any, what: str) -> Mapping[str, Any]:
    """``value`` when it is a JSON object; else ``InvalidResponse`` naming ``what``."""
    if not isinstance(value, Mapping):
        raise InvalidResponse(f"{what} is not a JSON object")
    return value


# --- V1 ------------------------------------------------------------------------------


def v1_detail(result: Any) -> Fields:
    """The fields of a V1 ``jobDetail`` result, refused when it is not one."""
    f = Fields(json_object(result, "jobDetail: result"))
    # Every real jobDetail answer names the run's status; one without it is not one.
    if not f.has("trainStatus"):
        raise InvalidResponse("jobDetail: result has no trainStatus")
    return f


def parse_v1_run(result: Any, *, account: str, pair: V1Ids, read_at: float) -> Run:
    """A V1 ``jobDetail`` result. Labelled with the configured pair, not echoed ids."""
    f = v1_detail(result)
    raw_status = f.text("trainStatus")
    status = map_status(raw_status, "v1")
    progress = percent(f.get("progress"))
    return Run(
        account=account,
        api="v1",
        job_id=str(pair.job_id),
        task_id=str(pair.task_id),
        status=status,
        upstream_status=raw_status,
        job_name="",
        task_name=f.text("taskName"),
        model=f.text("trainType"),
        train_mode=f.text("trainMode"),
        parameter_scale=f.text("peftType"),
        version=f.text("version"),
        vdl_link=f.text("vdlLink", limit=1024),
        progress=_ratio(progress),
        duration=_non_negative(number_or_none(f.get("runTime"))),
        train_duration=_non_negative(number_or_none(f.get("trainTime"))),
        start_time=timestamp(f.get("startTime"), BEIJING),
        finish_time=_finish(status, timestamp(f.get("finishTime"), BEIJING)),
        last_read=read_at,
    )


def _finish(status: str, finished: float | None) -> float | None:
    # An unfinished run has no finish time, whatever a field says.
    return finished if status in FINAL_STATUSES else None


def _non_negative(value: float | None) -> float | None:
    return None if value is None or value < 0 else value


def _ratio(progress: float | None) -> float | None:
    """A run's progress held to 0..1 (both APIs' progress is a share of the run)."""
    return None if progress is None else min(max(progress, 0.0), 1.0)


# --- V2 ------------------------------------------------------------------------------


def parse_page(result: Any, list_key: str) -> Page:
    """The list and ``pageInfo`` of a V2 listing (``taskList`` or ``jobList``)."""
    f = Fields(json_object(result, "result"))
    items = f.get(list_key)
    if items is None:
        items = []
    if not isinstance(items, list):
        raise InvalidResponse(f"result.{list_key} is not a list")
    for i, item in enumerate(items):
        json_object(item, f"result.{list_key}[{i}]")
    info_raw = f.get("pageInfo")
    info = Fields(info_raw) if isinstance(info_raw, Mapping) else Fields({})
    truncated = info.get("isTruncated")
    truncated = truncated is True or (isinstance(truncated, str) and truncated.lower() == "true")
    marker = info.text("nextMarker") or None
    id_key = list_key.removesuffix("List") + "Id"  # taskList -> taskId, jobList -> jobId
    last_id = _key(items[-1], id_key) if items else None
    return Page(items=tuple(items), truncated=truncated, next_marker=marker, last_id=last_id)


def _key(item: Mapping[str, Any], name: str) -> str | None:
    """One text field of an object, in any case, without reading the rest of it."""
    wanted = name.lower()
    value = None
    for key, candidate in item.items():
        if str(key).lower() == wanted:
            value = candidate  # the last spelling wins, as in Fields
    if value is None:
        return None
    return Fields({name: value}).text(name) or None


def v2_listing(items: Iterable[Mapping[str, Any]]) -> dict[str, Fields]:
    """The runs of a ``taskList``, by task id (items without one are no run), each item
    read once here; ``parse_v2_run`` takes the fields from there."""
    listed: dict[str, Fields] = {}
    for item in items:
        f = Fields(item)
        task_id = f.ident("taskId")
        if task_id:
            listed[task_id] = f
    return listed


def running(f: Fields) -> bool:
    """Whether a V2 run is running (only a running run's detail has its progress)."""
    return map_status(f.text("runStatus", "status"), "v2") == "running"


def fingerprint(raw: Mapping[str, Any]) -> bytes:
    """A digest of one decoded JSON object: equal for equal objects (keys in the same
    order, as one API writes them), and for different ones only by a 128-bit collision.

    At 10,000 runs, parsing every listed run again cost a third of a poll's CPU (about
    45 us a run, checkpoints included); this costs 8 us, and most runs have ended and
    read the same every time."""
    text = repr(raw).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=16).digest()


def parse_v2_run(
    raw: Mapping[str, Any] | Fields, *, account: str, job_id: str, read_at: float,
    source: bytes = b"",
) -> Run:
    """One entry of ``taskList`` (or a ``DescribeFineTuningTask`` result).

    Labelled with the job that was asked for, like V1 runs with their configured pair;
    ``source`` is kept with it (``fingerprint`` of ``raw``).
    """
    f = raw if isinstance(raw, Fields) else Fields(raw)
    raw_status = f.text("runStatus", "status")
    status = map_status(raw_status, "v2")
    created = timestamp(f.get("createTime", "createDate"), BEIJING)
    finished = _finish(status, timestamp(f.get("finishTime", "finishDate"), BEIJING))
    duration = None
    if created is not None:
        duration = max((finished if finished is not None else read_at) - created, 0.0)
    progress = percent(f.get("runProgress"))
    return Run(
        account=account,
        api="v2",
        job_id=job_id,
        task_id=f.ident("taskId"),
        status=status,
        upstream_status=raw_status,
        job_name=f.text("jobName"),
        task_name=f.text("taskName"),
        model=f.text("model"),
        train_mode=f.text("trainMode"),
        parameter_scale=f.text("parameterScale"),
        vdl_link=f.text("vdlLink", limit=1024),
        progress=_ratio(progress),
        duration=duration,
        start_time=created,
        finish_time=finished,
        evaluation=_evaluation(f.get("metrics")),
        error_code=f.text("errorCode"),
        error_message=f.text("errorMessage", limit=MAX_ERROR_MESSAGE_LENGTH),
        last_read=read_at,
        source=source,
        **_checkpoint_fields(f.get("checkpointList")),
    )


def _checkpoint_fields(raw: Any) -> dict[str, Any]:
    """The ``Run`` fields read from a V2 run's ``checkpointList``: how many, the latest
    checkpoint's (by step), and the loss health over those read (MAX_CHECKPOINTS)."""
    checkpoints = _checkpoints(raw)
    latest = max(
        (c for c in checkpoints if c.step is not None),
        key=lambda c: c.step or 0.0,
        default=None,
    )
    min_loss, recent_min = _loss_minima(checkpoints)
    return {
        "checkpoints": sum(isinstance(c, Mapping) for c in raw) if isinstance(raw, list)
        else 0,
        "checkpoint_step": None if latest is None else latest.step,
        "training_loss": None if latest is None else latest.training_loss,
        "perplexity": None if latest is None else latest.perplexity,
        "training_loss_min": min_loss,
        "training_loss_recent_min": recent_min,
        "loss_not_finite": int(latest is not None and latest.not_finite),
    }


def _loss_minima(checkpoints: list[Checkpoint]) -> tuple[float | None, float | None]:
    """The lowest finite loss of all checkpoints, and of the latest RECENT_CHECKPOINTS
    (by step) that have one (None when fewer have one)."""
    losses = sorted(
        ((c.step, c.training_loss) for c in checkpoints
         if c.step is not None and c.training_loss is not None),
        key=lambda pair: pair[0],
    )
    if not losses:
        return None, None
    lowest = min(loss for _, loss in losses)
    if len(losses) < RECENT_CHECKPOINTS:
        return lowest, None
    return lowest, min(loss for _, loss in losses[-RECENT_CHECKPOINTS:])


def _evaluation(raw: Any) -> tuple[tuple[str, float], ...]:
    """The run's evaluation scores as ratios, by name: at most MAX_EVALUATION_METRICS,
    each name a distinct label value, and only ratios in 0..1 (a score outside them is
    not a percentage the API means, and is dropped like one that is not a number)."""
    if not isinstance(raw, Mapping):
        return ()
    scores: dict[str, float] = {}
    for name, value in raw.items():
        ratio = percent(value)
        if ratio is not None and 0.0 <= ratio <= 1.0 and str(name):
            scores.setdefault(distinct_label(str(name)), ratio)
    return tuple(sorted(scores.items())[:MAX_EVALUATION_METRICS])


def _checkpoints(raw: Any) -> list[Checkpoint]:
    if not isinstance(raw, list):
        return []
    result = []
    for item in raw[-MAX_CHECKPOINTS:]:
        if not isinstance(item, Mapping):
            continue
        f = Fields(item)
        loss = f.get("trainingLoss", "training_loss", "loss")
        perplexity = f.get("perplexity")
        result.append(
            Checkpoint(
                step=number_or_none(f.get("step")),
                perplexity=number_or_none(perplexity),
                training_loss=number_or_none(loss),
                not_finite=not_finite(loss) or not_finite(perplexity),
            )
        )
    return result


def parse_job(raw: Mapping[str, Any]) -> Job | None:
    f = Fields(raw)
    job_id = f.ident("jobId")
    if not job_id:
        return None
    return Job(
        job_id=job_id,
        name=f.text("name", "jobName"),
        model=f.text("model"),
        train_mode=f.text("trainMode"),
        create_time=timestamp(f.get("createDate", "createTime"), BEIJING),
    )
