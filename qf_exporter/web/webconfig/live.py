"""The web config kept live: re-read when the file, or a file it names, changes.

exporter-toolkit reads its web config file again at every request, so a change (a
rotated certificate, a new password) takes effect without a restart (its
docs/web-configuration.md); here ``LiveWebConfig.current()`` costs a few ``stat`` calls
when nothing changed, and a change is parsed once.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from qf_exporter.config.file import ConfigError
from qf_exporter.web.webconfig.schema import (
    WebConfig,
    build_web_config,
    parse_web_config,
)

log = logging.getLogger(__name__)

Signature = tuple[tuple[int, int, int, int] | None, ...]


def _signature(files: tuple[Path, ...]) -> Signature:
    """What changes when any of the files is replaced, rotated or edited."""
    out: list[tuple[int, int, int, int] | None] = []
    for file in files:
        try:
            st = os.stat(file)  # follows symlinks: a Kubernetes secret swaps ..data
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
    return tuple(out)


class LiveWebConfig:
    """The web config as it is on disk now, re-read when the file or a file it names
    changes; a broken new version is logged once and the last good one kept.

    ``current()`` is called for every new connection and every request, as
    exporter-toolkit reads its file; when nothing changed it costs a few ``stat`` calls.
    Whether the listener speaks TLS is fixed at start: a change that would switch between
    HTTP and HTTPS is refused like any other broken file (it needs a restart).
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._files: tuple[Path, ...] = ()
        self._seen: Signature = ()
        self._config = self._read(path) if path else WebConfig()
        self.tls = self._config.ssl_context is not None

    @classmethod
    def fixed(cls, config: WebConfig) -> LiveWebConfig:
        """A web config that is never re-read (tests, embedded use)."""
        live = cls(None)
        live._config = config
        live.tls = config.ssl_context is not None
        return live

    def _read(self, path: str) -> WebConfig:
        """Parse the file once and build its config, noting what each file looked like
        before it was read: a change made while reading is seen at the next call."""
        before = _signature((Path(path),))
        parsed = parse_web_config(path)
        self._files = parsed.files
        self._seen = before + _signature(parsed.files[1:])
        return build_web_config(parsed)

    def current(self) -> WebConfig:
        if not self.path:
            return self._config
        with self._lock:
            if _signature(self._files) == self._seen:
                return self._config
            try:
                config = self._read(self.path)
                if (config.ssl_context is not None) != self.tls:
                    raise ConfigError(
                        ["tls_server_config: switching between HTTP and HTTPS needs a restart"]
                    )
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error(
                        "web config change refused, keeping the last good one",
                        extra={"file": self.path, "problem": problem},
                    )
                return self._config
            config.cache = self._config.cache
            self._config = config
            log.info("web config reloaded", extra={"file": self.path})
            return config
