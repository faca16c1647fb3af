"""HTTP: the exporter's endpoints and the server under them.

``server`` is the hardened HTTP/1.1 server (limits, deadlines, TLS per connection),
``listen`` opens its sockets, ``gate`` decides who is served (basic auth, the rate
limit) before a request takes a slot, ``routes`` answers /metrics, the health and reload
endpoints and ``landing``'s page, and ``webconfig`` reads --web.config.file (TLS, basic
auth, headers) and keeps it live.
May import qf_exporter.exposition, qf_exporter.polling, qf_exporter.qianfan,
qf_exporter.config and qf_exporter.util.
"""
