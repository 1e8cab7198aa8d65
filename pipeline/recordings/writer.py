"""Writing recordings chunk by chunk, published atomically when complete.

Output goes to a temporary file beside the target and is renamed into place
only by :meth:`RecordingWriter.close`; a run that fails or is interrupted
leaves no half-written file under the target name.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa
from pyarrow.parquet import ParquetWriter

from pipeline.durable import publish
from pipeline.errors import InputError, SchemaError
from pipeline.names import TurbineNames
from pipeline.recordings.npzfile import FORMAT_VERSION
from pipeline.recordings.spec import ID_COL, KIND_COL, LABEL_COL, TIME_COL, Chunk


class RecordingWriter:
    """Write a recording (CSV, ``.npz`` or Parquet by the file's extension).

    Parameters
    ----------
    path : str or Path
        Target file; ``.npz`` writes the binary format, ``.parquet`` Parquet
        (one row group per chunk written; the CSV columns, the id column as
        names when names are known at the first chunk, else int64), anything
        else CSV.
    sensors : sequence of str
        Sensor names, D of them.
    labels, kinds : bool
        Whether chunks carry labels and fault kinds.
    sep : str
        CSV separator.
    names : TurbineNames, optional
        The names behind hashed turbine ids: the CSV id column holds the
        names, the ``.npz`` a ``turbine_names`` array.  Names met later
        (``names`` grows as its recording is read) are written too.
    """

    def __init__(
        self,
        path: str | Path,
        sensors: tuple[str, ...] | list[str],
        labels: bool = False,
        kinds: bool = False,
        sep: str = ",",
        names: TurbineNames | None = None,
    ) -> None:
        self.path = Path(path)
        self.sensors = tuple(sensors)
        self.labels = labels
        self.kinds = kinds
        self.sep = sep
        self.names = names if names is not None else TurbineNames()
        self.rows = 0
        self._kind_names: list[str] = []
        self.binary = self.path.suffix.lower() == ".npz"
        self.parquet = self.path.suffix.lower() == ".parquet"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmpdir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        if self.parquet:
            cols = [TIME_COL, ID_COL, *self.sensors]
            cols += [LABEL_COL] if labels else []
            cols += [KIND_COL] if kinds else []
            dup = next((c for c in cols if cols.count(c) > 1), None)
            if dup is not None:
                self.abort()
                raise SchemaError(f"column {dup!r} named twice")
            self._parquet: ParquetWriter | None = None
            self._named = False
        elif self.binary:
            self._parts = {
                key: open(self._tmpdir / key, "wb")  # noqa: SIM115 (closed in close/abort)
                for key in ("timestamp", "turbine_id", "values", "label", "fault_code")
            }
        else:
            self._csv = open(self._tmpdir / "out.csv", "w", encoding="utf-8", newline="\n")  # noqa: SIM115
            cols = [TIME_COL, ID_COL, *self.sensors]
            cols += [LABEL_COL] if labels else []
            cols += [KIND_COL] if kinds else []
            for name in cols:
                if sep in name:
                    raise SchemaError(f"column name {name!r} contains the separator {sep!r}")
            self._csv.write(sep.join(cols) + "\n")

    def _codes(self, kinds: np.ndarray) -> np.ndarray:
        """Fault kinds (n,) as int8 codes into ``fault_kinds`` (0 = normal), growing the list."""
        uniq, inverse = np.unique(np.asarray(kinds), return_inverse=True)
        lookup = np.empty(uniq.size, dtype=np.int8)
        for i, name in enumerate(uniq.tolist()):  # a loop over distinct kinds
            if name == "":
                lookup[i] = 0
                continue
            if name not in self._kind_names:
                if len(self._kind_names) >= 127:
                    raise SchemaError("more than 127 distinct fault kinds")
                self._kind_names.append(name)
            lookup[i] = self._kind_names.index(name) + 1
        return lookup[inverse]

    def write(self, chunk: Chunk) -> None:
        """Append a chunk of readings (values of shape (n, D))."""
        n = len(chunk)
        if chunk.values.shape != (n, len(self.sensors)):
            raise SchemaError(
                f"chunk values have shape {chunk.values.shape}, the recording has "
                f"{len(self.sensors)} sensors"
            )
        if n == 0:
            return
        labels = chunk.labels if chunk.labels is not None else np.zeros(n, dtype=np.int8)
        kinds = chunk.kinds if chunk.kinds is not None else np.full(n, "", dtype="<U1")
        if self.parquet:
            self._write_parquet(chunk, labels, kinds)
        elif self.binary:
            p = self._parts
            p["timestamp"].write(np.ascontiguousarray(chunk.timestamps, "<f8").tobytes())
            p["turbine_id"].write(np.ascontiguousarray(chunk.turbine_ids, "<i8").tobytes())
            p["values"].write(np.ascontiguousarray(chunk.values, "<f8").tobytes())
            p["label"].write(np.ascontiguousarray(labels, "i1").tobytes())
            p["fault_code"].write(self._codes(kinds).tobytes())
        else:
            numeric: list[np.ndarray] = [
                chunk.timestamps[:, None],
                chunk.turbine_ids[:, None],
                chunk.values,
            ]
            fmt = ["%.17g", "%d"] + ["%.17g"] * len(self.sensors)
            if self.labels:
                numeric.append(labels[:, None])
                fmt.append("%d")
            buf = io.StringIO()
            named = len(self.names) > 0
            if named:  # the id column as names: the numeric part without it, joined after
                del numeric[1], fmt[1]
            np.savetxt(buf, np.hstack(numeric), fmt=fmt, delimiter=self.sep)
            if named:
                sep = self.sep
                rows = buf.getvalue().splitlines()
                ids = self.names.labels(chunk.turbine_ids)
                bad = next((name for name in set(ids) if sep in name), None)
                if bad is not None:
                    raise SchemaError(f"turbine name {bad!r} contains the separator {sep!r}")
                joined = (
                    f"{ln.partition(sep)[0]}{sep}{name}{sep}{ln.partition(sep)[2]}"
                    for ln, name in zip(rows, ids, strict=True)
                )
                buf = io.StringIO("\n".join(joined) + "\n")
            if self.kinds:
                lines = buf.getvalue().splitlines()
                self._csv.write(
                    "".join(
                        f"{ln}{self.sep}{k}\n" for ln, k in zip(lines, kinds.tolist(), strict=True)
                    )
                )
            else:
                self._csv.write(buf.getvalue())
        self.rows += n

    def _write_parquet(self, chunk: Chunk, labels: np.ndarray, kinds: np.ndarray) -> None:
        named = len(self.names) > 0 if self._parquet is None else self._named
        ids: pa.Array = (
            pa.array(self.names.labels(chunk.turbine_ids), pa.string()).dictionary_encode()
            if named
            else pa.array(chunk.turbine_ids, pa.int64())
        )
        arrays: dict[str, pa.Array] = {
            TIME_COL: pa.array(chunk.timestamps, pa.float64()),
            ID_COL: ids,
        }
        for j, name in enumerate(self.sensors):
            arrays[name] = pa.array(chunk.values[:, j], pa.float64())
        if self.labels:
            arrays[LABEL_COL] = pa.array(labels, pa.int8())
        if self.kinds:
            arrays[KIND_COL] = pa.array(kinds.tolist(), pa.string()).dictionary_encode()
        table = pa.table(arrays)
        if self._parquet is None:
            self._named = named
            self._parquet = ParquetWriter(self._tmpdir / "out.parquet", table.schema)
        self._parquet.write_table(table)

    def close(self) -> Path:
        """Finish the file and move it into place; returns its path."""
        if self.rows == 0:
            self.abort()
            raise InputError("no readings to write", path=str(self.path))
        try:
            if self.parquet:
                assert self._parquet is not None  # noqa: S101 (rows were written)
                self._parquet.close()
                tmp = self._tmpdir / "out.parquet"
            elif self.binary:
                tmp = self._finish_npz()
            else:
                self._csv.close()
                tmp = self._tmpdir / "out.csv"
            publish(tmp, self.path)
        finally:
            self.abort()
        return self.path

    def _finish_npz(self) -> Path:
        for f in self._parts.values():
            f.close()
        n, d = self.rows, len(self.sensors)
        members: list[tuple[str, tuple[int, ...], str]] = [
            ("timestamp", (n,), "<f8"),
            ("turbine_id", (n,), "<i8"),
            ("values", (n, d), "<f8"),
        ]
        if self.labels:
            members.append(("label", (n,), "i1"))
        if self.kinds:
            members.append(("fault_code", (n,), "i1"))
        out = self._tmpdir / "out.npz"
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, shape, dtype in members:
                with zf.open(f"{key}.npy", "w", force_zip64=True) as dst:
                    header = {"descr": dtype, "fortran_order": False, "shape": shape}
                    np.lib.format.write_array_header_2_0(dst, header)
                    with open(self._tmpdir / key, "rb") as src:
                        while block := src.read(1 << 24):
                            dst.write(block)
            small = [
                ("sensors", np.array(self.sensors, dtype=np.str_)),
                *(
                    [("turbine_names", self.names.state()["turbine_names"])]
                    if len(self.names)
                    else []
                ),
                ("format_version", np.array(FORMAT_VERSION, dtype=np.int64)),
            ]
            if self.kinds:
                small.append(("fault_kinds", np.array(["", *self._kind_names], dtype=np.str_)))
            for key, arr in small:
                with zf.open(f"{key}.npy", "w") as dst:
                    np.lib.format.write_array(dst, arr, allow_pickle=False)
        return out

    def abort(self) -> None:
        """Drop everything written (the target is left as it was)."""
        if self.parquet:
            if getattr(self, "_parquet", None) is not None:
                self._parquet.close()  # type: ignore[union-attr]
        elif self.binary:
            for f in self._parts.values():
                f.close()
        else:
            self._csv.close()
        for child in self._tmpdir.glob("*"):
            child.unlink(missing_ok=True)
        self._tmpdir.rmdir() if self._tmpdir.exists() else None

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
