#!/usr/bin/env bash
# The Dockerfile's runtime stage, assembled without Docker: compile, install production
# dependencies only (npm ci --omit=dev --ignore-scripts, as the image does), lay out /app as
# the image does, then start `serve --standalone` from it and make one decision. Catches a
# runtime import of a devDependency or a file the image forgets, on machines without a Docker
# engine, in seconds and without root. It does not check the base image, the USER or the filesystem
# permissions; `npm run e2e` does, building the real image and running it as the chart's Pods
# (docs/e2e.md).
#
#   scripts/runtime-smoke.sh          # needs npm and network access to the npm registry
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/policyguard-runtime.XXXXXX")
PORT=${PORT:-18765}
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'runtime-smoke: FAILED: %s\n' "$*" >&2; [ -f "$WORK/serve.log" ] && cat "$WORK/serve.log" >&2; exit 1; }

# The project's own Node (the `node` devDependency), the release the image's base pins.
NODE="$ROOT/node_modules/.bin/node"
[ -x "$NODE" ] || { echo "runtime-smoke: run npm ci in $ROOT first (needs its node_modules/.bin/node)" >&2; exit 2; }

step "build stage: npm run build"
(cd "$ROOT" && npm run build --silent)

step "deps stage: npm ci --omit=dev --ignore-scripts"
mkdir -p "$WORK/app"
cp "$ROOT/package.json" "$ROOT/package-lock.json" "$WORK/app/"
(cd "$WORK/app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
find "$WORK/app/node_modules" -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -delete
rm -rf "$WORK/app/node_modules/@types" "$WORK/app/package-lock.json"

step "runtime stage: /app = package.json, node_modules, dist, config-samples"
cp -r "$ROOT/dist" "$ROOT/config-samples" "$WORK/app/"
du -sh "$WORK/app/node_modules" | sed 's/^/node_modules: /'

step "ENTRYPOINT + CMD: node /app/dist/policyguard.js serve --standalone ..."
(cd "$WORK/app" && NODE_ENV=production "$NODE" dist/policyguard.js help >/dev/null) || fail "help did not run"
(cd "$WORK/app" && NODE_ENV=production exec "$NODE" dist/policyguard.js serve --standalone \
  --config-dir "$WORK/app/config-samples" --data-dir "$WORK/data" --port "$PORT" >"$WORK/serve.log" 2>&1) &
SERVER_PID=$!
for _ in $(seq 1 50); do
  if [ "$(curl -s "http://127.0.0.1:${PORT}/readyz" || true)" = ok ]; then break; fi
  sleep 0.2
done
[ "$(curl -s "http://127.0.0.1:${PORT}/readyz")" = ok ] || fail "/readyz did not answer ok"
decision=$(curl -sS "http://127.0.0.1:${PORT}/mcp" \
  -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
  -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"validate_action","arguments":{"action_type":"tool_call","target":"drop_table","agent_id":"data-processor"}}}')
grep -q '"decision":"deny"' <<<"$decision" || fail "expected a deny, got: $decision"
echo "validate_action drop_table as data-processor: deny"
# The dashboard reads uPlot from node_modules at run time (the bundle does not carry it).
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT}/ui/uplot.js")" = 200 ] || fail "/ui/uplot.js did not answer 200"
echo "dashboard assets: /ui/uplot.js 200"
printf '\nruntime-smoke: PASSED\n'
