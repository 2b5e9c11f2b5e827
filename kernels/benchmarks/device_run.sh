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
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
if [ "${SKIP_TESTS:-0}" != 1 ]; then
    timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -p no:cacheprovider --tb=short ${TESTS:-tests/ops} -rfs 2>&1 \
        | tee "$OUT/tests.log" | tail -40
fi
if [ "${SKIP_BENCH:-0}" != 1 ]; then
    timeout "${BENCH_TIMEOUT:-360}" python3 kernels/benchmarks/bench_h200.py --out "$OUT/RESULTS_H200.md" \
        ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
fi
tar czf "$OUT/tcache.tgz" -C .tcache . 2>/dev/null
