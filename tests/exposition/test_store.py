"""The run store: rendering only what changed gives exactly the bytes of a full render."""

from __future__ import annotations

import gc
import gzip
import random
import tracemalloc
import zlib
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qf_exporter.exposition import store as store_module
from qf_exporter.exposition.answer import gzip_answer, plain_answer
from qf_exporter.exposition.render import FAMILIES, LAST_READ
from qf_exporter.exposition.store import RunStore
from qf_exporter.qianfan.models import STATUSES, Run
from tests.exposition.pages import page_text, render_runs
from tests.helpers import parse_samples, promtool_check_metrics

ACCOUNTS = ("team-a", "team-b")
label_text = st.text(alphabet=st.sampled_from('ab"\\\n{}=, é'), max_size=6)
maybe = st.none() | st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def run_values(draw: st.DrawFn, account: str, job: str, task: str) -> Run:
    return Run(
        account=account, api=draw(st.sampled_from(["v1", "v2"])), job_id=job, task_id=task,
        status=draw(st.sampled_from(STATUSES)), upstream_status=draw(label_text),
        job_name=draw(label_text), vdl_link=draw(label_text), progress=draw(maybe),
        duration=draw(maybe), finish_time=draw(maybe),
        evaluation=tuple((name, 0.5) for name in draw(st.sets(label_text, max_size=2))),
        checkpoints=draw(st.none() | st.integers(0, 9)), training_loss=draw(maybe),
        error_message=draw(label_text), last_read=draw(st.floats(0, 1e10)),
    )


@st.composite
def account_states(draw: st.DrawFn, account: str) -> list[Run]:
    """One account's runs after a poll: any subset of a small pool of run ids."""
    tasks = draw(st.sets(st.sampled_from([f"t{i}" for i in range(24)]), max_size=24))
    return [
        draw(run_values(account, draw(st.sampled_from(["job-1", "job-2", 'j"3'])), task))
        for task in sorted(tasks)
    ]


def step(previous: list[Run], new: list[Run], keep: random.Random) -> list[Run]:
    """``new``, except that some runs equal to ``previous`` ones stay the same objects
    (as the poller keeps a target it did not read), and sometimes in another order."""
    old = {run.key: run for run in previous}
    result = [_kept_or_read_again(old.get(r.key), r, keep) for r in new]
    result += [run for run in previous if keep.random() < 0.3 and run.key not in
               {r.key for r in result}]
    if keep.random() < 0.2:
        keep.shuffle(result)
    return result


def _kept_or_read_again(old: Run | None, new: Run, keep: random.Random) -> Run:
    """``new``; or, for a run there before, that same object, or the run read again with
    nothing but its last read changed (as most runs are at each poll)."""
    if old is None:
        return new
    draw = keep.random()
    if draw < 0.4:
        return old
    if draw < 0.7:
        return replace(old, last_read=new.last_read)
    return new


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=2, max_value=5),
    st.integers(min_value=1, max_value=2000),
    st.lists(st.tuples(st.sampled_from(ACCOUNTS), st.data()), min_size=1, max_size=8),
    st.randoms(use_true_random=False),
)
def test_incremental_equals_full_render(
    bucket: int, block: int, polls: list[tuple[str, st.DataObject]], keep: random.Random
) -> None:
    # Small blocks, so that blocks end inside families and are cut again as buckets
    # come and go.
    store = RunStore(bucket_runs=bucket, block_bytes=block)
    held: dict[str, list[Run]] = {name: [] for name in ACCOUNTS}
    for account, data in polls:
        new = step(held[account], data.draw(account_states(account)), keep)
        store.replace(held[account], new)
        held[account] = new
        everything = [run for runs in held.values() for run in runs]
        page = store.page(1)
        assert page_text(page) == render_runs(everything)
        plain, zipped = plain_answer(page, b"head\n"), gzip_answer(page, b"head\n")
        assert gzip.decompress(b"".join(zipped)) == b"".join(plain)
        # Content-Length comes from these, without joining the answer.
        assert plain.size == len(b"".join(plain)) and zipped.size == len(b"".join(zipped))
        assert len(store) == len(everything)


def test_a_change_renders_only_its_bucket() -> None:
    runs = [Run("a", "v2", "job", f"t{i:03d}", "running", "Running", last_read=1.0)
            for i in range(200)]
    store = RunStore(bucket_runs=16)
    store.replace((), runs)
    before = store.page(1)
    changed = list(runs)
    changed[100] = replace(runs[100], last_read=2.0)
    assert store.replace(runs, changed) == 1
    after = store.page(2)
    assert page_text(after) == render_runs(changed)
    # Only the last-read piece of the bucket holding run 100 is new; every other piece
    # (and deflate segment) is the very object it was.
    fresh = [b for a, b in zip(before.runs, after.runs, strict=True) if a is not b]
    assert len(fresh) == 1 and b'task_id="t100"} 2.0' in fresh[0]
    deflated = [b for a, b in zip(before.runs_deflated, after.runs_deflated, strict=True)
                if a is not b]
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    assert len(deflated) == 1 and inflate.decompress(deflated[0]) == fresh[0]
    assert store.replace(changed, list(changed)) == 0
    assert store.page(3).runs is after.runs


