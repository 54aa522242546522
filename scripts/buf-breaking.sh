#!/usr/bin/env bash
# buf breaking against the previous commit of main (FILE rules, buf.yaml).
# The googleapis module is git-ignored, so buf cannot build the old commit straight from git:
# we export the old proto/ into a temporary workspace beside our third_party copy and build
# an image of it to compare against.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
BUF=.tools/node_modules/.bin/buf
base="${BUF_BREAKING_AGAINST:-HEAD~1}"
if ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
  echo "buf breaking: no $base to compare against (first commit); skipped"
  exit 0
fi
if ! git cat-file -e "$base:proto" 2>/dev/null; then
  echo "buf breaking: $base has no proto/ yet; nothing to break"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive "$base" proto buf.yaml | tar -x -C "$tmp"
mkdir -p "$tmp/.tools"
cp -r .tools/third_party "$tmp/.tools/third_party"
(cd "$tmp" && "$OLDPWD/$BUF" build -o "$tmp/against.binpb")
# Compare image to image: a two-module workspace and a one-image file do not line up.
"$BUF" build -o "$tmp/current.binpb"
"$BUF" breaking "$tmp/current.binpb" --against "$tmp/against.binpb" --config buf.yaml
echo "buf breaking: no breaking changes against $(git rev-parse --short "$base")"
