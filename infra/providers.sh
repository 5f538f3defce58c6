#!/usr/bin/env bash
# Builds the Terraform providers infra/ needs from source and lays them out as a filesystem
# mirror, so `terraform init` and `terraform validate` work with no Terraform registry.
#
#   infra/providers.sh MIRROR_DIR            build what is missing (skips what is there)
#   infra/providers.sh --check MIRROR_DIR    exit 0 if every provider is present, 1 otherwise
#
# The providers' Go modules are not usable from the Go module proxy at their release tags
# (their go.mod lacks the /vN suffix), so each is built from a git checkout of its repository:
# $<NAME>_PROVIDER_GIT (a git dir), else the snapshot under $QUANTCORE_MIRRORS (default
# /work/.mirror/<owner>+<repo>/repo, or a fork's snapshot). Their dependencies come from the Go module proxy.
set -euo pipefail

# name version owner/repo commit: the commit is the release tag's (helm) or, where the
# snapshot has no tags, the main-branch commit the v5.45.0 release was cut from (aws).
PROVIDERS=(
  "aws 5.45.0 hashicorp/terraform-provider-aws 7769ba5ef892ca70f95d20b82f28b92c6645d35d"
  "helm 3.1.2 hashicorp/terraform-provider-helm v3.1.2"
)

check_only=0
if [[ "${1:-}" == "--check" ]]; then
  check_only=1
  shift
fi
mirror=${1:?usage: providers.sh [--check] MIRROR_DIR}
cache=${QUANTCORE_CACHE:-$HOME/.cache/quantcore}
mirrors=${QUANTCORE_MIRRORS:-/work/.mirror}
platform="$(go env GOOS 2>/dev/null || echo linux)_$(go env GOARCH 2>/dev/null || echo amd64)"

binary_path() { # name version
  echo "$mirror/registry.terraform.io/hashicorp/$1/$2/$platform/terraform-provider-$1_v$2"
}

if ((!check_only)); then
  # One build at a time: a second caller (say `make test` while a build runs) reports the
  # providers missing instead of compiling them twice into the same place.
  mkdir -p "$mirror"
  exec 9>"$mirror/.build.lock"
  if ! flock -n 9; then
    echo "providers: another build is running (lock $mirror/.build.lock); not waiting" >&2
    check_only=1
  fi
fi

missing=0
for entry in "${PROVIDERS[@]}"; do
  read -r name version repo rev <<<"$entry"
  out=$(binary_path "$name" "$version")
  if [[ -x "$out" ]]; then
    echo "provider $name $version: present"
    continue
  fi
  if ((check_only)); then
    echo "provider $name $version: missing ($out)" >&2
    missing=1
    continue
  fi
  var="$(echo "$name" | tr '[:lower:]' '[:upper:]')_PROVIDER_GIT"
  git_dir=${!var:-}
  if [[ -z "$git_dir" ]]; then
    # Any snapshot of the repository or of a fork that holds the commit will do.
    for candidate in "$mirrors/${repo/\//+}/repo" "$mirrors"/*+"${repo#*/}"/repo; do
      if git --git-dir="$candidate" cat-file -e "$rev^{commit}" 2>/dev/null; then
        git_dir=$candidate
        break
      fi
    done
  fi
  if ! git --git-dir="$git_dir" cat-file -e "$rev^{commit}" 2>/dev/null; then
    echo "provider $name $version: no source: set $var to a git dir of $repo holding $rev" >&2
    missing=1
    continue
  fi
  src="$cache/src/terraform-provider-$name-$version"
  if [[ ! -d "$src" ]]; then
    rm -rf "$src.tmp" && mkdir -p "$src.tmp"
    # Snapshots may lack their largest blobs (test fixtures): leave those files out.
    tree=$(git --git-dir="$git_dir" ls-tree -r "$rev")
    mapfile -t absent < <(paste \
      <(awk '{print $3}' <<<"$tree" | git --git-dir="$git_dir" cat-file --batch-check) \
      <(cut -f2- <<<"$tree") | awk -F'\t' '$1 ~ / missing$/ {print ":(exclude)" $2}')
    git --git-dir="$git_dir" archive "$rev" -- . "${absent[@]}" | tar -x -C "$src.tmp"
    mv "$src.tmp" "$src"
  fi
  echo "provider $name $version: building from $repo@$rev (log: $src.build.log)"
  start=$(date +%s)
  mkdir -p "$(dirname "$out")"
  # The aws provider is large: lowest priority so the shared machine stays responsive.
  (cd "$src" && GOFLAGS=-mod=mod nice -n 19 go build -trimpath -ldflags="-s -w" -o "$out.tmp" .) \
    >"$src.build.log" 2>&1 || {
    echo "provider $name $version: build failed, see $src.build.log" >&2
    tail -20 "$src.build.log" >&2
    exit 1
  }
  mv "$out.tmp" "$out"
  echo "provider $name $version: built in $(($(date +%s) - start)) s"
done
exit "$missing"
