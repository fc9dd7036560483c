#!/usr/bin/env bash
# Installs what ./test.sh needs and a fresh machine may lack, or stops at once
# with one line naming what is missing. ./test.sh calls it first.
#
# As root with apt-get, missing Debian packages are installed. Otherwise the
# script exits 1 naming them: the tests run the real tools, they never skip.
#
#   strace                     tests/no_syscalls.rs: the hot path makes no system calls
#   prometheus                 promtool and the server: mmash's /metrics is checked by both
#   chromium                   the mmash dashboard is checked in a headless browser
#   tmux                       pollstats/tests/cli.rs: the text mode in a real terminal
#   monitoring-plugins-basic   check_http against mmash's /check/ endpoint
#   systemd                    systemd-analyze verify packaging/mmash.service
#   man-db                     man -l renders each generated man page
#   dpkg                       dpkg -x unpacks the built .deb into a scratch root
#   nagios4-core, icinga2-bin, icinga2-common, openssl
#                              check_mmash/tests/servers.rs runs the shipped configs in
#                              the real Nagios 4 and Icinga 2 (no recommends: no services)
#
# The tests start their own Prometheus on a free loopback port, never the
# packaged service. cargo-deb (the .deb build) comes from cargo install, and
# rustfmt/clippy from rustup, each only if missing.
set -euo pipefail

missing=()
need() { # need PACKAGE TEST...: PACKAGE is missing unless every test passes
  local pkg=$1
  shift
  for t in "$@"; do
    if ! eval "$t" >/dev/null 2>&1; then
      missing+=("$pkg")
      return
    fi
  done
}
need strace 'command -v strace'
need prometheus 'command -v promtool' 'command -v prometheus'
need chromium 'command -v chromium'
need tmux 'command -v tmux'
need monitoring-plugins-basic '[ -x /usr/lib/nagios/plugins/check_http ]'
need systemd 'command -v systemd-analyze'
need man-db 'command -v man'
need dpkg 'command -v dpkg' 'command -v dpkg-deb'
plain=${#missing[@]}
need nagios4-core 'command -v nagios4'
need icinga2-bin 'command -v icinga2'
need icinga2-common '[ -d /usr/share/icinga2/include ]'
need openssl 'command -v openssl'

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: missing packages (install them as root, or run as root with apt-get): ${missing[*]}" >&2
    exit 1
  fi
  echo "== installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [ "$plain" -gt 0 ]; then
    apt-get install -y -qq "${missing[@]:0:$plain}" >/dev/null
  fi
  # The servers without their recommends: no services started.
  if [ ${#missing[@]} -gt "$plain" ]; then
    apt-get install -y -qq --no-install-recommends "${missing[@]:$plain}" >/dev/null
  fi
fi

# The toolchain's own components; present on most machines, added if not.
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

if ! cargo deb --version >/dev/null 2>&1; then
  echo "== cargo install cargo-deb"
  cargo install cargo-deb --locked --quiet
fi
