#!/usr/bin/env bash
# Build (once) and cache the real binaries Paver's e2e tests run against.
#
#   e2e/bin.sh build          kube-apiserver, kube-controller-manager,
#                             kube-scheduler, kubectl, etcd (one `go build`),
#                             Argo CD's and prometheus-operator's CRDs (module
#                             downloads), then kwok, opa and helm (`go install`)
#   e2e/bin.sh build-argocd   Argo CD (~20 min cold, fetches Go 1.27)
#   e2e/bin.sh build-all      both of the above: what `make test` and
#                             `make demo` need
#   e2e/bin.sh paths          print the cache directories (shell assignments)
#   e2e/bin.sh check [--argocd]  exit 0 only if every binary of `build` (and
#                             with --argocd, Argo CD) is cached; names the
#                             missing ones on stderr
#
# Binaries go to ${PAVER_E2E_CACHE:-$HOME/.cache/paver-e2e}/<tool>-<version>/
# and are never rebuilt when present (delete the directory to force it).
# Go builds run one at a time under `nice -n 15`; output goes to log files
# under <cache>/logs/, timings are printed. While a build runs, a progress
# line every ${PAVER_PROGRESS_SECONDS:-30} s says what is building, for how
# long, how many of its Go packages are compiled and what is left after it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

K8S_VERSION="v1.37.2"
ETCD_VERSION="v3.7.0"   # pinned in tools/go.mod, built into the k8s dir
KWOK_VERSION="v0.8.0"
OPA_VERSION="v1.22.2"
ARGOCD_VERSION="v3.6.1" # pinned in argocd/go.mod
HELM_VERSION="v4.3.2"
# ServiceMonitor and PrometheusRule CRDs, for the chart's server-side dry-run
# (the module proxy serves this one version of the root module).
PROMETHEUS_OPERATOR_VERSION="v0.85.0"

CACHE="${PAVER_E2E_CACHE:-$HOME/.cache/paver-e2e}"
K8S_DIR="$CACHE/k8s-$K8S_VERSION"
KWOK_DIR="$CACHE/kwok-$KWOK_VERSION"
OPA_DIR="$CACHE/opa-$OPA_VERSION"
ARGOCD_DIR="$CACHE/argocd-$ARGOCD_VERSION"
ARGOCD_CRDS_DIR="$CACHE/argocd-crds-$ARGOCD_VERSION"
HELM_DIR="$CACHE/helm-$HELM_VERSION"
PROMETHEUS_CRDS_DIR="$CACHE/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION"
PROMETHEUS_CRDS=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml)
LOG_DIR="$CACHE/logs"

K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd)
NICE=(nice -n 15)

log() { printf '[bin.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The build steps still to run, the current one first (set by `plan`,
# printed by the progress line).
LEFT=()
PROGRESS_SECONDS="${PAVER_PROGRESS_SECONDS:-30}"

mmss() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# progress NAME LOG START TOTAL: every PROGRESS_SECONDS, one line on stderr.
# `go build -v` writes each package it compiles to LOG; TOTAL is how many
# packages the build needs (0: unknown), so "N of TOTAL" is real progress
# (packages already in Go's build cache are not compiled again, so a warm
# build ends below TOTAL).
progress() {
  local name="$1" logf="$2" start="$3" total="$4" n msg
  while sleep "$PROGRESS_SECONDS"; do
    msg="$name: building for $(mmss $(($(date +%s) - start)))"
    if [ "$total" -gt 0 ]; then
      n=$(grep -vc '^#\|^go: ' "$logf" 2>/dev/null || true)
      msg+=", ${n:-0} of $total Go packages compiled"
    fi
    if [ "${#LEFT[@]}" -gt 1 ]; then msg+="; after it: ${LEFT[*]:1}"; else msg+="; the last step"; fi
    log "$msg"
  done
}

# go_packages PKG...: how many packages (with their dependencies) a build of
# PKG... compiles, from the current module; 0 when it cannot be told.
go_packages() {
  local n
  n=$(go list -deps "$@" 2>/dev/null | grep -c .) || true
  echo "${n:-0}"
}

# run_logged NAME TOTAL CMD... : run CMD with output to $LOG_DIR/NAME.log,
# a progress line while it runs (TOTAL Go packages, 0: unknown), its time.
run_logged() {
  local name="$1" total="$2"; shift 2
  local logf="$LOG_DIR/$name.log" start end rc=0 ticker
  mkdir -p "$LOG_DIR"
  log "$name: started (log: $logf)"
  start=$(date +%s)
  { echo "# $(date -Is) $*"; } >"$logf"
  progress "$name" "$logf" "$start" "$total" &
  ticker=$!
  "$@" >>"$logf" 2>&1 || rc=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  end=$(date +%s)
  echo "# $(date -Is) exit $rc after $((end - start))s" >>"$logf"
  if [ "$rc" -ne 0 ]; then
    log "$name: FAILED (exit $rc) after $((end - start))s; last lines of $logf:"
    tail -n 30 "$logf" >&2
    return "$rc"
  fi
  log "$name: done in $((end - start))s"
  echo "$name $((end - start))s" >>"$LOG_DIR/timings.txt"
}

# Package path (in tools/go.mod) of each binary.
k8s_pkg() {
  case "$1" in
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    *) echo "k8s.io/kubernetes/cmd/$1" ;;
  esac
}

