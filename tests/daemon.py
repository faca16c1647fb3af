"""Run the real daemon (`python -m qf_exporter`) in a subprocess and find where it listens."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening.*address=(https?)://(\S+):(\d+)")


class Daemon:
    def __init__(
        self,
        args: Sequence[str],
        preexec_fn: Callable[[], None] | None = None,
        module: str = "qf_exporter",
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QIANFAN_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT prints every thread's stack (see stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec_fn,
        )
        self.lines: list[str] = []
        self.listening: list[tuple[str, int]] = []
        expected = sum(a.startswith("--web.listen-address") for a in args) or 1
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # ends if the process dies before it listens
            self.lines.append(line)
            if match := LISTENING.search(line):
                self.listening.append((match.group(2).strip("[]"), int(match.group(3))))
                if len(self.listening) == expected:
                    break
        assert self.listening, "the exporter did not start:\n" + "".join(self.lines)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def port(self) -> int:
        return self.listening[0][1]

    def status(self, field: str) -> int:
        """A field of /proc/PID/status in kB (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> tuple[int, str]:
        self.proc.terminate()
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # where is it stuck? (faulthandler)
            self.proc.wait(timeout=30)
            self._reader.join(timeout=10)
            raise AssertionError("no exit 30 s after SIGTERM:\n" + "".join(self.lines)) from None
        self._reader.join(timeout=10)
        return code, "".join(self.lines)
