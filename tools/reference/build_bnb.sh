#!/usr/bin/env bash
# Builds bitsandbytes' CUDA library inside a bitsandbytes source checkout (for make_references.py's bnb and qlora
# parts on a machine that has CUDA but no bitsandbytes wheel): build_bnb.sh SRC [COMPUTE_CAPABILITY, default 90].
# Then run the script with PYTHONPATH=SRC. CMake first (as bitsandbytes' own build), else one direct nvcc call
# with the same flags (--use_fast_math, relocatable device code).
set -u
SRC=${1:?bitsandbytes source folder}
CC=${2:-90}
cd "$SRC" || exit 1
NVCC=$(command -v nvcc || ls /usr/local/cuda*/bin/nvcc 2>/dev/null | head -1)
echo "nvcc: $NVCC"
"$NVCC" --version | tail -2
cmake --version | head -1
export CUDACXX=$NVCC
start=$(date +%s)
if cmake -DCOMPUTE_BACKEND=cuda -DCOMPUTE_CAPABILITY="$CC" -DCMAKE_BUILD_TYPE=Release -S . -B build \
   && cmake --build build -j"$(nproc)"; then
  echo "cmake build ok in $(( $(date +%s) - start )) s"
  ls -la bitsandbytes/*.so
  exit 0
fi
echo "cmake build failed after $(( $(date +%s) - start )) s; trying nvcc directly"
VER=$("$NVCC" --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1\2/p')
"$NVCC" -O3 --use_fast_math -std=c++17 -arch=sm_"$CC" -rdc=true -shared -Xcompiler -fPIC -DBUILD_CUDA -DBNB_HAS_GEMM4BIT_SM80 \
  -Icsrc csrc/ops.cu csrc/kernels.cu csrc/gemm_4bit_simt.cu csrc/gemm_4bit.cu csrc/gemm_4bit_sm80.cu csrc/pythonInterface.cpp csrc/cpu_ops.cpp \
  -lcublas -lcublasLt -o "bitsandbytes/libbitsandbytes_cuda${VER}.so" || exit 1
echo "nvcc build ok in $(( $(date +%s) - start )) s"
ls -la bitsandbytes/*.so
