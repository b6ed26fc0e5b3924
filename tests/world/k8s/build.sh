#!/usr/bin/env bash
# Builds the local world's Kubernetes control plane from the Kubernetes Go modules (go.mod pins the
# version; its replace directives map the staging modules, which k8s.io/kubernetes requires at
# v0.0.0, to their published versions): kube-apiserver, kube-scheduler, and etcd from the etcd
# server module that Kubernetes itself requires. Into target/k8s-world/bin, once: a rerun with them
# built does nothing. Needs Go and its module proxy. Parallel callers wait for one build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../../target/k8s-world}"
version="$(sed -n 's/^[[:space:]]*k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$here/go.mod")"
minor="$(printf '%s' "$version" | cut -d . -f 2)"
mkdir -p "$out/bin"
exec 9> "$out/.build.lock"
flock 9
stamp="$out/bin/.built-$version"
[ -e "$stamp" ] && exit 0
cd "$here"
# The version the binaries report (a module build has no git tree to take it from).
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version"
ldflags="$ldflags -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
for cmd in kube-apiserver kube-scheduler; do
  go build -ldflags "$ldflags" -o "$out/bin/$cmd" "k8s.io/kubernetes/cmd/$cmd"
done
go build -ldflags "-s -w" -o "$out/bin/etcd" ./cmd/etcd
touch "$stamp"
