#!/usr/bin/env bash
# Idempotent set-up on Debian/Ubuntu: system packages, then a venv that can see Debian's PeachPy.
set -euo pipefail
cd "$(dirname "$0")/.."

# qemu-user + the aarch64 cross compiler: the harness is also built static for AArch64 and run under
# qemu (its tests would otherwise skip); the AArch64 target builds on them. binutils-aarch64: the
# encoding oracle of the A64 encoder's tests. llvm: llvm-mca, the static cost model.
# openssh-server/-client: the SSH runner's tests start a throwaway sshd on 127.0.0.1.
DEB_PACKAGES=(python3-peachpy python3-venv python3-dev gcc g++ libc6-dev make
              qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu
              llvm openssh-server openssh-client)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# Debian's python3 (not a pyenv/conda one): PeachPy lives in its dist-packages.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import peachpy" 2>/dev/null; then
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
