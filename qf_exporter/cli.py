"""The command line (flags follow the Prometheus exporter conventions)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from qf_exporter import __version__
from qf_exporter.config.file import Config, ConfigError, load_config
from qf_exporter.logs import LEVELS, setup
from qf_exporter.polling.shard import Shard
from qf_exporter.web.listen import parse_listen

if TYPE_CHECKING:
    from qf_exporter.app import Exporter
    from qf_exporter.simulator import QianfanSimulator
    from qf_exporter.web.webconfig.live import LiveWebConfig

log = logging.getLogger("qf_exporter")

DEFAULT_PORT = 9788
EXIT_OK, EXIT_TARGETS_DOWN, EXIT_INVALID = 0, 1, 2
# Cannot listen (port in use, no such address): not 2, so that systemd's
# RestartPreventExitStatus=2 stops retrying bad configurations only.
EXIT_LISTEN = 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qf-exporter",
        description="Prometheus exporter for Baidu Qianfan (千帆) model fine-tuning runs.",
    )
    p.add_argument("--config.file", dest="config_file", metavar="PATH",
                   help="configuration file (YAML)")
    p.add_argument("--config.check", dest="config_check", action="store_true",
                   help="validate the configuration file and exit (0 valid, 2 invalid)")
    p.add_argument("--demo", action="store_true",
                   help="run against the built-in simulated Qianfan; no credentials needed")
    p.add_argument("--demo.speed", dest="demo_speed", type=float, default=1.0,
                   metavar="X", help="with --demo: run the simulated runs X times faster")
    p.add_argument("--once", action="store_true",
                   help="poll once, print the metrics to stdout, exit 0 if every target was "
                   "read, else 1")
    p.add_argument("--web.listen-address", dest="listen", action="append", default=None,
                   metavar="HOST:PORT",
                   help=f"address to serve on, repeatable: one listener each (default "
                   f":{DEFAULT_PORT}, every IPv4 and IPv6 address)")
    p.add_argument("--web.enable-lifecycle", dest="lifecycle", action="store_true",
                   help="answer POST/PUT /-/reload (off by default; SIGHUP always reloads)")
    p.add_argument("--web.max-requests", dest="max_requests", type=int, default=40,
                   metavar="N", help="requests answered at once; more get 503 (default 40)")
    p.add_argument("--web.max-connections", dest="max_connections", type=int, default=0,
                   metavar="N", help="open connections; more are closed at once (default: "
                   "1024, or fewer when the descriptor limit is lower)")
    p.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics",
                   metavar="PATH", help="path of the metrics (default /metrics)")
    p.add_argument("--web.config.file", dest="web_config", metavar="PATH",
                   help="TLS and basic auth, in the Prometheus exporter-toolkit format")
    p.add_argument("--log.level", dest="log_level", default="info", choices=list(LEVELS))
    p.add_argument("--log.format", dest="log_format", default="logfmt",
                   choices=["logfmt", "json"])
    p.add_argument("--shard", type=int, default=0, metavar="I",
                   help="this replica's shard, 0 <= I < --total-shards")
    p.add_argument("--total-shards", dest="total_shards", type=int, default=1, metavar="N",
                   help="number of replicas that split the targets between them")
    p.add_argument("--version", action="version", version=f"qf-exporter {__version__}")
    return p


def _fail(problems: Sequence[str]) -> int:
    for problem in problems:
        print(problem, file=sys.stderr)
    return EXIT_INVALID


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup(args.log_level, args.log_format)
    problems, listen = _check_flags(args)
    if problems:
        return _fail(problems)
    try:
        web_config = _web_config(args)
        simulator, config = _configuration(args)
    except ConfigError as exc:
        return _fail(exc.problems)
    if args.config_check:
        _describe(config)
        return EXIT_OK

    from qf_exporter.app import Exporter

    exporter = Exporter(
        config,
        config_path=None if args.demo else args.config_file,
        shard=Shard(args.shard, args.total_shards),
        settle_heap=not args.once,
    )
    try:
        if args.once:
            return _once(exporter)
        return _serve(exporter, listen, args, web_config)
    finally:
        exporter.poller.stop()
        if simulator is not None:
            simulator.stop()


def _check_flags(args: argparse.Namespace) -> tuple[list[str], list[tuple[str, int]]]:
    """What is wrong with the flags themselves, and the addresses to listen on."""
    problems = []
    if not args.demo and not args.config_file:
        problems.append("--config.file is required (or --demo to try the simulated Qianfan)")
    if args.demo and args.config_check:
        problems.append("--config.check needs --config.file, not --demo")
    try:
        Shard(args.shard, args.total_shards)
    except ValueError as exc:
        problems.append(str(exc))
    if not args.telemetry_path.startswith("/") or args.telemetry_path in ("/", "/-/healthy",
                                                                          "/-/ready"):
        problems.append("--web.telemetry-path must be a path like /metrics")
    listen: list[tuple[str, int]] = []
    for address in args.listen or [f":{DEFAULT_PORT}"]:
        try:
            listen.append(parse_listen(address))
        except ValueError as exc:
            problems.append(str(exc))
    if args.max_requests < 1 or args.max_connections < 0:
        problems.append("--web.max-requests must be >= 1 and --web.max-connections >= 0")
    return problems, listen


def _web_config(args: argparse.Namespace) -> LiveWebConfig | None:
    """The --web.config.file, read (none with --once); a ConfigError naming the file."""
    if not args.web_config or args.once:
        return None
    from qf_exporter.web.webconfig.live import LiveWebConfig

    try:
        return LiveWebConfig(args.web_config)
    except ConfigError as exc:
        raise ConfigError([f"{args.web_config}: {p}" for p in exc.problems]) from exc


def _configuration(args: argparse.Namespace) -> tuple[QianfanSimulator | None, Config]:
    """The configuration, of --config.file or of the demo (whose simulator is started)."""
    if args.demo:
        from qf_exporter.simulator.demo import start_demo

        simulator, config = start_demo(speed=args.demo_speed)
        log.info("demo: simulated Qianfan started", extra={"url": simulator.url})
        return simulator, config
    config = load_config(args.config_file)
    for warning in config.warnings:
        log.warning(warning)
    return None, config


def _once(exporter: Exporter) -> int:
    snapshot = exporter.poller.poll_all(force=True)
    sys.stdout.buffer.write(exporter.exposition())
    sys.stdout.flush()
    ok = all(s.every_target_read for s in snapshot.accounts.values())
    return EXIT_OK if ok else EXIT_TARGETS_DOWN


def _describe(config: Config) -> None:
    for account in config.accounts:
        print(
            f"account {account.name}: endpoint {account.endpoint}, qps {account.qps:g}, "
            f"{len(account.jobs)} job(s), {len(account.tasks)} V1 pair(s)"
            + (f", discovery every {account.discovery.interval:g}s" if account.discover else "")
            + (f", at most {account.max_runs} runs" if account.max_runs else "")
        )
    for warning in config.warnings:
        print(f"warning: {warning}")
    print("configuration is valid")


def _raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one, as Go programs do; return it."""
    try:
        import resource
    except ImportError:  # not on this platform
        return 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 16
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 16


