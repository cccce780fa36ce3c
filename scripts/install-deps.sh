#!/usr/bin/env bash
# Installs the Debian packages svdquant builds against, only those that are missing.
# Called by scripts/svdquant and scripts/test; safe to run again.
set -euo pipefail
pkgs=(cmake ninja-build g++ pkg-config nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev
      libbenchmark-dev libopenblas-dev liblapacke-dev)
# The Python package (python/): an interpreter with its headers and pip, from Debian when there is
# no python3 at all (or the system one lacks them); its Python packages come from pip below.
py_has() { python3 -c "$1" > /dev/null 2>&1; }
if ! command -v python3 > /dev/null; then
  pkgs+=(python3 python3-dev python3-pip)
elif [ "$(command -v python3)" = /usr/bin/python3 ]; then
  py_has "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" ||
    pkgs+=(python3-dev)
  py_has "import pip" || pkgs+=(python3-pip)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "svdquant: installing missing packages: ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Python packages the extension builds and tests with (not torch: its tests skip without it).
if ! py_has "import nanobind, numpy, pytest"; then
  echo "svdquant: installing Python packages: nanobind numpy pytest" >&2
  python3 -m pip install -q nanobind numpy pytest 2> /dev/null ||
    python3 -m pip install -q --break-system-packages nanobind numpy pytest  # Debian's externally managed python
fi
