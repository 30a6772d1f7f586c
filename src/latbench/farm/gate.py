"""One host's rule: no compression while the host measures on its own CPU.

A device that times in-process (``Capabilities.in_process``: the ``cpu``, ``cuda`` and
``litert`` devices) measures with the host's cores, so a compress/export task running beside
it would skew its timings. Ray's resources cannot say this: a task's resources are fixed
when it is submitted, and a device actor that reserved all of its host's CPUs for the whole
sweep would leave that host idle between measurements (and a one-host farm with a ``cpu``
device could then never compress at all). So each host that has such a device gets a
:class:`HostGate`, a small reader-writer lock living on that host: compress/export tasks
enter it as readers, a measurement as the writer. A measurement waits until the tasks
already running there finish and holds new ones back until it is done; waiting
measurements go first (writer priority), so a stream of compressions cannot starve them.
Phones (adb) time on the phone and need no gate: their host keeps compressing.

Who holds the gate is a process of the gate's own host (:func:`latbench.concurrency.this_process`),
so the gate drops a holder whose process died (a ``kill -9``-ed worker) instead of waiting
for it forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["HostGate", "building", "measuring", "GATE_POLL_S"]

#: Seconds between looks at the gate while waiting for it (a measurement or a compression
#: takes far longer: polling costs nothing that matters).
GATE_POLL_S = 0.05


class HostGate:
    """A reader-writer gate of one host (run as an async Ray actor on that host).

    Readers (compress/export tasks) and the writer (one measurement at a time, of any of
    the host's in-process devices) are named by their process (``str(ProcessId)``).
    """

    def __init__(self) -> None:
        self._readers: dict[str, int] = {}
        self._writer: str | None = None
        self._writers_waiting = 0

    @staticmethod
    def _alive(who: str) -> bool:
        from latbench.concurrency import ProcessId, is_alive

        proc = ProcessId.parse(who)
        return proc is None or is_alive(proc) is not False

    def _prune(self) -> None:
        for who in [w for w in self._readers if not self._alive(w)]:
            del self._readers[who]
        if self._writer is not None and not self._alive(self._writer):
            self._writer = None

    async def enter_build(self, who: str) -> None:
        """Wait until no measurement runs or waits on this host, then count ``who`` in."""
        while True:
            self._prune()
            if self._writer is None and not self._writers_waiting:
                self._readers[who] = self._readers.get(who, 0) + 1
                return
            await asyncio.sleep(GATE_POLL_S)

    async def leave_build(self, who: str) -> None:
        """Count ``who`` out."""
        n = self._readers.get(who, 0) - 1
        if n > 0:
            self._readers[who] = n
        else:
            self._readers.pop(who, None)

    async def begin_measure(self, who: str) -> None:
        """Wait until no compression and no other measurement runs here; then hold the gate."""
        self._writers_waiting += 1
        try:
            while True:
                self._prune()
                if self._writer is None and not self._readers:
                    self._writer = who
                    return
                await asyncio.sleep(GATE_POLL_S)
        finally:
            self._writers_waiting -= 1

    async def end_measure(self, who: str) -> None:
        """Let the gate go (if ``who`` holds it)."""
        if self._writer == who:
            self._writer = None

    async def state(self) -> dict[str, Any]:
        """Who is in: ``{"readers": n, "writer": who or None, "writers_waiting": n}``."""
        self._prune()
        return {"readers": sum(self._readers.values()), "writer": self._writer,
                "writers_waiting": self._writers_waiting}


@contextmanager
def building(gate: Any | None) -> Iterator[None]:
    """Hold ``gate`` (a :class:`HostGate` actor handle, or ``None``: no gate) as a reader."""
    if gate is None:
        yield
        return
    import ray

    from latbench.concurrency import this_process

    who = str(this_process())
    ray.get(gate.enter_build.remote(who))
    try:
        yield
    finally:
        ray.get(gate.leave_build.remote(who))


@contextmanager
def measuring(gate: Any | None) -> Iterator[None]:
    """Hold ``gate`` (a :class:`HostGate` actor handle, or ``None``) as the writer."""
    if gate is None:
        yield
        return
    import ray

    from latbench.concurrency import this_process

    who = str(this_process())
    ray.get(gate.begin_measure.remote(who))
    try:
        yield
    finally:
        ray.get(gate.end_measure.remote(who))
