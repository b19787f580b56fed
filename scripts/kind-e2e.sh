#!/usr/bin/env bash
# The end-to-end checks on kind, for machines with a Docker engine: `npm run e2e` with
# E2E_CLUSTER=kind (tests/e2e, docs/e2e.md) builds the image with `docker build`, creates a kind
# cluster, loads the image and runs the same checks as on our one-node cluster.
#
#   scripts/kind-e2e.sh                 # deletes the cluster at the end
#   E2E_KEEP=1 scripts/kind-e2e.sh      # keeps it (kind delete cluster --name policyguard-e2e)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund
E2E_CLUSTER=kind exec npm run e2e
