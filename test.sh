#!/usr/bin/env bash
# The project's whole check: formatting, lints, every test, the loom models
# of the memory-ordering protocols, and one pass of each benchmark
# (criterion's --test mode: runs each once, measures nothing).
#
# The strace check of the hot path skips itself when strace is missing;
# MMSTATS_REQUIRE_STRACE=1 turns that skip into a failure (CI sets it).
set -euo pipefail
cd "$(dirname "$0")"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
cargo test --workspace

echo "== loom models of the memory-ordering protocols"
# A target dir of their own: --cfg loom would rebuild the normal one.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
    cargo test -p mmstats --lib --release protocol::

echo "== benches, one pass each"
cargo bench --bench hot_path --bench lifecycle --bench aggregate --bench adapters -- --test
