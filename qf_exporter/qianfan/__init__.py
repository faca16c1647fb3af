"""Talking to Qianfan: one account's signed, budgeted, bounded requests and their answers.

bce-auth-v1 signing (``signing``, ``auth``), the account's request budget and backoff
(``budget``, ``backoff``), the transport (``transport``) with each request's wall-clock
deadline (``watchdog``) and the bounds on every answer and read (``bounded``), what an
answer means (``classify``: scrubbed, parsed within bounds, and mapped to a result or
one of the typed errors of ``errors``), the client with its paging and retries
(``client``, with its own metrics in ``telemetry``), the parsed models of the answers
(``models``) and the console page each run links to (``console``).
May import qf_exporter.config and qf_exporter.util; ``models`` (parsing) imports no
configuration.
"""
