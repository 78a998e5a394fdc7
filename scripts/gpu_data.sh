#!/usr/bin/env bash
# Copy MNIST into .gpu-data/mnist for benchmarks/gpu_check.py on the device machine (which has no ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
src="${1:-${DEEPSCOPE_DATA:-../shared/data}/mnist}"
[ -f "$src/train-images-idx3-ubyte.gz" ] || { echo "gpu_data.sh: no MNIST in $src" >&2; exit 1; }
mkdir -p .gpu-data/mnist
cp "$src"/*-ubyte.gz .gpu-data/mnist/
exclude="$(git rev-parse --git-path info/exclude)"
grep -qx '/.gpu-data/' "$exclude" 2>/dev/null || echo '/.gpu-data/' >> "$exclude"
echo "MNIST copied to .gpu-data/mnist ($(du -sh .gpu-data | cut -f1))"
