#!/usr/bin/env bash
# Validates compose/docker-compose.yml without a Docker engine; installs nothing.
#
# Uses the first validator present:
#   1. the Docker Compose v2 plugin:  docker compose config --quiet
#   2. Compose v1 (Debian 12's `docker-compose` package: apt-get install --no-install-recommends docker-compose):
#                                     docker-compose config --quiet
# Both parse the file against the Compose schema, resolve anchors, interpolation and extends,
# and check references (depends_on targets, volumes); neither needs a running engine.
#
# Exit status: 0 valid, 1 invalid, 77 no validator available (the conventional "skipped").
# Usage: compose/validate.sh [COMPOSE_FILE]
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
file="${1:-$here/docker-compose.yml}"

# Interpolation should see the defaults written in the file, not this shell's settings.
unset SHOP_PROFILE RUST_LOG

run() {
    echo "validate: $1"
    shift
    if "$@" -f "$file" config --quiet; then
        echo "validate: OK: $file"
        return 0
    fi
    echo "validate: INVALID: $file" >&2
    return 1
}

if docker compose version >/dev/null 2>&1; then
    run "docker compose $(docker compose version --short 2>/dev/null)" docker compose
    exit $?
fi

if command -v docker-compose >/dev/null 2>&1; then
    run "docker-compose $(docker-compose version --short 2>/dev/null)" docker-compose
    exit $?
fi

echo "validate: no validator found: install the Docker Compose plugin, or on Debian 12" \
     "'apt-get install --no-install-recommends docker-compose'" >&2
exit 77
