"""qf-exporter's benchmark: one module per measured group of rows, one table of rows.

    python -m benchmarks [--sizes 100,1000,10000] [--quick] [--only scrape,exposition]

Against the simulated Qianfan, for every size:

1. ``render``: rendering time per snapshot, fast renderer against prometheus_client's
   generic collector path, after checking both parse to identical samples;
2. ``scrape``: ``/metrics`` latency p50/p99 with 4 keep-alive scraper processes, plain
   and gzip, beside a bare ``http.server`` sending the same bytes;
3. ``quota``: one full poll's wall time against the quota floor (requests / qps);
4. ``steady_state``: API requests per hour, adaptive polling against a fixed interval;
5. ``memory``: RSS and CPU time of one poll + render in a fresh exporter process;
6. ``exposition``: the run store's render per poll for 1/10/100 changed runs, gzip size;
7. ``exposition_memory``: peak RSS under steady polling with 4 scraper processes;
8. ``regex_engines``: discovery patterns, ``re`` against RE2.

Items 2, 3 and 5 share one exporter process (``serve``). ``table`` declares every row
(label, measurement, target, pass rule); ``run`` runs the groups and ``report`` writes
``benchmarks/results.md``.
"""
