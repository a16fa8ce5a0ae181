#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs, with apt-get, the Debian 12 packages imgd needs that are not installed yet.
#   scripts/deps.sh            build and runtime dependencies
#   scripts/deps.sh --tests    also what the tests need
#   scripts/deps.sh --package  also what scripts/package.sh needs (Debian's packaging tools)
# The flags can be combined.
set -euo pipefail

packages=(gcc make cmake pkg-config libvips-dev libsqlite3-dev libconfig-dev libsystemd-dev
          libjansson-dev libssl-dev libwebp-dev libjpeg62-turbo-dev libmicrohttpd-dev libpq-dev
          fonts-dejavu-core)
# clang-format (with --tests): scripts/format.sh --check fails the tests on a formatting diff.
# prometheus (with --tests): for its promtool (test-http-promtool lints GET /metrics); Debian
# ships no smaller package with it.
# postgresql (with --tests): the ledger's tests run on both engines, SQLite and a PostgreSQL
# server of their own (tests/tools/pg-fixture.c: initdb and pg_ctl on a Unix socket).
# libpq-dev: the ledger's PostgreSQL engine (ledger = { engine = "postgresql"; ... }).
for arg in "$@"; do
    case "$arg" in
    --tests) packages+=(libcmocka-dev clang-format sqlite3 systemd groff-base man-db procps zsh nodejs python3
                        prometheus postgresql) ;;
    --package) packages+=(build-essential dpkg-dev debhelper fakeroot lintian) ;;
    *) echo "deps.sh: unknown option $arg (--tests, --package)" >&2; exit 2 ;;
    esac
done

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "deps.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
