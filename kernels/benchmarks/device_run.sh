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
# nvidia-cutlass-dsl-libs-cu13 wheel's files) come in a first call, the rest (.fiwhl/site.tar.xz: flashinfer-python
# without its C++ sources, nvidia-cutlass-dsl with its -libs-base and -libs-core, apache-tvm-ffi, cuda-tile, for the
# machine's Python) in the next, on the same warm machine. Both unpack outside the working tree (/tmp/fidsl), which
# alone outlasts a call there.
FI=/tmp/fidsl/site
if [ -f .fidsl/cu13.tar.xz ]; then mkdir -p $FI && tar xJf .fidsl/cu13.tar.xz -C $FI; fi
[ -f .fiwhl/site.tar.xz ] && [ -d $FI/nvidia_cutlass_dsl ] && tar xJf .fiwhl/site.tar.xz -C $FI
[ -d $FI/flashinfer ] && PYTHONPATH=$PYTHONPATH:$FI:$FI/nvidia_cutlass_dsl/dsl_packages
# FlashInfer's own needs that the machine may lack (.fiwhl/fallback): unpacked only where their module does not import
if [ -d $FI/flashinfer ] && [ -d .fiwhl/fallback ]; then
    for wm in cuda_bindings:cuda.bindings cuda_pathfinder:cuda.pathfinder einops:einops tabulate:tabulate \
              nvidia_ml_py:pynvml click:click; do
        PYTHONPATH=$PYTHONPATH python3 -c "import ${wm#*:}" 2>/dev/null && continue
        echo "fallback wheel: ${wm%%:*}" && python3 -m zipfile -e .fiwhl/fallback/${wm%%:*}-*.whl $FI
    done
fi
# causal-conv1d (optional anchor): built here from its sdist in .whl/, kept in /tmp/cc1d. BUILD_CC1D=bg builds it in
# a process of its own session, which outlasts this call (a setup call, then the tests of the next overlap it).
CC1D=/tmp/cc1d
if [ "${BUILD_CC1D:-1}" != 0 ] && ls .whl/causal_conv1d-*.tar.gz >/dev/null 2>&1 && [ ! -d /tmp/cc1d_src ]; then
    mkdir -p /tmp/cc1d_src  # once per machine: a build started by an earlier call may still run
    cp .whl/causal_conv1d-*.tar.gz kernels/benchmarks/build_causal_conv1d.py /tmp/cc1d_src/
    build="timeout ${BUILD_TIMEOUT:-400} python3 /tmp/cc1d_src/build_causal_conv1d.py \
           /tmp/cc1d_src/causal_conv1d-*.tar.gz $CC1D"
    if [ "${BUILD_CC1D:-1}" = bg ]; then
        setsid nohup bash -c "$build" >/tmp/cc1d_build.log 2>&1 < /dev/null &
    else
        bash -c "$build" 2>&1 | tail -5
    fi
fi
export PYTHONPATH
[ "${SETUP_ONLY:-0}" = 1 ] && exit 0
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
if [ "${SKIP_TESTS:-0}" != 1 ]; then
    # TESTS_K: a -k expression (may hold spaces, which TESTS would split)
    timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -p no:cacheprovider --tb=short ${TESTS:-tests/ops} \
        ${TESTS_K:+-k "$TESTS_K"} -rfs 2>&1 \
        | tee "$OUT/tests.log" | tail -40
fi
if [ "${SKIP_BENCH:-0}" != 1 ]; then
    # a build in the background: wait up to CC1D_WAIT seconds for it
    for _ in $(seq "${CC1D_WAIT:-0}"); do [ -d $CC1D/causal_conv1d ] && break; sleep 1; done
    [ -d $CC1D/causal_conv1d ] && export PYTHONPATH=$PYTHONPATH:$CC1D || tail -3 /tmp/cc1d_build.log 2>/dev/null
    [ -n "${DEADLINE:-}" ] && BENCH_TIMEOUT=$((DEADLINE - $(date +%s)))  # DEADLINE: epoch seconds
    timeout "${BENCH_TIMEOUT:-360}" python3 kernels/benchmarks/bench_h200.py --out "$OUT/RESULTS_H200.md" \
        ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
fi
tar czf "$OUT/tcache.tgz" -C .tcache . 2>/dev/null
