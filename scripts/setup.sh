#!/usr/bin/env bash
# Installs what building, running and testing apex need, inside the repository:
#   .venv/           Python venv: torch 2.11.0 (libtorch for tch), cmake, ale-py, gymnasium
#   .venv/libtorch   link to the venv's torch folder (LIBTORCH in .cargo/config.toml)
#   roms/            Atari ROMs from the ale-py 0.12.1 wheel, checked against env/roms.md5
# Idempotent and quiet when everything is in place; safe to run before every command.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

say() { echo "setup: $*" >&2; }

# ale-sys compiles ALE with a C++ compiler and links zlib.
if ! command -v c++ >/dev/null || [ ! -e /usr/include/zlib.h ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "installing a C++ compiler and zlib headers (apt)"
    apt-get update -qq && apt-get install -y -qq g++ zlib1g-dev >/dev/null
  else
    say "error: a C++ compiler and zlib headers are needed: install g++ and zlib1g-dev"; exit 1
  fi
fi

# apex plot reads DejaVu Sans at run time (no fontconfig or freetype needed);
# only plotting needs it, so its absence is a warning.
have_font() {
  for f in /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/dejavu/DejaVuSans.ttf \
           /usr/share/fonts/TTF/DejaVuSans.ttf; do
    [ -e "$f" ] && return 0
  done
  return 1
}
if ! have_font; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    say "installing the DejaVu fonts for apex plot (apt)"
    apt-get update -qq && apt-get install -y -qq fonts-dejavu-core >/dev/null
  else
    say "warning: apex plot needs the DejaVu Sans font: install fonts-dejavu-core"
  fi
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
  say "error: python 3.10 or newer is needed (set PYTHON=/path/to/python3)"; exit 1
fi

stamp=".venv/.installed-$(sha256sum scripts/requirements.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || { say "creating .venv"; "$python" -m venv .venv; }
  say "installing Python packages into .venv (torch is about 4.6 GB; a few minutes the first time)"
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
  rm -f .venv/.installed-*
  touch "$stamp"
fi

if [ ! -e .venv/libtorch/lib/libtorch_cpu.so ]; then
  torch_dir=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
  ln -sfn "$torch_dir" .venv/libtorch
fi

# ROMs: copied out of the ale-py wheel, each checked against the md5 we expect.
rom_src=""
mkdir -p roms
while read -r md5 file; do
  case "$md5" in ''|'#'*) continue ;; esac
  if [ -f "roms/$file" ] && [ "$(md5sum < "roms/$file" | cut -d' ' -f1)" = "$md5" ]; then continue; fi
  [ -n "$rom_src" ] || rom_src=$(.venv/bin/python -c 'import os, ale_py; print(os.path.join(os.path.dirname(ale_py.__file__), "roms"))')
  if [ ! -f "$rom_src/$file" ]; then say "error: $file is missing from the ale-py wheel at $rom_src"; exit 1; fi
  got=$(md5sum < "$rom_src/$file" | cut -d' ' -f1)
  if [ "$got" != "$md5" ]; then say "error: $file from ale-py has md5 $got, expected $md5"; exit 1; fi
  cp "$rom_src/$file" "roms/$file"
done < env/roms.md5
