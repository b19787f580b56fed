#!/usr/bin/env bash
# Lints the GitHub Actions workflows (.github/workflows) with actionlint, built once from its Go
# module (the Go module proxy is all our machines reach) into
# ${XDG_CACHE_HOME:-~/.cache}/policyguard/actionlint/<version>/. .ci/run calls this.
#
#   scripts/actionlint.sh            # needs Go (as the test control plane does: docs/controlplane.md)
set -euo pipefail

VERSION=v1.7.12
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR="${XDG_CACHE_HOME:-$HOME/.cache}/policyguard/actionlint/${VERSION}"
BIN="$DIR/actionlint"

if [ ! -x "$BIN" ]; then
  command -v go >/dev/null || { echo "actionlint.sh: needs Go on PATH to build actionlint ${VERSION}" >&2; exit 2; }
  echo "actionlint.sh: building actionlint ${VERSION} from its Go module into ${DIR} (once)" >&2
  mkdir -p "$DIR"
  TMP=$(mktemp -d "$DIR/build.XXXXXX")
  trap 'rm -rf "$TMP"' EXIT
  GOBIN="$TMP" CGO_ENABLED=0 GOFLAGS= go install -trimpath -ldflags "-s -w -X github.com/rhysd/actionlint.version=${VERSION}" "github.com/rhysd/actionlint/cmd/actionlint@${VERSION}"
  mv "$TMP/actionlint" "$BIN"
fi

cd "$ROOT"
# shellcheck and pyflakes check `run:` scripts when they are installed; without them actionlint
# still checks syntax, expressions, action inputs and job dependencies.
"$BIN" -no-color
echo "actionlint ${VERSION}: .github/workflows ok"
