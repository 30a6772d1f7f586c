"""Device state parsing, throttling judgement, CPU masks and cooldown."""

from __future__ import annotations

from pathlib import Path

import pytest

from latbench.devices.adb import state

FIX = Path(__file__).parent / "fixtures"


def state_text(*, cap: int = 2400000, temp: str = "45000", low_power: str = "0",
               governor: str = "schedutil") -> str:
    lines = []
    for c in (0, 4):
        top = 2400000 if c else 1800000
        base = f"/sys/devices/system/cpu/cpu{c}/cpufreq/"
        lines += [base + f"scaling_governor:{governor}", base + f"scaling_cur_freq:{top // 2}",
                  base + f"cpuinfo_max_freq:{top}",
                  base + f"scaling_max_freq:{cap if c else top}"]
    lines += ["/sys/class/thermal/thermal_zone0/type:cpu-big-usr",
              f"/sys/class/thermal/thermal_zone0/temp:{temp}",
              "/sys/class/thermal/thermal_zone1/type:battery",
              "/sys/class/thermal/thermal_zone1/temp:95000",
              "grep: /sys/class/thermal/thermal_zone2/temp: Invalid argument",
              "__section=battery", (FIX / "dumpsys_battery.txt").read_text(),
              "__section=low_power", low_power]
    return "\n".join(lines) + "\n"


def test_parse_state_reads_clocks_temperatures_battery_and_low_power():
    st = state.parse_state(state_text(), pinned_cpus=[4])
    assert st["governors"] == {"cpu0": "schedutil", "cpu4": "schedutil"}
    assert st["cpuinfo_max_freq_khz"]["cpu4"] == 2400000
    assert st["cur_freq_khz"]["cpu0"] == 900000
    assert st["thermal_c"] == {"cpu-big-usr": 45.0, "battery": 95.0}
    # Only CPU zones count: the (hot) battery zone does not flag a CPU run.
    assert st["max_cpu_temp_c"] == 45.0
    assert st["battery_level_pct"] == 87.0 and st["battery_temp_c"] == 29.8
    assert st["battery_plugged"] == "usb"
    assert st["low_power"] is False
    assert st["throttled"] is False and st["throttle_reasons"] == []


def test_capped_pinned_core_is_throttled_but_capped_other_core_is_not():
    st = state.parse_state(state_text(cap=1500000), pinned_cpus=[4])
    assert st["throttled"] is True
    assert "cpu4 capped at 1500000 of 2400000 kHz" in st["throttle_reasons"]
    st = state.parse_state(state_text(cap=1500000), pinned_cpus=[0])
    assert st["throttled"] is False


@pytest.mark.parametrize("kwargs,reason", [
    ({"temp": "85000"}, "CPU temperature 85.0"),
    ({"low_power": "1"}, "battery saver"),
    ({"governor": "powersave"}, "powersave"),
])
def test_heat_battery_saver_and_powersave_flag_throttling(kwargs, reason):
    st = state.parse_state(state_text(**kwargs), pinned_cpus=[4])
    assert st["throttled"] is True
    assert any(reason in r for r in st["throttle_reasons"])


def test_degree_valued_zones_and_unknown_low_power():
    st = state.parse_state("/sys/class/thermal/thermal_zone3/type:soc\n"
                           "/sys/class/thermal/thermal_zone3/temp:52\n__section=low_power\nnull\n")
    assert st["thermal_c"] == {"soc": 52.0} and st["low_power"] is None


def test_getprop_parsing():
    props = state.parse_getprop("[ro.product.model]: [Pixel 6]\n[ro.empty]: []\nnoise\n")
    assert props == {"ro.product.model": "Pixel 6", "ro.empty": ""}


@pytest.mark.parametrize("mask,cpus", [("f0", [4, 5, 6, 7]), ("1", [0]), ("C", [2, 3])])
def test_cpus_from_mask(mask, cpus):
    assert state.cpus_from_mask(mask) == cpus


@pytest.mark.parametrize("mask", ["0", "zz", ""])
def test_bad_masks_are_rejected(mask):
    with pytest.raises(ValueError):
        state.cpus_from_mask(mask)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def test_cooldown_waits_until_under_threshold():
    temps = iter([70.0, 65.0, 58.0])
    clock = FakeClock()
    cooled, waited, last = state.wait_for_cooldown(lambda: next(temps), 60.0, 100.0, poll_s=5,
                                                   sleep=clock.sleep, clock=clock)
    assert (cooled, waited, last) == (True, 10.0, 58.0)
    assert clock.sleeps == [5, 5]


def test_cooldown_gives_up_after_timeout():
    clock = FakeClock()
    cooled, waited, last = state.wait_for_cooldown(lambda: 90.0, 60.0, 12.0, poll_s=5,
                                                   sleep=clock.sleep, clock=clock)
    assert cooled is False and waited == pytest.approx(12.0) and last == 90.0
    assert sum(clock.sleeps) == pytest.approx(12.0)
