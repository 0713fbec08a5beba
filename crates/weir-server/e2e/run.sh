#!/usr/bin/env bash
# End-to-end tests of the weir UI in a real headless Chromium (playwright-core).
#
#   crates/weir-server/e2e/run.sh          # demo runs (a 2 000-child map, a failed run, ...), ~1 min after the build
#   crates/weir-server/e2e/run.sh --big    # also w1m (1 000 000 actions) and a flat 100 000-child map, release build
#
# Installs what it needs (idempotent): Debian's chromium (skipped when present) and
# playwright-core (npm, into e2e/node_modules). Screenshots and metrics.json go to
# target/ui-screenshots/ at the repository root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
big=0
[[ "${1:-}" == "--big" ]] && big=1

if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
if [[ ! -d "$here/node_modules/playwright-core" ]]; then
  (cd "$here" && npm install --no-audit --no-fund --loglevel=error)
fi

profile=debug
flags=()
if [[ $big == 1 ]]; then profile=release; flags=(--release); fi
cargo build -q -p weir-server "${flags[@]}" --bin weir-ui --example ui_fixture
bin=$CARGO_TARGET_DIR/$profile

work=$(mktemp -d)
state=$work/state
server=
cold=
cleanup() {
  [[ -n $server ]] && kill "$server" 2>/dev/null
  [[ -n $cold ]] && kill "$cold" 2>/dev/null
  rm -rf "$work"
  return 0
}
trap cleanup EXIT

t=$(date +%s%N)
if [[ $big == 1 ]]; then
  "$bin/examples/ui_fixture" "$state" --flat 100000 --million
else
  "$bin/examples/ui_fixture" "$state"
fi
echo "state built in $(( ($(date +%s%N) - t) / 1000000 )) ms" >&2

"$bin/weir-ui" --state-dir "$state" --port 0 2>"$work/server.log" &
server=$!
url=
for _ in $(seq 100); do
  url=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/server.log" || true)
  [[ -n $url ]] && break
  sleep 0.1
done
[[ -n $url ]] || { cat "$work/server.log" >&2; echo "server did not start" >&2; exit 1; }

cold_url=
if [[ $big == 1 ]]; then # a second server, so the 1M run page is also measured with nothing cached
  "$bin/weir-ui" --state-dir "$state" --port 0 2>"$work/cold.log" &
  cold=$!
  for _ in $(seq 100); do
    cold_url=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/cold.log" || true)
    [[ -n $cold_url ]] && break
    sleep 0.1
  done
fi

shots=$root/target/ui-screenshots
mkdir -p "$shots"
WEIR_UI_URL=$url WEIR_UI_COLD_URL=$cold_url WEIR_UI_SHOTS=$shots WEIR_UI_BIG=$big \
WEIR_UI_SLOW="'$bin/examples/ui_fixture' '$state' --slow 4" \
  node --test --test-concurrency=1 "$here/ui.test.mjs"

# The largest API answer over every endpoint at its largest page (what a script could ask for).
largest=0
largest_url=
probe() {
  local n
  n=$(curl -s -o /dev/null -w '%{size_download}' "$url/api$1")
  if (( n > largest )); then largest=$n; largest_url=$1; fi
}
runs=(demo doomed tiny)
[[ $big == 1 ]] && runs+=(w1m flat)
probe "/runs?limit=500"
for r in "${runs[@]}"; do
  probe "/runs/$r"
  probe "/runs/$r/actions/a0"
  probe "/runs/$r/actions/a0/children?limit=500"
  probe "/runs/$r/timeline?limit=500&buckets=2000"
  probe "/runs/$r/utilization?buckets=2000"
done
for g in square_map scoring; do probe "/runs/demo/actions/a0/groups/$g?limit=500"; done
[[ $big == 1 ]] && probe "/runs/w1m/actions/a0/groups/batch_map?limit=500&offset=500"
[[ $big == 1 ]] && probe "/runs/flat/actions/a0/groups/double_map?limit=500&offset=99500"
echo "largest API response: $largest bytes ($largest_url)"
echo "screenshots: $shots"
