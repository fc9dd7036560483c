#!/usr/bin/env bash
# Builds the Debian package of the four tools, with their man pages, shell
# completions and the systemd unit: target/debian/mmstats_VERSION_ARCH.deb.
# Needs cargo-deb (scripts/install-deps.sh installs it). ./test.sh runs this
# and checks the package's layout.
set -euo pipefail
cd "$(dirname "$0")/.."
bins=(slurpstats pollstats mmash check_mmash)

cargo build --release --locked "${bins[@]/#/--package=}"
# The man pages and completions, from each binary's own clap definition
# (the hidden --generate-docs; see docgen/src/lib.rs).
rm -rf target/assets
for b in "${bins[@]}"; do
  "target/release/$b" --generate-docs target/assets
done
cargo deb -p mmash --no-build --locked --quiet
