#!/bin/bash
# On a GPU machine without network access or vLLM (the H200 of bench_h200.py): the CUDA op tests, then the
# benchmark. fla comes from wheels in .whl/ when present; vLLM's own kernels from .anchors/ (make_anchors.py).
# Logs and RESULTS_H200.md go to $OUT; the Triton cache is kept in .tcache/ (tarred to $OUT, untarred from
# .tcache.tgz when carried back).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/site .tcache
[ -f .tcache.tgz ] && tar xzf .tcache.tgz -C .tcache
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
fi
ln -sfn "$PWD/kernels" /tmp/site/qwen3next_kernels
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$PWD/.tcache
# FlashInfer (optional) is too large to travel in one call: its CuTe DSL libraries (.fidsl/cu13.tar.xz, the
# nvidia-cutlass-dsl-libs-cu13 wheel's files) come in a first call and stay in .fidsl/site on the machine; the rest
# (.fiwhl/site.tar.xz: flashinfer-python without its C++ sources, nvidia-cutlass-dsl, apache-tvm-ffi, cuda-tile, for
# the machine's Python) in the next.
if [ -f .fidsl/cu13.tar.xz ]; then
    mkdir -p .fidsl/site && tar xJf .fidsl/cu13.tar.xz -C .fidsl/site && rm .fidsl/cu13.tar.xz
fi
[ -f .fiwhl/site.tar.xz ] && [ -d .fidsl/site ] && tar xJf .fiwhl/site.tar.xz -C .fidsl/site
[ -d .fidsl/site/flashinfer ] && PYTHONPATH=$PYTHONPATH:$PWD/.fidsl/site:$PWD/.fidsl/site/nvidia_cutlass_dsl/dsl_packages
# causal-conv1d (optional anchor): built here from its sdist in .whl/, kept in .cc1d/ on the machine
if [ "${BUILD_CC1D:-1}" = 1 ] && ls .whl/causal_conv1d-*.tar.gz >/dev/null 2>&1 && [ ! -d .cc1d/causal_conv1d ]; then
    timeout "${BUILD_TIMEOUT:-400}" python3 kernels/benchmarks/build_causal_conv1d.py .whl/causal_conv1d-*.tar.gz .cc1d \
        2>&1 | tail -5
fi
[ -d .cc1d/causal_conv1d ] && PYTHONPATH=$PYTHONPATH:$PWD/.cc1d
export PYTHONPATH
[ "${SETUP_ONLY:-0}" = 1 ] && exit 0
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
if [ "${SKIP_TESTS:-0}" != 1 ]; then
    timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -p no:cacheprovider --tb=short ${TESTS:-tests/ops} -rfs 2>&1 \
        | tee "$OUT/tests.log" | tail -40
fi
if [ "${SKIP_BENCH:-0}" != 1 ]; then
    [ -n "${DEADLINE:-}" ] && BENCH_TIMEOUT=$((DEADLINE - $(date +%s)))  # DEADLINE: epoch seconds
    timeout "${BENCH_TIMEOUT:-360}" python3 kernels/benchmarks/bench_h200.py --out "$OUT/RESULTS_H200.md" \
        ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
fi
tar czf "$OUT/tcache.tgz" -C .tcache . 2>/dev/null
