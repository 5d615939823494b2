# syntax=docker/dockerfile:1
# The GPU worker image: `dataslayer worker --gpu N` on an NVIDIA CUDA runtime base.
# Build from the repository root (docker-compose.yml does): docker build -f infra/worker.Dockerfile .
#
# PyPI's torch 2.14.1 wheel bundles its CUDA 13.0 libraries (nvidia-* wheels), so the base image
# needs the matching CUDA *runtime* only (no cuDNN, no compiler) and the host an NVIDIA driver
# recent enough for CUDA 13.0 plus the NVIDIA Container Toolkit. When raising torch, check
# `python -c "import torch; print(torch.version.cuda)"` and move this tag with it.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
# The release's own python3: apt version pins (DL3008) would break at every point release of the base.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir "torch==2.14.1" "torchvision==0.29.1"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mlcore ./mlcore
COPY worker ./worker
COPY webui ./webui
# The project pins its dependency ranges in pyproject.toml, so DL3013 (pin pip versions) does not apply.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[deploy]"

FROM ${CUDA_IMAGE}
# The same Python as the build stage (the venv's interpreter links to /usr/bin/python3); DL3008 as above.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DATASLAYER_STATE_DIR=/var/lib/dataslayer/state \
    DATASLAYER_CACHE_DIR=/var/lib/dataslayer/cache \
    DATASLAYER_DATA_ROOT=/data
COPY --from=build /opt/venv /opt/venv
COPY infra/docker-entrypoint.sh /usr/local/bin/dataslayer-entrypoint
COPY infra/healthcheck.py /opt/dataslayer/
# The same unprivileged uid as the slim image, so both can share the state and cache volumes.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/dataslayer --shell /usr/sbin/nologin dataslayer \
    && mkdir -p /var/lib/dataslayer/state /var/lib/dataslayer/cache /data \
    && chown -R dataslayer:dataslayer /var/lib/dataslayer
USER 10001:10001
WORKDIR /var/lib/dataslayer/state
# Exec form: SIGTERM from `docker stop` reaches the Celery worker, which checkpoints the running
# job out and requeues it (worker/jobs.py); compose's stop_grace_period bounds how long it may take.
ENTRYPOINT ["/usr/local/bin/dataslayer-entrypoint"]
CMD ["dataslayer", "worker", "--gpu", "0"]
