"""vLLM 0.32 for CPU: a bound on the worker memory that grows with every new prompt length.

vLLM's CPU linear layers run oneDNN matmuls (`onednn_mm`, set up by
`vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm`), and oneDNN builds one
primitive (JIT code) per weight shape and number of tokens M of the step. vLLM keeps 32 M
sizes per weight shape; oneDNN keeps every primitive it built in its own cache as well, up to
1024 by default, so each new prompt length costs memory until that cache is full. Measured
with examples/bench_memory.py (tiny checkpoint, 200 new lengths): float32 +421 MB (2.1 MB per
length, flat after about 175 lengths), bfloat16 +506 MB; with a capacity of 256, float32
+123 MB (flat after 50 lengths), with 64 +70 MB.

`install()` sets ONEDNN_PRIMITIVE_CACHE_CAPACITY on CPU where the user has set neither it nor
its old name DNNL_PRIMITIVE_CACHE_CAPACITY. oneDNN reads it once per process, when it builds
its first primitive; `register()` runs in the front end before the engine core and the workers
start, so they inherit it.
"""

import os

from vllm.logger import init_logger

logger = init_logger(f"vllm.{__name__}")

CAPACITY = 256
NAMES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY")


def install() -> None:
    """Bound oneDNN's primitive cache on CPU unless the user chose a capacity."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu() or any(name in os.environ for name in NAMES):
        return
    os.environ[NAMES[0]] = str(CAPACITY)
    # No package name in the text: register()'s own line is the one that names the plugin.
    logger.info("oneDNN primitive cache bounded: ONEDNN_PRIMITIVE_CACHE_CAPACITY=%d (with oneDNN's default "
                "of 1024 the CPU worker grows with every new prompt length, by about 0.4 GB for a tiny "
                "checkpoint; set the variable to choose); set by the Qwen3-Next plugin", CAPACITY)
