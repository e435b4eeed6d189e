# syntax=docker/dockerfile:1
# The umbra-waku bridge, and the example bots (examples/ is in /app/examples):
#
#   docker build -t umbra-waku:0.1.0 .
#   docker run --rm -p 127.0.0.1:8080:8080 -v umbra-data:/data --env-file deploy/bridge.env \
#       -e UMBRA_WAKU_NODE=http://NODE:8645 umbra-waku:0.1.0
#
# compose.yaml runs it next to an nwaku node. Settings are UMBRA_WAKU_* variables (see
# `umbra-waku bridge --help`); state (SQLite, admin.token) lives in the /data volume.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- build: wheels of umbra-waku and of its dependencies -------------------------------------
FROM ${PYTHON_IMAGE} AS build
# a C compiler for the native hint index (umbra_waku/_speedups.c); the runtime image needs none
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels . \
 && python -c "import sys, zipfile, glob; names = zipfile.ZipFile(glob.glob('/wheels/umbra_waku-*.whl')[0]).namelist(); sys.exit(not any('_speedups' in n and n.endswith('.so') for n in names))"

# ---- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UMBRA_WAKU_LISTEN=0.0.0.0:8080 \
    UMBRA_WAKU_DATA_DIR=/data
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels umbra-waku \
 && groupadd --system --gid 10001 umbra \
 && useradd --system --uid 10001 --gid umbra --home-dir /data --shell /usr/sbin/nologin umbra \
 && install -d -o umbra -g umbra -m 0700 /data /tokens
COPY examples/ /app/examples/

USER umbra:umbra
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=6 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('UMBRA_WAKU_LISTEN', ':8080').rpartition(':')[2]; sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/v1/health', timeout=3).status != 200)"]

ENTRYPOINT ["umbra-waku"]
CMD ["bridge"]