def _on_signals(exporter: Exporter) -> threading.Event:
    """SIGTERM and SIGINT set the returned event; SIGHUP asks for a reload."""
    stop = threading.Event()

    def on_term(signum: int, _frame: object) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    def on_hup(_signum: int, _frame: object) -> None:
        exporter.reloader.request()  # a burst of SIGHUPs costs one reload and one queued

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hup)
    return stop


def _serve(
    exporter: Exporter,
    listen: list[tuple[str, int]],
    args: argparse.Namespace,
    web_config: LiveWebConfig | None,
) -> int:
    from qf_exporter.web.listen import ListenError, bind, show
    from qf_exporter.web.server import Limits

    stop = _on_signals(exporter)
    sockets: list[socket.socket] = []
    try:
        for host, port in listen:
            sockets.append(bind(host, port))
    except ListenError as exc:
        for sock in sockets:
            sock.close()
        log.error("cannot listen", extra={"error": str(exc)})
        return EXIT_LISTEN
    descriptors = _raise_descriptor_limit()
    # Leave descriptors for the poller's connections, files and the listeners.
    max_connections = args.max_connections or max(16, min(1024, descriptors - 64))
    limits = Limits(max_requests=args.max_requests, max_connections=max_connections)
    path = args.telemetry_path
    # The poller first: once connections are accepted, a flood of them may take every
    # descriptor, and starting the scheduler opens files (the time zone).
    exporter.start()
    exporter.serve(sockets, path, web_config, lifecycle=args.lifecycle, limits=limits)
    scheme = "https" if web_config and web_config.tls else "http"
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        log.info("listening", extra={"address": f"{scheme}://{show(host, port)}",
                                     "telemetry_path": path})
    # Wake up now and then: a signal the kernel hands to another thread only sets a flag,
    # and the main thread runs its Python handler when it next runs bytecode. A wait
    # without a timeout left a SIGTERMed exporter waiting for ever (seen once in tests).
    while not stop.wait(0.5):
        pass
    exporter.stop()
    log.info("stopped")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # In-flight Qianfan requests may sit in worker threads until their timeout; none
    # of them holds anything that needs flushing, so do not wait for them.
    os._exit(EXIT_OK)
