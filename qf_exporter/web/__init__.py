"""HTTP: the exporter's endpoints and the server under them.

``server`` is the hardened HTTP/1.1 server (limits, deadlines, TLS per connection),
``listen`` opens its sockets, ``gate`` decides who is served (basic auth, the rate
limit) before a request takes a slot, ``routes`` answers /metrics, the health and reload
endpoints and ``landing``'s page, and the ``webconfig`` package reads --web.config.file
(``schema`` checks its keys, with ``tls`` and ``basic_auth``) and keeps it live
(``live``). Within the room, imports point one way: routes, then gate and landing, then
server, listen and webconfig.
May import qf_exporter.exposition, qf_exporter.polling, qf_exporter.qianfan,
qf_exporter.config and qf_exporter.util.
"""
