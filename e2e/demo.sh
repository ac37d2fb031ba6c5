#!/usr/bin/env bash
# Paver end to end on this machine, in one command (`make demo`):
#
#   e2e/demo.sh up     install the missing Debian packages, build the e2e
#                      binaries and Argo CD (cached) and paver, start the
#                      loopback control plane + Git server (e2e/cluster.sh),
#                      install Paver (CRDs, then -k manifests/), run the
#                      operator as a local process, apply examples/, approve
#                      the payment-gateway, wait until every request is
#                      rendered, and print the result and the commit log
#   e2e/demo.sh down   stop the operator and the cluster, remove the state
#   e2e/demo.sh status what runs
#
# Everything lives in ${PAVER_DEMO_STATE:-<repo>/.e2e-demo} (git-ignored by a
# .gitignore inside it): cluster/ (the cluster.sh state dir), operator.log,
# operator.pid, the operator's working clone and a clone of the output repo.
# Running `up` over a running demo stops that demo first.
# It does its own setup: the missing Debian packages (e2e/deps.sh: apt-get as
# root, sudo otherwise), the e2e binaries and Argo CD (e2e/bin.sh build-all,
# cached by version), then starts Argo CD and the root Application and fails
# unless every request ends Synced.
# Knobs: PAVER_DEMO_STATE, PAVER_DEMO_TIMEOUT (seconds to wait for the
# requests, default 180), PAVER_DEMO_ARGOCD=0 (no Argo CD), and
# e2e/cluster.sh's (PAVER_E2E_CACHE, ...).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/.." && pwd)"
DEMO="${PAVER_DEMO_STATE:-$REPO_ROOT/.e2e-demo}"
CLUSTER_STATE="$DEMO/cluster"
TIMEOUT="${PAVER_DEMO_TIMEOUT:-180}"
NAMESPACES=(commerce data finance payments web)
CARGO="${CARGO:-cargo}"
eval "$("$HERE/bin.sh" paths)"   # ARGOCD_BIN_DIR, ...

# Go builds the e2e binaries; CI images often have it without PATH.
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  PATH="/usr/local/go/bin:$PATH"
fi

