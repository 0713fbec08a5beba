#!/usr/bin/env bash
# End-to-end test of the web UI that `weir serve` (cluster mode) serves under /ui/, in a real
# headless Chromium: log in with the cluster token through the login form, then the runs page,
# a run's tree with its folded group, an action's detail and the timeline, all read from
# PostgreSQL. Needs PostgreSQL (WEIR_TEST_POSTGRES, default postgres://postgres@127.0.0.1:5432/test);
# uses a schema of its own, dropped at the end. Installs what run.sh installs.
#
#   crates/weir-server/e2e/serve.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
database=${WEIR_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
schema=e2e_ui_$$

if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if [[ ! -d "$here/node_modules/playwright-core" ]]; then
  (cd "$here" && npm install --no-audit --no-fund --loglevel=error)
fi
cargo build -q -p weir -p weir-examples --bin weir --bin pipeline
bin=$CARGO_TARGET_DIR/debug

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "$database" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

"$bin/weir" serve --database "$database" --schema "$schema" --listen 127.0.0.1:0 2>serve.log &
pids+=($!)
url=
for _ in $(seq 200); do
  # The space after the port: only a whole address (the line may be read while written).
  url=$(grep -o 'listening on http://127.0.0.1:[0-9]* ' serve.log | grep -o 'http://[^ ]*' || true)
  [[ -n $url ]] && break
  sleep 0.1
done
[[ -n $url ]] || { cat serve.log >&2; echo "serve did not start" >&2; exit 1; }
"$bin/pipeline" worker --server "$url" --env optimized-pipeline --concurrency 8 2>worker.log &
pids+=($!)
"$bin/pipeline" run process_dataset --name e2e --input '{"n_items": 4000, "batch_size": 500}' --server "$url" >/dev/null

shots=$root/target/ui-screenshots/serve
mkdir -p "$shots"
WEIR_SERVE_URL=$url WEIR_TOKEN_FILE=$work/.weir/cluster-token WEIR_UI_SHOTS=$shots \
  node --test "$here/serve.test.mjs"
echo "screenshots: $shots"