build_k8s() {
  local missing=() b
  for b in "${K8S_BINS[@]}"; do
    [ -x "$K8S_DIR/$b" ] || missing+=("$b")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "k8s $K8S_VERSION + etcd $ETCD_VERSION: cached in $K8S_DIR"
    return 0
  fi
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w"
  ldflags+=" -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
  ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  local pkgs=()
  for b in "${missing[@]}"; do pkgs+=("$(k8s_pkg "$b")"); done
  local tmp="$K8S_DIR.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "building ${missing[*]} (one go build; ~10-13 min on 2 cold cores)"
  # One invocation: the packages share compile work. GOTOOLCHAIN=local: the
  # module says go 1.26.0, no toolchain download.
  (cd "$HERE/tools" && export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" &&
    log "k8s: downloading modules" && go mod download &&
    run_logged "build-k8s-$K8S_VERSION" "$(go_packages "${pkgs[@]}")" "${NICE[@]}" \
      go build -v -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
  # go names go.etcd.io/etcd/server/v3 after "server".
  [ -f "$tmp/server" ] && mv "$tmp/server" "$tmp/etcd"
  mkdir -p "$K8S_DIR"
  for b in "${missing[@]}"; do
    [ -x "$tmp/$b" ] || { log "expected $tmp/$b after the build"; return 1; }
    mv "$tmp/$b" "$K8S_DIR/$b"
  done
  rm -rf "$tmp"
  "$K8S_DIR/kubectl" version --client >&2 || true
}

# go_install DIR BIN MODULE@VERSION [env...] [-- go-install-flags...]
go_install() {
  local dir="$1" bin="$2" target="$3"; shift 3
  local envs=() flags=()
  while [ "$#" -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
  [ "${1:-}" = -- ] && { shift; flags=("$@"); }
  if [ -x "$dir/$bin" ]; then log "$bin: cached in $dir"; return 0; fi
  mkdir -p "$dir"
  (cd "$dir" && run_logged "install-$bin-${target##*@}" 0 \
    env GOBIN="$dir" "${envs[@]}" "${NICE[@]}" go install -v -trimpath "${flags[@]}" "$target")
}

# kwok exits "no stages found" without stage definitions: copy the YAML files
# (not kustomization.yaml) of its module's node/fast, node/heartbeat and
# pod/fast stages next to the binary; cluster.sh passes each with --config.
kwok_stages() {
  [ -n "$(ls "$KWOK_DIR/stages/"*.yaml 2>/dev/null)" ] && return 0
  local moddir d f
  moddir="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -d "$moddir/kustomize/stage" ] || { log "kwok module dir not found"; return 1; }
  mkdir -p "$KWOK_DIR/stages"
  for d in node/fast node/heartbeat pod/fast; do
    for f in "$moddir/kustomize/stage/$d"/*.yaml; do
      [ "$(basename "$f")" = kustomization.yaml ] && continue
      install -m 0644 "$f" "$KWOK_DIR/stages/${d//\//-}-$(basename "$f")"
    done
  done
  log "kwok stages: $(ls "$KWOK_DIR/stages" | tr '\n' ' ')"
}

# Argo CD's Application and AppProject CRDs, from its module (no build): the
# e2e tests install them so rendered Applications are checked by the API
# server (server-side dry-run) and the operator watches Applications.
argocd_crds() {
  [ -f "$ARGOCD_CRDS_DIR/application-crd.yaml" ] && { log "argocd CRDs: cached in $ARGOCD_CRDS_DIR"; return 0; }
  local moddir
  moddir="$(cd "$CACHE" && GOTOOLCHAIN=auto GOFLAGS=-mod=mod go mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -f "$moddir/manifests/crds/application-crd.yaml" ] || { log "argo-cd module dir not found"; return 1; }
  mkdir -p "$ARGOCD_CRDS_DIR"
  install -m 0644 "$moddir/manifests/crds/application-crd.yaml" "$moddir/manifests/crds/appproject-crd.yaml" \
    "$ARGOCD_CRDS_DIR/"
  log "argocd CRDs: $(ls "$ARGOCD_CRDS_DIR" | tr '\n' ' ')"
}

# prometheus-operator's ServiceMonitor and PrometheusRule CRDs, from its
# module (no build): the chart's e2e test installs them so that its
# ServiceMonitor and PrometheusRule pass the server-side dry-run.
prometheus_crds() {
  local f missing=0
  for f in "${PROMETHEUS_CRDS[@]}"; do [ -f "$PROMETHEUS_CRDS_DIR/$f" ] || missing=1; done
  [ "$missing" -eq 0 ] && { log "prometheus-operator CRDs: cached in $PROMETHEUS_CRDS_DIR"; return 0; }
  local moddir
  moddir="$(cd "$CACHE" && GOTOOLCHAIN=auto GOFLAGS=-mod=mod go mod download -json \
    "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -d "$moddir/example/prometheus-operator-crd" ] || { log "prometheus-operator module dir not found"; return 1; }
  mkdir -p "$PROMETHEUS_CRDS_DIR"
  for f in "${PROMETHEUS_CRDS[@]}"; do
    install -m 0644 "$moddir/example/prometheus-operator-crd/$f" "$PROMETHEUS_CRDS_DIR/"
  done
  log "prometheus-operator CRDs: $(ls "$PROMETHEUS_CRDS_DIR" | tr '\n' ' ')"
}

# plan [--argocd]: the build steps not cached yet, in order, as LEFT; logged
# with their cold times on 2 cores. The step running is LEFT[0].
plan() {
  LEFT=()
  local b
  for b in "${K8S_BINS[@]}"; do
    [ -x "$K8S_DIR/$b" ] || { LEFT+=(k8s); break; }
  done
  [ -x "$KWOK_DIR/kwok" ] || LEFT+=(kwok)
  [ -x "$OPA_DIR/opa" ] || LEFT+=(opa)
  [ -x "$HELM_DIR/helm" ] || LEFT+=(helm)
  if [ "${1:-}" = --argocd ] && [ ! -x "$ARGOCD_DIR/argocd" ]; then LEFT+=(argocd); fi
  [ "${#LEFT[@]}" -eq 0 ] ||
    log "to build: ${LEFT[*]} (cold on 2 cores: k8s ~12 min, kwok ~2, opa ~2, helm ~4, argocd ~20); cache: $CACHE"
}

# step_done NAME: the step NAME is over; drop it from the front of LEFT.
step_done() { [ "${LEFT[0]:-}" != "$1" ] || LEFT=("${LEFT[@]:1}"); }

build() {
  build_k8s; step_done k8s
  argocd_crds
  go_install "$KWOK_DIR" kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" GOTOOLCHAIN=auto
  (cd "$CACHE" && kwok_stages); step_done kwok
  go_install "$OPA_DIR" opa "github.com/open-policy-agent/opa@$OPA_VERSION" GOTOOLCHAIN=auto
  step_done opa
  prometheus_crds
  # -X: `helm version` says v4.3.2, not the bare "v4.3" of its source.
  go_install "$HELM_DIR" helm "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" GOTOOLCHAIN=auto \
    -- -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
  step_done helm
  log "all built; binaries:"
  ls -l "$K8S_DIR" "$KWOK_DIR" "$OPA_DIR" "$HELM_DIR" >&2
}

ARGOCD_COMPONENTS=(argocd-server argocd-repo-server argocd-application-controller
  argocd-applicationset-controller argocd-cmp-server argocd-commit-server
  argocd-dex argocd-notifications argocd-k8s-auth argocd-git-ask-pass)

build_argocd() {
  if [ ! -x "$ARGOCD_DIR/argocd" ]; then
    local tmp="$ARGOCD_DIR.tmp.$$"
    rm -rf "$tmp"; mkdir -p "$tmp"
    # argo-cd v3.6.1 wants Go 1.27: GOTOOLCHAIN=auto fetches go1.27.x from the
    # module proxy by itself.
    (cd "$HERE/argocd" && export GOTOOLCHAIN=auto GOFLAGS="-mod=readonly -buildvcs=false" &&
      log "argocd: fetching Go 1.27 (GOTOOLCHAIN=auto) and the modules" && go mod download &&
      run_logged "build-argocd-$ARGOCD_VERSION" "$(go_packages github.com/argoproj/argo-cd/v3/cmd)" "${NICE[@]}" \
        go build -v -trimpath -ldflags "-s -w" -o "$tmp/argocd" github.com/argoproj/argo-cd/v3/cmd)
    mkdir -p "$ARGOCD_DIR"
    mv "$tmp/argocd" "$ARGOCD_DIR/argocd"
    rm -rf "$tmp"
  else
    log "argocd: cached in $ARGOCD_DIR"
  fi
  # One binary, many components, chosen by the name it runs under.
  local c
  for c in "${ARGOCD_COMPONENTS[@]}"; do ln -sf argocd "$ARGOCD_DIR/$c"; done
  # repo-server runs git-verify-wrapper.sh for every manifest generation
  # (even with ARGOCD_GPG_ENABLED=false): ship it next to the binary.
  local moddir
  moddir="$(cd "$HERE/argocd" && GOTOOLCHAIN=auto go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3)"
  install -m 0755 "$moddir/hack/git-verify-wrapper.sh" "$ARGOCD_DIR/git-verify-wrapper.sh"
  echo "$moddir" >"$ARGOCD_DIR/module-dir"   # manifests/crds, manifests/base/config
  ls -l "$ARGOCD_DIR" >&2
}

paths() {
  cat <<EOF
PAVER_E2E_CACHE=$CACHE
K8S_BIN_DIR=$K8S_DIR
KWOK_BIN_DIR=$KWOK_DIR
OPA_BIN_DIR=$OPA_DIR
ARGOCD_BIN_DIR=$ARGOCD_DIR
ARGOCD_CRDS_DIR=$ARGOCD_CRDS_DIR
HELM_BIN_DIR=$HELM_DIR
PROMETHEUS_CRDS_DIR=$PROMETHEUS_CRDS_DIR
EOF
}

check() {
  local ok=0 b
  if [ "${1:-}" = --argocd ]; then
    [ -x "$ARGOCD_DIR/argocd" ] && [ -f "$ARGOCD_DIR/module-dir" ] ||
      { echo "missing $ARGOCD_DIR/argocd (e2e/bin.sh build-argocd)" >&2; ok=1; }
  fi
  for b in "${K8S_BINS[@]}"; do [ -x "$K8S_DIR/$b" ] || { echo "missing $K8S_DIR/$b" >&2; ok=1; }; done
  [ -x "$KWOK_DIR/kwok" ] || { echo "missing $KWOK_DIR/kwok" >&2; ok=1; }
  [ -n "$(ls "$KWOK_DIR/stages/"*.yaml 2>/dev/null)" ] || { echo "missing $KWOK_DIR/stages/*.yaml" >&2; ok=1; }
  [ -x "$OPA_DIR/opa" ] || { echo "missing $OPA_DIR/opa" >&2; ok=1; }
  [ -f "$ARGOCD_CRDS_DIR/application-crd.yaml" ] || { echo "missing $ARGOCD_CRDS_DIR/application-crd.yaml" >&2; ok=1; }
  [ -x "$HELM_DIR/helm" ] || { echo "missing $HELM_DIR/helm" >&2; ok=1; }
  for b in "${PROMETHEUS_CRDS[@]}"; do
    [ -f "$PROMETHEUS_CRDS_DIR/$b" ] || { echo "missing $PROMETHEUS_CRDS_DIR/$b" >&2; ok=1; }
  done
  return "$ok"
}

need_go() {
  command -v go >/dev/null 2>&1 && return 0
  [ -x /usr/local/go/bin/go ] && { PATH="/usr/local/go/bin:$PATH"; return 0; }
  log "ERROR: Go is needed to build the e2e binaries (Go 1.26, https://go.dev/dl/; see e2e/README.md)"
  exit 1
}

case "${1:-}" in
  build) need_go; plan; build ;;
  build-k8s) need_go; build_k8s ;;
  build-argocd) need_go; plan --argocd; build_argocd ;;
  build-all)
    if check --argocd 2>/dev/null; then log "all cached in $CACHE"; exit 0; fi
    need_go; plan --argocd; build; build_argocd ;;
  paths) paths ;;
  check) shift; check "$@" ;;
  *) echo "usage: $0 build|build-k8s|build-argocd|build-all|paths|check [--argocd]" >&2; exit 2 ;;
esac
