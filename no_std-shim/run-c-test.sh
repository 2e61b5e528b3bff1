#!/usr/bin/env bash
# Builds the no_std static library, checks precopy.h against the Rust declarations,
# compiles tests/c_api_test.c with the system C compiler, links it against
# libprecopy.a and runs it. Reports the archive's size and whether it pulls in any
# `std::` symbols (a failure if it does), and builds the library for the bare-metal
# targets that are installed. Exits non-zero on any failure.
#
# Usage: no_std-shim/run-c-test.sh        (CC=clang to use another compiler)
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR=never

CC=${CC:-cc}
OUT=target/c-test
mkdir -p "$OUT"

step() { printf '\n--- %s\n' "$*"; }

step "header in sync with the Rust declarations"
python3 check-header.py

step "cargo build --release (staticlib, panic=abort, no_std, no alloc)"
cargo build --release
LIB=target/release/libprecopy.a
test -f "$LIB"

step "compile and link tests/c_api_test.c with $CC"
"$CC" --version | head -n 1
# -std=c11: the header's static asserts and 64-byte aligned types; -Werror: the header
# must compile without warnings under strict flags.
"$CC" -std=c11 -O2 -g -Wall -Wextra -Wpedantic -Wconversion -Wno-sign-conversion -Werror \
  -Iinclude tests/c_api_test.c "$LIB" -lpthread -o "$OUT/c_api_test"
# The header also compiles as C++ (no test, just the declarations).
if command -v c++ >/dev/null 2>&1; then
  printf '#include "precopy.h"\nint main() { return precopy_abi_version() == PRECOPY_ABI_VERSION ? 0 : 1; }\n' \
    >"$OUT/cxx_header.cc"
  c++ -std=c++11 -Wall -Wextra -Werror -Iinclude "$OUT/cxx_header.cc" "$LIB" -lpthread \
    -o "$OUT/cxx_header"
  "$OUT/cxx_header"
  echo "precopy.h compiles and links as C++11"
fi

step "compile and link tests/c_migrate_test.c (a C host migrating through the engines)"
"$CC" -std=c11 -O2 -g -Wall -Wextra -Wpedantic -Wconversion -Wno-sign-conversion -Werror \
  -Iinclude tests/c_migrate_test.c "$LIB" -lpthread -o "$OUT/c_migrate_test"