log() { printf '[demo.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
hr() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

running() {
  pid_alive "$DEMO/operator.pid" && return 0
  ls "$CLUSTER_STATE"/pids/*.pid >/dev/null 2>&1
}

stop_operator() {
  local f="$DEMO/operator.pid" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    log "stopped the operator (pid $pid)"
  fi
  rm -f "$f"
}

cmd_down() {
  stop_operator
  if [ -d "$CLUSTER_STATE" ]; then
    PAVER_E2E_STATE="$CLUSTER_STATE" "$HERE/cluster.sh" down
  fi
  rm -rf "$DEMO"
  log "demo stopped; removed $DEMO"
}

cmd_status() {
  if pid_alive "$DEMO/operator.pid"; then
    echo "operator: running (pid $(cat "$DEMO/operator.pid"), log $DEMO/operator.log)"
  else
    echo "operator: not running"
  fi
  PAVER_E2E_STATE="$CLUSTER_STATE" "$HERE/cluster.sh" status || true
}

# A TCP port on 127.0.0.1 nothing listens on (as cluster.sh picks them).
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  die "no free port found"
}

# wait_until WHAT SECONDS CMD... : retry CMD every second until it succeeds.
wait_until() {
  local what="$1" secs="$2"; shift 2
  local deadline=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    pid_alive "$DEMO/operator.pid" || { tail -n 30 "$DEMO/operator.log" >&2; die "the operator exited (log: $DEMO/operator.log)"; }
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 1
  done
  log "$what"
}

# Every ServiceRequest has phase Synced (Argo CD synced the pushed revision;
# health is shown after, e.g. an HPA is Degraded here: no metrics server).
all_synced() {
  local phases
  phases="$(kubectl get servicerequests -A -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}')"
  [ -n "$phases" ] || return 1
  ! grep -qv '^Synced$' <<<"$phases"
}

phase_of() { kubectl get servicerequest -n "$1" "$2" -o jsonpath='{.status.phase}' 2>/dev/null; }

# Every ServiceRequest has phase Rendered or Synced.
all_rendered() {
  local phases
  phases="$(kubectl get servicerequests -A -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}')"
  [ -n "$phases" ] || return 1
  ! grep -qvE '^(Rendered|Synced)$' <<<"$phases"
}

# clone URL DIR: no token on a command line, in a URL or in a file of the
# clone: a credential helper (kept in the clone's config, so `git pull` works
# there too) reads the token file.
git_clone() {
  git clone -q -c credential.helper= \
    -c "credential.helper=!f() { echo username=$GIT_USER; echo password=\$(cat '$GIT_TOKEN_FILE'); }; f" "$1" "$2"
}

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is not installed ($2)"; }

cmd_up() {
  local t0; t0=$(date +%s)
  local argocd=1 deps_args=() bins=build-all
  if [ "${PAVER_DEMO_ARGOCD:-1}" = 0 ]; then argocd=0; deps_args=(--no-argocd); bins=build; fi
  need "$CARGO" "Rust (stable), see README.md"

  if running; then
    log "a demo is already running in $DEMO: stopping it first"
    cmd_down
  fi

  hr "Setup: Debian packages, the e2e binaries$([ "$argocd" = 1 ] && echo " and Argo CD") (cached in $PAVER_E2E_CACHE)"
  "$HERE/deps.sh" install "${deps_args[@]}" || die "the Debian packages above are needed (e2e/deps.sh)"
  "$HERE/bin.sh" "$bins" || die "building the e2e binaries failed (logs: $PAVER_E2E_CACHE/logs)"

  hr "Building paver (cargo build; the first build takes ~5 min on 2 cores)"
  (cd "$REPO_ROOT" && "$CARGO" build -p paver)
  local paver="$REPO_ROOT/target/debug/paver"
  [ -x "$paver" ] || die "$paver was not built"

  hr "Starting the control plane and the Git server"
  rm -rf "$DEMO"; mkdir -p "$DEMO"
  printf '*\n' >"$DEMO/.gitignore"
  PAVER_E2E_STATE="$CLUSTER_STATE" "$HERE/cluster.sh" up >/dev/null
  # shellcheck disable=SC1091
  source "$CLUSTER_STATE/env"
  # From here on a failure leaves the demo running, for a look.
  trap 'rc=$?; [ "$rc" = 0 ] || log "failed; the demo is left running for a look (operator log: $DEMO/operator.log, cluster logs: $CLUSTER_STATE/logs); stop it with: make demo-down"' EXIT

  hr "Installing Paver (CRDs, then manifests/)"
  kubectl apply --server-side -f "$REPO_ROOT/manifests/crds.yaml" >/dev/null
  kubectl wait --for condition=Established crd --all --timeout=60s >/dev/null
  kubectl apply --server-side -k "$REPO_ROOT/manifests/" >/dev/null
  # The operator runs below as a local process with the operator identity;
  # the Deployment's Pod would only be simulated by kwok, so scale it away.
  kubectl -n paver-system scale deployment paver-operator --replicas=0 >/dev/null
  log "installed: $(kubectl get paveroutes -o name | wc -l) PaveRoutes, $(kubectl get policybundles -o name | wc -l) PolicyBundles, RBAC, admission policy"

  # Argo CD closes the loop; with PAVER_DEMO_ARGOCD=0 requests stop at Rendered.
  local argocd_args=()
  if [ "$argocd" = 1 ]; then
    hr "Starting Argo CD (repo-server, application-controller, redis)"
    PAVER_E2E_STATE="$CLUSTER_STATE" "$HERE/argocd.sh" up >/dev/null
    argocd_args=(--argocd-destination-server "$PAVER_E2E_APISERVER")
  else
    log "PAVER_DEMO_ARGOCD=0: no Argo CD; requests will stop at Rendered"
  fi

  hr "Starting the operator (as system:serviceaccount:paver-system:paver)"
  printf '%s' "$GIT_USER" >"$DEMO/git-username"
  local metrics_port; metrics_port="$(free_port)"
  echo "$metrics_port" >"$DEMO/metrics-port"
  # NO_COLOR: plain text in the log file.
  KUBECONFIG="$PAVER_E2E_OPERATOR_KUBECONFIG" NO_COLOR=1 nohup "$paver" operator \
    --repo-url "$GIT_URL" \
    --git-username-file "$DEMO/git-username" \
    --git-token-file "$GIT_TOKEN_FILE" \
    --workdir "$DEMO/operator-repo" \
    --metrics-addr "127.0.0.1:$metrics_port" \
    --lease-namespace paver-system \
    --resync 30s \
    "${argocd_args[@]}" \
    >"$DEMO/operator.log" 2>&1 </dev/null &
  echo $! >"$DEMO/operator.pid"
  wait_until "operator ready (metrics on http://127.0.0.1:$metrics_port/metrics)" 60 \
    curl -fsS "http://127.0.0.1:$metrics_port/readyz" ||
    { tail -n 30 "$DEMO/operator.log" >&2; die "the operator did not get ready in 60s"; }

  if [ "$argocd" = 1 ]; then
    hr "Applying the Argo CD root Application (manifests/argocd/) for $GIT_URL"
    sed -e "s|repoURL: .*|repoURL: $GIT_URL|" \
      -e "s|server: https://kubernetes.default.svc|server: $PAVER_E2E_APISERVER|" \
      "$REPO_ROOT/manifests/argocd/root-application.yaml" | kubectl apply -f - >/dev/null
    kubectl apply -f "$REPO_ROOT/manifests/argocd/rbac.yaml" >/dev/null
  fi

  hr "Applying examples/"
  local ns
  for ns in "${NAMESPACES[@]}"; do
    kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    # Each example's team is its namespace's name: bind them (admission and
    # the operator refuse a request claiming another team).
    kubectl label --overwrite namespace "$ns" "paver.dev/team=$ns" >/dev/null
  done
  kubectl apply -f "$REPO_ROOT/examples/"

  # The approver is another person than the admin who applied the request
  # (nobody approves their own request): cluster.sh's paver-e2e-approver,
  # given the shipped paver-approver role.
  local gen approver=paver-e2e-approver
  kubectl create clusterrolebinding demo-approver --clusterrole=paver-approver \
    --user="$approver" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  hr "Approving payments/payment-gateway as $approver (policy asks for an approval)"
  if ! wait_until "payment-gateway is AwaitingApproval" 90 \
      bash -c '[ "$(kubectl get servicerequest -n payments payment-gateway -o jsonpath="{.status.phase}")" = AwaitingApproval ]'; then
    die "payment-gateway did not reach AwaitingApproval (phase: $(phase_of payments payment-gateway))"
  fi
  gen="$(kubectl get servicerequest -n payments payment-gateway -o jsonpath='{.metadata.generation}')"
  # An Approval is created, never edited (the approver role cannot patch).
  if ! kubectl get approval -n payments "payment-gateway-gen-$gen" >/dev/null 2>&1; then
    kubectl --kubeconfig "$PAVER_E2E_APPROVER_KUBECONFIG" create -f - <<EOF
apiVersion: paver.dev/v1alpha1
kind: Approval
metadata:
  name: payment-gateway-gen-$gen
  namespace: payments
spec:
  request: payment-gateway
  generation: $gen
  approver: $approver
  reason: "Demo: PCI review done, go-live approved"
EOF
  fi

  hr "Waiting until every request is rendered (up to ${TIMEOUT}s)"
  if ! wait_until "every request is Rendered or Synced" "$TIMEOUT" all_rendered; then
    kubectl get servicerequests -A >&2
    tail -n 30 "$DEMO/operator.log" >&2
    die "not every request was rendered after ${TIMEOUT}s (operator log: $DEMO/operator.log)"
  fi
  if [ "$argocd" = 1 ]; then
    hr "Waiting for Argo CD to sync every request (up to ${TIMEOUT}s)"
    # No ingress controller runs here: give each Ingress an address, as one would.
    local deadline=$(($(date +%s) + TIMEOUT))
    until all_synced; do
      kubectl get ingress -A -o jsonpath='{range .items[*]}{.metadata.namespace} {.metadata.name} {.status.loadBalancer.ingress}{"\n"}{end}' 2>/dev/null |
        while read -r ins iname addr; do
          [ -n "$iname" ] && [ -z "$addr" ] || continue
          kubectl patch ingress "$iname" -n "$ins" --subresource=status --type=merge \
            -p '{"status":{"loadBalancer":{"ingress":[{"ip":"127.0.0.1"}]}}}' >/dev/null 2>&1 || true
        done
      if [ "$(date +%s)" -ge "$deadline" ]; then
        kubectl get servicerequests -A >&2
        kubectl get applications -n argocd >&2 || true
        die "not every request was Synced by Argo CD after ${TIMEOUT}s (Argo CD logs: $CLUSTER_STATE/logs)"
      fi
      sleep 2
    done
    log "every request is Synced"
  fi
  trap - EXIT

  hr "kubectl get policybundles"
  kubectl get policybundles
  if [ "$argocd" = 1 ]; then
    hr "kubectl get servicerequests,scorecards -A"
    kubectl get servicerequests,scorecards -A
    hr "Ready per request (health as Argo CD reports it)"
    kubectl get servicerequests -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}: {.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].message}{"\n"}{end}' | cut -c1-220
    hr "kubectl get applications -n argocd; the workloads Argo CD deployed"
    kubectl get applications -n argocd
    local wns
    for wns in "${NAMESPACES[@]}"; do kubectl get deployments,cronjobs -n "$wns" --no-headers 2>/dev/null; done
  else
    hr "kubectl get servicerequests,scorecards -A   (no Argo CD here: requests stop at Rendered)"
    kubectl get servicerequests,scorecards -A
  fi

  hr "The output repository ($GIT_URL)"
  rm -rf "$DEMO/gitops"
  git_clone "$GIT_URL" "$DEMO/gitops"
  git -C "$DEMO/gitops" --no-pager log --shortstat \
    --format='%C(yellow)%h%C(reset) %s  (%an, %ar)%n%(trailers:key=Paver-Request,key=Paver-Generation,key=Paver-Route,key=Paver-Bundles)' |
    sed -e '/^$/d' -e 's/^ \([0-9]* files\? changed\)/  \1/'
  hr "Files per request (<team>/<namespace>/<name>/)"
  git -C "$DEMO/gitops" ls-files | awk -F/ 'NF > 3 { print $1 "/" $2 "/" $3 "/" }' | sort | uniq -c
  hr "payments/payments/payment-gateway/"
  git -C "$DEMO/gitops" ls-files payments/payments/payment-gateway | sed 's|^payments/payments/payment-gateway/|  |'

  local rel="${DEMO#"$PWD"/}"
  hr "Done in $(($(date +%s) - t0))s. Look around:"
  cat <<EOF
  source $rel/cluster/env   # KUBECONFIG (admin), GIT_URL, kubectl on PATH
  kubectl get servicerequests -A    # or: kubectl get sr -A
  kubectl describe servicerequest -n payments payment-gateway
  kubectl get scorecard -n payments payment-gateway -o yaml
  kubectl get events -n payments
  git -C $rel/gitops pull -q && git -C $rel/gitops log --stat
  curl -s http://127.0.0.1:$metrics_port/metrics | grep ^paver_
  tail -f $rel/operator.log    # the operator (pid $(cat "$DEMO/operator.pid"))
  # change examples/*.yaml, kubectl apply -f examples/, watch the phase and the next commit

Stop everything:  make demo-down      (or: e2e/demo.sh down)
EOF
}

case "${1:-up}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
