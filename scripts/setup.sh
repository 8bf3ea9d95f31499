#!/usr/bin/env bash
# Installs what bitloom needs on Debian 12 (idempotent: apt runs only when a
# package is missing), then configures and builds into build/.
# Usage: scripts/setup.sh [ninja targets...]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  cmake ninja-build ccache g++ git
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools clang-22 lld-22
  clang-format-22
  libcli11-dev nlohmann-json3-dev libgtest-dev libgmock-dev
  flatbuffers-compiler libflatbuffers-dev
  python3 python3-numpy python3-torch
  g++-aarch64-linux-gnu qemu-user file
  libvulkan-dev mesa-vulkan-drivers spirv-tools
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi

cmake -G Ninja -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build "$@"
