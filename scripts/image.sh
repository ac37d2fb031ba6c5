#!/usr/bin/env bash
# Build the operator image (Containerfile, FROM scratch) without pulling
# anything: the root filesystem is made here from the release binary, the
# shared libraries `ldd` says it links, and the machine's CA bundle.
#
#   scripts/image.sh rootfs   prepare target/image/rootfs only
#   scripts/image.sh build    rootfs, then build the image with
#                             $CONTAINER_TOOL (buildah, or docker) and write
#                             the OCI archive target/image/paver-<version>.oci.tar
#
# Environment: PAVER_BIN (default target/release/paver), IMAGE (default
# ghcr.io/paver-dev/paver), IMAGE_TAG (default: the workspace version),
# CONTAINER_TOOL (buildah|docker, default buildah).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
BIN="${PAVER_BIN:-target/release/paver}"
IMAGE="${IMAGE:-ghcr.io/paver-dev/paver}"
TAG="${IMAGE_TAG:-$VERSION}"
TOOL="${CONTAINER_TOOL:-buildah}"
OUT=target/image
ROOTFS="$OUT/rootfs"
ARCHIVE="$OUT/paver-$TAG.oci.tar"
CA=/etc/ssl/certs/ca-certificates.crt

log() { printf '[image.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

rootfs() {
  [ -x "$BIN" ] || die "$BIN not found: build it first (cargo build --release --locked -p paver)"
  [ -r "$CA" ] || die "$CA not found: install Debian's ca-certificates (e2e/deps.sh install)"
  rm -rf "$ROOTFS"
  # Mount points (empty): what a runtime mounts even on a read-only root,
  # and the Deployment's volumes.
  mkdir -p "$ROOTFS"/{dev,proc,sys,run,etc/ssl/certs,tmp,var/lib/paver,etc/paver/git,var/run/secrets/kubernetes.io/serviceaccount}
  touch "$ROOTFS"/etc/{hosts,resolv.conf,hostname}
  # Debug information stripped (the symbols stay: panics and profiles keep
  # their function names).
  strip --strip-debug -o "$ROOTFS/paver" "$BIN"
  chmod 0555 "$ROOTFS/paver"
  # The loader and every library the binary links, at the paths it asks
  # for (symlinks resolved). A static binary has none: ldd says so.
  local libs
  libs="$(ldd "$BIN" 2>&1 | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}')" || true
  if [ -z "$libs" ] && ! ldd "$BIN" 2>&1 | grep -q 'not a dynamic executable\|statically linked'; then
    die "could not read the libraries $BIN links (ldd $BIN)"
  fi
  if ldd "$BIN" 2>&1 | grep -q 'not found'; then
    die "$BIN links a library this machine lacks: $(ldd "$BIN" | grep 'not found')"
  fi
  local lib
  for lib in $libs; do
    mkdir -p "$ROOTFS$(dirname "$lib")"
    cp -L "$lib" "$ROOTFS$lib"
    chmod 0555 "$ROOTFS$lib"
  done
  install -m 0444 "$CA" "$ROOTFS$CA"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' >"$ROOTFS/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$ROOTFS/etc/group"
  printf 'hosts: files dns\n' >"$ROOTFS/etc/nsswitch.conf"
  chmod 0444 "$ROOTFS"/etc/{passwd,group,nsswitch.conf,hosts,resolv.conf,hostname}
  # Writable only where the Deployment mounts volumes; everything else is
  # owned by root and read-only to uid 65532 even without a read-only mount.
  chmod 1777 "$ROOTFS/tmp"
  chmod 0755 "$ROOTFS/var/lib/paver"
  log "rootfs: $ROOTFS ($(du -sh "$ROOTFS" | cut -f1); binary $(du -h "$ROOTFS/paver" | cut -f1), $(echo "$libs" | grep -c . || true) shared libraries)"
}

build() {
  rootfs
  mkdir -p "$OUT"
  rm -f "$ARCHIVE"
  case "$TOOL" in
    buildah)
      command -v buildah >/dev/null || die "buildah is not installed (e2e/deps.sh install)"
      # vfs and chroot isolation: no overlay or user namespaces needed.
      buildah --storage-driver vfs bud --isolation chroot --quiet --layers=false \
        --build-arg "VERSION=$VERSION" -f Containerfile -t "$IMAGE:$TAG" . >/dev/null
      buildah --storage-driver vfs push --quiet "$IMAGE:$TAG" "oci-archive:$ARCHIVE:$IMAGE:$TAG"
      ;;
    docker)
      docker build --build-arg "VERSION=$VERSION" -f Containerfile -t "$IMAGE:$TAG" .
      docker save -o "$ARCHIVE" "$IMAGE:$TAG"
      ;;
    *) die "CONTAINER_TOOL=$TOOL: use buildah or docker" ;;
  esac
  log "image $IMAGE:$TAG: $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))"
  echo "$ARCHIVE"
}

case "${1:-build}" in
  rootfs) rootfs ;;
  build) build ;;
  *) die "usage: scripts/image.sh [rootfs|build]" ;;
esac
