"""Data of the loopback phone used by the ADB tests (properties, sysfs files)."""

from __future__ import annotations

PROPS = {
    "ro.product.name": "oriole",
    "ro.product.model": "Pixel 6",
    "ro.product.device": "oriole",
    "ro.soc.manufacturer": "Google",
    "ro.soc.model": "Tensor",
    "ro.board.platform": "gs101",
    "ro.hardware": "oriole",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.build.fingerprint": "google/oriole/oriole:14/UQ1A.240205.004/1:user/release-keys",
}


def sysfs(*, capped: bool = False, cpu_temp_mc: int = 41000) -> dict[str, str]:
    """cpufreq + thermal files of an 8-core phone: CPUs 0-3 little (1.8 GHz), 4-7 big (2.4 GHz)."""
    files: dict[str, str] = {}
    for c in range(8):
        top = 2400000 if c >= 4 else 1800000
        base = f"/sys/devices/system/cpu/cpu{c}/cpufreq/"
        files[base + "scaling_governor"] = "schedutil\n"
        files[base + "scaling_cur_freq"] = f"{top // 2}\n"
        files[base + "cpuinfo_max_freq"] = f"{top}\n"
        files[base + "scaling_max_freq"] = f"{1200000 if capped and c >= 4 else top}\n"
    zones = [("cpu-big-usr", cpu_temp_mc), ("cpu-little-usr", 39000), ("battery", 29800),
             ("cpu-big-usr", cpu_temp_mc - 1000)]
    for i, (name, temp) in enumerate(zones):
        files[f"/sys/class/thermal/thermal_zone{i}/type"] = name + "\n"
        files[f"/sys/class/thermal/thermal_zone{i}/temp"] = f"{temp}\n"
    return files
