"""An Android phone or board reached over ADB, timing models with a pushed runner binary."""

from __future__ import annotations

import math
import posixpath
import re
import shlex
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from latbench.artifact import Artifact, sha256_file
from latbench.devices.adb import parsers
from latbench.devices.adb import state as state_mod
from latbench.devices.adb.runners import BENCHMARK_MODEL_KINDS, RUNNERS, Runner, \
    infer_runner_kind
from latbench.devices.adb.transport import AdbConnection, ShellResult
from latbench.devices.base import Capabilities, Device, OpProfile, RuntimeIdentity
from latbench.measure.measurement import Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo
from latbench.measure.timing import Sampling
from latbench.exceptions import DeviceError, DeviceTimeoutError, OpProfileError, \
    RunnerOutputError, UserInputError
from latbench.registry import suggest

__all__ = ["AdbDevice", "PROFILE_OPTIONS"]

_NUMBER = (int, float)

#: Profile keys the ``adb`` kind accepts, with their types.
PROFILE_OPTIONS: dict[str, tuple[type, ...]] = {
    "kind": (str,), "description": (str,),
    "host": (str,), "serial": (str,), "adbkey": (str,),
    "runner": (str,), "runner_kind": (str,), "runner_args": (list,), "runtime_version": (str,),
    "provider": (str,),
    "threads": (int,), "cpus": (str, int), "remote_dir": (str,), "runs_per_call": (int,),
    "timeout_s": _NUMBER, "io_timeout_s": _NUMBER, "auth_timeout_s": _NUMBER,
    "cooldown_temp_c": _NUMBER, "cooldown_timeout_s": _NUMBER, "cooldown_poll_s": _NUMBER,
    "throttle_temp_c": _NUMBER, "keep_models": (bool,),
}

#: Profile keys whose value is a boolean (TOML ``true``/``false``).
_BOOL_OPTIONS = frozenset({"keep_models"})

#: A name latbench gives a model it pushes: ``model-<16 hex of sha256>[-<owner token>]``.
_MODEL_NAME = re.compile(r"^model-[0-9a-f]{16}(-lb[0-9a-f]{8}p\d+s\d+)?\.(onnx|tflite)(\..*)?$")


DEFAULT_REMOTE_DIR = "/data/local/tmp/latbench"


def _normalise_mask(name: str, cpus: str | int) -> str:
    text = format(cpus, "x") if isinstance(cpus, int) else cpus.strip().lower()
    text = text.removeprefix("0x")
    try:
        state_mod.cpus_from_mask(text)
    except ValueError:
        raise UserInputError(f"device {name!r}: cpus = {cpus!r} is not a taskset mask; use hex "
                             f"like \"f0\" (CPUs 4-7)") from None
    return text


