"""Correctness under speed: any runs render to text that parses back to their values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from qf_exporter.qianfan.models import STATUSES, Run, cut
from tests.exposition.pages import render_runs
from tests.generic_collector import GenericRunCollector
from tests.helpers import parse_samples, series, value

# Any Unicode a JSON answer can carry (lone surrogates become U+FFFD in models.cut).
label_text = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from('"\\\n\r\t{}=,# '), max_size=40
)
numbers = st.floats(allow_nan=False, allow_infinity=False, width=64)
maybe = st.none() | numbers


@st.composite
def runs(draw: st.DrawFn) -> list[Run]:
    count = draw(st.integers(min_value=0, max_value=8))
    result = []
    keys = set()
    for index in range(count):
        key = (draw(label_text), draw(st.sampled_from(["v1", "v2"])), draw(label_text),
               draw(label_text) + f"#{index}")
        if key in keys:
            continue
        keys.add(key)
        names = draw(st.lists(label_text.filter(bool), max_size=4, unique=True))
        result.append(
            Run(
                account=key[0], api=key[1], job_id=key[2], task_id=key[3],
                status=draw(st.sampled_from(STATUSES)), upstream_status=draw(label_text),
                job_name=draw(label_text), task_name=draw(label_text), model=draw(label_text),
                train_mode=draw(label_text), parameter_scale=draw(label_text),
                version=draw(label_text), vdl_link=draw(label_text),
                progress=draw(maybe), duration=draw(maybe), train_duration=draw(maybe),
                start_time=draw(maybe), finish_time=draw(maybe),
                evaluation=tuple((name, draw(numbers)) for name in names),
                checkpoints=draw(st.none() | st.integers(0, 10**6)),
                checkpoint_step=draw(maybe), training_loss=draw(maybe), perplexity=draw(maybe),
                error_code=draw(label_text), error_message=draw(label_text),
                last_read=draw(numbers),
                training_loss_min=draw(maybe), training_loss_recent_min=draw(maybe),
                loss_not_finite=draw(st.none() | st.sampled_from([0, 1])),
                estimated_finish=draw(maybe),
            )
        )
    return result


@settings(max_examples=200, deadline=None)
@given(runs(), st.integers(min_value=1, max_value=9))
def test_rendered_text_parses_back_to_the_snapshot(snapshot: list[Run], chunk: int) -> None:
    # Small pieces, so that a piece boundary falls inside most snapshots.
    text = render_runs(snapshot, chunk)
    samples = parse_samples(text)
    registry = CollectorRegistry()
    registry.register(GenericRunCollector(lambda: snapshot))
    assert samples == parse_samples(generate_latest(registry))
    for run in snapshot:
        base = dict(zip(("account", "api", "job_id", "task_id"), run.key, strict=True))
        info = series(samples, "qianfan_finetune_run_info", **base)
        assert len(info) == 1
        labels = dict(next(iter(info)))
        assert (labels["job_name"], labels["upstream_status"]) == (
            run.job_name, run.upstream_status)
        assert sum(series(samples, "qianfan_finetune_run_status", **base).values()) == 1
        assert value(samples, "qianfan_finetune_run_status", status=run.status, **base) == 1
        assert value(samples, "qianfan_finetune_run_progress_ratio", **base) == run.progress
        assert value(samples, "qianfan_finetune_run_training_loss", **base) == run.training_loss
        assert value(samples, "qianfan_finetune_run_last_read_timestamp_seconds",
                     **base) == run.last_read
        for name, expected in (
            ("qianfan_finetune_run_estimated_finish_timestamp_seconds", run.estimated_finish),
            ("qianfan_finetune_run_training_loss_min", run.training_loss_min),
            ("qianfan_finetune_run_training_loss_recent_min", run.training_loss_recent_min),
            ("qianfan_finetune_run_loss_not_finite", run.loss_not_finite),
        ):
            assert value(samples, name, **base) == expected, name
        for name, score in run.evaluation:
            assert value(samples, "qianfan_finetune_run_evaluation_ratio", metric=name,
                         **base) == score
        has_error = run.error_code not in ("", "0") or bool(run.error_message)
        assert bool(series(samples, "qianfan_finetune_run_error_info", **base)) == has_error


@given(st.text(max_size=600))
def test_label_values_are_bounded_and_encodable(text: str) -> None:
    result = cut(text, 256)
    assert len(result) <= 256
    result.encode("utf-8")
