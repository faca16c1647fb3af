"""The metrics answer, made from the snapshots.

``render`` makes each run family's lines, ``store`` keeps them as pre-rendered pieces
re-rendered only where a poll changed runs, ``gzipstream`` compresses each piece once,
``pages`` keeps the current page up to date from the poller, ``answer`` serves it in the
format asked for, and ``info`` collects the exporter's own build, reload and shard metadata.
May import qf_exporter.polling, qf_exporter.qianfan, qf_exporter.config and qf_exporter.util.

Glossary:

- bucket: up to ``store.BUCKET_RUNS`` runs adjacent in key order, rendered together.
- piece: one family's lines for the runs of one bucket (text).
- block: one family's pieces of consecutive buckets joined (and their segments), ~64 KiB.
- segment: text compressed as raw deflate that joins others into one gzip stream.
- page: what every scrape serves until the next poll (``store.Page``): each family's
  header and blocks, then the health, as text and as segments.
- answer: one reply (``answer.Answer``): the page, then the families prometheus_client
  renders (the head, kept until it changes), plain or as one gzip stream, as byte
  strings written in order.
"""
