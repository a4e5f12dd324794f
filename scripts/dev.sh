#!/usr/bin/env bash
# The README's first command: runs Waypoint (`start --backfill`: both roles and backfill
# workers) against the built-in dev hub, with local PostgreSQL and Redis (installed and started
# by scripts/services.sh when absent).
#
#   scripts/dev.sh                 1,000 fids, 5 live messages/s, health on :8080
#   DEVHUB_FIDS=200 DEVHUB_LIVE_RATE=50 scripts/dev.sh
#   scripts/dev.sh consumer        other `start` arguments instead of `--backfill`
#
# Ctrl-C drains Waypoint (exit 0) and stops the dev hub. The dev hub writes what a correct
# replica must contain to target/devhub-state.json (at start and again when it stops).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH="$HOME/.cargo/bin:$PATH"
fi
scripts/services.sh
cargo build --release --bin waypoint
bin=target/release/waypoint

hub_addr=${DEVHUB_LISTEN:-127.0.0.1:3383}
"$bin" devhub --listen "$hub_addr" \
  --fids "${DEVHUB_FIDS:-1000}" --messages-per-fid "${DEVHUB_MESSAGES_PER_FID:-100}" \
  --live-rate "${DEVHUB_LIVE_RATE:-5}" --dump-state target/devhub-state.json &
devhub=$!
trap 'kill -TERM "$devhub" 2>/dev/null; wait "$devhub" 2>/dev/null || true' EXIT

export WAYPOINT_HUB__URL="http://$hub_addr"
export WAYPOINT_DATABASE__URL=${WAYPOINT_DATABASE__URL:-postgresql://postgres@127.0.0.1:5432/waypoint_dev}
export WAYPOINT_REDIS__URL=${WAYPOINT_REDIS__URL:-redis://127.0.0.1:6379}
export WAYPOINT_REDIS__PREFIX=${WAYPOINT_REDIS__PREFIX:-waypoint-dev}
echo "waypoint: health http://127.0.0.1:${PORT:-8080}/health, readiness /ready, metrics /metrics" >&2
if [ "$#" -eq 0 ]; then
  set -- --backfill
fi
"$bin" start "$@" &
waypoint=$!
trap 'kill -TERM "$waypoint" 2>/dev/null || true' INT TERM
set +e
wait "$waypoint"
status=$?
# A signal interrupted the first wait: wait for the drain to finish.
if kill -0 "$waypoint" 2>/dev/null; then
  wait "$waypoint"
  status=$?
fi
exit "$status"
