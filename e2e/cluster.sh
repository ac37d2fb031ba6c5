#!/usr/bin/env bash
# A real, throwaway control plane on loopback for Paver's e2e tests.
#
#   e2e/cluster.sh up      etcd, kube-apiserver (RBAC, token auth),
#                          kube-controller-manager, kube-scheduler, kwok with
#                          simulated nodes, and a smart-HTTP Git server
#   e2e/cluster.sh git-stop|git-start   stop/start the Git server only
#   e2e/cluster.sh apiserver-stop|apiserver-start, etcd-stop|etcd-start
#                          stop a control-plane component / start it again as
#                          it ran (same ports, flags, tokens, data): restarts
#   e2e/cluster.sh env     print `export ...` lines (KUBECONFIG, GIT_URL, ...)
#   e2e/cluster.sh status  show what runs
#   e2e/cluster.sh down    stop everything (by pid files) and remove the state
#
# Binaries come from e2e/bin.sh build (cache dir, see `e2e/bin.sh paths`).
# Every port is picked free at `up`, so runs with different state dirs can
# go side by side. Knobs (environment):
#   PAVER_E2E_STATE        state dir (default: <repo>/.e2e)
#   PAVER_E2E_CACHE        binary cache (default: ~/.cache/paver-e2e)
#   PAVER_E2E_NODES        number of simulated nodes (default 2)
#   PAVER_E2E_NO_KCM=1     no kube-controller-manager/kube-scheduler (then the
#                          ServiceAccount admission plugin is disabled)
#   PAVER_E2E_NO_GIT=1     no Git server
#   PAVER_E2E_KEEP_STATE=1 `down` keeps the state dir (logs) after stopping
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/.." && pwd)"
STATE="${PAVER_E2E_STATE:-$REPO_ROOT/.e2e}"
NODES="${PAVER_E2E_NODES:-2}"
GIT_HTTP_BACKEND="${GIT_HTTP_BACKEND:-/usr/lib/git-core/git-http-backend}"
OPERATOR_USER="system:serviceaccount:paver-system:paver"
OPERATOR_GROUPS="system:serviceaccounts,system:serviceaccounts:paver-system,system:authenticated"
SERVICE_CIDR="10.96.0.0/16"

eval "$("$HERE/bin.sh" paths)"

log() { printf '[cluster.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- helpers --

USED_PORTS=" "
# free_port VAR: set VAR to a TCP port on 127.0.0.1 that nothing listens on,
# below the Linux ephemeral range (so outgoing connections don't take it
# meanwhile), not handed out already in this run.
free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000))
    case "$USED_PORTS" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED_PORTS+="$p "
      printf -v "$1" '%s' "$p"
      return 0
    fi
  done
  die "no free port found"
}

# start NAME CMD... : run CMD in the background, log to logs/NAME.log,
# pid in pids/NAME.pid.
# The command is kept in pids/NAME.cmd, so `NAME-start` (below) can start
# the component again as it was; a restart appends to the log.
start() {
  local name="$1"; shift
  nohup "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name.pid"
  printf '%q ' "$@" >"$STATE/pids/$name.cmd"
  log "started $name (pid $!, log $STATE/logs/$name.log)"
}