step "the README's C example"
awk '/^## Linking from C/ { in_section = 1 } in_section && /^```c$/ { grab = 1; next }
     grab && /^```$/ { exit } grab { print }' ../README.md >"$OUT/readme_example.c"
test -s "$OUT/readme_example.c"
"$CC" -std=c11 -Wall -Wextra -Werror -Iinclude "$OUT/readme_example.c" "$LIB" \
  -o "$OUT/readme_example"
example_out=$("$OUT/readme_example")
echo "$example_out"
[ "$example_out" = "$(printf 'send page 16\nsend page 17')" ]

step "run the C tests"
"$OUT/c_api_test"
"$OUT/c_migrate_test"

step "the C tests under AddressSanitizer and UndefinedBehaviorSanitizer"
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
# shellcheck disable=SC2086
if printf 'int main(void) { return 0; }\n' | "$CC" $SAN -x c - -o "$OUT/san_probe" 2>/dev/null \
   && "$OUT/san_probe"; then
  for t in c_api_test c_migrate_test; do
    # shellcheck disable=SC2086
    "$CC" -std=c11 -O1 -g $SAN -Wall -Wextra -Werror -Iinclude "tests/$t.c" "$LIB" -lpthread \
      -o "$OUT/${t}_san"
    ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 \
      UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 "$OUT/${t}_san" >"$OUT/${t}_san.log"
    echo "$t under ASan+UBSan: $(tail -n 1 "$OUT/${t}_san.log"), no sanitizer report"
  done
else
  echo "SKIP sanitizers: $CC cannot build and run -fsanitize=address,undefined here"
fi

step "the debug build links too (no LTO: needs the weak rust_eh_personality)"
cargo build
"$CC" -std=c11 -Iinclude tests/c_api_test.c target/debug/libprecopy.a -lpthread \
  -o "$OUT/c_api_test_debug"
"$OUT/c_api_test_debug" >/dev/null
"$CC" -std=c11 -Iinclude tests/c_migrate_test.c target/debug/libprecopy.a -lpthread \
  -o "$OUT/c_migrate_test_debug"
"$OUT/c_migrate_test_debug" >/dev/null
echo "debug archive: C tests pass"

step "archive: size, exported symbols, std symbols"
size_bytes=$(wc -c <"$LIB")
echo "archive: $LIB, $size_bytes bytes ($(( (size_bytes + 1023) / 1024 )) KiB)"
size -t "$LIB" 2>/dev/null | awk '$6 ~ /^precopy-/ { print "precopy code in it: " $1 " bytes text, " $2 " bytes data (the rest is compiler_builtins, which the linker drops unless used)" }'
echo "C test binary linked against it (with -g): $(wc -c <"$OUT/c_api_test") bytes"
exported=$(nm -g --defined-only "$LIB" 2>/dev/null | awk '$2 == "T" && $3 ~ /^precopy_/ { print $3 }' | sort -u)
echo "exported precopy_* functions: $(echo "$exported" | wc -l)"
echo "$exported" | sed 's/^/  /'
# Every function the header declares is exported, and nothing else named precopy_.
declared=$(sed -n 's/^[a-z].* \**\(precopy_[a-z0-9_]*\)(.*/\1/p' include/precopy.h | sort -u)
if [ "$declared" != "$exported" ]; then
  echo "FAIL: declared and exported functions differ:"
  diff <(echo "$declared") <(echo "$exported") || true
  exit 1
fi
# The check is only meaningful if nm demangles Rust symbols: core's must show up.
demangled=$(nm -C "$LIB" 2>/dev/null || true)
mangled=$(nm "$LIB" 2>/dev/null || true)
if ! grep -q 'core::' <<<"$demangled"; then
  echo "FAIL: nm -C shows no core:: symbols; cannot check for std:: symbols"
  exit 1
fi
# Demangled `std::`, and the mangled forms too (legacy _ZN3std, v0 crate root ..._3std).
std_syms=$( { grep -E 'std::' <<<"$demangled"; \
              grep -E '_ZN3std|Cs[0-9A-Za-z]*_3std' <<<"$mangled"; } || true)
if [ -n "$std_syms" ]; then
  echo "FAIL: the archive contains std symbols:"
  echo "$std_syms" | head -n 20
  exit 1
fi
echo "std symbols in the archive: none (nm -C finds no 'std::')"
alloc_syms=$(grep -E '__rust_alloc|__rg_alloc|alloc::alloc' <<<"$demangled" || true)
if [ -n "$alloc_syms" ]; then
  echo "FAIL: the archive references an allocator:"
  echo "$alloc_syms" | head -n 20
  exit 1
fi
echo "allocator symbols in the archive: none"

for target in x86_64-unknown-none aarch64-unknown-none; do
  if rustup target list --installed 2>/dev/null | grep -qx "$target" \
     || rustup target add "$target" >/dev/null 2>&1; then
    step "bare metal: cargo build --release --target $target (build only)"
    cargo build --release --target "$target"
    a="target/$target/release/libprecopy.a"
    echo "$a: $(wc -c <"$a") bytes"
    # precopy's own code (engines included), not compiler_builtins: under 256 KiB.
    text=$(size -t "$a" 2>/dev/null | awk '$6 ~ /^precopy-/ { print $1 }')
    if [ -n "$text" ]; then
      echo "precopy code for $target: $text bytes text ($(( (text + 1023) / 1024 )) KiB; limit 256 KiB)"
      if [ "$text" -gt 262144 ]; then
        echo "FAIL: precopy's code for $target grew past 256 KiB of text"
        exit 1
      fi
    fi
    if grep -q 'std::' <<<"$(nm -C "$a" 2>/dev/null || true)"; then
      echo "FAIL: $a contains std symbols"
      exit 1
    fi
    if [ "$target" = x86_64-unknown-none ] && [ "$(uname -m)" = x86_64 ] && command -v ld >/dev/null; then
      # A freestanding program: no libc, no startup files; only mem* from the host.
      "$CC" -std=c11 -O2 -ffreestanding -fno-pic -fno-stack-protector -mno-red-zone \
        -Wall -Werror -Iinclude -c tests/bare_metal_link.c -o "$OUT/bare_metal_link.o"
      ld -static -nostdlib -e _start "$OUT/bare_metal_link.o" "$a" -o "$OUT/bare_metal.elf"
      echo "freestanding link (ld -nostdlib, only mem* provided): OK, $(wc -c <"$OUT/bare_metal.elf") bytes"
    fi
  else
    step "SKIP bare metal $target: 'rustup target add $target' failed here"
  fi
done

step "OK: C API test passed"
