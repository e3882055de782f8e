#!/usr/bin/env bash
# Installs what IndexShare needs on a fresh Debian 12 machine and downloads the default model.
# Safe to run again: installed packages and a verified model are left as they are.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

packages=(cmake ninja-build g++ pkg-config libfmt-dev nlohmann-json3-dev libcli11-dev libpng-dev
          libgtest-dev libgmock-dev libbenchmark-dev python3 clang libclang-rt-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

"$here/fetch_model.sh"
