"""The one error hierarchy of latbench.

Every error a user can cause or fix derives from :class:`LatbenchError`; the CLI
prints its message as one line and exits with :attr:`LatbenchError.exit_code`.
"""

from __future__ import annotations

__all__ = [
    "LatbenchError",
    "UserInputError",
    "DeviceError",
    "StoreError",
    "PredictorError",
]


class LatbenchError(Exception):
    """Base class of every error latbench raises on purpose."""

    exit_code: int = 1


class UserInputError(LatbenchError, ValueError):
    """Bad model, rank, plan, profile, path or option: the user can fix it."""

    exit_code = 2


class DeviceError(LatbenchError, RuntimeError):
    """A device is unreachable, unauthorised, or its runner failed or timed out."""

    exit_code = 3


class StoreError(LatbenchError, RuntimeError):
    """The latency database has a wrong schema or is corrupt."""

    exit_code = 4


class PredictorError(LatbenchError, RuntimeError):
    """A predictor is not fitted, was made for another schema, or meets an unknown layer."""

    exit_code = 5
