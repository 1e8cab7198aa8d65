"""numba's disk cache of the kernels, kept fresh by the source of every kernel module.

numba keys a cached kernel by its own file's source alone, yet a kernel
compiles in the kernels it calls from other modules (``score_then_learn``
holds ``score_then_learn_lanes``, ``whiten_sorted``, ``learn_sorted``...).
After an upgrade that changed only a callee's module, numba would load the
caller's old machine code and run the old callee.  The locators here give
every kernel of this package one stamp, the digest of all its modules, so a
change to any of them recompiles them all; functions outside the package
keep numba's own locators.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from numba.core import caching

PACKAGE = Path(__file__).resolve().parent


def kernels_digest(package: Path = PACKAGE) -> str:
    """SHA-256 of the names and bytes of the package's modules, in name order."""
    h = hashlib.sha256()
    for path in sorted(package.glob("*.py")):
        h.update(path.name.encode())
        h.update(b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


_DIGEST = kernels_digest()


class _PackageStamp:
    """A locator mixin: the package's digest as the stamp, for this package's functions only."""

    def get_source_stamp(self) -> str:
        return _DIGEST

    @classmethod
    def from_function(cls, py_func: Any, py_file: str) -> Any:  # noqa: ANN401 (numba's API)
        if Path(py_file).resolve().parent != PACKAGE:
            return None
        return super().from_function(py_func, py_file)  # type: ignore[misc]


def _locator(name: str) -> Any:  # noqa: ANN401 (a numba class)
    """numba's locator class ``name`` (public since numba 0.61, underscored before)."""
    return getattr(caching, name, None) or getattr(caching, "_" + name)


class _UserProvided(_PackageStamp, _locator("UserProvidedCacheLocator")):  # type: ignore[misc]
    """``NUMBA_CACHE_DIR``, when it is set (numba's first choice)."""


class _InTree(_PackageStamp, _locator("InTreeCacheLocator")):  # type: ignore[misc]
    """``__pycache__`` beside the package."""


class _UserWide(_PackageStamp, _locator("UserWideCacheLocator")):  # type: ignore[misc]
    """numba's user-wide cache directory, when the package's is not writable."""


def install() -> None:
    """Put the package's locators first, in numba's order; before any kernel is decorated."""
    classes = caching.CacheImpl._locator_classes
    if _InTree not in classes:
        classes[:0] = [_UserProvided, _InTree, _UserWide]
