"""The one error hierarchy of latbench: every exception class the package defines.

Every error a user can cause or fix derives from :class:`LatbenchError`; the CLI
prints its message as one line and exits with :attr:`LatbenchError.exit_code`.
Anything else that escapes is a bug and keeps its traceback.

``NotFittedPredictorError`` is also a scikit-learn ``NotFittedError``; it is built on first
use (module ``__getattr__``) so that importing this module never imports scikit-learn.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LatbenchError",
    "UserInputError",
    "DeviceError",
    "DeviceTimeoutError",
    "OpProfileError",
    "StoreError",
    "PredictorError",
    "NotFittedPredictorError",  # noqa: F822 (built on first use by __getattr__)
    "ExportError",
    "OutOfRangeWarning",
    "MissingExtraError",
    "RunnerOutputError",
    "ConnectionDroppedError",
    "WorkdirError",
    "Interrupted",
    "LatbenchNotice",
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


class DeviceTimeoutError(DeviceError):
    """A command or transfer on the device exceeded its timeout (it may still be running)."""


class OpProfileError(DeviceError):
    """The runner ran but printed no per-operator profile latbench reads (a build without
    op profiling, or a profile format of a release latbench does not know)."""


class StoreError(LatbenchError, RuntimeError):
    """The latency database has a wrong schema, is corrupt, or cannot be written."""

    exit_code = 4


class PredictorError(LatbenchError, RuntimeError):
    """A predictor is not fitted, was made for another schema, or meets an unknown layer."""

    exit_code = 5


class OutOfRangeWarning(UserWarning):
    """A predictor was asked about models outside what it was trained on (MACs beyond its
    training range, layer kinds or graphs it never saw): the prediction is an extrapolation."""


class WorkdirError(UserInputError):
    """The folder latbench writes models into cannot take them (full disk, quota, read-only
    ``$TMPDIR``): nothing a variant did wrong, so the sweep stops rather than record every
    variant as failed."""


class ExportError(LatbenchError):
    """The model could not be exported (ONNX or TFLite)."""


class MissingExtraError(UserInputError):
    """An optional dependency is not installed; the message is one line naming the pip extra.

    Parameters
    ----------
    extra : str
        The latbench extra that installs it (``tflite``, ``gpu``, ``usb``).
    needs : str
        The missing distribution(s), e.g. ``"litert-torch"``.
    what : str
        What the user asked for that needs it, e.g. ``"TFLite export"``.
    """

    def __init__(self, extra: str, needs: str, what: str) -> None:
        self.extra, self._parts = extra, (extra, needs, what)
        super().__init__(f"{what} needs {needs}, which is not installed: "
                         f"pip install \"latbench[{extra}]\"")

    def __reduce__(self) -> tuple:
        return (type(self), self._parts)


class RunnerOutputError(ValueError):
    """A runner's output lacks the numbers latbench needs (the caller adds the device name
    and raises :class:`DeviceError`)."""


class ConnectionDroppedError(ConnectionError):
    """The device closed the TCP connection (the ADB transport turns it into a DeviceError)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during long work, with a message saying what was kept and how to
    go on (the command line prints it and exits with 130, as shells expect)."""


class LatbenchNotice(UserWarning):
    """Something the user should know that is not a problem, e.g. that this process waits
    for another one that measures on the same phone (the command line prints ``note: ...``)."""


_LAZY: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    if name == "NotFittedPredictorError":
        if name not in _LAZY:
            from sklearn.exceptions import NotFittedError

            cls = type(name, (PredictorError, NotFittedError), {
                "__doc__": "``predict`` was called before ``fit`` (also a scikit-learn "
                           "``NotFittedError``).",
                "__module__": __name__,
            })
            _LAZY[name] = cls
        return _LAZY[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
