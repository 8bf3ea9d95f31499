#!/usr/bin/env bash
# Builds everything and runs every test (lit, GoogleTest, PyTorch parity).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ctest --test-dir build --output-on-failure -j2
