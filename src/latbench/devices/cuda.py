"""The built-in ``cuda`` device: an NVIDIA GPU in this process.

Artifacts (``.onnx``) run on onnxruntime's ``CUDAExecutionProvider`` (the ``gpu`` extra,
``onnxruntime-gpu``), with input and output bound on the GPU so that host↔device copies
are not timed. Torch modules can be timed with :meth:`CudaDevice.measure_torch`, which
uses CUDA events. Without a usable GPU the device says so through
:meth:`CudaDevice.available` and every measuring call raises :class:`DeviceError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latbench.artifact import Artifact
from latbench.devices._ort import check_graph_optimization, input_feed, open_session, \
    random_input, session_options
from latbench.devices.base import Capabilities, Device, RuntimeIdentity
from latbench.exceptions import DeviceError, UserInputError
from latbench.measure.measurement import Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo
from latbench.measure.timing import Sampling, sample, wall_clock

__all__ = [
    "CudaDevice",
    "ort_cuda_status",
    "torch_cuda_status",
    "module_digest",
    "parse_smi_csv",
    "TORCH_PROVIDER",
]

ORT_PROVIDER = "CUDAExecutionProvider"
#: ``BenchSpec.provider`` of measurements taken by :meth:`CudaDevice.measure_torch`.
TORCH_PROVIDER = "torch-cuda-events"

_SMI_STATE_FIELDS = ("driver_version", "temperature.gpu", "clocks.sm", "clocks.mem",
                     "power.draw", "pstate", "memory.used")
_SMI_THROTTLE_FIELDS = ("clocks_throttle_reasons.hw_slowdown",
                        "clocks_throttle_reasons.hw_thermal_slowdown",
                        "clocks_throttle_reasons.sw_thermal_slowdown")


def _gpu_present() -> bool:
    """Whether the NVIDIA driver shows a GPU, without initialising CUDA in this process."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def ort_cuda_status() -> tuple[bool, str]:
    """Whether onnxruntime can run on the GPU, and why not.

    ``onnxruntime-gpu`` lists the CUDA provider even on a machine without a GPU, so a
    GPU is also looked for; a session that still falls back to the CPU is caught when
    it is created.
    """
    import onnxruntime as ort

    if ORT_PROVIDER not in ort.get_available_providers():
        return False, (f"onnxruntime {ort.__version__} has no {ORT_PROVIDER} "
                       "(install onnxruntime-gpu: pip install 'latbench[gpu]')")
    if not _gpu_present() and not torch_cuda_status()[0]:
        return False, "no NVIDIA GPU found (no /proc/driver/nvidia/gpus, no /dev/nvidia0)"
    return True, f"onnxruntime {ort.__version__} {ORT_PROVIDER}"


def torch_cuda_status() -> tuple[bool, str]:
    """Whether torch can run on the GPU, and why not."""
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} was built without CUDA"
    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no CUDA device"
    return True, f"torch {torch.__version__} CUDA {torch.version.cuda}"


