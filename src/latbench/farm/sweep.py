"""``bench sweep --device A --device B ...``: one sweep over several devices and hosts, on Ray.

The driver (the process that runs :func:`run_farm_sweep`) plans the variants exactly as a
single-device sweep does (:func:`~latbench.bench.sweep.prepare_sweep`), and is the only
process that writes the store: it checks what is stored, claims each variant × device ×
runtime × format before any work (:meth:`~latbench.data.store.Store.claim`, owned by the
driver's own process, so a ``kill -9`` of the driver frees them at once), and commits each
measurement as it arrives (:func:`~latbench.bench.sweep.store_measurement`). A rerun
resumes; sweeps running at once on one database (single-device or farm) split the work
through the same claims.

On the cluster:

* compress/export tasks (:func:`latbench.farm.worker.build`, one CPU each) build each
  variant once, in the formats its devices run, on any host with a free CPU, except a host
  that is measuring on its own CPU at that moment (:mod:`latbench.farm.gate`);
* one actor per device (:class:`latbench.farm.worker.DeviceWorker`), placed on the host the
  device is attached to (the profile's ``node``, :mod:`latbench.farm.placement`), measures
  what it is sent one model at a time; the model files reach it through Ray's object store.

A device whose actor or host dies, or that fails a measurement (a phone unplugged), is
dropped: the measurement in flight is recorded as failed (as a single-device sweep records
it), what was still pending on it is reported as not measured (:class:`FarmSummary`), and the
other devices go on. Anything else that fails is a bug and stops the sweep with its traceback.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latbench.bench.sweep import SweepConfig, SweepEvent, SweepSummary
from latbench.exceptions import DeviceError, Interrupted, LatbenchError, StoreError, \
    UserInputError, WorkdirError

__all__ = ["run_farm_sweep", "FarmSummary", "QUEUE_PER_DEVICE", "OPEN_TIMEOUT_S"]

#: Models built ahead of what a device has measured, per device: builds stop being submitted
#: while a device they are for has this many models waiting (they wait in the object store,
#: so this bounds its memory when phones are slower than compression).
QUEUE_PER_DEVICE = 4

#: Seconds a device actor gets to close its device at the end.
_CLOSE_TIMEOUT_S = 30.0

#: Seconds a device gets to start: its actor placed on its host (which waits for Ray to start
#: a worker there) and the device opened (an ADB connection, a runner pushed once). A device
#: that does not start in this time is lost from the start, and the others go on.
OPEN_TIMEOUT_S = 300.0


@dataclass
class FarmSummary:
    """What a farm sweep did, per device.

    ``devices`` holds each device's :class:`~latbench.bench.sweep.SweepSummary` (its
    ``seconds`` hold the device's ``measure`` time; compress/export time is the farm's,
    summed over workers, in ``seconds``). ``lost`` names each device that was dropped
    mid-sweep, with why; ``not_measured`` counts the variants it never measured (neither
    stored nor failed). ``workers`` is the number of CPUs compress/export tasks could use;
    ``nodes`` maps each device to the Ray node id that drove it.
    """

    devices: dict[str, SweepSummary] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)
    not_measured: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)
    workers: int = 0
    variants: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"compress": 0.0, "export": 0.0,
                                                               "wall": 0.0})

    @property
    def complete(self) -> bool:
        """Whether every device measured (or skipped, or failed) every variant."""
        return not self.lost and not any(self.not_measured.values())

    def to_dict(self) -> dict[str, Any]:
        return {"devices": {name: {**s.to_dict(), "node": self.nodes.get(name),
                                   "lost": self.lost.get(name),
                                   "not_measured": self.not_measured.get(name, 0)}
                            for name, s in self.devices.items()},
                "variants": self.variants, "workers": self.workers,
                "complete": self.complete, "seconds": dict(self.seconds)}

    def kept(self) -> str:
        """What a stopped farm sweep kept, in words."""
        measured = sum(s.measured for s in self.devices.values())
        stored = sum(s.skipped for s in self.devices.values())
        return (f"sweep stopped after {measured} new measurements ({stored} already stored); "
                "everything measured is kept, rerun the same command to resume")


class _Device:
    """One device of the farm, as the driver sees it."""

    def __init__(self, name: str, profile: Any) -> None:
        self.name = name
        self.profile = profile
        self.actor: Any = None
        self.hello: Any = None
        self.dev_id = -1
        self.gate: Any = None
        self.summary = SweepSummary()
        self.lost: str | None = None
        self.not_measured = 0
        self.done = 0
        self.queued = 0  # measurements sent to the actor and not yet back

    @property
    def format(self) -> str:
        return self.hello.format

    def item(self, v: Any) -> str:
        from latbench.bench.sweep import variant_item

        return variant_item(v, self.name, self.hello.runtime, self.format)


def run_farm_sweep(
    config: SweepConfig,
    devices: Sequence[str],
    db: str | Path,
    *,
    devices_file: str | Path | None = None,
    workers: int | None = None,
    address: str | None = None,
    progress: Callable[[SweepEvent], None] | None = None,
) -> FarmSummary:
    """Measure every variant of ``config`` on every device of ``devices`` into the store at ``db``.

    Parameters
    ----------
    config : SweepConfig
        What to sweep (``per_layer`` is not supported here: sweep each device on its own).
    devices : sequence of str
        Device names (``cpu``, ``cuda``, ``litert`` or ``devices.toml`` profiles), each once.
        A profile's ``node = "..."`` names the Ray node (id, address or custom resource) the
        device is attached to; without it, the device is driven from the driver's node.
    db : str or Path
        The SQLite latency store; created if missing. Only this process writes it.
    devices_file : str or Path, optional
        The ``devices.toml`` to read profiles from (on the driver's host).
    workers : int, optional
        CPUs of the Ray cluster started on this machine (compress/export tasks in
        parallel; default: 1). With ``address``, or when this process is already connected
        to Ray, at most this many builds run at once (default: the cluster's CPUs).
    address : str, optional
        Join the Ray cluster at this address (``ray start --head`` prints it; ``auto``)
        instead of starting one here. latbench (with the ``farm`` extra) must be installed
        on every host, in the same version.
    progress : callable, optional
        Called with a :class:`~latbench.bench.sweep.SweepEvent` after each variant on each
        device (``device`` set; ``done``/``total`` count per device).

    Returns
    -------
    FarmSummary
        Per device: counts, seconds measuring, and whether it was lost (with what it did not
        measure). A lost device does not raise: check :attr:`FarmSummary.complete`.

    Raises
    ------
    MissingExtraError
        If Ray is not installed (``pip install "latbench[farm]"``).
    UserInputError
        For an unknown or repeated device, a ``node`` the cluster does not have, a bad
        option, an unknown model or method, ``per_layer``, or a cluster that cannot be
        reached; all before anything is measured.
    WorkdirError
        If a host's temporary folder cannot take model files.
    StoreError
        If the store cannot be written; the message says what was kept.
    Interrupted
        On Ctrl-C (a ``KeyboardInterrupt`` saying what was kept and how to resume).
    """
    from latbench.bench.sweep import prepare_sweep
    from latbench.devices.registry import find_profile
    from latbench.farm._ray import connect, import_ray

    names = list(devices)
    if not names:
        raise UserInputError("give at least one --device")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserInputError(f"device {repeated[0]!r} is named twice; name each device once")
    if workers is not None and workers < 1:
        raise UserInputError(f"--workers must be at least 1, got {workers}")
    if config.per_layer:
        raise UserInputError("--per-layer is not supported in a sweep over several devices "
                             "or on Ray yet; sweep each device on its own with --per-layer")
    farm = [_Device(n, find_profile(n, devices_file)) for n in names]
    import_ray()  # a missing extra is said before the models are built
    variants, models = prepare_sweep(config)
    summary = FarmSummary(variants=len(variants))
    started = time.time()
    # Locally, one worker unless asked: compression then runs beside the devices as in a
    # single-device sweep, and a shared machine is not taken over unasked.
    with connect(address, (workers or 1) if address is None else None) as ray:
        try:
            gates = _start_devices(ray, farm, config, summary)
            window = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            summary.workers = window
            runner = _FarmRun(ray, farm, gates, config, db, models, summary, progress, window,
                              started)
            runner.run(variants)
        finally:
            _close_devices(ray, farm)
    summary.seconds["wall"] = time.time() - started
    return summary


def _remote_cause(exc: BaseException) -> BaseException:
    """The exception raised inside a Ray task or actor call (``exc`` when it is not one)."""
    return getattr(exc, "cause", None) or exc


def _start_devices(ray: Any, farm: list[_Device], config: SweepConfig,
                   summary: FarmSummary) -> dict[str, Any]:
    """Place an actor per device, open the devices, and put a gate on each host that
    measures on its own CPU (returned by node id). A device that cannot be reached is lost
    from the start; a bad profile or ``node`` is an error before anything is measured."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import latbench
    from latbench.farm.gate import HostGate
    from latbench.farm.placement import resolve_node
    from latbench.farm.worker import DeviceWorker

    nodes = ray.nodes()
    here = ray.get_runtime_context().get_node_id()
    placements = {d.name: resolve_node(d.name, d.profile.node, nodes, here) for d in farm}
    actor_cls = ray.remote(DeviceWorker)
    for d in farm:
        d.actor = actor_cls.options(num_cpus=0, max_restarts=0,
                                    **placements[d.name].actor_options()).remote(d.profile)
    opened = {d.name: d.actor.open.remote(config.threads) for d in farm}
    deadline = time.monotonic() + OPEN_TIMEOUT_S
    for d in farm:
        summary.devices[d.name] = d.summary
        try:
            d.hello = ray.get(opened[d.name], timeout=max(1.0, deadline - time.monotonic()))
        except ray.exceptions.GetTimeoutError:
            d.lost = (f"device {d.name!r} did not start within {OPEN_TIMEOUT_S:.0f} s (its host "
                      f"{placements[d.name].asked or 'the driver'!s} has no free Ray worker, or "
                      "the device does not answer)")
            continue
        except ray.exceptions.RayTaskError as exc:
            cause = _remote_cause(exc)
            if isinstance(cause, DeviceError):
                d.lost = f"cannot open device {d.name!r}: {cause}"
                continue
            if isinstance(cause, LatbenchError):
                raise cause from None
            raise
        except ray.exceptions.RayActorError as exc:
            d.lost = f"the Ray actor of device {d.name!r} died before it started: " \
                     f"{_first_line(exc)}"
            continue
        if d.hello.version != latbench.__version__:
            raise UserInputError(
                f"device {d.name!r} runs on a host with latbench {d.hello.version}, this one "
                f"has {latbench.__version__}: install the same latbench on every host")
        summary.nodes[d.name] = d.hello.node_id
    gate_cls = ray.remote(HostGate)
    gates: dict[str, Any] = {}
    for d in farm:
        if d.hello is not None and d.hello.in_process and d.hello.node_id not in gates:
            gates[d.hello.node_id] = gate_cls.options(
                num_cpus=0, max_concurrency=1000,
                scheduling_strategy=NodeAffinitySchedulingStrategy(d.hello.node_id, soft=False)
            ).remote()
        if d.hello is not None and d.hello.in_process:
            d.gate = gates[d.hello.node_id]
    return gates


def _close_devices(ray: Any, farm: list[_Device]) -> None:
    refs = [d.actor.close.remote() for d in farm if d.actor is not None and d.lost is None]
    if refs:
        try:
            ray.wait(refs, num_returns=len(refs), timeout=_CLOSE_TIMEOUT_S)
        except Exception:  # noqa: BLE001 -- closing is best effort; the actors die with the job
            pass
    for d in farm:
        if d.actor is not None:
            try:
                ray.kill(d.actor)
            except Exception:  # noqa: BLE001 -- already gone
                pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _FarmRun:
    """The driver's loop: claims, builds, measurements and store writes of one farm sweep."""

    def __init__(self, ray: Any, farm: list[_Device], gates: dict[str, Any], config: SweepConfig,
                 db: str | Path, models: Any, summary: FarmSummary,
                 progress: Callable[[SweepEvent], None] | None, window: int,
                 started: float) -> None:
        from latbench.farm.worker import build

        self.ray, self.farm, self.gates, self.config, self.db = ray, farm, gates, config, db
        self.models, self.summary, self.progress = models, summary, progress
        self.window, self.started = window, started
        self.build_task = ray.remote(build)
        self.builds: dict[Any, tuple] = {}  # report ref → (variant, devices, blob refs)
        self.measures: dict[Any, tuple] = {}  # measurement ref → (variant, device, table)
        self.net_ref: tuple[str, Any] | None = None
        self.store: Any = None
        self.total = 0

    # ------------------------------------------------------------------ the whole sweep
    def run(self, variants: list) -> None:
        from latbench.bench.sweep import release_quietly, wait_for_others
        from latbench.data.store import Store

        self.total = len(variants)
        with Store(self.db) as store:
            self.store = store
            try:
                for d in self.farm:
                    if d.hello is not None:
                        d.dev_id = store.add_device(d.hello.info)
                for d in self.farm:  # lost before it started: nothing of it is measured
                    if d.lost is not None:
                        for v in variants:
                            self._not_measured(v, d)
                live = [d for d in self.farm if d.lost is None]
                held = self._sweep([(v, live) for v in variants], deferred=False)
                # What other processes held: stored by them (skipped here), or taken over
                # when their claims lapse, as a single-device sweep does.
                wait_for_others(held, self._retry, store, lambda p: p[1].item(p[0]), "variants")
            except KeyboardInterrupt:
                raise Interrupted(f"sweep interrupted: {self.summary.kept()}") from None
            except StoreError as exc:
                raise StoreError(f"{exc} — {self.summary.kept()}") from None
            finally:
                for ref in list(self.builds) + list(self.measures):
                    try:
                        self.ray.cancel(ref)
                    except Exception:  # noqa: BLE001 -- best effort on the way out
                        pass
                release_quietly(store, None)  # every claim this driver still holds
        for d in self.farm:
            self.summary.not_measured[d.name] = d.not_measured
            if d.lost is not None:
                self.summary.lost[d.name] = d.lost

    def _retry(self, held: list) -> list:
        groups = [(v, [d for _, d in grp])
                  for v, grp in itertools.groupby(held, key=lambda p: p[0])]
        return self._sweep(groups, deferred=True)

    def _sweep(self, work: list[tuple[Any, list[_Device]]], deferred: bool) -> list:
        """Build and measure each variant on its devices; return the (variant, device) pairs
        another process holds."""
        held: list = []
        for v, devs in work:
            todo: list[_Device] = []
            for d in devs:
                outcome = self._prepare(v, d, deferred)
                if outcome == "held":
                    held.append((v, d))
                elif outcome == "todo":
                    todo.append(d)
            if todo:
                self._wait_for_room(todo)
                self._submit_build(v, [d for d in todo if d.lost is None])
                for d in todo:
                    if d.lost is not None:  # lost while this variant waited for room
                        self._finish_lost(v, d)
        while self.builds or self.measures:
            self._handle_one()
        self.net_ref = None
        return held

    # ------------------------------------------------------------------ one item
    def _prepare(self, v: Any, d: _Device, deferred: bool) -> str:
        """``done`` (stored, failed or not measured: reported), ``held`` (another process
        measures it) or ``todo`` (claimed by this driver)."""
        store = self.store
        if d.lost is not None:
            self._not_measured(v, d)
            return "done"
        runtime = d.hello.runtime

        def stored() -> bool:
            if not store.has_measurement(v.key, v.input_shape, d.name, *runtime, format=d.format):
                return False
            if deferred:
                d.summary.measured_elsewhere += 1
            else:
                d.summary.skipped += 1
            self._emit(d, v, "skipped")
            return True

        if stored():
            return "done"
        if not store.claim(d.item(v), note=f"{v.model} {v.label}"):
            return "held"
        if stored():  # another process stored it meanwhile
            self._release(v, d)
            return "done"
        if deferred:
            error = store.failed_since(v.key, d.name, self.started)
            if error is not None:  # the other process tried and failed: so would this one
                self._release(v, d)
                d.summary.failed += 1
                self._emit(d, v, "failed", err=f"in another process: {error}")
                return "done"
        return "todo"

    def _wait_for_room(self, todo: list[_Device]) -> None:
        """Let results come back until a build may start: fewer than ``window`` builds in
        flight, and none of ``todo`` with :data:`QUEUE_PER_DEVICE` models waiting."""
        while self.builds or self.measures:
            waiting = {d.name: d.queued for d in todo}
            for _, devs, _ in self.builds.values():
                for d in devs:
                    if d.name in waiting:
                        waiting[d.name] += 1
            full = any(d.lost is None and waiting[d.name] >= QUEUE_PER_DEVICE for d in todo)
            if len(self.builds) < self.window and not full:
                return
            self._handle_one()

    def _submit_build(self, v: Any, devs: list[_Device]) -> None:
        if not devs:
            return
        if self.net_ref is None or self.net_ref[0] != v.model:
            self.net_ref = None  # the previous model's object goes once its builds are done
            self.net_ref = (v.model, self.ray.put(self.models(v.model)))
            self.models.clear()
        formats = tuple(sorted({d.format for d in devs}))
        refs = self.build_task.options(num_cpus=1, num_returns=1 + len(formats)).remote(
            v, self.net_ref[1], formats, self.gates)
        blobs = dict(zip(formats, refs[1:]))
        self.builds[refs[0]] = (v, devs, blobs)

    def _handle_one(self) -> None:
        """Wait for the next build or measurement to finish and deal with it."""
        pending = list(self.builds) + list(self.measures)
        ready, _ = self.ray.wait(pending, num_returns=1)
        ref = ready[0]
        if ref in self.builds:
            self._built(ref, *self.builds.pop(ref))
        else:
            self._measured(ref, *self.measures.pop(ref))

    def _built(self, ref: Any, v: Any, devs: list[_Device], blobs: dict[str, Any]) -> None:
        ray = self.ray
        try:
            report = ray.get(ref)
        except ray.exceptions.RayTaskError:
            raise  # a bug in latbench: its traceback stops the sweep (what is stored stays)
        except ray.exceptions.RayError as exc:  # a worker or its host died, after Ray's retries
            report = None
            error = f"the worker building it died: {_first_line(exc)}"
        if report is not None and report.workdir_problem is not None:
            raise WorkdirError(
                f"cannot write models into the temporary folder of Ray node {report.node_id}: "
                f"{report.workdir_problem} — {self.summary.kept()}; free space there or point "
                "TMPDIR at a folder with room on that host")
        if report is not None:
            self.summary.seconds["compress"] += report.compress_s
            self.summary.seconds["export"] += report.export_s
            if report.failed_stage is not None:
                error = f"{report.failed_stage}: {report.error}"
        for d in devs:
            if d.lost is not None:
                self._finish_lost(v, d)
            elif report is None or report.failed_stage is not None:
                stage = report.failed_stage if report is not None else "compress"
                msg = report.error if report is not None else error
                d.summary.failed += 1
                self.store.add_failure(stage, msg, device_id=d.dev_id, source_model=v.model,
                                       content_hash=v.key, plan=v.plan)
                self._release(v, d)
                self._emit(d, v, "failed", err=error)
            else:
                c = self.config
                mref = d.actor.measure.remote(blobs[d.format], c.threads, c.warmup, c.repeats,
                                              c.adaptive, d.gate)
                d.queued += 1
                self.measures[mref] = (v, d, report.table)

    def _measured(self, ref: Any, v: Any, d: _Device, table: Any) -> None:
        from latbench.bench.sweep import store_measurement

        ray = self.ray
        d.queued -= 1
        if d.lost is not None:
            self._finish_lost(v, d)
            return
        try:
            m, seconds = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = _remote_cause(exc)
            if not isinstance(cause, DeviceError):
                if isinstance(cause, LatbenchError):
                    raise cause from None
                raise  # a bug in latbench
            # As a single-device sweep does: the failed measurement is recorded.
            self.store.add_failure("measure", str(cause), device_id=d.dev_id,
                                   source_model=v.model, content_hash=v.key, plan=v.plan)
            self._lose(d, f"device {d.name!r} failed: {cause}")
            d.summary.failed += 1
            self._release(v, d)
            self._emit(d, v, "failed", err=str(cause))
            return
        except ray.exceptions.RayActorError as exc:
            self._lose(d, f"the Ray actor driving device {d.name!r} died (its host or process "
                          f"is gone): {_first_line(exc)}")
            self._finish_lost(v, d)
            return
        store_measurement(self.store, v, table, d.dev_id, m)
        d.summary.measured += 1
        d.summary.seconds["measure"] += seconds
        self._release(v, d)
        self._emit(d, v, "measured", med=m.median_ms)

    # ------------------------------------------------------------------ bookkeeping
    def _lose(self, d: _Device, why: str) -> None:
        """Drop ``d``: what is queued on it fails fast (its actor is stopped)."""
        d.lost = why
        try:
            self.ray.kill(d.actor)
        except Exception:  # noqa: BLE001 -- already dead
            pass

    def _finish_lost(self, v: Any, d: _Device) -> None:
        self._release(v, d)
        self._not_measured(v, d)

    def _not_measured(self, v: Any, d: _Device) -> None:
        d.not_measured += 1
        self._emit(d, v, "failed", err=f"not measured: {d.lost}")

    def _release(self, v: Any, d: _Device) -> None:
        from latbench.bench.sweep import release_quietly

        release_quietly(self.store, d.item(v))

    def _emit(self, d: _Device, v: Any, status: str, *, med: float | None = None,
              err: str | None = None) -> None:
        d.done += 1
        if self.progress is not None:
            self.progress(SweepEvent(d.done, self.total, f"{v.model} {v.label}", status, med,
                                     err, device=d.name))
