#!/usr/bin/env bash
# Builds the control plane of the operator's cluster tests from the pinned Go modules in
# tests/k8s/ (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok,
# kwokctl) into $PULSE_CACHE/k8s/<key>/bin, where <key> is a hash of those module files: a
# second run, or a run after an unrelated change, builds nothing. Prints the bin directory.
#
# Static binaries (CGO_ENABLED=0, -trimpath) with the version stamped in, so `kubectl version`
# and the API server's /version report the pinned release. Go caches stay outside the clone:
# GOCACHE=$PULSE_CACHE/go/cache, GOMODCACHE=$PULSE_CACHE/go/mod. A cold build takes tens of
# minutes on two cores; it runs under `nice -n 19`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODS="$ROOT/tests/k8s"

: "${HOME:=$(cd ~ && pwd)}"
PULSE_CACHE="${PULSE_CACHE:-$HOME/.cache/pulse}"
export GOCACHE="${PULSE_GOCACHE:-$PULSE_CACHE/go/cache}"
export GOMODCACHE="${PULSE_GOMODCACHE:-$PULSE_CACHE/go/mod}"
# Never let `go` fetch another toolchain: a too-old Go is reported below instead.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
unset GOOS GOARCH

# Bump when the way the binaries are built changes (flags), so the cache key changes too.
BUILD_FORMAT=1
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kwokctl)

log() { printf 'k8s-build: %s\n' "$*" >&2; }
die() {
	printf 'k8s-build: error: %s\n' "$*" >&2
	exit 1
}

# shellcheck source=tests/k8s/versions.env
source "$MODS/versions.env"

cache_key() {
	{
		printf 'format %s\n' "$BUILD_FORMAT"
		(cd "$MODS" && sha256sum versions.env kubernetes/go.mod kubernetes/go.sum etcd/go.mod etcd/go.sum kwok/go.mod kwok/go.sum)
	} | sha256sum | cut -c1-16
}

KEY="$(cache_key)"
OUT="$PULSE_CACHE/k8s/$KUBERNETES_VERSION-$KEY"
BIN="$OUT/bin"

complete() {
	local b
	for b in "${BINARIES[@]}"; do
		[[ -x $BIN/$b ]] || return 1
	done
}

if complete; then
	printf '%s\n' "$BIN"
	exit 0
fi

# ---------------------------------------------------------------- Go

check_go() {
	command -v go >/dev/null 2>&1 ||
		die "Go is not installed (or not on PATH). The cluster tests build Kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION and kwok $KWOK_VERSION from source and need Go >= $1: install it from https://go.dev/dl/ (or your distribution) and run again."
	local have
	have="$(go env GOVERSION 2>/dev/null)" || die "'go env GOVERSION' failed; is Go installed correctly?"
	have="${have#go}"
	have="${have%%[!0-9.]*}"
	if [[ "$(printf '%s\n%s\n' "$1" "$have" | sort -V | head -n 1)" != "$1" ]]; then
		die "Go $have is too old: tests/k8s needs Go >= $1 (the go line of its modules). Install a newer Go from https://go.dev/dl/ and run again."
	fi
}

need_go="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$MODS"/*/go.mod | sort -V | tail -n 1)"
check_go "$need_go"

mkdir -p "$PULSE_CACHE/k8s" "$GOCACHE" "$GOMODCACHE"
# One build at a time; a second ./dev waits and then finds the binaries.
exec 8>"$PULSE_CACHE/k8s/.build.lock"
if command -v flock >/dev/null 2>&1; then
	if ! flock -n 8; then
		log "another build of the control plane runs; waiting for it (lock $PULSE_CACHE/k8s/.build.lock)"
		flock 8
	fi
	if complete; then
		printf '%s\n' "$BIN"
		exit 0
	fi
fi

# ---------------------------------------------------------------- build

# Stamp times come from the module proxy's release times (reproducible, not "now").
mod_time() {
	(cd "$MODS/$1" && go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' "$2") 2>/dev/null || true
}

kube_ldflags() {
	local v="$KUBERNETES_VERSION" date major minor flags="-s -w" pkg
	date="$(mod_time kubernetes k8s.io/kubernetes)"
	[[ -n $date ]] || date=1970-01-01T00:00:00Z
	major="${v#v}"
	major="${major%%.*}"
	minor="${v#v*.}"
	minor="${minor%%.*}"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
		# The module proxy does not carry the release commit; a fixed placeholder, tree clean.
		flags+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000 -X $pkg.gitTreeState=clean"
		flags+=" -X $pkg.buildDate=$date"
	done
	printf '%s\n' "$flags"
}

kwok_ldflags() {
	printf '%s\n' "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$KUBERNETES_VERSION"
}

# build MODULE LDFLAGS PACKAGE...: one `go build` per module, so the packages share compiles.
build() {
	local mod="$1" ldflags="$2"
	shift 2
	log "building $* (tests/k8s/$mod)"
	local start=$SECONDS
	(cd "$MODS/$mod" && nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$tmp/" "$@") ||
		die "go build in tests/k8s/$mod failed (output above)"
	log "built tests/k8s/$mod in $((SECONDS - start)) s"
}

log "building the control plane ($KUBERNETES_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION) into $BIN"
log "a cold build takes tens of minutes on two cores (Go caches: $GOCACHE)"
start=$SECONDS
tmp="$(mktemp -d "$PULSE_CACHE/k8s/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

build etcd "-s -w" go.etcd.io/etcd/server/v3
# `go build -o dir/` names a .../v3 main package after the element before the major version.
mv "$tmp/server" "$tmp/etcd"
build kwok "$(kwok_ldflags)" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
build kubernetes "$(kube_ldflags)" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl

for b in "${BINARIES[@]}"; do
	[[ -x $tmp/$b ]] || die "the build produced no $b"
done
rm -rf "$OUT"
mkdir -p "$OUT"
chmod 755 "$tmp"
mv "$tmp" "$BIN"
trap - EXIT
log "built ${BINARIES[*]} in $((SECONDS - start)) s"
printf '%s\n' "$BIN"
