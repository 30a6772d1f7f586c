"""Read and judge an Android device's performance state (governors, clocks, heat, battery).

One shell command (:data:`STATE_COMMAND`) reads everything; :func:`parse_state` turns its
output into the plain, JSON-friendly dict stored in ``DeviceInfo.state``. Frequencies are
in kHz (as sysfs gives them), temperatures in °C.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "STATE_COMMAND",
    "DEFAULT_THROTTLE_TEMP_C",
    "parse_getprop",
    "parse_battery",
    "parse_state",
    "throttle_reasons",
    "cpus_from_mask",
    "wait_for_cooldown",
]

#: A CPU-ish thermal zone at or above this temperature (°C) marks a run as throttled.
DEFAULT_THROTTLE_TEMP_C = 80.0

_CPU = "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/"
_THERMAL = "/sys/class/thermal/thermal_zone*/"

#: ``grep -H . FILES`` prints ``path:value`` per readable file, so values keep their CPU or
#: zone; unreadable files only add ``grep:`` error lines, which the parser ignores. No shell
#: redirections are used, so the command runs under any ``sh`` (and the test device).
STATE_COMMAND = (
    "grep -H . "
    + " ".join(_CPU + f for f in ("scaling_governor", "scaling_cur_freq", "cpuinfo_max_freq",
                                  "scaling_max_freq"))
    + " " + _THERMAL + "type " + _THERMAL + "temp"
    + "; echo __section=battery; dumpsys battery"
    + "; echo __section=low_power; settings get global low_power"
)

_CPU_LINE = re.compile(r"^/sys/devices/system/cpu/cpu(\d+)/cpufreq/(\w+):(.*)$")
_ZONE_LINE = re.compile(r"^/sys/class/thermal/thermal_zone(\d+)/(type|temp):(.*)$")
_CPU_ZONE = re.compile(r"cpu|soc|cluster|tsens|core|big|little", re.IGNORECASE)
_FREQ_KEYS = {"scaling_cur_freq": "cur_freq_khz", "cpuinfo_max_freq": "cpuinfo_max_freq_khz",
              "scaling_max_freq": "scaling_max_freq_khz"}
_PLUGGED = {"AC powered": "ac", "USB powered": "usb", "Wireless powered": "wireless",
            "Dock powered": "dock"}


def parse_getprop(text: str) -> dict[str, str]:
    """``getprop`` output (``[key]: [value]`` lines) as a dict."""
    return dict(re.findall(r"^\[([^\]]+)\]:\s*\[(.*)\]\s*$", text, flags=re.MULTILINE))


def parse_battery(text: str) -> dict[str, Any]:
    """``dumpsys battery`` → ``battery_level_pct``, ``battery_temp_c``, ``battery_plugged``.

    ``temperature`` is reported in tenths of a degree Celsius.
    """
    fields = dict(re.findall(r"^\s*([A-Za-z][\w ]*?):\s*(.*?)\s*$", text, flags=re.MULTILINE))
    out: dict[str, Any] = {}
    try:
        level, scale = int(fields["level"]), int(fields.get("scale", "100") or 100)
        out["battery_level_pct"] = round(100.0 * level / scale, 1) if scale else float(level)
    except (KeyError, ValueError):
        pass
    try:
        out["battery_temp_c"] = int(fields["temperature"]) / 10.0
    except (KeyError, ValueError):
        pass
    plugged = [v for k, v in _PLUGGED.items() if fields.get(k, "").lower() == "true"]
    if "level" in fields:
        out["battery_plugged"] = ",".join(plugged) if plugged else "none"
    return out


def _zone_temp_c(raw: str) -> float | None:
    try:
        v = float(raw.strip())
    except ValueError:
        return None
    # Most zones report millidegrees; a few report degrees.
    c = v / 1000.0 if abs(v) >= 1000 else v
    return c if -40.0 <= c <= 150.0 else None


def _sections(text: str) -> dict[str, str]:
    parts: dict[str, list[str]] = {"sysfs": []}
    current = "sysfs"
    for line in text.replace("\r\n", "\n").split("\n"):
        m = re.match(r"^__section=(\w+)\s*$", line)
        if m:
            current = m.group(1)
            parts.setdefault(current, [])
            continue
        parts[current].append(line)
    return {k: "\n".join(v) for k, v in parts.items()}


def parse_state(text: str, *, pinned_cpus: Iterable[int] = (),
                throttle_temp_c: float = DEFAULT_THROTTLE_TEMP_C) -> dict[str, Any]:
    """Parse the output of :data:`STATE_COMMAND` and judge throttling.

    Parameters
    ----------
    text : str
        What the command printed.
    pinned_cpus : iterable of int
        The cores the runner is pinned to; only their clocks decide throttling.
    throttle_temp_c : float
        CPU zone temperature (°C) at or above which the run counts as throttled.

    Returns
    -------
    dict
        ``governors`` / ``cur_freq_khz`` / ``cpuinfo_max_freq_khz`` / ``scaling_max_freq_khz``
        (``{"cpu4": ...}``), ``thermal_c`` (zone type → °C), ``max_cpu_temp_c``,
        ``battery_level_pct``, ``battery_temp_c``, ``battery_plugged``, ``low_power``
        (bool or ``None`` when unknown), ``pinned_cpus``, ``throttled`` and
        ``throttle_reasons`` (list of str).
    """
    sec = _sections(text)
    state: dict[str, Any] = {"governors": {}, "cur_freq_khz": {}, "cpuinfo_max_freq_khz": {},
                             "scaling_max_freq_khz": {}}
    zones: dict[int, dict[str, str]] = {}
    for line in sec.get("sysfs", "").splitlines():
        m = _CPU_LINE.match(line.strip())
        if m:
            cpu, key, value = f"cpu{m.group(1)}", m.group(2), m.group(3).strip()
            if key == "scaling_governor":
                state["governors"][cpu] = value
            elif key in _FREQ_KEYS and value.isdigit():
                state[_FREQ_KEYS[key]][cpu] = int(value)
            continue
        m = _ZONE_LINE.match(line.strip())
        if m:
            zones.setdefault(int(m.group(1)), {})[m.group(2)] = m.group(3).strip()
    thermal: dict[str, float] = {}
    for idx in sorted(zones):
        temp = _zone_temp_c(zones[idx].get("temp", ""))
        if temp is None:
            continue
        name = zones[idx].get("type") or f"thermal_zone{idx}"
        key, n = name, 1
        while key in thermal:  # several zones may share a type
            n += 1
            key = f"{name}#{n}"
        thermal[key] = temp
    state["thermal_c"] = thermal
    cpu_temps = [t for k, t in thermal.items() if _CPU_ZONE.search(k)] or list(thermal.values())
    state["max_cpu_temp_c"] = max(cpu_temps) if cpu_temps else None
    state.update(parse_battery(sec.get("battery", "")))
    lp = sec.get("low_power", "").strip()
    state["low_power"] = {"1": True, "0": False}.get(lp.splitlines()[-1].strip() if lp else "")
    state["pinned_cpus"] = sorted(set(pinned_cpus))
    reasons = throttle_reasons(state, state["pinned_cpus"], throttle_temp_c)
    state["throttled"] = bool(reasons)
    state["throttle_reasons"] = reasons
    return state


def throttle_reasons(state: dict[str, Any], cpus: Iterable[int],
                     throttle_temp_c: float = DEFAULT_THROTTLE_TEMP_C) -> list[str]:
    """Why a run in ``state`` on ``cpus`` should not be trusted as full speed (empty: fine).

    A pinned core whose ``scaling_max_freq`` is under its ``cpuinfo_max_freq`` (a thermal
    or power cap), a ``powersave`` governor, a CPU zone at or above ``throttle_temp_c`` and
    battery saver mode each add a reason.
    """
    reasons: list[str] = []
    for c in cpus:
        cpu = f"cpu{c}"
        cap = state.get("scaling_max_freq_khz", {}).get(cpu)
        top = state.get("cpuinfo_max_freq_khz", {}).get(cpu)
        if cap is not None and top is not None and cap < top:
            reasons.append(f"{cpu} capped at {cap} of {top} kHz")
        if state.get("governors", {}).get(cpu) == "powersave":
            reasons.append(f"{cpu} governor is powersave")
    t = state.get("max_cpu_temp_c")
    if t is not None and t >= throttle_temp_c:
        reasons.append(f"CPU temperature {t:.1f} °C ≥ {throttle_temp_c:.1f} °C")
    if state.get("low_power"):
        reasons.append("battery saver (low_power) is on")
    return reasons


def cpus_from_mask(mask: str) -> list[int]:
    """The CPU numbers set in a hex ``taskset`` mask (``"f0"`` → ``[4, 5, 6, 7]``).

    Raises
    ------
    ValueError
        If ``mask`` is not a non-zero hexadecimal number.
    """
    value = int(mask, 16)
    if value <= 0:
        raise ValueError(f"CPU mask {mask!r} selects no CPU")
    return [i for i in range(value.bit_length()) if value >> i & 1]


def wait_for_cooldown(read_temp_c: Callable[[], float | None], threshold_c: float,
                      timeout_s: float, *, poll_s: float = 5.0,
                      sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic
                      ) -> tuple[bool, float, float | None]:
    """Poll ``read_temp_c`` until it is under ``threshold_c`` or ``timeout_s`` has passed.

    Returns
    -------
    cooled : bool
        Whether the temperature got (or was) under the threshold.
    waited_s : float
        Seconds spent waiting.
    last_temp_c : float or None
        The last reading (``None`` when the device reports no temperature: nothing to wait for).
    """
    start = clock()
    while True:
        temp = read_temp_c()
        waited = clock() - start
        if temp is None or temp < threshold_c:
            return True, waited, temp
        if waited >= timeout_s:
            return False, waited, temp
        sleep(min(poll_s, max(timeout_s - waited, 0.0)))
