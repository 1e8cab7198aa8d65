# The Python services (simulator, replayer, detectors): slim and non-root.
# Installed from a wheelhouse built on the host (`make wheelhouse`), so the
# build itself needs no network. BASE_IMAGE is any Debian-like image with
# Python 3.11+ and its venv module (the official slim image by default).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

COPY dist/wheelhouse/ /tmp/wheelhouse/
# The engine's compiled kernels (numba) are compiled at build time into a cache
# the service user owns (numba only uses a cache directory it can write), so a
# container's first batch loads them instead of compiling (about 20 s).
ENV NUMBA_CACHE_DIR=/opt/turbine/numba-cache
RUN python3 -m venv /opt/turbine \
 && /opt/turbine/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheelhouse turbine-watch \
 && /opt/turbine/bin/python -m pipeline.kernels \
 && rm -rf /tmp/wheelhouse \
 && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home turbine \
 && mkdir -p /data \
 && chown turbine:turbine /data \
 && chown -R turbine:turbine /opt/turbine/numba-cache

ENV PATH=/opt/turbine/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TURBINE_METRICS_ADDRESS=0.0.0.0
USER 10001:10001
WORKDIR /data
ENTRYPOINT ["turbine"]
CMD ["--help"]
