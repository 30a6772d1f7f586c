"""Device profiles: named tables in a ``devices.toml`` file.

A profile names a device and says how to reach and run it::

    [pixel]
    kind = "adb"
    host = "192.168.1.20:5555"
    runner = "/data/local/tmp/onnxruntime_perf_test"
    threads = 4
    cpus = "f0"

    [cpu]            # overrides the built-in cpu device's options
    threads = 1

Every profile may also say ``description = "..."`` and ``node = "..."``: the Ray node a
device farm drives the device from (the host it is plugged into; see
:mod:`latbench.farm`), as a node id, an IP address or a custom resource name.

The file is looked up, first match wins, in: the ``--devices FILE`` option, the
``LATBENCH_DEVICES`` environment variable, ``./devices.toml``, and
``$XDG_CONFIG_HOME/latbench/devices.toml`` (``~/.config/latbench/devices.toml`` when
``XDG_CONFIG_HOME`` is unset). ``cpu``, ``cuda`` and ``litert`` exist without any file; a
table of that name changes their options, and its ``kind`` may be left out.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latbench.exceptions import UserInputError
from latbench.registry import suggest

__all__ = [
    "Profile",
    "BUILTIN_PROFILES",
    "KIND_OPTIONS",
    "ENV_VAR",
    "PLACEMENT_OPTIONS",
    "find_devices_file",
    "default_locations",
    "load_profiles",
    "parse_profiles",
]

#: Environment variable naming a devices file.
ENV_VAR = "LATBENCH_DEVICES"

#: Keys every profile may have.
COMMON_OPTIONS: dict[str, type] = {"kind": str, "description": str, "node": str}

#: Keys of a profile that say where and what the device is, not how to run it: they are not
#: handed to the device class.
PLACEMENT_OPTIONS = ("node",)

#: Options each kind accepts, with their types; ``None`` means the device class checks them
#: itself (the ``adb`` device owns its transport and runner options).
KIND_OPTIONS: dict[str, dict[str, type] | None] = {
    "cpu": {"threads": int, "graph_optimization": str, "seed": int},
    "cuda": {"device_id": int, "threads": int, "graph_optimization": str, "seed": int},
    "litert": {"threads": int, "delegate": str, "seed": int},
    "adb": None,
}

#: Devices that exist without a file: name → kind.
BUILTIN_PROFILES: dict[str, str] = {"cpu": "cpu", "cuda": "cuda", "litert": "litert"}


@dataclass(frozen=True)
class Profile:
    """One device profile.

    Attributes
    ----------
    name : str
        The table name, used as ``--device NAME``.
    kind : str
        ``cpu``, ``cuda``, ``litert`` or ``adb``.
    options : dict
        The table as written (``kind`` included when it was written), for the device's
        ``from_profile``.
    source : Path or None
        The file it came from; ``None`` for a built-in device.
    """

    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    source: Path | None = None

    @property
    def where(self) -> str:
        """``the file path`` or ``built-in``, for messages."""
        return str(self.source) if self.source is not None else "built-in"

    @property
    def node(self) -> str | None:
        """The Ray node the device is driven from (``node = ...``), or ``None``."""
        return self.options.get("node")

    @property
    def device_options(self) -> dict[str, Any]:
        """The options handed to the device class (the table without ``node``)."""
        return {k: v for k, v in self.options.items() if k not in PLACEMENT_OPTIONS}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "source": self.where,
                "options": {k: v for k, v in self.options.items() if k != "kind"}}


def default_locations(env: Mapping[str, str] | None = None, cwd: Path | None = None
                      ) -> list[Path]:
    """The implicit places a devices file is looked for, in order (cwd, then user config)."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    xdg = env.get("XDG_CONFIG_HOME") or ""
    config = Path(xdg) if xdg else Path(env.get("HOME") or Path.home()) / ".config"
    return [cwd / "devices.toml", config / "latbench" / "devices.toml"]


