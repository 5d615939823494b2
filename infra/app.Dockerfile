# syntax=docker/dockerfile:1
# The slim image: MLflow server, web UI (gunicorn), Flower, the bucket job and the CPU worker.
# Build from the repository root (docker-compose.yml does): docker build -f infra/app.Dockerfile .
# Only the files named in infra/app.Dockerfile.dockerignore reach the build.

FROM python:3.11-slim-bookworm AS build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# CPU-only torch (a few hundred MB instead of the CUDA build's gigabytes), at the versions the
# Makefile pins and the tests run; `==2.14.1` matches the index's `2.14.1+cpu`.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==2.14.1" "torchvision==0.29.1"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mlcore ./mlcore
COPY worker ./worker
COPY webui ./webui
# The project itself with its `deploy` extra (PostgreSQL driver, S3 client, Flower).
# The project pins its dependency ranges in pyproject.toml, so DL3013 (pin pip versions) does not apply.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[deploy]"

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DATASLAYER_STATE_DIR=/var/lib/dataslayer/state \
    DATASLAYER_CACHE_DIR=/var/lib/dataslayer/cache \
    DATASLAYER_DATA_ROOT=/data
COPY --from=build /opt/venv /opt/venv
COPY infra/docker-entrypoint.sh /usr/local/bin/dataslayer-entrypoint
COPY infra/create_bucket.py infra/healthcheck.py infra/mlflow-basic-auth.ini /opt/dataslayer/
# A fixed unprivileged user (uid 10001): a named volume mounted on these folders takes their owner
# the first time, so the services can write their state without running as root.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/dataslayer --shell /usr/sbin/nologin dataslayer \
    && mkdir -p /var/lib/dataslayer/state /var/lib/dataslayer/cache /var/lib/mlflow-auth /data \
    && chown -R dataslayer:dataslayer /var/lib/dataslayer /var/lib/mlflow-auth
USER 10001:10001
# Like the local stack, every service runs from the state folder (a predict job's relative
# --output lands there).
WORKDIR /var/lib/dataslayer/state
# Exec form throughout: the entrypoint `exec`s the command, so SIGTERM from `docker stop` reaches
# the Celery worker itself (it then checkpoints the running job out and requeues it).
ENTRYPOINT ["/usr/local/bin/dataslayer-entrypoint"]
# The image serves several roles: docker-compose.yml gives each service its command.
CMD ["dataslayer", "--help"]
