#!/usr/bin/env bash
# End-to-end on a throwaway kind cluster, for people with Docker:
#   build the image -> kind create cluster -> kind load -> helm install (waits for Ready pods)
#   -> apply the policy samples -> port-forward -> validate_action with curl (allow and deny)
#   -> check the Ready conditions, the PolicyViolation Event and the leader Lease.
#
# Needs: docker (with a running engine), kind, kubectl, helm 3, curl. Run from anywhere:
#   scripts/kind-e2e.sh                 # deletes the cluster at the end
#   KEEP_CLUSTER=1 scripts/kind-e2e.sh  # keeps it (kubectl --context kind-policyguard-e2e ...)
#
# Not run by CI: CI machines have no Docker engine. The same chart, RBAC and samples are
# checked there against a real kube-apiserver (tests/cluster/helm.test.ts, rbac.test.ts,
# samples.test.ts); what only this script checks is the image itself and pods actually running.
set -euo pipefail

CLUSTER=${CLUSTER:-policyguard-e2e}
IMAGE=${IMAGE:-policyguard:e2e}
NAMESPACE=${NAMESPACE:-policyguard}
RELEASE=${RELEASE:-policyguard}
LOCAL_PORT=${LOCAL_PORT:-18000}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONTEXT="kind-${CLUSTER}"

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'kind-e2e: FAILED: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || { printf 'kind-e2e: needs %s on PATH (%s)\n' "$1" "$2" >&2; exit 2; }; }

need docker "https://docs.docker.com/engine/install/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/ (Helm 3)"
need curl "your package manager"
docker info >/dev/null 2>&1 || { echo "kind-e2e: docker cannot reach a Docker engine (docker info failed)" >&2; exit 2; }

k() { kubectl --context "$CONTEXT" "$@"; }

PF_PID=""
cleanup() {
  local code=$?
  if [ -n "$PF_PID" ]; then kill "$PF_PID" 2>/dev/null || true; fi
  if [ "$code" -ne 0 ] && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    echo "--- diagnostics ---" >&2
    k -n "$NAMESPACE" get pods -o wide >&2 || true
    k -n "$NAMESPACE" logs -l "app.kubernetes.io/instance=${RELEASE}" --tail=50 --prefix >&2 || true
  fi
  if [ "$KEEP_CLUSTER" = 1 ]; then
    echo "kind-e2e: keeping cluster ${CLUSTER} (kind delete cluster --name ${CLUSTER})"
  elif kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    kind delete cluster --name "$CLUSTER" >/dev/null
  fi
  exit "$code"
}
trap cleanup EXIT

step "docker build -t ${IMAGE}"
docker build -t "$IMAGE" "$ROOT"

step "kind create cluster --name ${CLUSTER}"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "reusing the existing cluster ${CLUSTER}"
else
  kind create cluster --name "$CLUSTER" --wait 120s
fi

step "kind load docker-image ${IMAGE}"
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "helm install ${RELEASE} (namespace ${NAMESPACE}, Pod Security 'restricted' enforced)"
k create namespace "$NAMESPACE" --dry-run=client -o yaml | k apply -f -
k label namespace "$NAMESPACE" --overwrite pod-security.kubernetes.io/enforce=restricted
helm upgrade --install "$RELEASE" "$ROOT/helm/policyguard" --kube-context "$CONTEXT" --namespace "$NAMESPACE" \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --wait --timeout 5m

step "apply the policy samples, and a caller for this test"
# Top-level files only (kubectl -f DIR does not recurse): kagent/, argocd/ and flux/ need CRDs
# that this cluster does not have.
k apply --server-side -f "$ROOT/config-samples/"
# Under the chart's --auth kubernetes a caller acts only as GuardAgents that name its
# ServiceAccount; this one is low trust, so the sample policy denies destructive tools to it.
k -n "$NAMESPACE" create serviceaccount e2e-caller --dry-run=client -o yaml | k apply -f -
k apply --server-side -f - <<EOF
apiVersion: policyguard.dev/v1alpha1
kind: GuardAgent
metadata: {name: e2e-agent, namespace: ${NAMESPACE}}
spec:
  trustLevel: low
  identities:
    - serviceAccount: {namespace: ${NAMESPACE}, name: e2e-caller}
EOF
k -n "$NAMESPACE" wait --for=condition=Ready guardpolicies --all --timeout=60s
k -n "$NAMESPACE" wait --for=condition=Ready guardagents --all --timeout=60s
k get guardpolicies,guardagents -A

step "port-forward service/${RELEASE} to 127.0.0.1:${LOCAL_PORT}"
k -n "$NAMESPACE" port-forward "service/${RELEASE}" "${LOCAL_PORT}:8000" >/dev/null 2>&1 &
PF_PID=$!
for _ in $(seq 1 30); do
  if [ "$(curl -s "http://127.0.0.1:${LOCAL_PORT}/readyz" || true)" = ok ]; then break; fi
  sleep 1
done
[ "$(curl -s "http://127.0.0.1:${LOCAL_PORT}/readyz")" = ok ] || fail "/readyz did not answer ok"
echo "/readyz: ok"

TOKEN=$(k -n "$NAMESPACE" create token e2e-caller --audience policyguard)
validate() {
  curl -sS "http://127.0.0.1:${LOCAL_PORT}/mcp" \
    -H "authorization: Bearer ${TOKEN}" \
    -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"validate_action\",\"arguments\":{\"action_type\":\"tool_call\",\"target\":\"$1\",\"agent_id\":\"e2e-agent\"}}}"
}

step "validate_action: read_records (expect allow)"
allowed=$(validate read_records)
echo "$allowed"
grep -q '"decision":"allow"' <<<"$allowed" || fail "read_records was not allowed"

step "validate_action: delete_records (expect deny by block-destructive-tools)"
denied=$(validate delete_records)
echo "$denied"
grep -q '"decision":"deny"' <<<"$denied" || fail "delete_records was not denied"
grep -q 'Delete operations require admin trust level' <<<"$denied" || fail "the deny did not come from the sample policy"

step "unauthenticated calls are refused"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${LOCAL_PORT}/mcp" \
  -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
  -d '{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
[ "$code" = 401 ] || fail "expected 401 without a token, got ${code}"
echo "no token: 401"

step "the deny is a PolicyViolation Event; one replica holds the leader Lease"
for _ in $(seq 1 20); do
  if k -n "$NAMESPACE" get events --field-selector reason=PolicyViolation -o name | grep -q .; then break; fi
  sleep 1
done
k -n "$NAMESPACE" get events --field-selector reason=PolicyViolation -o name | grep -q . || fail "no PolicyViolation Event"
holder=$(k -n "$NAMESPACE" get lease policyguard-leader -o jsonpath='{.spec.holderIdentity}')
[ -n "$holder" ] || fail "nobody holds the Lease policyguard-leader"
echo "leader: ${holder}"

printf '\nkind-e2e: PASSED\n'
