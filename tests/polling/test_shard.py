"""A replica's share of the targets: the same assignment in every process, a fair share
each, and a shard that cannot be is refused.

Replicas exporting every run once between them: scale_out/test_sharding.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from qf_exporter.polling.shard import Shard
from tests.helpers import REPO


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

