#!/bin/bash
# Times FT keys:up vs values at layer 1 (the default study's primary timing units) on the three shipped organisms
# under three MKL kernel sets, interleaved, three repeats each: nine run folders under $1 (default runs/).
# KVLAB names the kvlab to run (default: kvlab on the PATH); KVLAB_CACHE as for kvlab.
set -e
out=${1:-runs}
kvlab=${KVLAB:-kvlab}
here=$(dirname "$0")
for rep in 1 2 3; do
  for isa in native AVX2 AVX; do
    rm -rf "$out/$isa-$rep"
    if [ $isa = native ]; then unset MKL_ENABLE_INSTRUCTIONS; else export MKL_ENABLE_INSTRUCTIONS=$isa; fi
    /usr/bin/time -f "$isa $rep: %e s wall %U s user %M KB" "$kvlab" study --study "$here/ft-timing.yaml" --no-report --out "$out/$isa-$rep" 2>&1 | grep -E "wall|took"
    unset MKL_ENABLE_INSTRUCTIONS
  done
done
