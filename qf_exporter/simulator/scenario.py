"""The simulated Qianfan's world: jobs and runs whose state is a function of time.

A run is described by when it was created, how long it waits, how long it trains
and how it ends. Its state at any moment (status, progress, checkpoints, metrics,
error) is computed from the clock, so a test can move the clock and know exactly
what the real API would answer, and the demo's runs move on their own.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

BEIJING = timezone(timedelta(hours=8))
V1_UNSET = "0000-00-00 00:00:00"
V2_UNSET = "0000-00-00T00:00:00Z"

OUTCOMES = ("succeeded", "failed", "stopped", "running")
_V2_STATUS = {
    "waiting": "Waiting",
    "running": "Running",
    "succeeded": "Done",
    "failed": "Failed",
    "stopped": "Stopped",
}
_V1_STATUS = {
    "waiting": "RUNNING",  # V1 has no queue state: a queued run reads as RUNNING at 0
    "running": "RUNNING",
    "succeeded": "FINISH",
    "failed": "FAIL",
    "stopped": "STOP",
}


def _unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from the given parts."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class SimRun:
    """One training run. ``outcome`` is how it ends; ``running`` never ends."""

    task_id: str
    created: float
    wait: float = 30.0
    duration: float = 600.0
    outcome: str = "succeeded"
    end_fraction: float = 1.0  # how far a failed or stopped run got
    checkpoints: int = 5
    steps: int = 1000
    error_code: int = 0
    error_message: str = ""
    metrics: dict[str, str] | None = None
    upstream_status: str | None = None  # overrides the status text (odd statuses)
    v1_task_id: int | None = None  # set for runs read through the V1 API
    v1_job_id: int | None = None
    version: int = 1
    # How the training loss goes: "converging" (down), "nan" (NaN from checkpoint
    # loss_turn + 1 on), "diverging" (down to checkpoint loss_turn, then climbing from
    # 1.6x its best).
    loss: str = "converging"
    loss_turn: int = 2

    @property
    def started(self) -> float:
        return self.created + self.wait

    @property
    def ends(self) -> float:
        if self.outcome == "running":
            return math.inf
        return self.started + self.duration * (
            self.end_fraction if self.outcome != "succeeded" else 1.0
        )

    def status(self, now: float) -> str:
        if now < self.started:
            return "waiting"
        if now < self.ends:
            return "running"
        return self.outcome

    def progress(self, now: float) -> float:
        """Percent done, 0..100."""
        if now < self.started:
            return 0.0
        done = min(now, self.ends) - self.started
        return round(min(100.0, 100.0 * done / self.duration), 2) if self.duration else 100.0

    def checkpoint_list(self, now: float) -> list[dict[str, float | int | str]]:
        if self.checkpoints <= 0 or now < self.started:
            return []
        reached = self.progress(now) / 100.0
        count = min(self.checkpoints, int(reached * self.checkpoints + 1e-9))
        result: list[dict[str, float | int | str]] = []
        best = math.inf
        for k in range(1, count + 1):
            step = k * self.steps // self.checkpoints
            if self.loss == "nan" and k > self.loss_turn:
                # NaN as a string, the way JSON encoders that refuse bare NaN (Java's
                # Jackson) write it: still valid JSON, still the three fields.
                result.append({"step": step, "perplexity": "NaN", "trainingLoss": "NaN"})
                continue
            loss = 2.4 * math.exp(-k / 2.5) + 0.35 + 0.05 * _unit(self.task_id, k)
            if self.loss == "diverging" and k > self.loss_turn:
                loss = best * (1.6 + 0.4 * (k - self.loss_turn - 1))
            else:
                best = min(best, round(loss, 4))
            result.append(
                {
                    "step": step,
                    "perplexity": round(math.exp(loss), 4),
                    "trainingLoss": round(loss, 4),
                }
            )
        return result


@dataclass
class SimJob:
    job_id: str
    name: str
    model: str = "ERNIE-Speed-8K"
    train_mode: str = "SFT"
    parameter_scale: str = "LoRA"
    description: str = ""
    created: float = 0.0
    date_spelling: bool = False  # the SDK's createDate/finishDate instead of createTime
    runs: list[SimRun] = field(default_factory=list)


@dataclass
class Recurring:
    """A job that starts a new run every ``period`` seconds from ``first`` on, forever.

    The runs' outcomes cycle through ``outcomes``. Runs created more than ``keep`` seconds
    ago leave the job's listing, so a world that runs for weeks stays small.
    """

    first: float
    period: float
    wait: float
    duration: float
    outcomes: tuple[str, ...]
    keep: float
    end_fraction: float = 0.6  # how far a failed or stopped run gets
    started: int = 0  # runs created so far

    def make(self, k: int) -> dict[str, object]:
        outcome = self.outcomes[k % len(self.outcomes)]
        kw: dict[str, object] = {"created": self.first + k * self.period, "wait": self.wait,
                                 "duration": self.duration, "outcome": outcome,
                                 "end_fraction": self.end_fraction}
        if outcome == "failed":
            kw["error_code"] = 500001
            kw["error_message"] = f"run {k + 1}: loss became NaN at step {200 + 37 * (k % 9)}"
        return kw


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _beijing(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def default_metrics(task_id: str) -> dict[str, str]:
    base = 10 + 20 * _unit(task_id, "bleu")
    return {
        "BLEU-4": f"{base:.2f}%",
        "ROUGE-1": f"{base + 14:.2f}%",
        "ROUGE-2": f"{base - 4:.2f}%",
        "ROUGE-L": f"{base + 12:.2f}%",
    }


class World:
    """Every job and run the simulated Qianfan knows, and the clock they live by."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.jobs: dict[str, SimJob] = {}
        self.v1_runs: dict[tuple[int, int], SimRun] = {}
        self.v1_task_names: dict[int, str] = {}
        self.recurring: dict[str, Recurring] = {}  # job id -> its schedule of new runs
        self.lock = threading.RLock()
        self._task_jobs: dict[str, str] = {}  # task id -> job id (see _find_task)

    # --- building ---------------------------------------------------------------------

    def add_job(self, job_id: str, name: str = "", **kw: object) -> SimJob:
        with self.lock:
            job = SimJob(job_id=job_id, name=name or job_id, **kw)  # type: ignore[arg-type]
            if not job.created:
                job.created = self.clock()
            self.jobs[job_id] = job
            return job

    def add_run(self, job_id: str, task_id: str | None = None, **kw: object) -> SimRun:
        with self.lock:
            job = self.jobs[job_id]
            task_id = task_id or f"task-{job_id.removeprefix('job-')}-{len(job.runs) + 1:03d}"
            kw.setdefault("created", self.clock())
            run = SimRun(task_id=task_id, **kw)  # type: ignore[arg-type]
            job.runs.append(run)
            return run

    def add_v1_run(self, task_id: int, job_id: int, task_name: str = "", **kw: object) -> SimRun:
        with self.lock:
            kw.setdefault("created", self.clock())
            kw.setdefault("checkpoints", 0)
            run = SimRun(task_id=f"v1-{task_id}-{job_id}", v1_task_id=task_id, v1_job_id=job_id,
                         **kw)  # type: ignore[arg-type]
            self.v1_runs[(task_id, job_id)] = run
            self.v1_task_names[task_id] = task_name or f"task_{task_id}"
            return run

    def add_recurring(self, job_id: str, **kw: object) -> Recurring:
        """Let ``job_id`` start new runs on a schedule (see ``Recurring``)."""
        with self.lock:
            schedule = Recurring(**kw)  # type: ignore[arg-type]
            self.recurring[job_id] = schedule
            return schedule

    def _recur(self, job: SimJob, now: float) -> None:
        schedule = self.recurring.get(job.job_id)
        if schedule is None:
            return
        while schedule.first + schedule.started * schedule.period <= now:
            self.add_run(job.job_id, f"task-{job.job_id.removeprefix('job-')}-"
                         f"r{schedule.started + 1:05d}", **schedule.make(schedule.started))
            schedule.started += 1
        if job.runs and job.runs[0].created < now - schedule.keep:
            job.runs[:] = [run for run in job.runs if run.created >= now - schedule.keep]

    def remove_job(self, job_id: str) -> None:
        with self.lock:
            self.jobs.pop(job_id, None)

    # --- answers: what the actions read (see ``simulator/actions.py``) ---------------

    def visible_runs(self, job: SimJob, now: float) -> list[SimRun]:
        with self.lock:
            self._recur(job, now)
            return [r for r in job.runs if r.created <= now]

    def job_list(self, now: float) -> list[dict[str, object]]:
        """The ``jobList`` items of every job created by ``now``."""
        with self.lock:
            return [job_item(job) for job in self.jobs.values() if job.created <= now]

    def task_list(self, job_id: str, now: float) -> list[dict[str, object]] | None:
        """The ``taskList`` items of a job's runs; None when there is no such job."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            return [task_item(job, run, now) for run in self.visible_runs(job, now)]

    def task_detail(self, task_id: str, now: float) -> dict[str, object] | None:
        """A ``DescribeFineTuningTask`` result; None when no such run is visible."""
        with self.lock:
            found = self._find_task(task_id, now)
            return None if found is None else task_item(*found, now, detail=True)

    def knows_v1_task(self, task_id: int) -> bool:
        with self.lock:
            return task_id in self.v1_task_names

    def v1_detail(self, task_id: int, job_id: int, now: float) -> dict[str, object] | None:
        """A V1 ``jobDetail`` result; None when that run does not exist (yet)."""
        with self.lock:
            run = self.v1_runs.get((task_id, job_id))
            if run is None or run.created > now:
                return None
            return v1_item(run, task_id, job_id, self.v1_task_names[task_id], now)

    def _find_task(self, task_id: str, now: float) -> tuple[SimJob, SimRun] | None:
        """The job and run of a task id (an index, so a fleet's details stay cheap)."""
        job = self.jobs.get(self._task_jobs.get(task_id, ""))
        if job is None or not any(r.task_id == task_id for r in job.runs):
            self._task_jobs = {r.task_id: j.job_id for j in self.jobs.values() for r in j.runs}
            job = self.jobs.get(self._task_jobs.get(task_id, ""))
        if job is None:
            return None
        for run in self.visible_runs(job, now):
            if run.task_id == task_id:
                return job, run
        return None


# --- answer items ------------------------------------------------------------------------


def task_item(job: SimJob, run: SimRun, now: float, detail: bool = False) -> dict[str, object]:
    """A ``taskList`` item, or with ``detail`` a ``DescribeFineTuningTask`` result.

    Only the detail has ``runProgress`` (while Running) and ``vdlLink``, as in
    Baidu's reference (see the simulator's actions module for the field table).
    """
    status = run.status(now)
    item: dict[str, object] = {
        "taskId": run.task_id,
        "jobId": job.job_id,
        "jobName": job.name,
        "jobDescription": job.description,
        "model": job.model,
        "trainMode": job.train_mode,
        "parameterScale": job.parameter_scale,
        "runStatus": run.upstream_status if run.upstream_status is not None
        else _V2_STATUS[status],
    }
    if detail:
        item["vdlLink"] = (
            f"https://console.bce.baidu.com/qianfan/visualdl/index?task={run.task_id}"
        )
    created_key, finish_key = (
        ("createDate", "finishDate") if job.date_spelling else ("createTime", "finishTime")
    )
    item[created_key] = _iso(run.created)
    item[finish_key] = _iso(run.ends) if status in ("succeeded", "failed", "stopped") \
        else V2_UNSET
    if detail and item["runStatus"] == "Running":  # "only while runStatus is Running"
        item["runProgress"] = f"{int(run.progress(now))}%"
    if status == "succeeded":
        item["metrics"] = run.metrics if run.metrics is not None \
            else default_metrics(run.task_id)
    if status != "waiting" and run.checkpoints:
        item["checkpointList"] = run.checkpoint_list(now)
    if status == "failed":
        item["errorCode"] = run.error_code or 500001
        item["errorMessage"] = run.error_message or "training failed"
    else:
        item["errorCode"] = 0
        item["errorMessage"] = ""
    return item


def v1_item(run: SimRun, task_id: int, job_id: int, task_name: str, now: float
            ) -> dict[str, object]:
    """A V1 ``jobDetail`` result."""
    status = run.status(now)
    ran = max(0.0, min(now, run.ends) - run.created)
    trained = max(0.0, min(now, run.ends) - run.started)
    return {
        "id": job_id,
        "description": "",
        "taskId": task_id,
        "taskName": task_name,
        "version": run.version,
        "jobRunType": 0,
        "trainType": "ernieBotLite-v201-8k",
        "trainMode": "SFT",
        "peftType": "LoRA",
        "trainStatus": run.upstream_status if run.upstream_status is not None
        else _V1_STATUS[status],
        "progress": run.progress(now) if status != "waiting" else 0,
        "runTime": int(ran),
        "trainTime": int(trained),
        "startTime": _beijing(run.created),
        "finishTime": _beijing(run.ends) if status in ("succeeded", "failed", "stopped")
        else V1_UNSET,
        "vdlLink": f"https://console.bce.baidu.com/qianfan/visualdl/index?job={job_id}",
    }


def job_item(job: SimJob) -> dict[str, object]:
    """A ``jobList`` item."""
    return {
        "jobId": job.job_id,
        "name": job.name,
        "description": job.description,
        "model": job.model,
        "trainMode": job.train_mode,
        "createDate": _iso(job.created),
    }



# --- ready-made worlds -------------------------------------------------------------------


def demo_world(clock: Callable[[], float], seed: int = 7, speed: float = 1.0) -> World:
    """Runs in every state at once, some moving on within minutes, new ones arriving.

    ``speed`` shortens every run's timeline (2.0: everything happens twice as fast).
    """
    now = clock()
    world = World(clock)
    m = 60.0 / speed  # a demo minute
    _demo_four_jobs(world, now, m, random.Random(seed))
    _demo_nightly(world, now, m)
    _demo_watch(world, now)
    _demo_v1(world, now, m)
    return world


def _demo_four_jobs(world: World, now: float, m: float, rng: random.Random) -> None:
    """Four jobs whose runs finished long ago, run now, wait, or do not exist yet."""
    jobs = [
        ("job-demo-sft-speed", "客服问答 SFT", "ERNIE-Speed-8K", "SFT", "LoRA", False),
        ("job-demo-lite-full", 'summarize-"news"', "ERNIE-Lite-8K", "SFT", "FullFineTuning",
         True),
        ("job-demo-dpo", "preference tuning (DPO)", "ERNIE-3.5-8K", "DPO", "LoRA", False),
        ("job-demo-pretrain", "domain post-pretrain", "ERNIE-Speed-8K", "PostPretrain",
         "FullFineTuning", True),
    ]
    for index, (job_id, name, model, mode, scale, date) in enumerate(jobs):
        world.add_job(job_id, name, model=model, train_mode=mode, parameter_scale=scale,
                      created=now - 86400, date_spelling=date, description=f"demo job {index + 1}")
    # Finished long ago: one of each final state.
    world.add_run("job-demo-sft-speed", created=now - 7200, wait=120, duration=3000)
    world.add_run("job-demo-sft-speed", created=now - 5400, wait=60, duration=3000,
                  outcome="failed", end_fraction=0.42, error_code=500001,
                  error_message='数据集格式错误: line 12 has no "response" field')
    world.add_run("job-demo-lite-full", created=now - 6000, wait=60, duration=4000,
                  outcome="stopped", end_fraction=0.3)
    # Running now, finishing in a few minutes (one of them will fail).
    world.add_run("job-demo-sft-speed", created=now - 2 * m, wait=0.5 * m, duration=6 * m)
    world.add_run("job-demo-lite-full", created=now - 1 * m, wait=0.25 * m, duration=8 * m,
                  outcome="failed", end_fraction=0.6, error_code=336100,
                  error_message="internal error: GPU node lost")
    world.add_run("job-demo-dpo", created=now - 3 * m, wait=m, duration=5 * m, outcome="stopped",
                  end_fraction=0.8)
    world.add_run("job-demo-pretrain", created=now - 30 * m, wait=m, duration=60 * m)
    # Waiting now, starting soon; and runs that do not exist yet.
    world.add_run("job-demo-dpo", created=now - 10, wait=1.5 * m, duration=5 * m)
    # The API sometimes answers runStatus "": the exporter shows it as unknown.
    world.add_run("job-demo-pretrain", created=now - 20 * m, wait=0, duration=600 * m,
                  upstream_status="")
    for k in range(3):
        world.add_run("job-demo-sft-speed", created=now + (4 + 5 * k) * m,
                      wait=(0.5 + rng.random()) * m, duration=(4 + 3 * rng.random()) * m,
                      outcome=rng.choice(["succeeded", "succeeded", "failed", "stopped"]),
                      end_fraction=0.5, error_code=500001, error_message="loss became NaN")


def _demo_nightly(world: World, now: float, m: float) -> None:
    # Within the first minute one run fails and another is stopped, so a fresh demo next
    # to Prometheus shows the run alerts at once; from then on the job starts a run every
    # 4 minutes, and one run in four fails, another is stopped.
    world.add_job("job-demo-nightly", "nightly regression SFT", model="ERNIE-Speed-8K",
                  train_mode="SFT", parameter_scale="LoRA", created=now - 86400,
                  description="demo job 5: a new run every few minutes")
    world.add_run("job-demo-nightly", "task-demo-nightly-fails-first", created=now - 2 * m,
                  wait=0, duration=4 * m, outcome="failed", end_fraction=(2 + 1 / 3) / 4,
                  error_code=500001, error_message="CUDA out of memory at step 312")
    world.add_run("job-demo-nightly", "task-demo-nightly-stopped-first",
                  created=now - 1.5 * m, wait=0.5 * m, duration=5 * m, outcome="stopped",
                  end_fraction=(1 + 2 / 3) / 5)
    world.add_recurring("job-demo-nightly", first=now + m, period=4 * m, wait=0.25 * m,
                        duration=2.5 * m, outcomes=("succeeded", "failed", "succeeded",
                                                    "stopped"), keep=180 * m)


def _demo_watch(world: World, now: float) -> None:
    # What the people who fine-tune want to hear about before a run fails: a run whose
    # loss turned NaN, one whose loss climbs far above its best, and one stuck in the
    # queue for hours (QianfanRunLossNotFinite, QianfanRunLossDiverging,
    # QianfanRunWaitingTooLong).
    world.add_job("job-demo-watch", "loss and queue watch", model="ERNIE-Speed-8K",
                  created=now - 86400, description="demo job 6")
    world.add_run("job-demo-watch", created=now - 3600, wait=60, duration=5 * 3600,
                  outcome="running", checkpoints=20, loss="nan", loss_turn=2)
    world.add_run("job-demo-watch", created=now - 2 * 3600, wait=60, duration=5 * 3600,
                  outcome="running", checkpoints=20, loss="diverging", loss_turn=3)
    world.add_run("job-demo-watch", created=now - 3 * 3600, wait=24 * 3600, duration=3600)


def _demo_v1(world: World, now: float, m: float) -> None:
    # V1 (frozen API) runs.
    world.add_v1_run(10250, 6205, "sdk_test_7", created=now - 90000, wait=0, duration=267452,
                     outcome="stopped", end_fraction=0.0001)
    world.add_v1_run(10250, 6206, "sdk_test_7", created=now - 1.5 * m, wait=0, duration=7 * m,
                     version=6)
    world.add_v1_run(7263, 4612, "ernie-lite-legacy", created=now - 7200, wait=0, duration=3600)


def fleet_world(
    clock: Callable[[], float],
    jobs: int,
    runs_per_job: int,
    active_fraction: float = 0.05,
) -> World:
    """A large team's account: most runs long finished, a fraction still training."""
    now = clock()
    world = World(clock)
    active = round(jobs * active_fraction)
    for j in range(jobs):
        job_id = f"job-fleet{j:05d}"
        world.add_job(job_id, f"fleet job {j}", created=now - 30 * 86400,
                      date_spelling=bool(j % 2))
        for r in range(runs_per_job):
            created = now - (runs_per_job - r) * 86400
            run = world.add_run(job_id, f"task-fleet{j:05d}-{r:03d}", created=created, wait=60,
                                duration=3600, checkpoints=4)
            if j < active and r == runs_per_job - 1:
                run.created = now - 600
                run.outcome = "running"
            elif r % 10 == 3:
                run.outcome, run.end_fraction = "failed", 0.5
                run.error_code, run.error_message = 500001, "bad sample"
    return world