class AdbDevice(Device):
    """A device over ADB that times models with ``onnxruntime_perf_test`` or ``benchmark_model``
    (the classic TFLite tool or the LiteRT one, told apart by its ``--help`` output).

    The runner binary (a local file) and each model are pushed once into ``remote_dir``
    under names carrying their sha256, and reused while the hash matches. Every run is
    pinned with ``taskset`` and an explicit thread count; the CPU governors, clocks,
    temperatures, battery and battery-saver state are read before and after it.

    Parameters
    ----------
    name : str
        Profile name.
    runner : str
        Local path of the runner binary (pushed), or an absolute path on the device of one
        already there.
    host, serial : str, optional
        ``"IP:port"`` (TCP) or USB serial; with neither, the single USB device attached.
    runner_kind : {"ort", "tflite", "litert"}, optional
        Inferred from the runner's file name when left out; a ``benchmark_model`` is then
        asked for its ``--help`` to tell the classic TFLite tool from the LiteRT one (given
        explicitly, the answer must agree).
    runner_args : list of str, optional
        More arguments for every runner call (e.g. ``--dispatch_library_path=...`` for the
        LiteRT tool's NPU).
    threads : int, optional
        Runner threads (default: the number of CPUs in ``cpus``).
    cpus : str or int, optional
        ``taskset`` hex mask (default: the cores with the highest maximum clock).
    provider : str
        Execution provider / delegate, ``cpu`` by default.
    remote_dir : str
        Absolute directory on the device for runners, models and results.
    timeout_s : float
        Limit of one runner call in seconds.
    io_timeout_s, auth_timeout_s : float
        Limits of connecting, pushing and short commands; of accepting the key, in seconds.
    cooldown_temp_c : float, optional
        Wait before timing until the hottest CPU zone is under this (°C) ...
    cooldown_timeout_s, cooldown_poll_s : float
        ... for at most this long, polling this often (seconds).
    throttle_temp_c : float
        CPU zone temperature (°C) that flags a run as throttled.
    adbkey : str, optional
        ADB private key (default ``~/.android/adbkey``; generated when missing).
    runs_per_call : int
        ``benchmark_model`` runs per call (1-3), see :mod:`latbench.devices.adb.runners`.
    runtime_version : str, optional
        The runner's version, when known; otherwise its name and sha256 stand in.
    keep_models : bool
        Keep pushed models on the device under content names (``model-<sha>.onnx``) for
        later runs (and other processes) to reuse. By default each model is pushed under a
        name of this process, kept while it is measured again (a sweep's operator profile)
        and removed when another model is measured and when the device is released (the
        end of a ``with`` block): a sweep leaves no models behind.

    Notes
    -----
    Concurrent use. Every run writes its own remote files (names carry this process's
    identity, :func:`latbench.concurrency.owner_token`, and a run number), and runs on one
    physical device (its ``ro.serialno``, else its address) are serialised across the
    latbench processes of this host (:func:`latbench.concurrency.device_lock`): a second
    process waits, saying so in a ``note:``, since two runners on one phone disturb each
    other's timings. Files that killed processes of this host left in ``remote_dir`` are
    removed on the next run; the pushed runner is kept (a cache by content).
    """

    kind = "adb"

    def __init__(self, name: str, *, runner: str, host: str | None = None,
                 serial: str | None = None, runner_kind: str | None = None,
                 threads: int | None = None, cpus: str | int | None = None,
                 provider: str = "cpu", remote_dir: str = DEFAULT_REMOTE_DIR,
                 timeout_s: float = 600.0, io_timeout_s: float = 10.0,
                 auth_timeout_s: float = 30.0, cooldown_temp_c: float | None = None,
                 cooldown_timeout_s: float = 300.0, cooldown_poll_s: float = 5.0,
                 throttle_temp_c: float = state_mod.DEFAULT_THROTTLE_TEMP_C,
                 adbkey: str | None = None, runs_per_call: int = 3,
                 runtime_version: str | None = None,
                 runner_args: list[str] | tuple[str, ...] = (),
                 keep_models: bool = False) -> None:
        self.name = name
        self.keep_models = bool(keep_models)
        if not remote_dir.startswith("/"):
            raise UserInputError(f"device {name!r}: remote_dir must be an absolute path on the "
                                 f"device, got {remote_dir!r}")
        if threads is not None and threads < 1:
            raise UserInputError(f"device {name!r}: threads must be at least 1, got {threads}")
        # TOML can write inf and nan: nan passes every comparison and inf never times out
        for key, value, least in (("timeout_s", timeout_s, "positive"),
                                  ("io_timeout_s", io_timeout_s, "positive"),
                                  ("auth_timeout_s", auth_timeout_s, "positive"),
                                  ("cooldown_timeout_s", cooldown_timeout_s, "0 or more"),
                                  ("cooldown_poll_s", cooldown_poll_s, "positive"),
                                  ("cooldown_temp_c", cooldown_temp_c, ""),
                                  ("throttle_temp_c", throttle_temp_c, "")):
            if value is None and key == "cooldown_temp_c":
                continue
            if not math.isfinite(value) or (least == "positive" and value <= 0) \
                    or (least == "0 or more" and value < 0):
                unit = "seconds" if key.endswith("_s") else "°C"
                raise UserInputError(f"device {name!r}: {key} must be a finite number of {unit}"
                                     f"{f' ({least})' if least else ''}, got {value}")
        self.runner_path = runner
        kind = runner_kind or infer_runner_kind(runner)
        runner_cls = RUNNERS.get(kind)
        if not all(isinstance(a, str) for a in runner_args):
            raise UserInputError(f"device {name!r}: runner_args must be a list of strings, got "
                                 f"{list(runner_args)!r}")
        self._explicit_kind = runner_kind is not None
        self._generation_checked = kind not in BENCHMARK_MODEL_KINDS
        self._runs_per_call = runs_per_call
        self._runner_args = tuple(runner_args)
        self.remote_dir = remote_dir.rstrip("/") or "/"
        self.threads = threads
        self.cpu_mask = _normalise_mask(name, cpus) if cpus is not None else None
        self.provider = provider
        self.timeout_s = float(timeout_s)
        self.cooldown_temp_c = cooldown_temp_c
        self.cooldown_timeout_s = float(cooldown_timeout_s)
        self.cooldown_poll_s = float(cooldown_poll_s)
        self.throttle_temp_c = float(throttle_temp_c)
        self._runtime_version = runtime_version
        self._local_runner = Path(runner).expanduser()
        self._runner_sha: str | None = None
        if self._local_runner.is_file():
            remote = posixpath.join(self.remote_dir, self._remote_runner_name())
        elif runner.startswith("/"):
            remote = runner  # already on the device; checked when first used
        else:
            raise UserInputError(f"device {name!r}: runner {runner!r} is not a file; give the "
                                 f"local path of the runner binary (or an absolute path on the "
                                 f"device)")
        self.runner: Runner = self._make_runner(runner_cls, remote)
        self.conn = AdbConnection(name, host=host, serial=serial, adbkey=adbkey,
                                  io_timeout_s=io_timeout_s, auth_timeout_s=auth_timeout_s)
        self._identity: dict[str, str] | None = None
        self._sleep: Callable[[float], None] = time.sleep
        self._runs = 0  # runs of this process on the device (per-run remote file names)
        self._own_models: list[str] = []  # models this object pushed under its own names
        self._swept = False  # whether files of killed processes were looked for

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_profile(cls, name: str, profile: Mapping[str, Any]) -> "AdbDevice":
        """Build the device from a ``kind = "adb"`` profile table.

        Raises
        ------
        UserInputError
            If a key is unknown or of the wrong type, or ``runner`` is missing.
        """
        for key, value in profile.items():
            if key not in PROFILE_OPTIONS:
                raise UserInputError(f"[{name}] unknown key {key!r}"
                                     f"{suggest(key, list(PROFILE_OPTIONS))} for kind 'adb'; "
                                     f"allowed: {', '.join(sorted(PROFILE_OPTIONS))}")
            types = PROFILE_OPTIONS[key]
            if not isinstance(value, types) or (isinstance(value, bool)
                                                 and key not in _BOOL_OPTIONS):
                want = " or ".join(t.__name__ for t in types)
                raise UserInputError(f"[{name}] {key} must be {want}, got {value!r}")
        if "runner" not in profile:
            raise UserInputError(f"[{name}] kind 'adb' needs runner = \"path/to/"
                                 f"onnxruntime_perf_test\" (or benchmark_model)")
        opts = {k: v for k, v in profile.items() if k not in ("kind", "description")}
        return cls(name, **opts)

    # ------------------------------------------------------------------------ helpers
    def _make_runner(self, runner_cls: type[Runner], remote: str) -> Runner:
        extra: dict[str, Any] = {"runs_per_call": self._runs_per_call} \
            if runner_cls.kind in BENCHMARK_MODEL_KINDS else {}
        return runner_cls(remote, provider=self.provider, extra_args=self._runner_args, **extra)

    def resolve_runner(self) -> Runner:
        """The runner, after telling a ``benchmark_model``'s generation from its ``--help``
        (once; this may push the runner and ask the device).

        Raises
        ------
        DeviceError
            If the binary is no ``benchmark_model`` latbench knows, or is not the generation
            ``runner_kind`` names.
        UserInputError
            If the profile's provider is not one the detected generation has.
        """
        if self._generation_checked:
            return self.runner
        self._ensure_runner()
        r = self.conn.shell(f"{shlex.quote(self.runner.remote_path)} --help",
                            what="asking the runner which benchmark_model it is")
        try:
            found = parsers.detect_benchmark_model(r.output)
        except RunnerOutputError as exc:
            raise DeviceError(f"device {self.name!r}: runner {self.runner.name}: {exc}; last "
                              f"output: {_tail(r.output)}") from None
        if found != self.runner.kind:
            cls = RUNNERS.get(found)
            if self._explicit_kind:
                raise DeviceError(
                    f"device {self.name!r}: the profile says runner_kind = {self.runner.kind!r} "
                    f"but {self.runner.name} is the {cls.tool} (by its --help); set runner_kind = "
                    f"\"{found}\" or leave it out")
            self.runner = self._make_runner(cls, self.runner.remote_path)
        self._generation_checked = True
        return self.runner

    def _remote_runner_name(self) -> str:
        return f"{self._local_runner.name}-{self._local_sha()[:12]}"

    def _local_sha(self) -> str:
        if self._runner_sha is None:
            self._runner_sha = sha256_file(self._local_runner)
        return self._runner_sha

    @property
    def pushes_runner(self) -> bool:
        """Whether the runner is a local file that latbench pushes."""
        return self._local_runner.is_file()

    def runtime_version(self) -> str:
        """The runner's version if configured, else ``name sha256:<12 hex>`` (may ask the device)."""
        if self._runtime_version:
            return self._runtime_version
        if self.pushes_runner:
            return f"{self._local_runner.name} sha256:{self._local_sha()[:12]}"
        r = self.conn.shell(f"sha256sum {shlex.quote(self.runner.remote_path)}",
                            what="hashing the runner")
        digest = r.output.split()[0] if r.rc == 0 and r.output.split() else "unknown"
        self._runtime_version = f"{self.runner.name} sha256:{digest[:12]}"
        return self._runtime_version

    def _identity_props(self) -> dict[str, str]:
        if self._identity is None:
            r = self.conn.shell("getprop", what="reading device properties")
            props = state_mod.parse_getprop(r.output)
            if r.rc != 0 or not props:
                raise DeviceError(f"device {self.name!r}: 'getprop' gave no properties; is this "
                                  f"an Android device?")
            self._identity = props
        return self._identity

    def _read_state(self, cpus: list[int]) -> dict[str, Any]:
        r = self.conn.shell(state_mod.STATE_COMMAND, what="reading CPU/thermal/battery state")
        return state_mod.parse_state(r.output, pinned_cpus=cpus,
                                     throttle_temp_c=self.throttle_temp_c)

    def resolve_cpus(self) -> tuple[str, list[int]]:
        """The ``taskset`` mask and its CPUs; without ``cpus``, the fastest cores (asks the device).

        Raises
        ------
        DeviceError
            If ``cpus`` is not set and the device reports no CPU frequencies.
        """
        if self.cpu_mask is None:
            top = self._read_state([]).get("cpuinfo_max_freq_khz", {})
            if not top:
                raise DeviceError(f"device {self.name!r} reports no CPU frequencies; set cpus = "
                                  f"\"f0\" (a taskset mask) in the profile")
            best = max(top.values())
            chosen = sorted(int(c[3:]) for c, f in top.items() if f == best)
            self.cpu_mask = format(sum(1 << c for c in chosen), "x")
        return self.cpu_mask, state_mod.cpus_from_mask(self.cpu_mask)

    def _snapshot(self, cpus: list[int], extra_state: Mapping[str, Any] | None = None
                  ) -> DeviceInfo:
        props = self._identity_props()
        st = self._read_state(cpus)
        st["cpu_mask"] = self.cpu_mask
        if extra_state:
            st.update(extra_state)
            if extra_state.get("cooldown", {}).get("cooled") is False:
                st["throttle_reasons"] = [*st["throttle_reasons"],
                                          f"did not cool under {self.cooldown_temp_c} °C"]
                st["throttled"] = True
        soc = " ".join(p for p in (props.get("ro.soc.manufacturer", ""),
                                   props.get("ro.soc.model", "")) if p) \
            or props.get("ro.board.platform") or props.get("ro.hardware", "")
        release, sdk = props.get("ro.build.version.release", ""), props.get("ro.build.version.sdk", "")
        return DeviceInfo(
            name=self.name, kind=self.kind, model=props.get("ro.product.model", ""), soc=soc,
            os=f"Android {release} (SDK {sdk})" if release or sdk else "",
            abi=props.get("ro.product.cpu.abi", ""),
            fingerprint=props.get("ro.build.fingerprint", ""),
            runtime_versions={self.resolve_runner().runtime: self.runtime_version()},
            state=st,
        )

    # ---------------------------------------------------------------------- Device API
    def info(self) -> DeviceInfo:
        """Identity (``getprop``), runner version and current state of the device.

        Raises
        ------
        DeviceError
            If the device cannot be reached.
        """
        _, cpus = self.resolve_cpus()
        return self._snapshot(cpus)

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        """The runner's model format; a fixed count of runs (the runner times outside this
        process); single layers can be pushed and timed like any model; ``benchmark_model``
        also profiles every operator of a model in one call."""
        return Capabilities(formats=(self.runner.model_suffix.lstrip("."),),
                            adaptive_sampling=False, layer_timing=True, in_process=False,
                            op_profiles=self.runner.kind in BENCHMARK_MODEL_KINDS)

    def runtime_identity(self, threads: int | None = None) -> RuntimeIdentity:
        """The runner's runtime, its version, the provider and the threads (without
        ``threads`` here or in the profile: one per pinned CPU, which may ask the device).

        Raises
        ------
        UserInputError
            If ``threads`` < 1.
        """
        n = threads if threads is not None else self.threads
        if n is None:
            n = len(self.resolve_cpus()[1])
        if n < 1:
            raise UserInputError(f"threads must be at least 1, got {n}")
        runner = self.resolve_runner()
        return RuntimeIdentity(runner.runtime, self.runtime_version(), self.provider, int(n))

    def check_format(self, artifact: Artifact) -> None:
        """Accept a model in the runner's format, or one with a file of that format beside it.

        Raises
        ------
        UserInputError
            If neither exists.
        """
        self._model_file(artifact)

    def _model_file(self, artifact: Artifact) -> Path:
        suffix = self.runner.model_suffix
        path = Path(artifact.path)
        if path.suffix == suffix:
            return path
        alt = path.with_suffix(suffix)
        if not alt.is_file():
            raise UserInputError(f"runner {self.runner.name!r} needs a {suffix} model; convert "
                                 f"{path.name} and put it at {alt}")
        return alt

    def _ensure_runner(self) -> None:
        if self.pushes_runner:
            self.conn.ensure_file(self._local_runner, self.runner.remote_path, self._local_sha(),
                                  executable=True, timeout_s=self.timeout_s)
            return
        r = self.conn.shell(f"ls {shlex.quote(self.runner.remote_path)}",
                            what="looking for the runner")
        if r.rc != 0:
            raise DeviceError(
                f"device {self.name!r}: runner {self.runner.remote_path} is missing on the device "
                f"(and is not a local file); set runner to the local path of the binary so "
                f"latbench pushes it, or 'adb push' it there")

    def _ensure_model(self, artifact: Artifact) -> str:
        from latbench.concurrency import owner_token

        local = self._model_file(artifact)
        sha = artifact.sha256 if local == Path(artifact.path) else sha256_file(local)
        if self.keep_models:
            remote = posixpath.join(self.remote_dir, f"model-{sha[:16]}{self.runner.model_suffix}")
        else:
            remote = posixpath.join(self.remote_dir, f"model-{sha[:16]}-{owner_token()}"
                                                     f"{self.runner.model_suffix}")
            # One model of this process on the device at a time: the last one stays for a
            # second call on it (a sweep profiles operators right after timing).
            self._remove_models([m for m in self._own_models if m != remote])
            if remote not in self._own_models:
                self._own_models.append(remote)
        self.conn.ensure_file(local, remote, sha, timeout_s=self.timeout_s)
        return remote

    # ---------------------------------------------------------------- concurrent use
    def lock_key(self) -> str:
        """What names the physical device for :func:`latbench.concurrency.device_lock`:
        ``adb-serial:<ro.serialno>``, or ``adb:<host:port or USB serial>`` when the device
        reports no serial (asks the device once).

        Raises
        ------
        DeviceError
            If the device cannot be reached.
        """
        serial = self._identity_props().get("ro.serialno", "").strip()
        return f"adb-serial:{serial}" if serial else f"adb:{self.conn.where}"

    @contextmanager
    def _exclusive(self, what: str) -> Iterator[None]:
        """Hold the device for one run (pushes, runner calls, result files), waiting for
        other latbench processes of this host that measure on it."""
        from latbench.concurrency import device_lock

        with device_lock(self.lock_key(), device=self.name, what=what):
            self._remove_stale_files()
            yield

    def _next_run_id(self) -> str:
        from latbench.concurrency import owner_token

        self._runs += 1
        return f"{owner_token()}-{self._runs}"

    def _remove_stale_files(self) -> None:
        """Remove (once per device object) what killed latbench processes of this host left
        in ``remote_dir``: result files, models and half-pushed ``.part`` files whose names
        carry the owner token of a process that no longer runs. Best effort."""
        from latbench.concurrency import stale_token

        if self._swept:
            return
        self._swept = True
        r = self.conn.shell(f"ls {shlex.quote(self.remote_dir)}",
                            what="listing remote_dir for files of killed runs")
        if r.rc != 0:  # no remote_dir yet: nothing left behind
            return
        stale = [n for n in (ln.strip() for ln in r.output.splitlines())
                 if n and "/" not in n and stale_token(n)]
        if stale:
            self.conn.shell("rm -f " + " ".join(shlex.quote(posixpath.join(self.remote_dir, n))
                                                for n in stale),
                            what="removing files of killed runs")

    def _remove_models(self, remotes: list[str]) -> None:
        if not remotes:
            return
        self.conn.shell("rm -f " + " ".join(shlex.quote(m) for m in remotes),
                        what="removing measured models")
        for m in remotes:
            self.conn.forget(m)
            if m in self._own_models:
                self._own_models.remove(m)

    def remove_remote_files(self) -> list[str]:
        """Remove the models this object pushed under its own names (not with
        ``keep_models``); the runner stays. Best effort: a device that is not connected any
        more is left alone (the next run removes them, their owner being gone).

        Returns
        -------
        list of str
            The remote paths removed.
        """
        mine = list(self._own_models)
        if not mine or not self.conn.connected:
            return []
        try:
            self._remove_models(mine)
        except DeviceError:
            return []
        return mine

    def __exit__(self, *exc: object) -> None:
        try:
            self.remove_remote_files()
        finally:
            self.close()

    def _check_run(self, r: ShellResult) -> None:
        name, path = self.runner.name, self.runner.remote_path
        tail = _tail(r.output)
        if r.rc is None:
            raise DeviceError(f"device {self.name!r}: runner {name} ended without an exit status "
                              f"(the shell was killed?); last output: {tail}")
        if r.rc == 0:
            return
        if r.rc in (126, 127):
            self.conn.forget(path)
            hint = ("it will be pushed again on the next run" if self.pushes_runner else
                    "set runner to the local binary so latbench pushes it")
            raise DeviceError(f"device {self.name!r}: runner {path} is missing or not executable "
                              f"(exit {r.rc}: {tail}); {hint}")
        if r.rc > 128:
            raise DeviceError(f"device {self.name!r}: runner {name} crashed (signal {r.rc - 128}); "
                              f"last output: {tail}; check the model runs with this runner/ABI")
        raise DeviceError(f"device {self.name!r}: runner {name} failed with exit status {r.rc}: "
                          f"{tail}; check the runner's options and the model")

    def _kill_runner(self, own_file: str) -> None:
        # A timed-out runner may still hold the cores; stopping it is best effort. Only this
        # run's runner: the pattern (an extended regex) names a file of this run, so another
        # process's runner on the same phone is left alone.
        def literal(text: str) -> str:  # any other character matches as '.' (no quoting)
            return re.sub(r"[^A-Za-z0-9_.-]", ".", text)

        pattern = f"{literal(self.runner.name)}.+{literal(posixpath.basename(own_file))}"
        try:
            self.conn.shell(f"pkill -f {shlex.quote(pattern)}",
                            what="stopping the timed-out runner")
        except DeviceError:
            pass

    def measure(self, artifact: Artifact, spec: BenchSpec, *,
                progress: Callable[[int, int], None] | None = None,
                sampling: Sampling | None = None) -> Measurement:
        """Time ``artifact`` on the device as ``spec`` says.

        Parameters
        ----------
        artifact : Artifact
            The model in the runner's format (``.onnx`` for perf_test, ``.tflite`` for
            ``benchmark_model``; a file of that format beside it is also taken).
        spec : BenchSpec
            From :meth:`make_spec`.
        progress : callable, optional
            Called with (timed runs done, timed runs in all) after each runner call.
        sampling : Sampling, optional
            Only a fixed count is possible here: an adaptive policy is refused.

        Returns
        -------
        Measurement
            Per-run samples in seconds; ``extra`` holds the runner's own summary (seconds),
            the runner command line, what was pushed, and any cooldown.

        Raises
        ------
        UserInputError
            If the spec does not fit this device, or a needed model file is missing.
        DeviceError
            Unreachable or unauthorised device, missing runner, runner crash or non-zero
            exit, timeout, dropped connection, or unreadable runner output.
        """
        self.resolve_runner()
        self.check_spec(artifact, spec)
        self.check_sampling(sampling)
        mask, cpus = self.resolve_cpus()
        with self._exclusive(f"timing {Path(artifact.path).name}"):
            return self._measure_locked(artifact, spec, mask, cpus, progress)

    def _measure_locked(self, artifact: Artifact, spec: BenchSpec, mask: str, cpus: list[int],
                        progress: Callable[[int, int], None] | None) -> Measurement:
        pushed_before = len(self.conn.pushed)
        self._ensure_runner()
        remote_model = self._ensure_model(artifact)
        extra_state: dict[str, Any] = {}
        if self.cooldown_temp_c is not None:
            cooled, waited, temp = state_mod.wait_for_cooldown(
                lambda: self._read_state(cpus).get("max_cpu_temp_c"), self.cooldown_temp_c,
                self.cooldown_timeout_s, poll_s=self.cooldown_poll_s, sleep=self._sleep)
            extra_state["cooldown"] = {"cooled": cooled, "waited_s": waited, "temp_c": temp,
                                       "threshold_c": self.cooldown_temp_c}
        before = self._snapshot(cpus, extra_state)
        calls = self.runner.invocations(remote_model, cpu_mask=mask, threads=spec.threads,
                                        warmup=spec.warmup, repeats=spec.repeats,
                                        work_dir=self.remote_dir, run_id=self._next_run_id())
        total, done = sum(c.runs for c in calls), 0
        outputs: list[str] = []
        results: list[str | None] = []
        for call in calls:
            try:
                outputs.append(self._run_call(call, remote_model))
                if call.result_file is not None:
                    q = shlex.quote(call.result_file)
                    res = self.conn.shell(f"cat {q}", what="reading the runner's result file")
                    if res.rc != 0:
                        raise DeviceError(f"device {self.name!r}: runner {self.runner.name} wrote "
                                          f"no result file {call.result_file}: "
                                          f"{_tail(res.output)}")
                    results.append(res.output)
                else:
                    results.append(None)
            finally:
                if call.result_file is not None and self.conn.connected:
                    self.conn.shell(f"rm -f {shlex.quote(call.result_file)}",
                                    what="removing the runner's result file")
            done += call.runs
            if progress is not None:
                progress(done, total)
        after = self._snapshot(cpus)
        try:
            parsed = self.runner.parse(outputs, results, warmup=spec.warmup, repeats=spec.repeats)
            parsers.check_samples(parsed.samples_s, spec.repeats)
        except RunnerOutputError as exc:
            raise DeviceError(f"device {self.name!r}: cannot read {self.runner.name}'s output "
                              f"({exc}); last output: {_tail(outputs[-1] if outputs else '')}"
                              ) from None
        extra = {**parsed.summary, "command": calls[0].command, "calls": len(calls),
                 "pushed": self.conn.pushed[pushed_before:], **extra_state}
        return Measurement(spec=spec, samples_s=parsed.samples_s, info_before=before,
                           info_after=after, extra=extra)

    def _run_call(self, call: Any, remote_model: str) -> str:
        """Run one runner call; its output. A timed-out runner is stopped."""
        try:
            r = self.conn.shell(call.command, timeout_s=self.timeout_s,
                                what=f"running {self.runner.name}")
        except DeviceTimeoutError:
            self._kill_runner(call.result_file or remote_model)
            raise
        self._check_run(r)
        return r.output

    def profile_ops(self, artifact: Artifact, spec: BenchSpec) -> OpProfile:
        """Run ``benchmark_model`` once with per-operator profiling (``--enable_op_profiling``
        for the classic tool, ``--use_profiler`` for the LiteRT one) over ``spec.repeats``
        inferences after ``spec.warmup`` warm-up runs, pinned like :meth:`measure`.

        Raises
        ------
        UserInputError
            If the runner is not a ``benchmark_model``, or the spec does not fit.
        OpProfileError
            If the run prints no per-operator table latbench reads.
        DeviceError
            If the run fails.
        """
        runner = self.resolve_runner()
        if not isinstance(runner, RUNNERS.get("tflite")):
            raise UserInputError(f"device {self.name!r}: {runner.tool} does not profile operators;"
                                 " measure layers alone instead")
        self.check_spec(artifact, spec)
        mask, cpus = self.resolve_cpus()
        with self._exclusive(f"profiling {Path(artifact.path).name}"):
            self._ensure_runner()
            remote_model = self._ensure_model(artifact)
            before = self._snapshot(cpus)
            call = runner.profile_invocation(remote_model, cpu_mask=mask, threads=spec.threads,
                                             warmup=spec.warmup, runs=spec.repeats)
            try:
                r = self.conn.shell(call.command, timeout_s=self.timeout_s,
                                    what=f"profiling with {runner.name}")
            except DeviceTimeoutError:
                self._kill_runner(remote_model)
                raise
            self._check_run(r)
            after = self._snapshot(cpus)
        try:
            rows = runner.parse_profile(r.output, spec.repeats)
        except RunnerOutputError as exc:
            raise OpProfileError(f"device {self.name!r}: cannot read {runner.name}'s operator "
                                 f"profile ({exc}); last output: {_tail(r.output)}") from None
        return OpProfile(tuple(rows), spec.repeats, runner.tool, before, after,
                         extra={"command": call.command})

    def close(self) -> None:
        """Close the ADB connection."""
        self.conn.close()


def _tail(text: str, lines: int = 5) -> str:
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"
