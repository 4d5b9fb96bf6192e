#!/usr/bin/env bash
# The rooms of the tree follow the data path io -> src -> mpi | gpu -> cli,
# with no arrow running back: every `#include "..."` of a C file or header
# must name a header of its own folder or of a folder it may use.
#   src/ (and src/layers/)  include/
#   io/                     src/, include/
#   mpi/                    src/, io/, include/
#   gpu/                    src/, include/
#   cli/                    include/ only (the program uses the public API)
# Prints each include that breaks this and fails.
set -uo pipefail
root="${KD_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
cd "$root" || exit 1

allowed() { # room -> folders whose headers it may include (besides its own)
  case "$1" in
    src | src/layers) echo "src src/layers include" ;;
    io) echo "io src src/layers include" ;;
    mpi) echo "mpi src src/layers io include" ;;
    gpu) echo "gpu src src/layers include" ;;
    cli) echo "cli include" ;;
  esac
}
folders=(include src src/layers io mpi gpu cli)

bad=0 checked=0
for room in src src/layers io mpi gpu cli; do
  ok=" $(allowed "$room") "
  for f in "$room"/*.c "$room"/*.h "$room"/*.cu; do
    [ -f "$f" ] || continue
    while IFS= read -r header; do
      checked=$((checked + 1))
      # Where the header lives: the including file's folder first, then the others.
      home=""
      for d in "$room" "${folders[@]}"; do
        if [ -f "$d/$header" ]; then home=$d; break; fi
      done
      if [ -z "$home" ]; then
        echo "layout: $f includes \"$header\", which is in none of: ${folders[*]}"
        bad=1
      elif [[ "$ok" != *" $home "* ]]; then
        echo "layout: $f ($room/) includes $home/$header: $room/ may use only $(allowed "$room")"
        bad=1
      fi
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
  done
done
if [ "$checked" -eq 0 ]; then
  echo "layout: no includes found under $root (wrong KD_SOURCE_DIR?)"
  exit 1
fi
[ "$bad" -eq 0 ] && echo "layout: $checked includes follow io -> src -> mpi | gpu -> cli"
exit "$bad"
