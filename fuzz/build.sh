#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/fuzz_*.c) with clang, ASan and UBSan
# into $KD_FUZZ_BUILD (default build-fuzz/ at the repository root).
#
# The library sources (src/*.c src/layers/*.c io/*.c) are compiled here
# directly, with coverage instrumentation, rather than through CMake: the
# regular build uses the system compiler and no fuzzer instrumentation.
# Objects are rebuilt only when their source or any header is newer.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${KD_FUZZ_BUILD:-$root/build-fuzz}"
cc="${KD_FUZZ_CC:-clang}"

command -v "$cc" >/dev/null || { echo "fuzz/build.sh: $cc not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }

deps_cflags="$(pkg-config --cflags openblas hdf5-serial libcjson zlib)"
deps_libs="$(pkg-config --libs openblas hdf5-serial libcjson zlib) -lm"
# Coverage for libFuzzer plus ASan/UBSan; UBSan findings abort so they count as crashes.
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cflags="-std=gnu11 -g -O1 -Wall -Wextra -Wno-unused-parameter $san
        -I$root/include -I$root/src -I$root/src/layers -I$root/io $deps_cflags"

mkdir -p "$out/obj"
# The newest header: any change to one rebuilds every object.
newest_header="$(ls -t "$root"/include/*.h "$root"/src/*.h "$root"/src/layers/*.h "$root"/io/*.h | head -n1)"

sources=("$root"/src/*.c "$root"/src/layers/*.c "$root"/io/*.c)
objects=()
stale=()
for src in "${sources[@]}"; do
  rel="${src#$root/}"
  obj="$out/obj/${rel//\//_}.o"
  objects+=("$obj")
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ "$newest_header" -nt "$obj" ]; then
    stale+=("$src")
  fi
done

if [ ${#stale[@]} -gt 0 ]; then
  echo "fuzz/build.sh: compiling ${#stale[@]} library sources"
  export root out cc cflags
  printf '%s\n' "${stale[@]}" | xargs -P "$(nproc)" -I{} bash -c '
    src="{}"; rel="${src#$root/}"
    exec $cc $cflags -fsanitize=fuzzer-no-link -c "$src" -o "$out/obj/${rel//\//_}.o"'
fi

if [ ${#stale[@]} -gt 0 ] || [ ! -f "$out/libkindling_fuzz.a" ]; then
  rm -f "$out/libkindling_fuzz.a"
  ar rcs "$out/libkindling_fuzz.a" "${objects[@]}"
fi

for h in "$root"/fuzz/fuzz_*.c; do
  name="$(basename "$h" .c)"
  if [ ! -x "$out/$name" ] || [ "$h" -nt "$out/$name" ] || [ "$root/fuzz/fuzz_common.h" -nt "$out/$name" ] ||
     [ "$out/libkindling_fuzz.a" -nt "$out/$name" ]; then
    echo "fuzz/build.sh: linking $name"
    # shellcheck disable=SC2086
    $cc $cflags -fsanitize=fuzzer "$h" "$out/libkindling_fuzz.a" $deps_libs -o "$out/$name"
  fi
done

# The tool that writes the checkpoint seed (no fuzzer main; the objects'
# coverage hooks are satisfied by the sanitizer runtime).
tool="$out/make_checkpoint_seed"
if [ ! -x "$tool" ] || [ "$root/fuzz/tools/make_checkpoint_seed.c" -nt "$tool" ] ||
   [ "$out/libkindling_fuzz.a" -nt "$tool" ]; then
  # shellcheck disable=SC2086
  $cc $cflags "$root/fuzz/tools/make_checkpoint_seed.c" "$out/libkindling_fuzz.a" $deps_libs -o "$tool"
fi
