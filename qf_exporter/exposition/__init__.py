"""The metrics answer, made from the snapshots.

``render`` makes each run family's lines, ``store`` keeps them as pre-rendered pieces
re-rendered only where a poll changed runs, ``gzipstream`` compresses each piece once,
``pages`` keeps the page up to date from the poller, ``answer`` serves it in the format
asked for, and ``info`` collects the exporter's own build, reload and shard metadata.
May import qf_exporter.polling, qf_exporter.qianfan, qf_exporter.config and qf_exporter.util.
"""
