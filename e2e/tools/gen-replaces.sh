#!/usr/bin/env bash
# Print one `replace k8s.io/<m> => k8s.io/<m> v0.<minor>.<patch>` line per
# staging module that k8s.io/kubernetes@<version>'s own go.mod requires at
# v0.0.0. Generated from the real go.mod (downloaded via the module proxy),
# never from a hand-written list.
#   usage: gen-replaces.sh [v1.37.2]
set -euo pipefail
K8S_VERSION="${1:-v1.37.2}"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
gomod="$(cd "$(mktemp -d)" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[ -f "$gomod" ] || { echo "cannot download go.mod of k8s.io/kubernetes@${K8S_VERSION}" >&2; exit 1; }
# Requirements (not replace targets) pinned at v0.0.0.
grep -E '^[[:space:]]*k8s\.io/[^[:space:]]+[[:space:]]+v0\.0\.0([[:space:]]|$)' "$gomod" \
  | grep -v '=>' | awk '{print $1}' | sort -u \
  | while read -r m; do printf 'replace %s => %s %s\n' "$m" "$m" "$STAGING_VERSION"; done
