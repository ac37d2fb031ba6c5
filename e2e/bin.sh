#!/usr/bin/env bash
# Build (once) and cache the real binaries Paver's e2e tests run against.
#
#   e2e/bin.sh build          kube-apiserver, kube-controller-manager,
#                             kube-scheduler, kubectl, etcd (one `go build`),
#                             Argo CD's CRDs (module download), then kwok and
#                             opa (`go install`)
#   e2e/bin.sh build-argocd   Argo CD (optional, ~9 min, fetches Go 1.27)
#   e2e/bin.sh paths          print the cache directories (shell assignments)
#   e2e/bin.sh check          exit 0 only if every required binary is cached
#
# Binaries go to ${PAVER_E2E_CACHE:-$HOME/.cache/paver-e2e}/<tool>-<version>/
# and are never rebuilt when present (delete the directory to force it).
# Go builds run one at a time under `nice -n 15`; output goes to log files
# under <cache>/logs/, timings are printed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

K8S_VERSION="v1.37.2"
ETCD_VERSION="v3.7.0"   # pinned in tools/go.mod, built into the k8s dir
KWOK_VERSION="v0.8.0"
OPA_VERSION="v1.22.2"
ARGOCD_VERSION="v3.6.1" # pinned in argocd/go.mod

CACHE="${PAVER_E2E_CACHE:-$HOME/.cache/paver-e2e}"
K8S_DIR="$CACHE/k8s-$K8S_VERSION"
KWOK_DIR="$CACHE/kwok-$KWOK_VERSION"
OPA_DIR="$CACHE/opa-$OPA_VERSION"
ARGOCD_DIR="$CACHE/argocd-$ARGOCD_VERSION"
ARGOCD_CRDS_DIR="$CACHE/argocd-crds-$ARGOCD_VERSION"
LOG_DIR="$CACHE/logs"

K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd)
NICE=(nice -n 15)

log() { printf '[bin.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# run_logged NAME CMD... : run CMD with output to $LOG_DIR/NAME.log, print time.
run_logged() {
  local name="$1"; shift
  local logf="$LOG_DIR/$name.log" start end rc=0
  mkdir -p "$LOG_DIR"
  log "$name: started (log: $logf)"
  start=$(date +%s)
  { echo "# $(date -Is) $*"; } >"$logf"
  "$@" >>"$logf" 2>&1 || rc=$?
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
  (cd "$HERE/tools" && GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" \
    run_logged "build-k8s-$K8S_VERSION" "${NICE[@]}" \
      go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}")
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

# go_install DIR BIN MODULE@VERSION [env...]
go_install() {
  local dir="$1" bin="$2" target="$3"; shift 3
  if [ -x "$dir/$bin" ]; then log "$bin: cached in $dir"; return 0; fi
  mkdir -p "$dir"
  (cd "$dir" && run_logged "install-$bin-${target##*@}" \
    env GOBIN="$dir" "$@" "${NICE[@]}" go install -trimpath "$target")
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

build() {
  build_k8s
  argocd_crds
  go_install "$KWOK_DIR" kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" GOTOOLCHAIN=auto
  (cd "$CACHE" && kwok_stages)
  go_install "$OPA_DIR" opa "github.com/open-policy-agent/opa@$OPA_VERSION" GOTOOLCHAIN=auto
  log "all built; binaries:"
  ls -l "$K8S_DIR" "$KWOK_DIR" "$OPA_DIR" >&2
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
    (cd "$HERE/argocd" && GOTOOLCHAIN=auto GOFLAGS="-mod=readonly -buildvcs=false" \
      run_logged "build-argocd-$ARGOCD_VERSION" "${NICE[@]}" \
        go build -trimpath -ldflags "-s -w" -o "$tmp/argocd" github.com/argoproj/argo-cd/v3/cmd)
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
EOF
}

check() {
  local ok=0 b
  for b in "${K8S_BINS[@]}"; do [ -x "$K8S_DIR/$b" ] || { echo "missing $K8S_DIR/$b" >&2; ok=1; }; done
  [ -x "$KWOK_DIR/kwok" ] || { echo "missing $KWOK_DIR/kwok" >&2; ok=1; }
  [ -n "$(ls "$KWOK_DIR/stages/"*.yaml 2>/dev/null)" ] || { echo "missing $KWOK_DIR/stages/*.yaml" >&2; ok=1; }
  [ -x "$OPA_DIR/opa" ] || { echo "missing $OPA_DIR/opa" >&2; ok=1; }
  [ -f "$ARGOCD_CRDS_DIR/application-crd.yaml" ] || { echo "missing $ARGOCD_CRDS_DIR/application-crd.yaml" >&2; ok=1; }
  return "$ok"
}

case "${1:-}" in
  build) build ;;
  build-k8s) build_k8s ;;
  build-argocd) build_argocd ;;
  paths) paths ;;
  check) check ;;
  *) echo "usage: $0 build|build-k8s|build-argocd|paths|check" >&2; exit 2 ;;
esac
