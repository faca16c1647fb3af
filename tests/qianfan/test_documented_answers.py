"""Documented answers, replayed through the real client and parser.

Each directory of ``tests/fixtures/upstream/`` holds one case: ``case.yaml`` says
where the answers come from (a reference page or the official SDK's mock server,
cited), which target the exporter reads, and which file answers which action;
``expected.prom`` lists the metrics the exporter must then export (``name{labels}
value``, the labels a subset; or ``name{labels} absent``). A small fake server
answers with the files byte for byte (no signature check: signing is tested
elsewhere), and the whole exporter polls it once.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from qf_exporter.app import Exporter
from qf_exporter.config.file import Account, V1Target
from qf_exporter.util.secrets import Secret
from tests.helpers import (
    ACCESS_KEY,
    FAST_POLL,
    SECRET_KEY,
    ManualClock,
    parse_samples,
    series,
)

CORPUS = Path(__file__).parent.parent / "fixtures" / "upstream"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "case.yaml").is_file())
NOW = 1_735_689_600.0  # 2025-01-01T00:00:00Z: after every documented time
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_EMPTY_PAGE = {"DescribeFineTuningJobs": "jobList", "DescribeFineTuningTasks": "taskList"}


def test_the_corpus_has_every_documented_answer() -> None:
    """Both reference pages' examples, the SDK mock's V1 and V2 answers, and the errors.

    ``seed000-*``: V1 jobDetail, https://cloud.baidu.com/doc/WENXINWORKSHOP/s/wlmrgowee;
    ``seed001-*``: DescribeFineTuningTasks,
    https://cloud.baidu.com/doc/WENXINWORKSHOP/s/klt73okdd.
    """
    assert {"seed000-v1-response", "seed000-v1-sdk-example", "seed000-v1-error-param-invalid",
            "seed001-list", "seed001-list-python-repr", "sdk-mock-v2-list-and-detail",
            "sdk-mock-v2-job-list", "sdk-mock-v1-get-job"} <= set(CASES)
    for name in CASES:
        assert (CORPUS / name / "expected.prom").is_file(), name
        assert yaml.safe_load((CORPUS / name / "case.yaml").read_text())["source"], name


class _Answers(BaseHTTPRequestHandler):
    case: Path
    answers: dict[str, Any]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        split = urlsplit(self.path)
        action = ("jobDetail" if split.path == "/wenxinworkshop/finetune/jobDetail"
                  else dict(parse_qsl(split.query)).get("Action", ""))
        if body.get("marker") and action in _EMPTY_PAGE:
            # The page after a documented truncated one: the corpus has none, so end here.
            payload = json.dumps({"requestId": "x", "result": {
                _EMPTY_PAGE[action]: [], "pageInfo": {"isTruncated": False}}}).encode()
            self._reply(200, {}, payload)
            return
        answer = self.answers.get(action)
        if answer is None:
            self._reply(404, {}, b'{"code": "NotFound", "message": "not in this case"}')
            return
        payload = (self.case / answer["file"]).read_bytes()
        self._reply(int(answer.get("status", 200)), answer.get("headers") or {}, payload)

    def _reply(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def clock() -> ManualClock:
    """The exporter's clock (``make_exporter`` uses it): a fixed, known time."""
    return ManualClock(NOW)


@pytest.fixture
def replay() -> Iterator[Callable[[str], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(name: str) -> str:
        case = CORPUS / name
        spec = yaml.safe_load((case / "case.yaml").read_text())
        handler = type("Handler", (_Answers,), {"case": case, "answers": spec["answers"]})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        host, port = server.server_address[:2]
        return f"http://{host!s}:{port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _account(spec: dict[str, Any], endpoint: str) -> Account:
    target = spec.get("target") or {}
    return Account(
        name="corpus",
        access_key=Secret(ACCESS_KEY),
        secret_key=Secret(SECRET_KEY),
        endpoint=endpoint,
        qps=1000,
        jobs=(target["job"],) if "job" in target else (),
        tasks=(V1Target(target["task_id"], target["job_id"]),) if "task_id" in target else (),
        discover=bool(spec.get("discover")),
    )


def _expectations(name: str) -> Iterator[tuple[str, str, dict[str, str], str]]:
    for number, raw in enumerate((CORPUS / name / "expected.prom").read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        assert match, f"{name}/expected.prom:{number}: cannot read {line!r}"
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\")
                  for k, v in _LABEL.findall(match.group(2) or "")}
        yield f"expected.prom:{number}", match.group(1), labels, match.group(3)


@pytest.mark.parametrize("name", CASES)
def test_documented_answer(name: str, replay: Callable[[str], str],
                           make_exporter: Callable[..., Exporter]) -> None:
    spec = yaml.safe_load((CORPUS / name / "case.yaml").read_text())
    endpoint = replay(name)
    exporter = make_exporter(_account(spec, endpoint), poll=replace(FAST_POLL, retries=0))
    exporter.poller.poll_all()
    text = exporter.exposition()
    samples = parse_samples(text)
    for where, metric, labels, want in _expectations(name):
        found = series(samples, metric, **labels)
        if want == "absent":
            assert not found, f"{name}/{where}: {metric}{labels} should be absent: {found}"
            continue
        assert len(found) == 1, f"{name}/{where}: {metric}{labels} matches {len(found)}"
        got = next(iter(found.values()))
        assert got == pytest.approx(float(want), rel=1e-12), f"{name}/{where}: {got}"
