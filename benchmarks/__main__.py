"""``python -m benchmarks``: every group, or ``--only`` some; and the child processes'
subcommands, which the groups start themselves."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from pathlib import Path

from benchmarks.common import GROUPS, ROOT, RUNS_PER_JOB, Settings

SIZE_GROUPS = {"render", "scrape", "quota", "steady", "memory"}
EXPOSITION_GROUPS = {"exposition", "exposition_memory"}


# Each child imports only its own module, at its start: the exporter's child processes
# measure their memory, which must hold what the exporter imports and nothing more.


def render_child(a: argparse.Namespace) -> None:
    from benchmarks import render

    render.child(a.url, a.jobs, a.fast_reps, a.generic_reps)


def serve_child(a: argparse.Namespace) -> None:
    from benchmarks import serve

    serve.child(a.url, a.jobs, a.qps)


def scrape_child(a: argparse.Namespace) -> None:
    from benchmarks import scrape

    scrape.child(a.port, a.encoding, a.count)


def bare_child(a: argparse.Namespace) -> None:
    from benchmarks import scrape

    scrape.bare_child(a.exporter_port)


def exposition_exporter_child(a: argparse.Namespace) -> None:
    from benchmarks import exposition_memory

    exposition_memory.exporter_child(a.url, a.jobs)


def exposition_scrape_child(a: argparse.Namespace) -> None:
    from benchmarks import exposition_memory

    exposition_memory.scraper_child(a.port, a.encoding, a.seconds)


def freshness_watch_child(a: argparse.Namespace) -> None:
    from benchmarks import freshness

    freshness.watch(a.port)


def add_children(parser: argparse.ArgumentParser) -> None:
    """The child processes, each a subcommand (internal: the groups start them)."""
    sub = parser.add_subparsers(dest="child", metavar="{child subcommand}")
    c = sub.add_parser("render-child", help="(internal) item 1's exporter process")
    c.add_argument("url")
    c.add_argument("jobs", type=int)
    c.add_argument("fast_reps", type=int)
    c.add_argument("generic_reps", type=int)
    c.set_defaults(run=render_child)
    c = sub.add_parser("serve-child", help="(internal) items 2, 3 and 5's exporter process")
    c.add_argument("url")
    c.add_argument("jobs", type=int)
    c.add_argument("qps", type=float)
    c.set_defaults(run=serve_child)
    c = sub.add_parser("scrape-child", help="(internal) one of item 2's scrapers")
    c.add_argument("port", type=int)
    c.add_argument("encoding")
    c.add_argument("count", type=int)
    c.set_defaults(run=scrape_child)
    c = sub.add_parser("bare-child", help="(internal) item 2's floor, a bare http.server")
    c.add_argument("exporter_port", type=int)
    c.set_defaults(run=bare_child)
    c = sub.add_parser("exposition-exporter-child", help="(internal) item 7's exporter")
    c.add_argument("url")
    c.add_argument("jobs", type=int)
    c.set_defaults(run=exposition_exporter_child)
    c = sub.add_parser("exposition-scrape-child", help="(internal) one of item 7's scrapers")
    c.add_argument("port", type=int)
    c.add_argument("encoding")
    c.add_argument("seconds", type=float)
    c.set_defaults(run=exposition_scrape_child)
    c = sub.add_parser("freshness-watch-child", help="(internal) item 9's /metrics watcher")
    c.add_argument("port", type=int)
    c.set_defaults(run=freshness_watch_child)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks",
                                description="qf-exporter benchmark: every number side by side.")
    p.add_argument("--sizes", default=None,
                   help="comma-separated run counts, default 100,1000,10000 "
                        "(--quick: 1000, and 10000 for the exposition groups)")
    p.add_argument("--quick", action="store_true",
                   help="one size, fewer scrapes and repetitions, 20 s of steady polling")
    p.add_argument("--only", default=",".join(GROUPS),
                   help=f"comma-separated groups to run, of {','.join(GROUPS)}")
    p.add_argument("--scrapes", type=int, default=None, help="scrapes per scraper (200)")
    p.add_argument("--scrapers", type=int, default=4)
    p.add_argument("--fast-reps", type=int, default=None)
    p.add_argument("--generic-reps", type=int, default=None)
    p.add_argument("--duration", type=float, default=None,
                   help="seconds of steady polling per encoding, item 7, and of changes "
                        "per row, item 9 (120; --quick 20)")
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results.md"))
    add_children(p)
    return p


def settings_of(args: argparse.Namespace) -> Settings:
    q = args.quick
    return Settings(scrapes=args.scrapes or (50 if q else 200), scrapers=args.scrapers,
                    fast_reps=args.fast_reps or (3 if q else 5),
                    generic_reps=args.generic_reps or (2 if q else 3),
                    fixed_minutes=3 if q else 5,
                    duration=args.duration or (20.0 if q else 120.0))


def sizes_of(p: argparse.ArgumentParser, args: argparse.Namespace,
             quick_default: str) -> list[int]:
    text = args.sizes or (quick_default if args.quick else "100,1000,10000")
    sizes = [int(x) for x in text.split(",") if x.strip()]
    if any(s < RUNS_PER_JOB or s % RUNS_PER_JOB for s in sizes):
        p.error(f"--sizes are run counts, multiples of {RUNS_PER_JOB}")
    return sizes


def groups_of(p: argparse.ArgumentParser, args: argparse.Namespace) -> set[str]:
    groups = {g.strip() for g in args.only.split(",") if g.strip()}
    if not groups or groups - set(GROUPS):
        p.error(f"--only names groups of {','.join(GROUPS)}")
    return groups


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    args = p.parse_args(argv)
    if args.child:
        args.run(args)
        return 0
    from benchmarks import report, run

    groups, settings = groups_of(p, args), settings_of(args)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    started = time.perf_counter()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    code = report.commit()  # what is measured, not what the tree holds when it ends
    sections = []
    if groups & SIZE_GROUPS:
        sections.append(run.size_section(sizes_of(p, args, "1000"), groups, settings))
    if groups & EXPOSITION_GROUPS:
        sections.append(run.exposition_section(sizes_of(p, args, "10000"), groups, settings))
    if "regex" in groups:
        sections.append(run.regex_section(settings))
    if "freshness" in groups:
        sections.append(run.freshness_section(sizes_of(p, args, "1000"), settings))
    command = " ".join(["python -m benchmarks", *argv])
    text = report.document(command, when, code, time.perf_counter() - started, sections)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text, encoding="utf-8")
    print(f"(written to {args.output})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