def find_devices_file(devices_file: str | Path | None = None, *,
                      env: Mapping[str, str] | None = None, cwd: Path | None = None
                      ) -> Path | None:
    """The devices file to read, or ``None`` when there is none.

    Parameters
    ----------
    devices_file : str or Path, optional
        An explicit file (``--devices``); it must exist.
    env : mapping, optional
        Environment (``os.environ`` when ``None``); ``LATBENCH_DEVICES`` must name an
        existing file when set.
    cwd : Path, optional
        Working directory (the process's when ``None``).

    Raises
    ------
    UserInputError
        If an explicitly named file (option or environment variable) does not exist.
    """
    env = os.environ if env is None else env
    if devices_file is not None:
        p = Path(devices_file).expanduser()
        if not p.is_file():
            raise UserInputError(f"devices file {str(p)!r} does not exist")
        return p
    if env.get(ENV_VAR):
        p = Path(env[ENV_VAR]).expanduser()
        if not p.is_file():
            raise UserInputError(f"devices file {str(p)!r} (from ${ENV_VAR}) does not exist; "
                                 f"fix or unset {ENV_VAR}")
        return p
    return next((p for p in default_locations(env, cwd) if p.is_file()), None)


def _type_name(t: type) -> str:
    return {int: "an integer", str: "a string", float: "a number", bool: "true or false"}.get(
        t, t.__name__)


def _check_type(where: str, name: str, key: str, value: Any, t: type) -> None:
    # TOML booleans are Python bools, which are ints too: threads = true is still wrong.
    ok = isinstance(value, t) and not (t is int and isinstance(value, bool))
    if not ok:
        raise UserInputError(f"{where}: [{name}] {key} must be {_type_name(t)}, got {value!r}")


def parse_profiles(data: Mapping[str, Any], source: Path | None = None) -> dict[str, Profile]:
    """Validate parsed TOML and return its profiles by name.

    Raises
    ------
    UserInputError
        If a top-level entry is not a table, ``kind`` is missing or unknown, or a cpu/cuda
        option is unknown or of the wrong type; the message names the file, table and key.
    """
    where = str(source) if source is not None else "devices file"
    profiles: dict[str, Profile] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise UserInputError(f"{where}: {name!r} must be a table like [{name}] with a kind = "
                                 f"... line, got {table!r}")
        kind = table.get("kind", BUILTIN_PROFILES.get(name))
        if kind is None:
            raise UserInputError(f"{where}: [{name}] is missing the required key 'kind' "
                                 f"(one of: {', '.join(KIND_OPTIONS)})")
        _check_type(where, name, "kind", kind, str)
        if kind not in KIND_OPTIONS:
            raise UserInputError(f"{where}: [{name}] kind {kind!r} is unknown"
                                 f"{suggest(kind, list(KIND_OPTIONS))}; choose one of: "
                                 f"{', '.join(KIND_OPTIONS)}")
        allowed = KIND_OPTIONS[kind]
        for key in ("description", *PLACEMENT_OPTIONS):
            if key in table:
                _check_type(where, name, key, table[key], str)
        if allowed is not None:
            known = {**COMMON_OPTIONS, **allowed}
            for key, value in table.items():
                if key not in known:
                    raise UserInputError(
                        f"{where}: [{name}] unknown key {key!r}{suggest(key, list(known))} for "
                        f"kind {kind!r}; allowed: {', '.join(sorted(known))}")
                _check_type(where, name, key, value, known[key])
        profiles[name] = Profile(name, kind, dict(table), source)
    return profiles


def load_profiles(devices_file: str | Path | None = None) -> dict[str, Profile]:
    """Built-in profiles overlaid with those of the devices file found by :func:`find_devices_file`.

    Raises
    ------
    UserInputError
        If the file is missing (when named), unreadable, not valid TOML, or invalid.
    """
    profiles = {name: Profile(name, kind) for name, kind in BUILTIN_PROFILES.items()}
    path = find_devices_file(devices_file)
    if path is None:
        return profiles
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise UserInputError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
        raise UserInputError(f"{path}: not UTF-8 text (byte {exc.start}); save the devices "
                             "file as UTF-8") from None
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read devices file: {exc.strerror}") from None
    profiles.update(parse_profiles(data, path))
    return profiles
