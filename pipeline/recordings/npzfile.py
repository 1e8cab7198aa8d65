"""The fast binary recording: an uncompressed ``.npz`` read and written in chunks.

Layout (format version 1), one ``.npy`` member per array, C order, never
object dtype (so never pickle):

========================  ==============  =====================================
member                    dtype           shape
========================  ==============  =====================================
``timestamp.npy``         float64         (n,) seconds since the epoch, UTC
``turbine_id.npy``        int64           (n,)
``values.npy``            float64         (n, D)
``sensors.npy``           unicode         (D,)
``label.npy``             int8            (n,) optional
``fault_code.npy``        int8            (n,) optional: 0 normal, k: fault_kinds[k]
``fault_kinds.npy``       unicode         (K+1,) the kind names, "" first
``fault_kind.npy``        unicode         (n,) optional, instead of the two above
``turbine_names.npy``     unicode         (k,) optional: the names behind hashed ids
``format_version.npy``    int64           ()
========================  ==============  =====================================

Reading streams each member from its zip entry, so memory stays bounded by
the chunk size however large the file; files written by ``np.savez`` or
``np.savez_compressed`` with these names read the same way.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from pipeline.errors import InputError, SchemaError
from pipeline.names import TurbineNames
from pipeline.recordings.spec import Chunk, RecordingSpec

FORMAT_VERSION = 1
_NAME_CHARS = 1024  # longest sensor or fault-kind name accepted
_MAX_KINDS = 1 << 16  # most fault kinds a fault_kinds member may name
_MAX_NAMES = 100_000  # turbine names, as DetectorConfig.max_turbines
_ROW_MEMBERS = ("timestamp", "turbine_id", "values", "label", "fault_kind", "fault_code")
_KINDS = {
    "timestamp": "f",
    "turbine_id": "iu",
    "values": "f",
    "label": "iub",
    "fault_kind": "U",
    "fault_code": "iu",
}


def read_npy_header(stream: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from a ``.npy`` header (no pickle possible)."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    return np.lib.format._read_array_header(stream, version)  # type: ignore[attr-defined]


class NpzRecording:
    """An ``.npz`` recording opened for chunked reading."""

    def __init__(self, path: str | Path, spec: RecordingSpec) -> None:
        self.path = Path(path)
        self.spec = spec
        try:
            self._zip = zipfile.ZipFile(self.path)
        except FileNotFoundError:
            raise self._error("no such file") from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise self._error(f"not a readable .npz archive ({exc})") from None
        try:
            self._inspect()
        except BaseException:
            self._zip.close()
            raise

    def _error(self, message: str, row: int | None = None, column: str | None = None) -> InputError:
        return InputError(message, path=str(self.path), line=row, column=column)

    def _inspect(self) -> None:
        names = {n.removesuffix(".npy"): n for n in self._zip.namelist()}
        for required in ("timestamp", "values", "sensors"):
            if required not in names:
                raise self._error(f"no {required!r} array (members: {', '.join(sorted(names))})")
        self._members = names
        self._layout: dict[str, tuple[tuple[int, ...], np.dtype, int]] = {}
        for key in _ROW_MEMBERS:
            if key in names:
                self._layout[key] = self._header(key, _KINDS[key])
        # Every member's declared shape and dtype is checked before a byte of it
        # is read: a header may declare 10**12 names in a file of a few bytes.
        shape, _, _ = self._header("sensors", "U")
        if len(shape) != 1:
            raise self._error(f"has shape {shape}: sensors must be (D,) names", column="sensors")
        if shape[0] > self.spec.max_sensors:
            raise self._error(
                f"declares {shape[0]} sensors, more than max_sensors ({self.spec.max_sensors}); "
                "raise --max-sensors to read it",
                column="sensors",
            )
        sensors = self._read_small("sensors")
        self.sensors = tuple(str(s) for s in sensors)
        n = self._layout["timestamp"][0]
        if len(n) != 1:
            raise self._error(f"timestamp has shape {n}, expected (n,)", column="timestamp")
        self.n_rows = n[0]
        expected = {
            "turbine_id": (self.n_rows,),
            "values": (self.n_rows, len(self.sensors)),
            "label": (self.n_rows,),
            "fault_kind": (self.n_rows,),
            "fault_code": (self.n_rows,),
        }
        for key, shape in expected.items():
            if key in self._layout and self._layout[key][0] != shape:
                raise self._error(
                    f"has shape {self._layout[key][0]}, expected {shape} "
                    f"({self.n_rows} readings of {len(self.sensors)} sensors)",
                    column=key,
                )
        if self.n_rows == 0:
            raise self._error("no readings")
        self.has_labels = "label" in self._layout
        self._kind_names: np.ndarray | None = None
        if "fault_code" in self._layout:
            if "fault_kinds" not in names:
                raise self._error("fault_code without fault_kinds", column="fault_code")
            shape, _, _ = self._header("fault_kinds", "U")
            if len(shape) != 1 or shape[0] > _MAX_KINDS:
                raise self._error(
                    f"has shape {shape}: fault_kinds must be (K,) names, K <= {_MAX_KINDS}",
                    column="fault_kinds",
                )
            kinds = self._read_small("fault_kinds")
            if kinds.ndim != 1 or kinds.dtype.kind != "U":
                raise self._error("fault_kinds must be a 1-D array of names", column="fault_kinds")
            self._kind_names = kinds
        self.has_kinds = "fault_kind" in self._layout or self._kind_names is not None
        self.ignored: list[str] = []
        self.names = TurbineNames()
        if "turbine_names" in names:
            shape, _, _ = self._header("turbine_names", "U")
            if len(shape) != 1 or shape[0] > _MAX_NAMES:
                raise self._error(
                    f"has shape {shape}: turbine_names must be (k,) names, k <= {_MAX_NAMES}",
                    column="turbine_names",
                )
            stored = self._read_small("turbine_names")
            if stored.ndim != 1 or stored.dtype.kind != "U":
                raise self._error(
                    "turbine_names must be a 1-D array of names", column="turbine_names"
                )
            try:
                self.names = TurbineNames.from_state({"turbine_names": stored})
            except SchemaError as exc:
                raise self._error(str(exc), column="turbine_names") from None
        if self.spec.sensors is not None:
            self._select_sensors(self.spec.sensors)

    def _select_sensors(self, pairs: tuple[tuple[str, str], ...]) -> None:
        """Keep (and rename) the sensors ``pairs`` names, as the CSV reader does."""
        index = []
        for col, _ in pairs:
            if col not in self.sensors:
                raise self._error(
                    f"--sensors: no sensor {col!r} (sensors: {', '.join(self.sensors)})",
                    column="sensors",
                )
            index.append(self.sensors.index(col))
        self.ignored = [s for i, s in enumerate(self.sensors) if i not in index]
        self._sensor_index: list[int] | None = index
        self.sensors = tuple(name for _, name in pairs)

    def _header(self, key: str, kinds: str) -> tuple[tuple[int, ...], np.dtype, int]:
        """Declared shape, dtype and header length of member ``key``, read and checked.

        The dtype must be of one of ``kinds`` (never object), strings at most
        ``_NAME_CHARS`` characters, C order, and the declared size must be the
        size the zip directory gives the member: nothing is read on trust.
        """
        info = self._zip.getinfo(self._members[key])
        with self._zip.open(info) as f:
            try:
                shape, fortran, dtype = read_npy_header(f)
            except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
                raise self._error(f"bad .npy header: {exc}", column=key) from None
            header_len = f.tell()
        if dtype.hasobject:
            raise self._error("object arrays (pickle) are not accepted", column=key)
        if dtype.kind not in kinds:
            raise self._error(f"dtype {dtype} not accepted", column=key)
        if dtype.kind == "U" and dtype.itemsize > 4 * _NAME_CHARS:
            raise self._error(
                f"dtype {dtype}: strings longer than {_NAME_CHARS} characters", column=key
            )
        if fortran and len(shape) > 1:
            raise self._error("Fortran-ordered arrays are not accepted; save C order", column=key)
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        if header_len + nbytes != info.file_size:
            raise self._error(
                f"declares shape {shape} ({nbytes} bytes) but holds "
                f"{info.file_size - header_len} bytes (truncated or corrupt)",
                column=key,
            )
        return shape, dtype, header_len

    def _read_small(self, key: str) -> np.ndarray:
        """A member whose header :meth:`_header` has bounded, read whole."""
        with self._zip.open(self._members[key]) as f:
            try:
                return np.lib.format.read_array(f, allow_pickle=False)
            except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
                raise self._error(f"bad {key} array: {exc}", column=key) from None

    def __iter__(self) -> Iterator[Chunk]:
        pick = getattr(self, "_sensor_index", None)
        streams = {}
        try:
            for key, (_, _, header_len) in self._layout.items():
                s = self._zip.open(self._members[key])
                s.read(header_len)
                streams[key] = s
            rows = self.spec.chunk_rows
            for start in range(0, self.n_rows, rows):
                k = min(rows, self.n_rows - start)
                arrays = {key: self._read(streams[key], key, k, start) for key in streams}
                ts = arrays["timestamp"].astype(np.float64, copy=False)
                bad = np.flatnonzero(~np.isfinite(ts))
                if bad.size:
                    raise self._error(
                        "missing or infinite timestamp", start + int(bad[0]), "timestamp"
                    )
                yield Chunk(
                    ts,
                    arrays["turbine_id"].astype(np.int64)
                    if "turbine_id" in arrays
                    else np.zeros(k, dtype=np.int64),
                    arrays["values"].astype(np.float64, copy=False)
                    if pick is None
                    else arrays["values"][:, pick].astype(np.float64),
                    arrays["label"].astype(np.int8) if "label" in arrays else None,
                    self._kinds_of(arrays),
                    np.arange(start, start + k, dtype=np.int64),
                )
        finally:
            for s in streams.values():
                s.close()

    def _kinds_of(self, arrays: dict[str, np.ndarray]) -> np.ndarray | None:
        if "fault_kind" in arrays:
            return arrays["fault_kind"]
        if self._kind_names is None:
            return None
        codes = arrays["fault_code"].astype(np.intp)
        if codes.size and (codes.min() < 0 or codes.max() >= self._kind_names.size):
            raise self._error("fault code outside fault_kinds", column="fault_code")
        return self._kind_names[codes]

    def _read(self, stream: IO[bytes], key: str, k: int, start: int) -> np.ndarray:
        shape, dtype, _ = self._layout[key]
        row_shape = shape[1:]
        want = k * int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
        try:
            buf = stream.read(want)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise self._error(f"corrupt data ({exc})", start, key) from None
        if len(buf) != want:
            raise self._error(
                f"truncated: ends inside row {start + len(buf) // max(1, want // k)}", start, key
            )
        return np.frombuffer(buf, dtype=dtype).reshape((k, *row_shape))

    def close(self) -> None:
        self._zip.close()
