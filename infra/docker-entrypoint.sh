#!/bin/sh
# Entrypoint of the dataslayer images: check the state and cache folders, then exec the command.
#
# `exec` replaces this shell, so the command runs as the container's main process and receives
# SIGTERM from `docker stop` itself (a Celery worker then checkpoints its job out and requeues it).
# A folder the service cannot write (a host directory bind-mounted with the wrong owner) stops the
# container here with a clear message, instead of failing a training job at its first checkpoint.
set -eu

for dir in "${DATASLAYER_STATE_DIR:-}" "${DATASLAYER_CACHE_DIR:-}"; do
    [ -n "$dir" ] || continue
    if ! mkdir -p "$dir" 2>/dev/null || [ ! -w "$dir" ]; then
        echo "dataslayer-entrypoint: $dir is not writable by uid $(id -u); on the host: chown -R $(id -u):$(id -g) <the folder mounted there>" >&2
        exit 1
    fi
done

if [ "$#" -eq 0 ]; then
    echo "dataslayer-entrypoint: no command given" >&2
    exit 2
fi
exec "$@"