def test_runs_read_again_unchanged_render_only_their_last_read_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = [Run("a", "v2", "job", f"t{i:03d}", "succeeded", "Done", last_read=1.0,
                progress=0.5) for i in range(200)]
    store = RunStore(bucket_runs=16)
    store.replace((), runs)
    rendered: list[Sequence[int] | None] = []
    render = store_module.render_families  # type: ignore[attr-defined]

    def recording(runs: list[Run], only: Sequence[int] | None = None) -> tuple[bytes, ...]:
        rendered.append(only)
        return render(runs, only)

    monkeypatch.setattr(store_module, "render_families", recording)
    read_again = [replace(run, last_read=2.0) for run in runs]
    read_again[7] = replace(read_again[7], progress=0.75)  # one run also moved on
    assert store.replace(runs, read_again) == 200
    assert page_text(store.page(2)) == render_runs(read_again)
    last_read = [FAMILIES.index(LAST_READ)]
    assert rendered.count(None) == 1  # the bucket of run 7: every family
    assert rendered.count(last_read) == len(rendered) - 1 >= 200 // 16


def test_the_pieces_pass_promtool_and_the_parser() -> None:
    rng = random.Random(7)
    runs = [
        Run("a", rng.choice(["v1", "v2"]), f"job-{i % 7}", f"t{i}", rng.choice(STATUSES),
            "Running", job_name='quote " and \\ and \n', progress=rng.random(),
            evaluation=(("BLEU-4", 0.17),), checkpoints=3, training_loss=0.5,
            error_message="x" if i % 5 == 0 else "", last_read=float(i))
        for i in range(300)
    ]
    store = RunStore(bucket_runs=8)
    store.replace((), runs)
    kept = [r for i, r in enumerate(runs) if i % 3] + [
        replace(r, task_id=r.task_id + "-new") for r in runs[:40]]
    store.replace(runs, kept)
    text = page_text(store.page(1))
    assert text == render_runs(kept)
    answer = b"".join(gzip_answer(store.page(1)))
    assert parse_samples(gzip.decompress(answer)) == parse_samples(text)
    promtool_check_metrics(text)


def test_a_changed_piece_compresses_the_next_one_again() -> None:
    # Each segment has the piece before it as its dictionary (like pigz): when that
    # piece changes, the segment after it must be compressed again, or the answer
    # would decode to the old text there.
    runs = [Run("a", "v2", "job", f"t{i:03d}", "running", "Running", last_read=1.0)
            for i in range(64)]
    store = RunStore(bucket_runs=8, block_bytes=1)  # a block per piece
    store.replace((), runs)
    before = store.page(1)
    changed = list(runs)
    changed[20] = replace(runs[20], last_read=2.0)
    store.replace(runs, changed)
    after = store.page(2)
    plain = [b for a, b in zip(before.runs, after.runs, strict=True) if a != b]
    deflated = [b for a, b in zip(before.runs_deflated, after.runs_deflated, strict=True)
                if a is not b]
    assert len(plain) == 1 and len(deflated) == 2
    assert gzip.decompress(b"".join(gzip_answer(after))) == page_text(after)


def test_blocks_hold_many_pieces_and_a_new_bucket_joins_only_its_neighbours() -> None:
    runs = [Run("a", "v2", "job", f"t{i:04d}", "succeeded", "Done", last_read=float(i))
            for i in range(2000)]
    store = RunStore(bucket_runs=16, block_bytes=4096)
    store.replace((), runs)
    before = store.page(1)
    pieces_per_family = len(before.runs) / len(FAMILIES)
    assert 4 < pieces_per_family < 2000 / 16  # blocks of several buckets, many blocks
    # Runs added at the end split the last bucket: only blocks at the end are new.
    more = runs + [replace(runs[0], task_id=f"t9{i:03d}") for i in range(20)]
    store.replace(runs, more)
    after = store.page(2)
    assert page_text(after) == render_runs(more)
    kept = {id(piece) for piece in before.runs}
    fresh = [piece for piece in after.runs if id(piece) not in kept]
    assert len(fresh) <= 3 * len(FAMILIES)


def test_memory_stays_flat_over_many_polls() -> None:
    # Blocks replaced by a poll must be freed (a bucket's views into an old block, or a
    # removed bucket, would otherwise keep it). Polls change 5 % of the runs, and every
    # third one removes 10 runs and brings back 10 others of a pool, so buckets split
    # and merge; after a warm-up the store's allocations stay where they were, within
    # a generous margin (they are ~1.5 MB here).
    rng = random.Random(5)

    def make(i: int) -> Run:
        return Run("a", "v2", f"job-{i % 40}", f"t{i:05d}", "running", "Running",
                   job_name=f"job {i % 40}", progress=0.5, duration=float(i), last_read=1.0)

    present = set(range(600))
    runs = [make(i) for i in sorted(present)]
    store = RunStore(bucket_runs=16, block_bytes=8192)
    store.replace((), runs)

    def poll(step: int) -> None:
        nonlocal runs
        new = [replace(run, last_read=run.last_read + 1) if rng.random() < 0.05 else run
               for run in runs]
        if step % 3 == 0:
            gone = set(rng.sample(sorted(present), 10))
            back = set(rng.sample(sorted(set(range(700)) - present), 10))
            present.difference_update(gone)
            present.update(back)
            kept = {f"t{i:05d}" for i in present}
            new = [run for run in new if run.task_id in kept] + [make(i) for i in back]
        store.replace(runs, new)
        runs = new

    tracemalloc.start()
    try:
        for step in range(100):
            poll(step)
        gc.collect()
        start = tracemalloc.get_traced_memory()[0]
        for step in range(100, 300):
            poll(step)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert page_text(store.page(1)) == render_runs(runs)
    assert grown < 300_000, f"{grown} bytes more after 200 polls"
