#!/usr/bin/env bash
# The project's whole check: formatting, lints, every test, the loom models
# of the memory-ordering protocols, one pass of each benchmark (criterion's
# --test mode: runs each once, measures nothing), and the packaging (man
# pages, completions, the systemd unit, the Debian package).
#
# It first installs what the tests need when missing (scripts/install-deps.sh:
# as root through apt-get, else it stops naming the missing packages).
# The strace check of the hot path skips itself when strace is missing;
# MMSTATS_REQUIRE_STRACE=1 turns that skip into a failure (CI sets it).
set -euo pipefail
cd "$(dirname "$0")"
target=${CARGO_TARGET_DIR:-target}

echo "== tools the tests need"
scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
cargo test --workspace

if [ -x python/run-tests.sh ]; then
  echo "== the Python package, against the Rust binaries"
  cargo build -p slurpstats -p pollstats -p mmash -p check_mmash
  cargo build -p mmstats --example demo
  MMSTATS_BIN_DIR="$(cd "$target/debug" && pwd)" python/run-tests.sh
fi

echo "== loom models of the memory-ordering protocols"
# A target dir of their own: --cfg loom would rebuild the normal one.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$target/loom" \
    cargo test -p mmstats --lib --release protocol::

echo "== benches, one pass each"
cargo bench --bench hot_path --bench lifecycle --bench aggregate --bench adapters -- --test

echo "== packaging: the Debian package, its man pages, completions and unit"
scripts/package.sh
deb=$(ls -t target/debian/mmstats_*.deb | head -1)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
dpkg -x "$deb" "$scratch"
fail() { echo "test.sh: $deb: $*" >&2; exit 1; }
for b in slurpstats pollstats mmash check_mmash; do
  "$scratch/usr/bin/$b" --version >/dev/null || fail "usr/bin/$b does not run"
  [ -s "$scratch/usr/share/bash-completion/completions/$b" ] || fail "no bash completion for $b"
  [ -s "$scratch/usr/share/zsh/vendor-completions/_$b" ] || fail "no zsh completion for $b"
  [ -s "$scratch/usr/share/fish/vendor_completions.d/$b.fish" ] || fail "no fish completion for $b"
done
for page in slurpstats pollstats mmash mmash-retire check_mmash; do
  f=$(ls "$scratch/usr/share/man/man1/$page.1"* 2>/dev/null | head -1)
  [ -n "$f" ] || fail "no man page $page(1)"
  # Rendered, with groff's warnings on: any warning is a failure.
  text=$(MANWIDTH=80 MAN_KEEP_STDERR=1 man --warnings -l "$f" 2>"$scratch/man.err") ||
    fail "man -l $page.1 failed: $(cat "$scratch/man.err")"
  [ ! -s "$scratch/man.err" ] || fail "man -l $page.1 warns: $(cat "$scratch/man.err")"
  grep -q "^NAME" <<<"$text" || fail "$page.1 renders without a NAME section"
done
unit=$(find "$scratch" -name mmash.service | head -1)
[ -n "$unit" ] || fail "no mmash.service"
cmp -s "$unit" packaging/mmash.service || fail "mmash.service differs from packaging/mmash.service"
# verify checks ExecStart= is an executable: point it at the unpacked binary.
sed "s|/usr/bin/mmash|$scratch/usr/bin/mmash|" "$unit" >"$scratch/mmash.service"
out=$(systemd-analyze verify --man=no "$scratch/mmash.service" 2>&1) ||
  fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
echo "$deb: $(dpkg-deb -c "$deb" | wc -l) entries, layout checked"
