"""The predictor file: a zip of one JSON envelope, numpy arrays and XGBoost's own JSON models.

Reading it cannot run code. The envelope is plain JSON; arrays are ``.npy`` members read
with ``numpy.load(..., allow_pickle=False)`` (object arrays are refused); boosted trees are
XGBoost's JSON model format, parsed by XGBoost; the predictor class is looked up by name
and accepted only if it is a :class:`~latbench.predictor.base.LatencyPredictor` defined in
``latbench.predictor``. This is the design of Keras' ``.keras`` files (a zip of a JSON
config and weight arrays), chosen over pickling for the reason Keras gives: a model file
is data, and loading data must not execute it.

Values are encoded as JSON with a few tagged objects (``{"__tag__": ...}``):

=================  ==============================================================
``__tuple__``      a tuple (lists stay lists)
``__dict__``       a dict whose keys are not all strings (or begin with ``__``)
``__float__``      ``"nan"``, ``"inf"`` or ``"-inf"`` (the JSON stays standard)
``__scalar__``     a numpy scalar: dtype and value
``__array__``      a numpy array: the name of its ``.npy`` member
``__frame__``      a pandas DataFrame: column by column (numeric columns as arrays)
``__xgboost__``    an XGBoost scikit-learn model: its parameters and JSON model member
``__predictor__``  a nested latency predictor: class, parameters and fitted state
=================  ==============================================================

Anything else is refused when saving, naming the attribute, so a predictor whose state
holds another kind of object must translate it in ``_get_state``/``_set_state``.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT", "ENVELOPE", "FileFormatError", "write_file", "read_envelope", "read_file",
           "is_zip"]

#: The ``format`` field of the envelope; a newer number means a newer latbench wrote it.
FORMAT = "latbench-predictor/2"

#: The envelope's member name inside the zip.
ENVELOPE = "predictor.json"

#: Largest member (uncompressed) a reader accepts: a lookup table or a few thousand trees
#: take megabytes; this only stops a crafted zip from exhausting memory.
MAX_MEMBER_BYTES = 1 << 30

#: XGBoost estimator classes a file may name.
_XGB_CLASSES = ("XGBRegressor", "XGBClassifier")

#: numpy dtype kinds an array or scalar may have: bool, ints, floats, complex, strings, times.
_ARRAY_KINDS = "biufcUSmM"

_TAGS = ("__tuple__", "__dict__", "__float__", "__scalar__", "__array__", "__frame__",
         "__xgboost__", "__predictor__")
_CLASS_RE = re.compile(r"^latbench\.predictor(\.[A-Za-z_][A-Za-z0-9_]*)+$")


class FileFormatError(ValueError):
    """The file is not a well-formed predictor file (the caller names the file)."""


# --------------------------------------------------------------------------- writing
class _Writer:
    def __init__(self) -> None:
        self.members: dict[str, bytes] = {}

    def _add(self, prefix: str, suffix: str, data: bytes) -> str:
        name = f"{prefix}/{len(self.members)}{suffix}"
        self.members[name] = data
        return name

    def encode(self, value: Any, where: str) -> Any:
        from latbench.predictor.base import LatencyPredictor

        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: self.encode(v, f"{where}[{k!r}]") for k, v in value.items()}
            return {"__dict__": [[self.encode(k, f"{where} key"), self.encode(v, f"{where}[{k!r}]")]
                                 for k, v in value.items()]}
        if isinstance(value, np.ndarray):
            return {"__array__": self._array(value, where)}
        if isinstance(value, np.generic):
            if value.dtype.kind not in "biuf":
                raise FileFormatError(f"{where}: numpy scalar of dtype {value.dtype} cannot be saved")
            return {"__scalar__": {"dtype": value.dtype.str, "value": self.encode(value.item(), where)}}
        if isinstance(value, LatencyPredictor):
            return {"__predictor__": predictor_node(value, self, where)}
        cls = type(value)
        if cls.__module__.startswith("pandas") and cls.__name__ == "DataFrame":
            return {"__frame__": self._frame(value, where)}
        if cls.__module__.startswith("xgboost") and cls.__name__ in _XGB_CLASSES:
            raw = bytes(value.get_booster().save_raw(raw_format="json"))
            return {"__xgboost__": {"class": cls.__name__,
                                    "params": self.encode(value.get_params(), f"{where} params"),
                                    "model": self._add("xgboost", ".json", raw)}}
        raise FileFormatError(
            f"{where} is a {cls.__module__}.{cls.__qualname__}, which the predictor file cannot "
            "hold; give the predictor _get_state/_set_state that turn it into arrays and plain "
            "values")

    def _array(self, arr: np.ndarray, where: str) -> str:
        if arr.dtype.kind not in _ARRAY_KINDS or arr.dtype.hasobject:
            raise FileFormatError(f"{where}: arrays of dtype {arr.dtype} cannot be saved (only "
                                  "numbers, booleans, strings and times)")
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        return self._add("arrays", ".npy", buf.getvalue())

    def _column(self, s: Any, where: str) -> dict:
        import pandas as pd

        dt = s.dtype
        if isinstance(dt, np.dtype) and dt.kind in _ARRAY_KINDS:
            return {"values": {"__array__": self._array(s.to_numpy(), where)}}
        if isinstance(dt, pd.CategoricalDtype):
            return {"categories": self.encode(list(dt.categories), where), "ordered": bool(dt.ordered),
                    "codes": {"__array__": self._array(s.cat.codes.to_numpy(), where)}}
        return {"dtype": str(dt), "values": self.encode(s.tolist(), where)}

    def _frame(self, df: Any, where: str) -> dict:
        import pandas as pd

        if isinstance(df.columns, pd.MultiIndex) or isinstance(df.index, pd.MultiIndex):
            raise FileFormatError(f"{where}: a DataFrame with a MultiIndex cannot be saved")
        idx = df.index
        if isinstance(idx, pd.RangeIndex):
            index: dict = {"range": [idx.start, idx.stop, idx.step]}
        else:
            index = self._column(idx.to_series(), f"{where}.index")
        index["name"] = self.encode(idx.name, f"{where}.index.name")
        return {"columns": self.encode(list(df.columns), f"{where}.columns"),
                "index": index,
                "data": [self._column(df.iloc[:, i], f"{where}[{c!r}]")
                         for i, c in enumerate(df.columns)]}


def class_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def predictor_node(pred: Any, writer: _Writer, where: str) -> dict:
    """Class, constructor parameters and fitted state of ``pred`` as encoded JSON."""
    name = class_name(pred)
    if not _CLASS_RE.match(name):  # the reader would refuse it: say so now, not at load
        raise FileFormatError(f"{where} is a {name}; only predictors defined in "
                              "latbench.predictor can be saved and loaded back")
    return {"class": name,
            "params": writer.encode(pred._saved_params(), f"{where} parameter"),
            "state": writer.encode(pred._get_state(), f"{where} attribute")}


def write_file(path: Path, envelope: dict, pred: Any) -> None:
    """Write ``envelope`` (plus the predictor's class, parameters and state) as a zip at ``path``.

    The file is written next to ``path`` and renamed over it, so a reader never sees half a
    file and an interrupted save leaves the old one.

    Raises
    ------
    FileFormatError
        If a parameter or fitted attribute cannot be encoded.
    """
    writer = _Writer()
    doc = dict(envelope, **predictor_node(pred, writer, type(pred).__name__))
    text = json.dumps(doc, indent=1, allow_nan=False)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(ENVELOPE, text)
            for name, data in writer.members.items():
                zf.writestr(name, data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- reading
def is_zip(path: Path) -> bool:
    """Whether ``path`` starts like a zip file."""
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


class _Reader:
    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.names = set(zf.namelist())

    def member(self, name: Any) -> bytes:
        if not isinstance(name, str) or name not in self.names or name == ENVELOPE:
            raise FileFormatError(f"it names a member {name!r} it does not hold")
        return read_member(self.zf, name)

    def decode(self, node: Any, where: str) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(v, where) for v in node]
        if not isinstance(node, dict):  # pragma: no cover - json gives nothing else
            raise FileFormatError(f"{where}: unexpected {type(node).__name__}")
        tags = [k for k in node if k.startswith("__")]
        if not tags:
            return {k: self.decode(v, f"{where}[{k!r}]") for k, v in node.items()}
        if len(node) != 1 or tags[0] not in _TAGS:
            raise FileFormatError(f"{where}: unknown entry {tags[0]!r}")
        tag, body = tags[0], node[tags[0]]
        if tag == "__tuple__":
            return tuple(self.decode(_expect(body, list, where), where))
        if tag == "__dict__":
            items = _expect(body, list, where)
            if not all(isinstance(kv, list) and len(kv) == 2 for kv in items):
                raise FileFormatError(f"{where}: malformed dict")
            out = {}
            for k, v in items:
                key = self.decode(k, where)
                try:
                    hash(key)
                except TypeError:
                    raise FileFormatError(f"{where}: an unhashable dict key") from None
                out[key] = self.decode(v, where)
            return out
        if tag == "__float__":
            if body not in ("nan", "inf", "-inf"):
                raise FileFormatError(f"{where}: bad float {body!r}")
            return float(body)
        if tag == "__scalar__":
            body = _expect(body, dict, where)
            try:
                dt = np.dtype(_expect(body.get("dtype"), str, where))
            except TypeError:
                raise FileFormatError(f"{where}: bad dtype {body.get('dtype')!r}") from None
            value = self.decode(body.get("value"), where)
            if dt.kind not in "biuf" or isinstance(value, (str, list, dict, tuple)) or value is None:
                raise FileFormatError(f"{where}: bad numpy scalar")
            return dt.type(value)
        if tag == "__array__":
            return self.array(body, where)
        if tag == "__frame__":
            try:
                return self.frame(_expect(body, dict, where), where)
            except (TypeError, ValueError) as exc:  # pandas: a dtype or values that do not fit
                if isinstance(exc, FileFormatError):
                    raise
                raise FileFormatError(f"{where}: malformed table ({_first_line(exc)})") from None
        if tag == "__xgboost__":
            return self.xgboost(_expect(body, dict, where), where)
        return build_predictor(_expect(body, dict, where), self, where)

    def array(self, name: Any, where: str) -> np.ndarray:
        try:
            arr = np.load(io.BytesIO(self.member(name)), allow_pickle=False)
        except FileFormatError:
            raise
        except Exception as exc:  # numpy raises ValueError (object arrays), OSError, EOFError ...
            raise FileFormatError(f"{where}: array {name!r} is unreadable ({_first_line(exc)})") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in _ARRAY_KINDS:
            raise FileFormatError(f"{where}: array {name!r} has an unsupported dtype")
        return arr

    def _column(self, node: Any, where: str) -> Any:
        import pandas as pd

        node = _expect(node, dict, where)
        if "codes" in node:
            cats = self.decode(node.get("categories"), where)
            codes = self.decode(node["codes"], where)
            if not isinstance(cats, list) or not isinstance(codes, np.ndarray):
                raise FileFormatError(f"{where}: malformed categorical column")
            return pd.Series(pd.Categorical.from_codes(codes, cats, ordered=bool(node.get("ordered"))))
        values = self.decode(node.get("values"), where)
        if isinstance(values, np.ndarray):
            if values.ndim != 1:
                raise FileFormatError(f"{where}: a column must be one-dimensional")
            return pd.Series(values)
        if not isinstance(values, list):
            raise FileFormatError(f"{where}: malformed column")
        return pd.Series(values, dtype=pd.api.types.pandas_dtype(_expect(node.get("dtype"), str, where)))

    def frame(self, node: dict, where: str) -> Any:
        import pandas as pd

        columns = self.decode(node.get("columns"), where)
        data = _expect(node.get("data"), list, where)
        if not isinstance(columns, list) or len(columns) != len(data):
            raise FileFormatError(f"{where}: columns and data disagree")
        cols = [self._column(c, f"{where}[{name!r}]") for name, c in zip(columns, data)]
        lengths = {len(c) for c in cols}
        index_node = _expect(node.get("index"), dict, where)
        if "range" in index_node:
            r = _expect(index_node["range"], list, where)
            if len(r) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in r) \
                    or r[2] == 0:
                raise FileFormatError(f"{where}: malformed index")
            index = pd.RangeIndex(*r)
        else:
            index = pd.Index(self._column(index_node, f"{where}.index"))
        index.name = self.decode(index_node.get("name"), where)
        if lengths - {len(index)}:
            raise FileFormatError(f"{where}: columns of different lengths")
        df = pd.concat([c.reset_index(drop=True) for c in cols], axis=1, ignore_index=True) \
            if cols else pd.DataFrame(index=range(len(index)))
        df.columns = pd.Index(columns)
        df.index = index
        return df

    def xgboost(self, node: dict, where: str) -> Any:
        name = node.get("class")
        if name not in _XGB_CLASSES:
            raise FileFormatError(f"{where}: unknown XGBoost model class {name!r}")
        params = self.decode(node.get("params"), where)
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise FileFormatError(f"{where}: malformed XGBoost parameters")
        raw = self.member(node.get("model"))
        import xgboost as xgb

        try:
            model = getattr(xgb, name)(**params)
            model.load_model(bytearray(raw))
        except Exception as exc:  # XGBoostError, TypeError for bad parameters, ...
            raise FileFormatError(f"{where}: the XGBoost model is unreadable ({_first_line(exc)})"
                                  ) from None
        return model


def predictor_class(name: Any) -> type:
    """The ``LatencyPredictor`` subclass a file names; only classes in ``latbench.predictor``.

    Raises
    ------
    FileFormatError
        If the name is not ``latbench.predictor.<module>.<Class>`` of a latency predictor.
    """
    from latbench.predictor.base import LatencyPredictor

    if not isinstance(name, str) or not _CLASS_RE.match(name):
        raise FileFormatError(f"it names the class {name!r}, which is not a latbench predictor")
    module, _, attr = name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        raise FileFormatError(f"it names the predictor class {name!r}, which this latbench does "
                              "not have (written by another version?)") from None
    if not (isinstance(cls, type) and issubclass(cls, LatencyPredictor)):
        raise FileFormatError(f"it names {name!r}, which is not a latency predictor class")
    return cls


def build_predictor(node: dict, reader: _Reader, where: str) -> Any:
    """A predictor from its class, parameters and state (see :func:`predictor_node`)."""
    cls = predictor_class(node.get("class"))
    params = reader.decode(node.get("params"), f"{where} parameters")
    state = reader.decode(node.get("state"), f"{where} state")
    if not isinstance(params, dict) or not isinstance(state, dict):
        raise FileFormatError(f"{where}: parameters and state must be tables")
    try:
        pred = cls(**params)
    except TypeError as exc:
        raise FileFormatError(f"its parameters do not fit {cls.__name__} ({exc})") from None
    pred._set_state(state)
    return pred


def read_member(zf: zipfile.ZipFile, name: str) -> bytes:
    """The bytes of one member; every way a crafted or damaged zip fails is a FileFormatError."""
    import lzma
    import zlib

    try:
        info = zf.getinfo(name)
    except KeyError:
        raise FileFormatError(f"it has no {name}") from None
    if info.file_size > MAX_MEMBER_BYTES:
        raise FileFormatError(f"member {name!r} is {info.file_size} bytes, more than a "
                              f"predictor holds ({MAX_MEMBER_BYTES})")
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError,
            NotImplementedError, RuntimeError) as exc:
        # a bad CRC or stream (corruption), an unsupported method, an encrypted member
        raise FileFormatError(f"member {name!r} is damaged ({_first_line(exc)})") from None


def read_envelope(zf: zipfile.ZipFile) -> dict:
    """The parsed envelope of an open predictor zip."""
    try:
        doc = json.loads(read_member(zf, ENVELOPE).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileFormatError(f"its {ENVELOPE} is not JSON ({exc})") from None
    except RecursionError:
        raise FileFormatError(f"its {ENVELOPE} is nested too deeply") from None
    if not isinstance(doc, dict):
        raise FileFormatError(f"its {ENVELOPE} is not a JSON object")
    return doc


def read_file(zf: zipfile.ZipFile, doc: dict) -> Any:
    """The predictor described by the envelope ``doc`` of the open zip ``zf``."""
    try:
        return build_predictor(doc, _Reader(zf), "the predictor")
    except RecursionError:
        raise FileFormatError("its values are nested too deeply") from None


def _expect(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind):
        raise FileFormatError(f"{where}: expected a {kind.__name__}, found {type(value).__name__}")
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
