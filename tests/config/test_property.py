"""Anything at all in the configuration file gives a Config or a ConfigError (one line per
problem), never another exception: random structures and random texts (hypothesis)."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qf_exporter.config.file import Config, ConfigError, parse_config

# --- anything at all: ConfigError or a Config, nothing else --------------------------

KEYS = st.sampled_from(
    ["accounts", "poll", "name", "access_key", "secret_key", "secret_key_file", "qps",
     "jobs", "tasks", "task_id", "job_id", "discover", "discovery", "include", "exclude",
     "interval", "finished_interval", "stale_after", "timeout", "concurrency", "retries",
     "finished_retention", "max_runs", "max_age", "models", "train_modes", "endpoint"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["30s", "1h30m", "0", "-1", "1e400", "${QFX_UNSET}", "/dev/null",
                       "http://x", "(", "^(a+)+$", "job-a", "/", "²", "１２", "9" * 5000,
                       "9" * 400 + "s", str(2**64)])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=5),
                                                                 inner, max_size=5),
    max_leaves=30,
)


def only_config_or_config_error(text: str) -> None:
    try:
        result = parse_config(text, environ={})
    except ConfigError as exc:
        assert exc.problems and all(p and "\n" not in p for p in exc.problems)
    else:
        assert isinstance(result, Config)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, VALUES, max_size=4))
def test_any_structure_is_a_config_or_a_config_error(data: dict[str, object]) -> None:
    only_config_or_config_error(yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(["accounts:", " - ", "name: a", "&a ", "*a", "[", "]", "{", "}",
                         ": ", ", ", "\n", "  ", "!!str ", "!!binary ", "<<: ", "? ", "---",
                         "qps: 1", "jobs: [j]", "access_key: k", "secret_key: s", "'",
                         '"', "#", "1e999", "~", "|", ">"])
        | st.text(max_size=3),
        max_size=40,
    )
)
def test_any_text_is_a_config_or_a_config_error(pieces: list[str]) -> None:
    only_config_or_config_error("".join(pieces))


@pytest.mark.parametrize("task_id", ["'²'", "'１２'", "'" + "9" * 5000 + "'", str(2**63)])
def test_odd_task_ids_are_a_problem_not_a_crash(task_id: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            f"accounts: [{{name: a, access_key: k, secret_key: s,"
            f" tasks: [{{task_id: {task_id}, job_id: 1}}]}}]"
        )
    assert info.value.problems == [
        "accounts[0].tasks[0].task_id: is required and must be a positive integer"
    ]
