#!/usr/bin/env bash
# Run on the development machine (Debian, network): downloads into .deps/ the Debian packages the
# lent GPU machines lack (they reach no registry), for scripts/gpu-deps.sh to unpack there. .deps/
# is git-ignored; pass it to the device tool as `carry: [".deps"]`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$root/.deps"
cd "$root/.deps"
apt-get download nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev libopenblas-dev libopenblas-pthread-dev \
  libopenblas0-pthread liblapacke-dev liblapacke libtmglib-dev libtmglib3 libgfortran5 libquadmath0 pkgconf pkgconf-bin \
  libpkgconf3
ls -1 "$root/.deps"