def module_digest(model: Any) -> str:
    """A content hash of a torch module (class, structure and weights), hex sha256.

    It stands in for the artifact hash in specs made by :meth:`CudaDevice.measure_torch`.
    """
    import torch

    h = hashlib.sha256(type(model).__qualname__.encode())
    h.update(repr(model).encode())
    for key, tensor in model.state_dict().items():
        h.update(key.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        if t.numel():
            # Viewing as bytes also covers dtypes numpy lacks (bfloat16).
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def parse_smi_csv(text: str, fields: Sequence[str]) -> dict[str, str]:
    """Parse one line of ``nvidia-smi --format=csv,noheader,nounits`` into field → value.

    Values nvidia-smi cannot give (``[N/A]``, ``[Not Supported]``) are left out.

    Raises
    ------
    ValueError
        If the line does not have one value per field.
    """
    line = text.strip().splitlines()[0] if text.strip() else ""
    values = [v.strip() for v in line.split(",")]
    if len(values) != len(fields):
        raise ValueError(f"expected {len(fields)} values from nvidia-smi, got {len(values)}")
    return {f: v for f, v in zip(fields, values) if v and not v.startswith("[")}


def _smi(fields: Sequence[str], gpu: str) -> dict[str, str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        out = subprocess.run(
            [exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits", "-i", gpu],
            capture_output=True, text=True, timeout=10, check=True).stdout
        return parse_smi_csv(out, fields)
    except (OSError, subprocess.SubprocessError, ValueError):
        # State is diagnostic: a driver that cannot answer must not stop a measurement.
        return {}


def _as_number(v: str | None) -> float | None:
    try:
        return float(v) if v is not None else None
    except ValueError:
        return None


class CudaDevice(Device):
    """One NVIDIA GPU, timed in this process.

    Parameters
    ----------
    name : str
        Profile name (``cuda`` for the built-in one).
    device_id : int
        CUDA device ordinal (as CUDA numbers them, after ``CUDA_VISIBLE_DEVICES``).
    threads : int
        Host intra-op threads (they only run CPU-fallback nodes); recorded in the spec.
    graph_optimization : {"disable", "basic", "extended", "all"}
        onnxruntime graph optimisation level.
    seed : int
        Seed of the random input.

    Raises
    ------
    UserInputError
        If an option is out of range.
    """

    kind = "cuda"
    capabilities = Capabilities(formats=("onnx",), adaptive_sampling=True, layer_timing=True,
                                in_process=True)

    def __init__(self, name: str = "cuda", *, device_id: int = 0, threads: int = 1,
                 graph_optimization: str = "all", seed: int = 0) -> None:
        if device_id < 0:
            raise UserInputError(f"device {name!r}: device_id must be 0 or more, got {device_id}")
        if threads < 1:
            raise UserInputError(f"device {name!r}: threads must be at least 1, got {threads}")
        check_graph_optimization(name, graph_optimization)
        self.name = name
        self.device_id = device_id
        self.threads = threads
        self.graph_optimization = graph_optimization
        self.seed = seed

    @classmethod
    def from_profile(cls, name: str, profile: Mapping[str, Any]) -> "CudaDevice":
        """Build from a validated ``devices.toml`` table (device_id, threads, graph_optimization, seed)."""
        return cls(name, device_id=profile.get("device_id", 0), threads=profile.get("threads", 1),
                   graph_optimization=profile.get("graph_optimization", "all"),
                   seed=profile.get("seed", 0))

    # ---------------------------------------------------------------- availability
    def available(self) -> tuple[bool, str]:
        """``(True, how)`` if artifacts or torch modules can run here, else ``(False, why)``."""
        ort_ok, ort_why = ort_cuda_status()
        torch_ok, torch_why = torch_cuda_status()
        if ort_ok:
            return True, ort_why
        if torch_ok:
            return True, f"{torch_why} (torch modules only; artifacts need onnxruntime-gpu: {ort_why})"
        return False, f"{ort_why}; {torch_why}"

    def _require(self, ok_why: tuple[bool, str]) -> None:
        ok, why = ok_why
        if not ok:
            raise DeviceError(f"cuda not available: {why}")

    # ---------------------------------------------------------------- identity
    def info(self) -> DeviceInfo:
        """GPU name, compute capability, driver, runtime versions and current state.

        Raises
        ------
        DeviceError
            If no GPU can be used (the message says why).
        """
        self._require(self.available())
        import onnxruntime as ort

        facts: dict[str, Any] = {}
        versions = {"onnxruntime": ort.__version__, "numpy": np.__version__,
                    "python": platform.python_version()}
        gpu_ref = str(self.device_id)
        torch_ok, _ = torch_cuda_status()
        if torch_ok:
            import torch

            if self.device_id >= torch.cuda.device_count():
                raise DeviceError(f"cuda device_id {self.device_id} does not exist; this machine "
                                  f"has {torch.cuda.device_count()} CUDA device(s)")
            p = torch.cuda.get_device_properties(self.device_id)
            facts = {"gpu": p.name, "compute_capability": f"{p.major}.{p.minor}",
                     "total_memory_bytes": int(p.total_memory), "sm_count": p.multi_processor_count}
            uuid = getattr(p, "uuid", None)
            if uuid:
                # CUDA and nvidia-smi may order GPUs differently; the UUID names one surely.
                gpu_ref = f"GPU-{uuid}" if not str(uuid).startswith("GPU-") else str(uuid)
            versions.update(torch=torch.__version__, cuda=str(torch.version.cuda),
                            cudnn=str(torch.backends.cudnn.version()))
        smi = _smi(_SMI_STATE_FIELDS, gpu_ref)
        if not facts:
            facts = {"gpu": _smi(("name",), gpu_ref).get("name", "unknown NVIDIA GPU")}
        if "driver_version" in smi:
            versions["nvidia_driver"] = smi["driver_version"]
        os_name = f"{platform.system()} {platform.release()}".strip()
        stable = {**facts, "driver": smi.get("driver_version", ""), "os": os_name,
                  "machine": platform.machine()}
        fingerprint = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]
        state: dict[str, Any] = {"device_id": self.device_id, **facts}
        for key, field in (("temperature_c", "temperature.gpu"), ("sm_clock_mhz", "clocks.sm"),
                           ("mem_clock_mhz", "clocks.mem"), ("power_w", "power.draw"),
                           ("memory_used_mib", "memory.used")):
            value = _as_number(smi.get(field))
            if value is not None:
                state[key] = value
        if "pstate" in smi:
            state["pstate"] = smi["pstate"]
        throttle = _smi(_SMI_THROTTLE_FIELDS, gpu_ref)
        if throttle:
            state["throttled"] = any(v.lower() == "active" for v in throttle.values())
        try:
            state["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        except (AttributeError, OSError):
            pass
        return DeviceInfo(name=self.name, kind=self.kind, model=facts.get("gpu", ""),
                          soc=facts.get("gpu", ""), os=os_name, abi=platform.machine(),
                          fingerprint=fingerprint, runtime_versions=versions, state=state)

    def runtime_identity(self, threads: int | None = None) -> RuntimeIdentity:
        """onnxruntime's version and its CUDA provider; ``threads`` only run CPU-fallback nodes."""
        import onnxruntime as ort

        n = int(threads if threads is not None else self.threads)
        if n < 1:
            raise UserInputError(f"threads must be at least 1, got {n}")
        return RuntimeIdentity("onnxruntime", ort.__version__, ORT_PROVIDER, n)

    def make_torch_spec(self, model: Any, input_shape: Sequence[int], *, threads: int | None = None,
                        warmup: int = 10, repeats: int = 50) -> BenchSpec:
        """The spec for timing a torch module with :meth:`measure_torch`."""
        import torch

        return BenchSpec(
            artifact_sha256=module_digest(model), device=self.name, runtime="torch",
            runtime_version=torch.__version__, provider=TORCH_PROVIDER,
            threads=int(threads if threads is not None else self.threads),
            input_shape=tuple(int(s) for s in input_shape), warmup=warmup, repeats=repeats,
        )

    # ---------------------------------------------------------------- measuring
    def _session(self, artifact: Artifact, threads: int,
                 optimized_model_path: str | Path | None = None) -> Any:
        try:
            # Loading torch first lets onnxruntime's CUDA provider find the CUDA/cuDNN
            # libraries of torch's nvidia-* wheels (onnxruntime's documented way; its
            # preload_dlls() would print to stdout, which would corrupt --json output).
            import torch  # noqa: F401
        except ImportError:  # then a system-wide CUDA install must serve
            pass
        # The CPU provider stays as a fallback for the few nodes CUDA lacks (ORT's own
        # behaviour); what must not happen is CUDA failing and everything running on CPU.
        providers = [(ORT_PROVIDER, {"device_id": self.device_id}), "CPUExecutionProvider"]
        session = open_session(artifact.path, session_options(
            threads, self.graph_optimization, optimized_model_path=optimized_model_path),
            providers, what="onnxruntime-cuda")
        if session.get_providers()[0] != ORT_PROVIDER:
            raise DeviceError(
                f"cuda not available: onnxruntime fell back to {session.get_providers()} "
                "(CUDA or cuDNN libraries missing or mismatched; see onnxruntime's CUDA requirements)"
            )
        return session

    def executed_graph(self, artifact: Artifact, out_path: str | Path, *,
                       threads: int | None = None) -> str | None:
        """Have onnxruntime write the graph its CUDA provider executes at this device's
        optimisation level; return its label."""
        from latbench.data.executed import ort_graph_label

        self.check_format(artifact)
        self._session(artifact, self.runtime_identity(threads).threads, optimized_model_path=out_path)
        return ort_graph_label(self.graph_optimization, ORT_PROVIDER)

    def measure(self, artifact: Artifact, spec: BenchSpec, *,
                progress: Callable[[int, int], None] | None = None,
                sampling: Sampling | None = None) -> Measurement:
        """Time ``artifact`` with onnxruntime's CUDA provider; input and output stay on the GPU.

        ``Run`` synchronises the CUDA stream before returning, so host wall time
        (``perf_counter_ns``) around it covers the whole GPU work.

        Raises
        ------
        UserInputError
            If the spec does not match the artifact or device.
        DeviceError
            If onnxruntime-gpu or a GPU is missing ("cuda not available: ..."), or the run fails.
        """
        import onnxruntime as ort

        self.check_spec(artifact, spec)
        self.check_sampling(sampling)
        ok, why = ort_cuda_status()
        if not ok:
            hint = "; torch modules can still be timed with measure_torch" if torch_cuda_status()[0] else ""
            raise DeviceError(f"cuda not available: {why}{hint}")
        before = self.info()
        session = self._session(artifact, spec.threads)
        name, x = input_feed(session, spec.input_shape, self.seed)
        try:
            x_gpu = ort.OrtValue.ortvalue_from_numpy(x, "cuda", self.device_id)
            binding = session.io_binding()
            binding.bind_ortvalue_input(name, x_gpu)
            for out in session.get_outputs():
                binding.bind_output(out.name, "cuda", self.device_id)
            run_with_iobinding = session.run_with_iobinding
            sync = getattr(binding, "synchronize_outputs", lambda: None)

            def once() -> None:
                run_with_iobinding(binding)
                sync()

            result = sample(wall_clock(once), warmup=spec.warmup, repeats=spec.repeats,
                            sampling=sampling, progress=progress)
        except (UserInputError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise DeviceError(f"onnxruntime-cuda failed running {artifact.path}: {exc}") from None
        after = self.info()
        extra = {**result.extra(), "graph_optimization": self.graph_optimization,
                 "io_binding": "cuda", "device_id": self.device_id, "seed": self.seed}
        return self._measurement(spec, result.samples_s, before, after, extra, sampling)

    def measure_torch(self, model: Any, input_shape: Sequence[int], spec: BenchSpec | None = None,
                      *, progress: Callable[[int, int], None] | None = None,
                      sampling: Sampling | None = None) -> Measurement:
        """Time a torch module on the GPU with CUDA events.

        Each sample is the GPU time between an event recorded before the forward call and
        one recorded after it, on the current stream; the end event is synchronised
        before the next run, so runs never overlap.

        Parameters
        ----------
        model : torch.nn.Module
            Moved to the GPU and put in eval mode (the caller's module is changed).
        input_shape : sequence of int
            Full input shape including the batch; filled with seeded random float32 data.
        spec : BenchSpec, optional
            From :meth:`make_torch_spec`; made with defaults when ``None``.

        Raises
        ------
        DeviceError
            If torch has no CUDA ("cuda not available: ...") or the forward pass fails.
        """
        self._require(torch_cuda_status())
        import torch

        if spec is None:
            spec = self.make_torch_spec(model, input_shape)
        if spec.provider != TORCH_PROVIDER or spec.device != self.name:
            raise UserInputError("spec was not made by make_torch_spec for this device")
        if tuple(spec.input_shape) != tuple(int(s) for s in input_shape):
            raise UserInputError(f"spec input shape {spec.input_shape} differs from {tuple(input_shape)}")
        before = self.info()
        dev = torch.device("cuda", self.device_id)
        x_host = torch.from_numpy(random_input(tuple(spec.input_shape), np.float32, self.seed))
        old_threads = torch.get_num_threads()
        torch.set_num_threads(spec.threads)
        try:
            # Moved outside inference mode: parameters made inside it would become inference
            # tensors, and the caller could no longer train the module.
            model = model.to(dev).eval()
            param = next(model.parameters(), None)
            x = x_host.to(dev, dtype=param.dtype if param is not None else torch.float32)
            with torch.cuda.device(dev), torch.inference_mode():
                stream = torch.cuda.current_stream(dev)
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)

                def once() -> float:
                    start.record(stream)
                    model(x)
                    end.record(stream)
                    end.synchronize()
                    return start.elapsed_time(end) * 1e-3  # elapsed_time is in ms

                torch.cuda.synchronize(dev)
                result = sample(once, warmup=spec.warmup, repeats=spec.repeats,
                                sampling=sampling, progress=progress)
        except (UserInputError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise DeviceError(f"torch-cuda failed running {type(model).__name__}: {exc}") from None
        finally:
            torch.set_num_threads(old_threads)
        after = self.info()
        extra = {**result.extra(), "timer": "cuda-events", "device_id": self.device_id,
                 "cudnn_benchmark": bool(torch.backends.cudnn.benchmark), "seed": self.seed}
        return self._measurement(spec, result.samples_s, before, after, extra, sampling)

    @staticmethod
    def _measurement(spec: BenchSpec, samples: tuple[float, ...], before: DeviceInfo,
                     after: DeviceInfo, extra: dict[str, Any], sampling: Sampling | None
                     ) -> Measurement:
        if sampling is not None:
            extra["sampling"] = sampling.to_dict()
            return Measurement(spec=spec, samples_s=samples, info_before=before, info_after=after,
                               extra=extra, confidence_threshold=sampling.threshold)
        return Measurement(spec=spec, samples_s=samples, info_before=before, info_after=after,
                           extra=extra)
