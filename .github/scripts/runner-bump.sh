#!/usr/bin/env bash
# Pins a new Actions runner release: adds VERSION with the SHA-256 of its linux x64 and arm64
# packages to the top of gpu-runner's table (src/runner_package.rs), and makes it the default
# runner-version (src/inputs/spec.rs, action.yml, docs/inputs.md). Run from the repository root.
# Exits 3 when VERSION is pinned already, so that the workflow opens no pull request.
set -euo pipefail

usage() { echo "usage: $0 VERSION X64_SHA256 ARM64_SHA256" >&2; exit 2; }
[ "$#" -eq 3 ] || usage
version="$1" x64="$2" arm64="$3"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "not a runner version: $version" >&2; exit 2; }
for hash in "$x64" "$arm64"; do
  [[ "$hash" =~ ^[0-9a-f]{64}$ ]] || { echo "not a SHA-256: $hash" >&2; exit 2; }
done

table=src/runner_package.rs
if grep -q "version: \"$version\"," "$table"; then
  echo "runner $version is pinned already"
  exit 3
fi
old="$(sed -n 's/^pub const RUNNER_VERSION: Spec = Spec::new("runner-version", Start, "\([0-9.]*\)");$/\1/p' src/inputs/spec.rs)"
[ -n "$old" ] || { echo "no default runner-version found in src/inputs/spec.rs" >&2; exit 1; }

entry() {
  printf '    PinnedRunner {\n        version: "%s",\n        arch: Arch::%s,\n        sha256: "%s",\n    },\n' "$1" "$2" "$3"
}
new_entries="$(entry "$version" X64 "$x64"; entry "$version" Arm64 "$arm64")"
marker='pub const PINNED_RUNNERS: &[PinnedRunner] = &['
grep -qF "$marker" "$table" || { echo "no PINNED_RUNNERS table in $table" >&2; exit 1; }
awk -v marker="$marker" -v entries="$new_entries" '
  { print }
  $0 == marker { print entries }
' "$table" > "$table.new"
mv "$table.new" "$table"

sed -i "s/Spec::new(\"runner-version\", Start, \"$old\")/Spec::new(\"runner-version\", Start, \"$version\")/" src/inputs/spec.rs
# action.yml: the default of the runner-version input only.
awk -v old="$old" -v new="$version" '
  /^  [a-z-]+:$/ { input = $1 }
  input == "runner-version:" && $0 == "    default: \"" old "\"" { $0 = "    default: \"" new "\"" }
  input == "runner-version:" && $0 == "    default: " old { $0 = "    default: " new }
  { print }
' action.yml > action.yml.new
mv action.yml.new action.yml
# action.yml's runner-version description and docs/inputs.md (generated from action.yml and the
# spec; the contract test checks that it still is): the default and the list of pinned versions.
sed -i "s/^      Pinned, with their x64 and arm64 hashes: /      Pinned, with their x64 and arm64 hashes: $version, /" action.yml
sed -i \
  -e "s/^| \`runner-version\` | start | \`$old\` | \(.*\)Pinned, with their x64 and arm64 hashes: /| \`runner-version\` | start | \`$version\` | \1Pinned, with their x64 and arm64 hashes: $version, /" \
  docs/inputs.md
echo "pinned runner $version (was $old)"
