"""latbench: on-device latency benchmarking and prediction for compressed CNNs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("latbench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__"]
