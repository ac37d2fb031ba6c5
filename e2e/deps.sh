#!/usr/bin/env bash
# The Debian packages Paver's build, e2e suite and demo need, in one place
# (make demo, make test and .ci/run all ask here).
#
#   e2e/deps.sh missing [--no-argocd]   print the missing packages, one per
#                                       line; exit 1 when any is missing
#   e2e/deps.sh install [--no-argocd]   install the missing ones: apt-get as
#                                       root, sudo otherwise, after saying
#                                       what it installs; a clear error
#                                       naming the packages where neither works
#
# --no-argocd leaves out what only Argo CD needs (redis-server).
# Package services (lighttpd, redis) are kept from starting while they are
# installed (policy-rc.d): the e2e starts its own on loopback.
set -euo pipefail

# Build: pkg-config libssl-dev (libgit2 over HTTPS), make cmake (jemalloc,
# libgit2). e2e (e2e/README.md): git (and its git-http-backend), lighttpd,
# openssl, curl; ca-certificates for the Go module proxy and crates.io (and
# the image's CA bundle). Image (make image, the e2e runs the operator from
# it): buildah. Observability (the e2e scrapes the operator): prometheus.
BASE_PKGS=(pkg-config libssl-dev git make cmake lighttpd openssl curl ca-certificates buildah prometheus)
# Argo CD's cache (e2e/argocd.sh).
ARGOCD_PKGS=(redis-server)

log() { printf '[deps.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

wanted() {
  local pkgs=("${BASE_PKGS[@]}")
  [ "${1:-}" = --no-argocd ] || pkgs+=("${ARGOCD_PKGS[@]}")
  printf '%s\n' "${pkgs[@]}"
}

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing() {
  local p any=1
  while read -r p; do
    installed "$p" && continue
    echo "$p"; any=0
  done < <(wanted "$@")
  return "$any"
}

install() {
  local need=()
  mapfile -t need < <(missing "$@" || true)
  if [ "${#need[@]}" -eq 0 ]; then log "Debian packages: all present"; return 0; fi
  local how="apt-get install -y --no-install-recommends ${need[*]}"
  if ! command -v apt-get >/dev/null 2>&1; then
    log "ERROR: missing packages ${need[*]}, and there is no apt-get here; install them with your package manager"
    return 1
  fi
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      log "ERROR: missing packages ${need[*]}; not root and no sudo: as root run: apt-get update && $how"
      return 1
    fi
    sudo=(sudo)
  fi
  log "installing Debian packages: ${need[*]} (${sudo[*]:+sudo }apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  local policy_rc=/usr/sbin/policy-rc.d added_policy=0 rc=0
  if [ ! -e "$policy_rc" ]; then
    if printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy_rc" >/dev/null &&
      "${sudo[@]}" chmod 0755 "$policy_rc"; then
      added_policy=1
    fi
  fi
  local aptlog; aptlog="$(mktemp "${TMPDIR:-/tmp}/paver-deps.XXXXXX")"
  { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
    >"$aptlog" 2>&1 || rc=$?
  [ "$added_policy" = 0 ] || "${sudo[@]}" rm -f "$policy_rc" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 20 "$aptlog" >&2
    log "ERROR: could not install ${need[*]} (exit $rc; apt-get's output: $aptlog); as root run: apt-get update && $how"
    return 1
  fi
  rm -f "$aptlog"
  local still=()
  mapfile -t still < <(missing "$@" || true)
  if [ "${#still[@]}" -ne 0 ]; then
    log "ERROR: still missing after apt-get: ${still[*]}"
    return 1
  fi
  log "installed: ${need[*]}"
}

case "${1:-}" in
  missing) shift; missing "$@" ;;
  install) shift; install "$@" ;;
  *) echo "usage: $0 missing|install [--no-argocd]" >&2; exit 2 ;;
esac
