"""vLLM 0.32: the fix that lets a hybrid model start under pipeline parallelism.

The engine core picks one KV cache layout for the whole model from the lists its workers
report (`vllm.v1.attention.backends.utils.resolve_kv_cache_layout`, called by
`vllm.v1.engine.core`). Each worker lists the layouts every attention backend of *its own*
layers supports (`WorkerBase.get_supported_kv_cache_layouts`); a worker whose backends
declare nothing (the GDN backend, like every Mamba backend, returns None: any layout)
reports vLLM's default preference list. vLLM then asserts that all workers report the
same list ("all ranks run the same backends"), which pipeline parallelism breaks: a stage
holding only GDN layers reports ['LBNHC', 'LBHNC', ...], a stage holding a full-attention
layer on CPU reports CPU_ATTN's ['LBHNC'], and the engine stops at start with
"Workers disagree on supported KV cache layouts" (vllm-project/vllm#54710, for vLLM's
built-in Qwen3-Next too; the proposed fix, vllm-project/vllm#54795, intersects the lists).

`install()` wraps vLLM's resolver where it has that assertion: workers that disagree are
given the layouts every one of them supports (ordered the way vLLM orders the backends of
one worker: the layout most lists put first wins, ties in enum order), and vLLM's resolver
does the rest (mixed page shapes, `VLLM_KV_CACHE_LAYOUT`, connectors) on that common list.
Disjoint lists still fail, with the lists named. It runs from `register()` in the engine
core process (where vLLM loads plugins before resolving), and only patches a resolver module
that is already imported, so `register()` stays cheap elsewhere.
"""

import sys
from collections import Counter
from types import SimpleNamespace

from vllm.logger import init_logger

logger = init_logger(f"vllm.{__name__}")

CALLER = "vllm.v1.engine.core"


def common_layouts(supported_layouts: list[list[str]]) -> list[str]:
    """The layout names every worker supports, the one most workers put first first."""
    from vllm.v1.kv_cache_layout import KVCacheLayout

    common = set.intersection(*map(set, supported_layouts))
    firsts = Counter(names[0] for names in supported_layouts if names)
    order = [layout.name for layout in KVCacheLayout]
    return sorted(common, key=lambda name: (-firsts[name], order.index(name)))


def rejects_disagreeing_workers(resolve) -> bool:
    """True where ``resolve`` is vLLM 0.32's resolver that asserts identical worker lists."""
    unresolved = SimpleNamespace(cache_config=SimpleNamespace(kv_cache_layout=None))
    try:
        resolve(unresolved, [["LBNHC", "LBHNC"], ["LBHNC"]], [])
    except AssertionError as err:
        return "disagree" in str(err)
    except Exception:  # noqa: BLE001  (it got past the check: the fault is gone)
        return False
    return False


def install() -> None:
    """Wrap the engine core's KV cache layout resolver where vLLM's rejects PP stages."""
    core = sys.modules.get(CALLER)
    if core is None:
        return  # not the engine core (it imports this module before loading plugins)
    resolve = core.resolve_kv_cache_layout
    if getattr(resolve, "intersects_workers", False) or not rejects_disagreeing_workers(resolve):
        return

    def resolve_kv_cache_layout(vllm_config, supported_layouts, kv_cache_specs=None):
        if supported_layouts and any(names != supported_layouts[0] for names in supported_layouts):
            common = common_layouts(supported_layouts)
            if not common:
                raise ValueError(
                    "No KV cache layout is supported by every pipeline stage: the workers "
                    f"report {supported_layouts}."
                )
            logger.info(
                "vllm_qwen3next: the workers (pipeline stages) support different KV cache "
                "layouts %s; resolving over the common ones %s (vLLM 0.32 requires identical "
                "lists, vllm-project/vllm#54710)",
                supported_layouts,
                common,
            )
            supported_layouts = [common] * len(supported_layouts)
        return resolve(vllm_config, supported_layouts, kv_cache_specs)

    resolve_kv_cache_layout.intersects_workers = True
    core.resolve_kv_cache_layout = resolve_kv_cache_layout
