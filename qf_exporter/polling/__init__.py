"""Reading each account's targets on a schedule into immutable snapshots.

``poller`` runs an account's poll step by step: discovery, targets (and this replica's
``shard`` of them), what is due (``cadence``), reading (``reader``, with ``estimate``),
``reachability`` and ``retention``; ``scheduler`` fires the polls, and ``snapshot`` holds
what they found (and the target and run key types).
May import qf_exporter.qianfan, qf_exporter.config and qf_exporter.util.
"""
