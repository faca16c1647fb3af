"""qf-exporter: a Prometheus exporter for Baidu Qianfan fine-tuning runs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qf-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
