#!/bin/sh
# Entrypoint of the compose file's Redis: write REDIS_PASSWORD into the config file the command names,
# then start Redis the way its image does.
#
# The command is `redis-server CONFIG --flag ...` (docker-compose.yml). `requirepass` goes into CONFIG,
# mode 600, so the password is never on Redis' command line (what `ps` shows to everyone on the host),
# the same as the local stack's <state>/redis.conf (worker/stack.py).
set -eu

if [ "$(basename "${1:-x}")" != "redis-server" ] || [ -z "${2:-}" ]; then
    echo "redis-entrypoint: expected 'redis-server CONFIG [flags]', got: $*" >&2
    exit 2
fi
if [ -z "${REDIS_PASSWORD:-}" ]; then
    echo "redis-entrypoint: REDIS_PASSWORD is empty; set it in .env" >&2
    exit 2
fi
conf=$2
umask 077
mkdir -p "$(dirname "$conf")"
escaped=$(printf '%s' "$REDIS_PASSWORD" | sed 's/\\/\\\\/g; s/"/\\"/g')
printf '# written by infra/redis-entrypoint.sh\nrequirepass "%s"\n' "$escaped" > "$conf"
if [ "$(id -u)" = 0 ] && id redis >/dev/null 2>&1; then
    chown redis "$conf" "$(dirname "$conf")" # the image's entrypoint runs Redis as the redis user
fi
unset REDIS_PASSWORD # Redis itself reads the file; the health check has REDISCLI_AUTH
if command -v docker-entrypoint.sh >/dev/null 2>&1; then
    exec docker-entrypoint.sh "$@" # the redis image's own: drops to the redis user, then execs Redis
fi
exec "$@"
