#!/usr/bin/env bash
# The core (paver-core) and the resource types (paver-crds) decide and
# describe; they do no Kubernetes or Git I/O. Fails when the normal
# dependency graph of either holds a crate that does: kube's client or
# runtime, libgit2, or an async runtime. (`make lint` runs it.)
set -euo pipefail
cd "$(dirname "$0")/.."
FORBIDDEN='^(kube-client|kube-runtime|git2|libgit2-sys|tokio|hyper|reqwest) '
rc=0
for pkg in paver-core paver-crds; do
  # --edges normal: what the library links, not its tests' or build scripts'.
  # Features resolved for this package alone (-p, not the whole workspace).
  tree="$(cargo tree --locked -p "$pkg" --edges normal --prefix none --format '{p}')"
  found="$(sort -u <<<"$tree" | grep -E "$FORBIDDEN" || true)"
  if [ -n "$found" ]; then
    echo "core-is-pure: $pkg depends on what the core must not reach:" >&2
    echo "$found" | sed 's/^/  /' >&2
    echo "  (see \`cargo tree -p $pkg -i <crate>\` for the path)" >&2
    rc=1
  fi
done
[ "$rc" -ne 0 ] || echo "core-is-pure: paver-core and paver-crds reach no kube client, runtime, git2 or tokio"
exit "$rc"
