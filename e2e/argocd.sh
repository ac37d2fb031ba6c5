#!/usr/bin/env bash
# Argo CD 3.6.1 on the control plane of e2e/cluster.sh (same state dir).
#
#   e2e/argocd.sh up      redis, Argo CD's CRDs and base config, a `default`
#                         AppProject, the API server registered as a cluster
#                         Secret, the Git server as a repository Secret, then
#                         argocd-repo-server and argocd-application-controller
#   e2e/argocd.sh down    stop them (by pid files)
#   e2e/argocd.sh env     print what `up` added (ARGOCD_* lines)
#
# Needs `e2e/cluster.sh up` (reads $PAVER_E2E_STATE/env) and
# `e2e/bin.sh build-argocd`. Processes log to $STATE/logs/<name>.log and
# leave pids in $STATE/pids/<name>.pid, like cluster.sh's (`cluster.sh down`
# stops them too). Every port is picked free.
#
# Argo CD runs outside any Pod, so `https://kubernetes.default.svc` means
# nothing to it: the cluster is registered under the API server's loopback
# URL ($PAVER_E2E_APISERVER), and the in-cluster name is disabled so an
# Application that still targets it fails with a clear condition. Run the
# operator with `--argocd-destination-server $PAVER_E2E_APISERVER` so the
# Applications it renders point there.
#
# No webhook (there is no argocd-server): Argo CD polls. For tests the
# reconciliation timeout is short (PAVER_E2E_ARGOCD_RESYNC, default 3s, the
# same setting as argocd-cm's `timeout.reconciliation`, which the real
# Deployments read through ARGOCD_RECONCILIATION_TIMEOUT), with no jitter.
#
# The controller keeps each resource's health (and its message, e.g. "exceeded
# its progress deadline") in the Application's status
# (`--persist-resource-health`, argocd-cmd-params-cm
# `controller.resource.health.persist: "true"`): Paver reads the message from
# there. Argo CD 3 defaults to keeping it only in redis; then the request
# names the unhealthy resource ("Caused by apps/Deployment:ns/name") without
# Kubernetes' reason.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/.." && pwd)"
STATE="${PAVER_E2E_STATE:-$REPO_ROOT/.e2e}"
RESYNC="${PAVER_E2E_ARGOCD_RESYNC:-3s}"
# How long repository errors are ignored before an Application shows them
# (Argo CD's default: 180 s).
ERROR_GRACE="${PAVER_E2E_ARGOCD_ERROR_GRACE:-10}"
NS=argocd

eval "$("$HERE/bin.sh" paths)"

