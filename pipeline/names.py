"""Turbine names: a string name such as ``R80711`` is a fixed int64 id everywhere.

The engine keys every per-turbine array by an int64 id.  Real SCADA names its
turbines with strings, so a name is turned into an id by a function of the
name alone:

* a name that is a canonical decimal integer (``"7"``, ``"-3"``; not
  ``"007"``) is that integer, so integer ids keep working unchanged;
* any other name is ``-(2**32 + h)`` where ``h`` is a 61-bit BLAKE2b hash of
  its UTF-8 bytes: a negative id far below any integer id a fleet uses.

Because the id depends on the name only, the mapping needs no coordination:
it is the same after a restart, in every partition and in every merge of
states.  What must be kept is the way back, from id to name, for display:
:class:`TurbineNames` holds it and is saved with the detector state, the
checkpoints and the store manifest.  Two different names with the same hash
(probability about 2**-61 per pair) are an error, never a silent merge.

>>> names = TurbineNames()
>>> ids = names.ids_of(["R80711", "7", "R80711"])
>>> int(ids[1]), bool(ids[0] == ids[2]), bool(ids[0] < -(2**32))
(7, True, True)
>>> names.labels(ids)
['R80711', '7', 'R80711']
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pipeline.errors import SchemaError

I64 = NDArray[np.int64]

_HASH_BASE = 1 << 32
_HASH_BITS = 61
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_I64_MAX = (1 << 63) - 1
MAX_NAME_LENGTH = 200


def turbine_id(name: str | int) -> int:
    """The int64 id of a turbine name (an int is its own id).

    >>> turbine_id("12"), turbine_id(12)
    (12, 12)
    >>> turbine_id("R80711") == turbine_id("R80711") != turbine_id("R80721")
    True
    """
    if isinstance(name, int | np.integer) and not isinstance(name, bool):
        value = int(name)
        if not -_I64_MAX - 1 <= value <= _I64_MAX:
            raise SchemaError(f"turbine id {value} does not fit in 64 bits")
        return value
    if not isinstance(name, str):
        raise SchemaError(f"a turbine name must be a string or an integer, not {name!r}")
    text = name.strip()
    if text == "":
        raise SchemaError("empty turbine name")
    if len(text) > MAX_NAME_LENGTH:
        raise SchemaError(f"turbine name longer than {MAX_NAME_LENGTH} characters")
    if not text.isprintable():
        raise SchemaError(f"turbine name {text!r} holds control characters")
    if _INTEGER.fullmatch(text):
        value = int(text)
        if -_I64_MAX - 1 <= value <= _I64_MAX:
            return value
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    h = int.from_bytes(digest, "little") >> (64 - _HASH_BITS)
    return -(_HASH_BASE + h)


def is_hashed(ids: I64) -> NDArray[np.bool_]:
    """Whether each id (shape (n,)) is the hash of a non-integer name."""
    return np.asarray(ids, dtype=np.int64) <= -_HASH_BASE


class TurbineNames:
    """The names behind hashed turbine ids: the way back from id to name.

    Parameters
    ----------
    pairs : mapping of id to name, optional
    """

    def __init__(self, pairs: Mapping[int, str] | None = None) -> None:
        self._names: dict[int, str] = {}
        if pairs:
            self.add(pairs.values())

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, turbine: object) -> bool:
        return isinstance(turbine, int) and turbine in self._names

    def items(self) -> list[tuple[int, str]]:
        """(id, name) pairs, by name."""
        return sorted(self._names.items(), key=lambda kv: kv[1])

    def add(self, names: Iterable[str]) -> None:
        """Register names (those that are integers need no entry)."""
        for name in names:
            text = name.strip()
            tid = turbine_id(text)
            if tid > -_HASH_BASE:
                continue
            known = self._names.setdefault(tid, text)
            if known != text:
                raise SchemaError(f"turbine names {known!r} and {text!r} have the same id {tid}")

    def ids_of(self, names: Sequence[str] | ArrayLike) -> I64:
        """Ids of names, shape (n,) for n names; registers the non-integer ones.

        Hashes each distinct name once, so a column of a few names repeated
        over many rows costs one ``np.unique``.
        """
        arr = np.asarray(names)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if arr.dtype.kind in "iu":
            return arr.astype(np.int64).ravel()
        uniq, inverse = np.unique(arr.astype(str).ravel(), return_inverse=True)
        self.add(uniq.tolist())
        ids = np.array([turbine_id(str(u)) for u in uniq.tolist()], dtype=np.int64)
        return ids[inverse.ravel()]

    def name_of(self, turbine: int) -> str:
        """The name of one id (its decimal form when it is not a hashed name)."""
        return self._names.get(int(turbine), str(int(turbine)))

    def labels(self, ids: ArrayLike) -> list[str]:
        """Names of ids, shape (n,) -> n strings."""
        arr = np.asarray(ids, dtype=np.int64).ravel()
        if not self._names:
            return [str(v) for v in arr.tolist()]
        uniq, inverse = np.unique(arr, return_inverse=True)
        text = [self.name_of(v) for v in uniq.tolist()]
        return [text[i] for i in inverse.ravel().tolist()]

    def merge(self, other: TurbineNames) -> TurbineNames:
        """Union with another map (in place); a hash collision is an error."""
        self.add(other._names.values())
        return self

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, np.ndarray]:
        """As plain arrays: ``turbine_names`` (k,) strings (``np.savez``-able)."""
        names = [name for _, name in self.items()]
        return {"turbine_names": np.array(names, dtype=np.str_)}

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> TurbineNames:
        """Rebuild from :meth:`state` (an absent key means no names)."""
        out = cls()
        if "turbine_names" in state:
            out.add(str(v) for v in np.asarray(state["turbine_names"]).ravel().tolist())
        return out

    def to_json(self) -> list[str]:
        """The names as a JSON-able list (ids follow from them)."""
        return [name for _, name in self.items()]

    @classmethod
    def from_json(cls, names: object) -> TurbineNames:
        """Rebuild from :meth:`to_json` (``None`` means no names)."""
        out = cls()
        if names is None:
            return out
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SchemaError("turbine names must be a list of strings")
        out.add(names)
        return out
