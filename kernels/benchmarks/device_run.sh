#!/bin/bash
# The CUDA tests, then the benchmark, in one go on a GPU machine without network access (as the H200 of
# bench_h200.py). fla comes from wheels in .whl/ when present; the vLLM anchors from .anchors/ when present.
# Logs and RESULTS_H200.md go to $OUT; the Triton cache is kept in .tcache/ (tarred to $OUT).
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/site .tcache
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
fi
ln -sfn "$PWD/kernels" /tmp/site/qwen3next_kernels
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$PWD/.tcache
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
if [ "${SKIP_TESTS:-0}" != 1 ]; then
    timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -p no:cacheprovider -k "not interpreted" \
        ${TESTS:-tests/kernels/test_triton_*.py} 2>&1 | tee "$OUT/tests.log" | tail -40
fi
timeout "${BENCH_TIMEOUT:-300}" python3 kernels/benchmarks/bench_h200.py --out "$OUT/RESULTS_H200.md" \
    ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
tar czf "$OUT/tcache.tgz" -C .tcache . 2>/dev/null