# free_port, start, alive, wait_for and die are cluster.sh's (sourcing it
# only defines them); the state dir is the same.
# shellcheck source=e2e/cluster.sh
source "$HERE/cluster.sh"
log() { printf '[argocd.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

COMPONENTS=(argocd-application-controller argocd-repo-server argocd-redis)

stop() {
  local n="$1" f pid
  f="$STATE/pids/$n.pid"
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    log "stopped $n (pid $pid)"
  fi
  rm -f "$f"
}

cmd_down() {
  local n
  for n in "${COMPONENTS[@]}"; do stop "$n"; done
}

cmd_up() {
  [ -f "$STATE/env" ] || die "no cluster in $STATE (run: e2e/cluster.sh up)"
  # shellcheck disable=SC1091
  source "$STATE/env"
  [ -n "${GIT_URL:-}" ] || die "the cluster in $STATE has no Git server"
  [ -x "$ARGOCD_BIN_DIR/argocd" ] || die "Argo CD is not built (run: e2e/bin.sh build-argocd)"
  [ -f "$ARGOCD_BIN_DIR/module-dir" ] || die "$ARGOCD_BIN_DIR/module-dir missing (run: e2e/bin.sh build-argocd)"
  local moddir
  moddir="$(cat "$ARGOCD_BIN_DIR/module-dir")"
  [ -d "$moddir/manifests/crds" ] || die "argo-cd module not found at $moddir (run: e2e/bin.sh build-argocd)"
  command -v redis-server >/dev/null || die "redis-server is not installed (apt-get install redis-server)"
  local n
  for n in "${COMPONENTS[@]}"; do
    alive "$n" && die "$n already runs in $STATE (run: $0 down)"
  done
  local t0=${EPOCHREALTIME/./}
  UP_DONE=0
  trap 'if [ "$UP_DONE" != 1 ]; then log "up failed; stopping what started (logs: $STATE/logs)"; cmd_down; fi' EXIT
  kubectl_admin() { kubectl --kubeconfig "$STATE/admin.kubeconfig" "$@"; }
  local d="$STATE/argocd"
  mkdir -p "$d/tmp" "$STATE/logs" "$STATE/pids"

  free_port REDIS_PORT
  start argocd-redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
    --save "" --appendonly no --protected-mode yes --dir "$d"
  wait_for "redis on :$REDIS_PORT" 20 argocd-redis redis-cli -p "$REDIS_PORT" ping

  # Argo CD's own CRDs and base configuration, from its module.
  local f
  for f in "$moddir"/manifests/crds/*-crd.yaml; do
    kubectl_admin apply --server-side --force-conflicts -f "$f" >/dev/null
  done
  # (`kubectl wait` fails on a CRD the API server has not given a status yet.)
  wait_for "Argo CD CRDs Established" 60 "" kubectl_admin wait --for=condition=Established \
    --timeout=5s crd/applications.argoproj.io crd/appprojects.argoproj.io
  kubectl_admin get namespace "$NS" >/dev/null 2>&1 || kubectl_admin create namespace "$NS" >/dev/null
  for f in "$moddir"/manifests/base/config/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] && continue
    kubectl_admin apply --server-side --force-conflicts -n "$NS" -f "$f" >/dev/null
  done
  kubectl_admin patch configmap argocd-cm -n "$NS" --type merge -p "$(cat <<EOF
{"data": {"timeout.reconciliation": "$RESYNC", "timeout.reconciliation.jitter": "0s",
          "cluster.inClusterEnabled": "false"}}
EOF
)" >/dev/null

  local token ca
  token="$(sed -n 's/^[[:space:]]*token:[[:space:]]*//p' "$STATE/admin.kubeconfig" | head -n1)"
  [ -n "$token" ] || die "no token in $STATE/admin.kubeconfig"
  ca="$(base64 -w0 <"$STATE/pki/ca.crt")"
  kubectl_admin apply --server-side --force-conflicts -f - >/dev/null <<EOF
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata:
  name: default
  namespace: $NS
spec:
  sourceRepos: ["*"]
  destinations:
    - server: "*"
      namespace: "*"
  clusterResourceWhitelist:
    - group: "*"
      kind: "*"
---
apiVersion: v1
kind: Secret
metadata:
  name: cluster-paver-e2e
  namespace: $NS
  labels:
    argocd.argoproj.io/secret-type: cluster
type: Opaque
stringData:
  name: paver-e2e
  server: $PAVER_E2E_APISERVER
  config: '{"bearerToken": "$token", "tlsClientConfig": {"insecure": false, "caData": "$ca"}}'
---
apiVersion: v1
kind: Secret
metadata:
  name: repo-paver-e2e-gitops
  namespace: $NS
  labels:
    argocd.argoproj.io/secret-type: repository
type: Opaque
stringData:
  type: git
  url: $GIT_URL
  username: $GIT_USER
  password: $(cat "$GIT_TOKEN_FILE")
EOF

  # The components: one binary, named per component; git-verify-wrapper.sh
  # (next to it) must be on PATH for every manifest generation.
  local common_env=(env "PATH=$ARGOCD_BIN_DIR:$PATH" ARGOCD_GPG_ENABLED=false
    "ARGOCD_RECONCILIATION_TIMEOUT=$RESYNC" ARGOCD_RECONCILIATION_JITTER=0s
    "TMPDIR=$d/tmp" "HOME=$d"
    # The repo-server's git credential socket defaults to one fixed path in
    # /tmp: two Argo CDs on a machine (parallel runs) would break each other.
    "ARGOCD_ASK_PASS_SOCK=$d/ask-pass.sock")
  free_port REPO_PORT; free_port REPO_METRICS_PORT
  start argocd-repo-server "${common_env[@]}" "$ARGOCD_BIN_DIR/argocd-repo-server" \
    --address 127.0.0.1 --port "$REPO_PORT" \
    --metrics-address 127.0.0.1 --metrics-port "$REPO_METRICS_PORT" \
    --disable-tls --client-ca-path "" \
    --redis "127.0.0.1:$REDIS_PORT" \
    --revision-cache-expiration "$RESYNC" \
    --logformat text
  wait_for "argocd-repo-server on :$REPO_PORT" 60 argocd-repo-server \
    curl -fsS "http://127.0.0.1:$REPO_METRICS_PORT/healthz?full=true"

  free_port CONTROLLER_METRICS_PORT
  start argocd-application-controller "${common_env[@]}" "$ARGOCD_BIN_DIR/argocd-application-controller" \
    --kubeconfig "$STATE/admin.kubeconfig" --namespace "$NS" \
    --repo-server "127.0.0.1:$REPO_PORT" --repo-server-plaintext \
    --redis "127.0.0.1:$REDIS_PORT" \
    --metrics-port "$CONTROLLER_METRICS_PORT" \
    --app-resync "${RESYNC%s}" --app-resync-jitter 0 \
    --status-processors 4 --operation-processors 4 \
    --persist-resource-health \
    --repo-error-grace-period-seconds "$ERROR_GRACE" \
    --logformat text
  wait_for "argocd-application-controller on :$CONTROLLER_METRICS_PORT" 60 argocd-application-controller \
    curl -fsS "http://127.0.0.1:$CONTROLLER_METRICS_PORT/healthz"

  {
    echo "export ARGOCD_NAMESPACE=$NS"
    echo "export ARGOCD_REDIS=127.0.0.1:$REDIS_PORT"
    echo "export ARGOCD_REPO_SERVER=127.0.0.1:$REPO_PORT"
    echo "export ARGOCD_DESTINATION_SERVER=$PAVER_E2E_APISERVER"
  } >"$STATE/argocd.env"
  UP_DONE=1
  local ms=$(( (${EPOCHREALTIME/./} - t0) / 1000 ))
  log "Argo CD up in $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s"
  cat "$STATE/argocd.env"
}

cmd_env() {
  [ -f "$STATE/argocd.env" ] || die "no Argo CD in $STATE (run: $0 up)"
  cat "$STATE/argocd.env"
}

[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
