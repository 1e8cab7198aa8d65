"""Compile the kernels into numba's on-disk cache: ``python -m pipeline.kernels``."""

import sys

from pipeline.kernels.warmup import warm_cache

if __name__ == "__main__":
    print(f"pipeline.kernels: cache warm in {warm_cache():.1f} s", file=sys.stderr)
