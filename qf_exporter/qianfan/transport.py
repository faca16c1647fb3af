"""The transport: one account's HTTP session, and one request's whole answer, bounded.

``Transport`` owns the pooled connections (never through a proxy, never following a
redirect), signs each request with its auth as it goes out, and reads the answer
within ``watchdog``'s deadline and ``bounded``'s cap on size; a transport failure
becomes a typed ``QianfanError`` (timeout, connection, invalid response). What the
answer means is ``classify``'s.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.exceptions import HTTPError, ProtocolError, ReadTimeoutError

from qf_exporter.qianfan import bounded, errors, watchdog
from qf_exporter.qianfan.errors import InvalidResponse


class Transport:
    """One account's pooled connections, and requests sent and read over them."""

    def __init__(
        self, endpoint: str, auth: AuthBase, *, pool_size: int, max_response_bytes: int
    ) -> None:
        self.max_response_bytes = max_response_bytes
        self._host = urlsplit(endpoint).netloc
        self._headers = {
            "Host": self._host,
            "Content-Type": "application/json",
            # Only what this client can inflate within its size cap (requests would also
            # offer br and zstd when those libraries happen to be installed).
            "Accept-Encoding": "gzip, deflate",
        }
        self._session = requests.Session()
        self._session.auth = auth  # signs each request as it goes out
        self._session.trust_env = False  # never send IAM-signed calls through a stray proxy
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(pool_size, 1), max_retries=0)
        watchdog.watch_pools(adapter.poolmanager)  # each request's deadline can cut its socket
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def drop_connections(self) -> None:
        """Close the pooled (idle) connections now; the next request opens a new one.

        ``Session.close()`` alone does not: urllib3 2 forgets its pools without closing
        them, and a pool that an exception's traceback holds in a reference cycle (as
        after a timeout or a dropped connection) keeps its sockets open until the
        garbage collector happens to run.
        """
        for adapter in self._session.adapters.values():
            pools = getattr(getattr(adapter, "poolmanager", None), "pools", None)
            if pools is not None:
                # (urllib3's container refuses plain iteration; keys() is a copy)
                for key in pools.keys():  # noqa: SIM118
                    pool = pools.get(key)
                    if pool is not None:
                        pool.close()
        self._session.close()

    def close(self) -> None:
        self.drop_connections()

    def exchange(
        self, action: str, url: str, payload: bytes, timeout: float
    ) -> tuple[int, Mapping[str, str], bytearray]:
        """POST ``payload`` and read the whole answer within ``timeout`` seconds (connect,
        headers and body): its status, headers and body."""
        with watchdog.watched(time.monotonic() + timeout) as watch:
            return self._send(action, url, payload, timeout, watch)

    def _send(
        self,
        action: str,
        url: str,
        payload: bytes,
        timeout: float,
        watch: watchdog.Watch,
    ) -> tuple[int, Mapping[str, str], bytearray]:
        """Send one request and read its whole answer under ``watch``: status, headers, body."""
        try:
            # Redirects are not followed: a signed call has one right address, and
            # requests would resend a redirected POST as a GET. The body is streamed,
            # so that its size and its time are ours to bound.
            response = self._session.post(url, data=payload, headers=self._headers,
                                          timeout=(timeout, timeout),
                                          allow_redirects=False, stream=True)
            try:
                content = bounded.read_body(
                    response.raw, response.headers.get("Content-Encoding", ""), watch,
                    self.max_response_bytes,
                )
            except BaseException:
                watch.discard_connection()  # the rest of this answer must not be read
                response.close()
                raise
        except watchdog.DeadlinePassed:
            raise errors.Timeout(f"{action}: no whole answer within {timeout:g}s") from None
        except bounded.TooLarge:
            raise InvalidResponse(
                f"{action}: the answer is larger than {self.max_response_bytes} bytes"
            ) from None
        except requests.Timeout:
            raise errors.Timeout(f"{action}: no answer within {timeout:g}s") from None
        except (requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError, ProtocolError):
            if watch.fired:
                raise errors.Timeout(f"{action}: no whole answer within {timeout:g}s") from None
            raise InvalidResponse(f"{action}: the answer was cut off or garbled") from None
        except (requests.RequestException, OSError, HTTPError) as exc:
            # A read timeout while the body is read surfaces as a ConnectionError, and a
            # socket the watchdog shut down as any of these.
            if watch.fired or isinstance(exc, ReadTimeoutError) or any(
                isinstance(arg, ReadTimeoutError) for arg in exc.args
            ):
                raise errors.Timeout(f"{action}: no answer within {timeout:g}s") from None
            raise errors.ConnectionFailed(
                f"{action}: cannot reach {self._host}: {type(exc).__name__}"
            ) from None
        return response.status_code, response.headers, content


