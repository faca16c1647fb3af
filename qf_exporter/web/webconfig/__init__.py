"""``--web.config.file``: TLS, basic auth and HTTP headers in exporter-toolkit's format
(its docs/web-configuration.md).

```yaml
tls_server_config:
  cert_file: server.crt           # or cert: / key: with the PEM inline
  key_file: server.key
  client_ca_file: ca.crt          # optional, for mutual TLS (or client_ca: inline)
  client_auth_type: RequireAndVerifyClientCert
  client_allowed_sans: [scraper.example.com]
  min_version: TLS12
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
  curve_preferences: [X25519]
http_server_config:
  headers: {Strict-Transport-Security: max-age=31536000}
basic_auth_users:
  alice: $2y$10$...                # bcrypt hash
rate_limit: {interval: 100ms, burst: 20}
```
Every key of that format is honoured or refused by name (``http2: true`` is refused:
no HTTP/2 here). ``schema`` reads the file once and checks every key into a
``WebConfig``, with ``tls`` (the TLS context and client certificates) and
``basic_auth`` (the bcrypt users and their check); ``live`` keeps it current, re-read
when the file or a file it names changes.
May import qf_exporter.config and qf_exporter.util.
"""
