#!/usr/bin/env bash
# The README's test command: makes PostgreSQL and Redis reachable, builds the workspace once,
# then runs every unit and integration test against the real servers. Each integration test
# creates its own database and Redis key prefix and removes them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH="$HOME/.cargo/bin:$PATH"
fi

scripts/services.sh

export WAYPOINT_TEST_DATABASE_URL=${WAYPOINT_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
export WAYPOINT_TEST_REDIS_URL=${WAYPOINT_TEST_REDIS_URL:-redis://127.0.0.1:6379}

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
  # nextest does not run doctests
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast "$@"
fi
