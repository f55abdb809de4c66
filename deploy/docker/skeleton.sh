#!/usr/bin/env bash
# Copies the workspace's manifests and build scripts from $1 to $2 and stubs
# every Rust source, so that compiling the copy builds only the dependencies.
# The image build compiles this skeleton in a layer of its own: the layer is
# reused until a manifest, the lockfile or a build script changes, and a code
# change recompiles the workspace crates alone.
set -euo pipefail
src=$1 dst=$2
cd "$src"
mkdir -p "$dst"
# Hidden folders (virtualenvs, git) and build outputs hold no workspace files.
prune=(\( -path ./target -o -path ./deploy -o \( -path './.*' ! -path './.cargo*' \) \) -prune -o)
find . "${prune[@]}" -type f \
  \( -name Cargo.toml -o -name Cargo.lock -o -name build.rs -o -name '*.proto' -o -path './.cargo/*' \) \
  -print | while read -r f; do
  mkdir -p "$dst/$(dirname "$f")"
  cp "$f" "$dst/$f"
done
# Cargo needs the files of the targets its manifests name: library and
# binary roots, and any target given a `path`. Those become stubs, a main
# where one is needed. Modules and auto-discovered tests, benches and
# examples are left out, so adding one does not invalidate the dependency
# layer (cargo builds none of them for `cargo build -p`).
{
  find . "${prune[@]}" -type f -name '*.rs' -print |
    grep -E '/src/(lib|main)\.rs$|/src/bin/[^/]+\.rs$|/src/bin/[^/]+/main\.rs$' || true
  find . "${prune[@]}" -type f -name Cargo.toml -print | while read -r m; do
    sed -n 's/^ *path *= *"\([^"]*\.rs\)".*/\1/p' "$m" | sed "s|^|$(dirname "$m")/|"
    # Targets declared by name alone ([[bench]] name = "x") sit where cargo
    # looks by default, which it checks when it reads the manifest.
    awk '
      function flush() { if (kind != "" && name != "" && !path) print dir[kind] "/" name ".rs" }
      /^\[/ { flush(); kind = ""; name = ""; path = 0 }
      /^\[\[(bench|test|example|bin)\]\]/ { kind = $0; gsub(/[][ ]/, "", kind) }
      kind != "" && /^ *name *=/ { name = $0; sub(/^[^"]*"/, "", name); sub(/".*/, "", name) }
      kind != "" && /^ *path *=/ { path = 1 }
      END { flush() }
      BEGIN { dir["bench"] = "benches"; dir["test"] = "tests"; dir["example"] = "examples"; dir["bin"] = "src/bin" }
    ' "$m" | sed "s|^|$(dirname "$m")/|"
  done
} | sort -u | while read -r f; do
  [ -f "$f" ] || continue
  mkdir -p "$dst/$(dirname "$f")"
  case "$f" in
    */src/lib.rs) : > "$dst/$f" ;;
    *) echo 'fn main() {}' > "$dst/$f" ;;
  esac
done
# cli/build.rs builds presets/*.toml into the binary; the stubs use none, and
# an empty folder keeps the dependency layer from changing with a preset.
mkdir -p "$dst/presets"