alive() { local f="$STATE/pids/$1.pid"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

# wait_for WHAT SECONDS PROCESS CMD... : retry CMD until it succeeds.
wait_for() {
  local what="$1" secs="$2" proc="$3"; shift 3
  local deadline=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    if [ -n "$proc" ] && ! alive "$proc"; then
      tail -n 40 "$STATE/logs/$proc.log" >&2 || true
      die "$proc exited while waiting for $what (log above: $STATE/logs/$proc.log)"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      [ -n "$proc" ] && tail -n 40 "$STATE/logs/$proc.log" >&2
      die "timed out after ${secs}s waiting for $what"
    fi
    sleep 0.5
  done
  log "$what: ready"
}

rand_hex() { openssl rand -hex "${1:-24}"; }

kubectl_admin() { "$K8S_BIN_DIR/kubectl" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }

write_kubeconfig() { # FILE USER TOKEN
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: paver-e2e
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$STATE/pki/ca.crt")
users:
- name: $2
  user:
    token: $3
contexts:
- name: $2@paver-e2e
  context:
    cluster: paver-e2e
    user: $2
current-context: $2@paver-e2e
EOF
  chmod 600 "$1"
}

# ------------------------------------------------------------------- pki --

make_pki() {
  local d="$STATE/pki"
  mkdir -p "$d"
  # A CA and a serving certificate for 127.0.0.1/localhost, so clients verify
  # the API server instead of skipping TLS verification.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=paver-e2e-ca" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$d/apiserver.key" -out "$d/apiserver.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1" \
    "extendedKeyUsage=serverAuth" "keyUsage=digitalSignature,keyEncipherment" >"$d/apiserver.ext"
  openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
    -CAcreateserial -days 2 -extfile "$d/apiserver.ext" -out "$d/apiserver.crt" 2>/dev/null
  # Service-account token signing key.
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  chmod 600 "$d"/*.key
}

# ------------------------------------------------------------ components --

start_etcd() {
  free_port ETCD_PORT; free_port ETCD_PEER_PORT
  start etcd "$K8S_BIN_DIR/etcd" \
    --name paver-e2e --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "paver-e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level warn
  wait_for "etcd on :$ETCD_PORT" 30 etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  free_port APISERVER_PORT
  ADMIN_TOKEN=$(rand_hex); OPERATOR_TOKEN=$(rand_hex); APPROVER_TOKEN=$(rand_hex)
  # token,user,uid,"group1,group2". The approver is a person of its own:
  # nobody approves a request they created.
  cat >"$STATE/tokens.csv" <<EOF
$ADMIN_TOKEN,paver-e2e-admin,paver-e2e-admin,"system:masters,system:authenticated"
$OPERATOR_TOKEN,$OPERATOR_USER,paver-e2e-operator,"$OPERATOR_GROUPS"
$APPROVER_TOKEN,paver-e2e-approver,paver-e2e-approver,"paver-approvers,system:authenticated"
EOF
  chmod 600 "$STATE/tokens.csv"
  local admission=()
  if [ "${PAVER_E2E_NO_KCM:-}" = 1 ]; then
    # Its token controller lives in kube-controller-manager.
    admission=(--disable-admission-plugins ServiceAccount)
  fi
  start kube-apiserver "$K8S_BIN_DIR/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$STATE/pki/apiserver.crt" --tls-private-key-file "$STATE/pki/apiserver.key" \
    --cert-dir "$STATE/pki/apiserver-generated" \
    --token-auth-file "$STATE/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-key-file "$STATE/pki/sa.pub" \
    --service-account-signing-key-file "$STATE/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --profiling=false \
    "${admission[@]}"
  write_kubeconfig "$STATE/admin.kubeconfig" paver-e2e-admin "$ADMIN_TOKEN"
  write_kubeconfig "$STATE/operator.kubeconfig" paver-operator "$OPERATOR_TOKEN"
  write_kubeconfig "$STATE/approver.kubeconfig" paver-e2e-approver "$APPROVER_TOKEN"
  wait_for "kube-apiserver /readyz on :$APISERVER_PORT" 90 kube-apiserver \
    curl -fsS --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $ADMIN_TOKEN" \
    "https://127.0.0.1:$APISERVER_PORT/readyz"
}

start_kcm_and_scheduler() {
  local kc="$STATE/admin.kubeconfig"
  free_port KCM_PORT; free_port SCHED_PORT
  start kube-controller-manager "$K8S_BIN_DIR/kube-controller-manager" \
    --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --cert-dir "$STATE/pki/kcm" \
    --controllers '*' --leader-elect=false \
    --service-account-private-key-file "$STATE/pki/sa.key" \
    --root-ca-file "$STATE/pki/ca.crt" \
    --service-cluster-ip-range "$SERVICE_CIDR"
  start kube-scheduler "$K8S_BIN_DIR/kube-scheduler" \
    --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --cert-dir "$STATE/pki/scheduler" \
    --leader-elect=false
  wait_for "kube-controller-manager /healthz on :$KCM_PORT" 60 kube-controller-manager \
    curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
  wait_for "kube-scheduler /healthz on :$SCHED_PORT" 60 kube-scheduler \
    curl -fsSk "https://127.0.0.1:$SCHED_PORT/healthz"
}

start_kwok() {
  local stages=() f
  for f in "$KWOK_BIN_DIR"/stages/*.yaml; do [ -f "$f" ] && stages+=(--config "$f"); done
  [ "${#stages[@]}" -gt 0 ] || die "no kwok stage configs in $KWOK_BIN_DIR/stages (run e2e/bin.sh build)"
  free_port KWOK_PORT
  start kwok "$KWOK_BIN_DIR/kwok" \
    --kubeconfig "$STATE/admin.kubeconfig" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --server-address "127.0.0.1:$KWOK_PORT" \
    "${stages[@]}"
  wait_for "kwok on :$KWOK_PORT" 30 kwok curl -fsS "http://127.0.0.1:$KWOK_PORT/healthz"
  local i
  for i in $(seq 1 "$NODES"); do
    kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 1Ti}
  capacity: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 1Ti}
EOF
  done
  wait_for "$NODES kwok node(s) Ready" 60 kwok \
    kubectl_admin wait --for=condition=Ready node -l type=kwok --timeout=1s
}

start_git() {
  local g="$STATE/git"
  mkdir -p "$g/repos" "$g/www"
  free_port GIT_PORT
  GIT_TOKEN=$(rand_hex 20)
  printf '%s' "$GIT_TOKEN" >"$STATE/git-token"; chmod 600 "$STATE/git-token"
  printf 'paver:%s\n' "$GIT_TOKEN" >"$g/users"; chmod 600 "$g/users"
  git init -q --bare -b main "$g/repos/gitops.git"
  git -C "$g/repos/gitops.git" config http.receivepack true
  # One commit on main, so clones have a branch to start from.
  local seed="$g/seed"
  git init -q -b main "$seed"
  printf '# gitops\n\nRendered by Paver (e2e).\n' >"$seed/README.md"
  git -C "$seed" add README.md
  git -C "$seed" -c user.name=paver-e2e -c user.email=paver-e2e@localhost \
    commit -q -m "Initial commit"
  git -C "$seed" push -q "$g/repos/gitops.git" main
  rm -rf "$seed"
  cat >"$g/lighttpd.conf" <<EOF
# Generated by e2e/cluster.sh: git-http-backend (CGI) behind basic auth.
server.modules = ("mod_alias", "mod_setenv", "mod_auth", "mod_authn_file", "mod_cgi", "mod_accesslog")
server.bind = "127.0.0.1"
server.port = $GIT_PORT
server.document-root = "$g/www"
server.errorlog = "$STATE/logs/git-http-error.log"
accesslog.filename = "$STATE/logs/git-http-access.log"
server.max-request-size = 0
auth.backend = "plain"
auth.backend.plain.userfile = "$g/users"
auth.require = ( "/git/" => ( "method" => "basic", "realm" => "paver-e2e-git", "require" => "valid-user" ) )
alias.url = ( "/git" => "$GIT_HTTP_BACKEND" )
\$HTTP["url"] =~ "^/git/" {
  cgi.assign = ( "" => "" )
  setenv.add-environment = (
    "GIT_PROJECT_ROOT" => "$g/repos",
    "GIT_HTTP_EXPORT_ALL" => "1"
  )
}
EOF
  lighttpd -tt -f "$g/lighttpd.conf" >/dev/null || die "lighttpd rejected $g/lighttpd.conf"
  start git-http lighttpd -D -f "$g/lighttpd.conf"
  GIT_URL="http://127.0.0.1:$GIT_PORT/git/gitops.git"
  wait_for "git server on :$GIT_PORT" 20 git-http \
    curl -fsS -u "paver:$GIT_TOKEN" "$GIT_URL/info/refs?service=git-upload-pack"
}

write_env() {
  {
    echo "export KUBECONFIG=$STATE/admin.kubeconfig"
    echo "export PAVER_E2E_STATE=$STATE"
    echo "export PAVER_E2E_ADMIN_KUBECONFIG=$STATE/admin.kubeconfig"
    echo "export PAVER_E2E_OPERATOR_KUBECONFIG=$STATE/operator.kubeconfig"
    echo "export PAVER_E2E_APPROVER_KUBECONFIG=$STATE/approver.kubeconfig"
    echo "export PAVER_E2E_CA_FILE=$STATE/pki/ca.crt"
    echo "export PAVER_E2E_APISERVER=https://127.0.0.1:$APISERVER_PORT"
    echo "export PAVER_E2E_OPERATOR_USER=$OPERATOR_USER"
    if [ "${PAVER_E2E_NO_GIT:-}" != 1 ]; then
      echo "export GIT_URL=$GIT_URL"
      echo "export GIT_USER=paver"
      echo "export GIT_TOKEN_FILE=$STATE/git-token"
    fi
    echo "export PATH=$K8S_BIN_DIR:$KWOK_BIN_DIR:$OPA_BIN_DIR:\$PATH"
  } >"$STATE/env"
}

# --------------------------------------------------------------- commands --

cmd_up() {
  if [ -d "$STATE/pids" ] && ls "$STATE"/pids/*.pid >/dev/null 2>&1; then
    die "$STATE already has a cluster (run: $0 down)"
  fi
  "$HERE/bin.sh" check || die "binaries missing: run e2e/bin.sh build"
  command -v openssl >/dev/null || die "openssl is not installed"
  command -v curl >/dev/null || die "curl is not installed"
  if [ "${PAVER_E2E_NO_GIT:-}" != 1 ]; then
    command -v lighttpd >/dev/null || die "lighttpd is not installed (apt-get install lighttpd)"
    [ -x "$GIT_HTTP_BACKEND" ] || die "$GIT_HTTP_BACKEND not found (apt-get install git)"
  fi
  local t0=${EPOCHREALTIME/./}
  rm -rf "$STATE"; mkdir -p "$STATE/logs" "$STATE/pids"
  # If anything below fails, don't leave half a cluster running (the state
  # dir and its logs stay for a look; `down` removes them).
  UP_DONE=0
  trap 'if [ "$UP_DONE" != 1 ]; then log "up failed; stopping what started (logs: $STATE/logs)"; PAVER_E2E_KEEP_STATE=1 cmd_down; fi' EXIT
  make_pki
  start_etcd
  start_apiserver
  if [ "${PAVER_E2E_NO_KCM:-}" != 1 ]; then start_kcm_and_scheduler; fi
  start_kwok
  if [ "${PAVER_E2E_NO_GIT:-}" != 1 ]; then start_git; fi
  write_env
  UP_DONE=1
  local ms=$(( (${EPOCHREALTIME/./} - t0) / 1000 ))
  log "up in $((ms / 1000)).$(printf '%03d' $((ms % 1000)))s; state in $STATE"
  echo "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))" >"$STATE/startup-seconds"
  cat "$STATE/env"
}

cmd_env() {
  [ -f "$STATE/env" ] || die "no cluster in $STATE (run: $0 up)"
  cat "$STATE/env"
}

cmd_status() {
  local f n
  for f in "$STATE"/pids/*.pid; do
    [ -f "$f" ] || { echo "no cluster in $STATE"; return 1; }
    n="$(basename "$f" .pid)"
    if alive "$n"; then echo "$n: running (pid $(cat "$f"))"; else echo "$n: NOT running"; fi
  done
}

cmd_down() {
  local f pid n
  # Reverse start order: clients first (Argo CD, started by e2e/argocd.sh
  # into the same pids/), etcd last.
  for n in argocd-application-controller argocd-repo-server argocd-redis \
    git-http kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    f="$STATE/pids/$n.pid"
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
      log "stopped $n (pid $pid)"
    fi
    rm -f "$f"
  done
  if [ "${PAVER_E2E_KEEP_STATE:-}" = 1 ]; then
    log "kept $STATE"
  else
    rm -rf "$STATE"
    log "removed $STATE"
  fi
}

# The Git server alone, to test outages: `git-stop` stops it, `git-start`
# starts it again on the same port with the same repository and credentials.
cmd_git_stop() {
  local f="$STATE/pids/git-http.pid"
  [ -f "$f" ] || die "no git server in $STATE"
  kill -TERM "$(cat "$f")" 2>/dev/null || true
  for _ in $(seq 1 40); do alive git-http || break; sleep 0.25; done
  rm -f "$f"
  log "stopped git-http"
}

cmd_git_start() {
  local g="$STATE/git"
  [ -f "$g/lighttpd.conf" ] || die "no git server config in $STATE"
  alive git-http && { log "git-http already running"; return 0; }
  start git-http lighttpd -D -f "$g/lighttpd.conf"
  eval "$(grep '^export GIT_URL=' "$STATE/env")"
  wait_for "git server" 20 git-http \
    curl -fsS -u "paver:$(cat "$STATE/git-token")" "$GIT_URL/info/refs?service=git-upload-pack"
}

# A control-plane restart, as an upgrade does it: stop a component (SIGTERM,
# SIGKILL after 20 s) and start it again with the command it ran with (same
# ports, flags, tokens and data).
cmd_component_stop() { # NAME
  local f="$STATE/pids/$1.pid"
  [ -f "$f" ] || die "no $1 running in $STATE"
  kill -TERM "$(cat "$f")" 2>/dev/null || true
  for _ in $(seq 1 80); do alive "$1" || break; sleep 0.25; done
  alive "$1" && kill -KILL "$(cat "$f")" 2>/dev/null
  rm -f "$f"
  log "stopped $1"
}

cmd_component_start() { # NAME
  local c="$STATE/pids/$1.cmd"
  [ -f "$c" ] || die "no recorded command for $1 in $STATE"
  alive "$1" && { log "$1 already running"; return 0; }
  eval "start $1 $(cat "$c")"
}

# Sourcing the file (for debugging single steps) only defines the functions.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  git-stop) cmd_git_stop ;;
  git-start) cmd_git_start ;;
  apiserver-stop) cmd_component_stop kube-apiserver ;;
  apiserver-start) cmd_component_start kube-apiserver ;;
  etcd-stop) cmd_component_stop etcd ;;
  etcd-start) cmd_component_start etcd ;;
  *) echo "usage: $0 up|down|env|status|git-stop|git-start" >&2; exit 2 ;;
esac
