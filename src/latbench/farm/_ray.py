"""Ray, imported only when a farm runs (the ``farm`` extra), and the cluster a sweep uses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from latbench.exceptions import MissingExtraError, UserInputError

__all__ = ["import_ray", "connect"]


def import_ray(what: str = "a sweep on several devices (--device twice, --workers or --ray)"
               ) -> Any:
    """The ``ray`` module.

    Raises
    ------
    MissingExtraError
        If Ray is not installed (one line naming ``pip install "latbench[farm]"``).
    """
    try:
        import ray
    except ImportError:
        raise MissingExtraError("farm", "ray", what) from None
    return ray


@contextmanager
def connect(address: str | None, workers: int | None) -> Iterator[Any]:
    """Connect to a Ray cluster for the length of the block and yield ``ray``.

    ``address`` joins an existing cluster (``ray start --head`` printed it; ``"auto"`` finds
    the one of this host); otherwise a cluster of this machine is started with ``workers``
    CPUs (compress/export tasks take one each) and stopped at the end. A process already
    connected (``ray.init`` called by the caller, as tests and notebooks do) keeps its
    connection, and nothing is stopped.

    Raises
    ------
    UserInputError
        If the cluster at ``address`` cannot be reached.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                  configure_logging=False)
    try:
        if address is not None:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers, **kwargs)
    except ConnectionError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"cannot join the Ray cluster at {address!r}: {first}; start it "
                             "with 'ray start --head' and pass the address it prints") from None
    try:
        yield ray
    finally:
        ray.shutdown()
