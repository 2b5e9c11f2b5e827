"""Pipeline parallelism on CPU (float32, greedy): PP 2 and TP 2 x PP 2 give the PP 1 tokens and
log-probs with chunked prefill, prefix caching and YaRN on, for a split where a stage holds only
GDN layers and one where every stage holds a full-attention layer. Each stage is inspected in its
worker: which layers it builds, its cache specs and its rotary tables. MTP with PP is refused at
start on CPU (vLLM 0.32's runner cannot run it).

Three vLLM 0.32 faults are fixed from the plugin for this (vllm_qwen3next/fixes/kv_cache_layout.py,
pp_block_size.py, pp_intermediate_tensors.py); the first tests assert vLLM's own faults."""

import sys
from types import SimpleNamespace

import pytest

from harness import make_prompts

from vllm_qwen3next.fixes import kv_cache_layout, pp_block_size, pp_intermediate_tensors

MAX_TOKENS = 24
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}
DEFAULT_LAYOUTS = ["LBNHC", "LBHNC", "BLNHC", "BLHNC", "BHLNC", "LHBNC"]  # a GDN-only stage on CPU
CPU_ATTN_LAYOUTS = ["LBHNC"]  # a stage with a full-attention layer on CPU


def describe_stage(model) -> dict:
    """Runs in each worker (LLM.apply_model): what this pipeline stage built."""
    import torch
    from vllm.distributed import get_pp_group, get_tensor_model_parallel_rank
    from vllm.model_executor.models.utils import PPMissingLayer

    vllm_config = model.vllm_config
    context = vllm_config.compilation_config.static_forward_context
    return {
        "pp_rank": get_pp_group().rank_in_group,
        "tp_rank": get_tensor_model_parallel_rank(),
        "layers": [
            None if isinstance(layer, PPMissingLayer) else layer.layer_type for layer in model.model.layers
        ],
        "norm": not isinstance(model.model.norm, PPMissingLayer),
        "cache_specs": {
            name: type(layer.get_kv_cache_spec(vllm_config)).__name__
            for name, layer in context.items()
            if hasattr(layer, "get_kv_cache_spec")
        },
        "rotary_tables": {  # one instance may serve several layers: every name
            name: [list(m.cos_sin_cache.shape), float(m.cos_sin_cache.double().abs().sum())]
            for name, m in model.named_modules(remove_duplicate=False)
            if isinstance(getattr(m, "cos_sin_cache", None), torch.Tensor)
        },
    }


def _llm(ckpt, **extra) -> dict:
    return dict(
        model=str(ckpt), dtype="float32", max_model_len=1024, enforce_eager=True, seed=0,
        enable_prefix_caching=True, max_num_batched_tokens=96, max_num_seqs=4,
    ) | extra


def _pp(tp: int, partition: str, bind: str) -> dict:
    return {
        "llm_extra": dict(
            pipeline_parallel_size=2, tensor_parallel_size=tp, distributed_executor_backend="mp"
        ),
        "env": {
            "VLLM_PP_LAYER_PARTITION": partition,
            "VLLM_CPU_OMP_THREADS_BIND": bind,
            "VLLM_CPU_KVCACHE_SPACE": "1",  # per worker
        },
    }


def _ids(out) -> list[list[int]]:
    return [r["output_ids"] for r in out["results"]]


def _max_logprob_diff(a: dict, b: dict) -> float:
    return max(
        abs(x - y)
        for ra, rb in zip(a["results"], b["results"])
        for key in ("prompt_logprobs", "output_logprobs")
        for x, y in zip(ra[key], rb[key])
        if x is not None
    )


def _stages(out) -> dict[tuple[int, int], dict]:
    return {(s["pp_rank"], s["tp_rank"]): s for s in out["applied"][f"{__name__}:describe_stage"]}




def test_vllm_rejects_pipeline_stages_with_different_layouts():
    """Why fixes/kv_cache_layout.py exists: vLLM's resolver asserts identical worker lists."""
    from vllm.v1.attention.backends.utils import resolve_kv_cache_layout

    assert kv_cache_layout.rejects_disagreeing_workers(resolve_kv_cache_layout)
    unresolved = SimpleNamespace(cache_config=SimpleNamespace(kv_cache_layout=None))
    with pytest.raises(AssertionError, match="Workers disagree on supported KV cache layouts"):
        resolve_kv_cache_layout(unresolved, [DEFAULT_LAYOUTS, CPU_ATTN_LAYOUTS], [])


def test_resolver_fix_intersects_the_stages():
    import vllm.v1.engine.core  # noqa: F401  (install() patches the engine core's name)

    kv_cache_layout.install()
    resolve = sys.modules[kv_cache_layout.CALLER].resolve_kv_cache_layout
    assert resolve.intersects_workers

    def config():
        return SimpleNamespace(cache_config=SimpleNamespace(kv_cache_layout=None), kv_transfer_config=None)

    assert resolve(config(), [DEFAULT_LAYOUTS, CPU_ATTN_LAYOUTS], []).name == "LBHNC"
    assert resolve(config(), [DEFAULT_LAYOUTS, DEFAULT_LAYOUTS], []).name == "LBNHC"  # agreeing: vLLM's
    # The layout most stages put first comes first (vLLM's rule for the backends of one worker).
    assert kv_cache_layout.common_layouts([["BLNHC", "LBHNC", "LBNHC"], ["BLNHC", "LBNHC"]]) == ["BLNHC", "LBNHC"]
    with pytest.raises(ValueError, match="No KV cache layout is supported by every pipeline stage"):
        resolve(config(), [["LBNHC"], ["LBHNC"]], [])


def test_vllm_leaves_the_block_size_of_an_attention_free_stage():
    """Why fixes/pp_block_size.py exists: vLLM fits a hybrid stage's block size to its own
    attention backends, and a stage with none keeps the default block (16, unpadded GDN page)."""
    from vllm.platforms import current_platform

    assert pp_block_size.skips_attention_free_stages(type(current_platform))


def test_vllm_cpu_runner_skips_the_dummy_run_in_eager_mode():
    """Why fixes/pp_intermediate_tensors.py exists: with compilation off, vLLM's CPU runner never
    makes the dummy run that allocates a later stage's intermediate-tensor buffer."""
    assert pp_intermediate_tensors.warm_up_skips_eager()




@pytest.fixture(scope="module")
def eight_layers(store):
    """Full attention at layers 3 and 7 (L L L F L L L F)."""
    return store.checkpoint("tiny", num_hidden_layers=8)


@pytest.fixture(scope="module")
def prompts(eight_layers):
    base = make_prompts(eight_layers, (400,), seed=21)[0]
    suffixes = make_prompts(eight_layers, (7, 40, 65, 130), seed=22)
    return [base + s for s in suffixes] + make_prompts(eight_layers, (1, 63), seed=23)


def _engine(store, name, ckpt, prompts, llm_extra=None, env=None):
    spec = {
        "llm": _llm(ckpt, hf_overrides={"rope_scaling": dict(YARN)}) | (llm_extra or {}),
        "prompts": prompts,
        "max_tokens": MAX_TOKENS,
        # The first prompt fills the prefix cache; the next three then share its 400 tokens.
        "extra_passes": [[0], [1, 2, 3]],
        "apply": [f"{__name__}:describe_stage"],
        "env": env or {},
    }
    return store.engine(name, spec)


@pytest.fixture(scope="module")
def pp1(store, eight_layers, prompts):
    return _engine(store, "pp-reference", eight_layers, prompts)


@pytest.mark.parametrize(
    "name, tp, partition, bind",
    [
        # Stage 0 = layers 0-2 (GDN only); stage 1 starts with the attention layer 3.
        pytest.param("pp2-3,5", 1, "3,5", "0|1", id="PP2-gdn-only-stage"),
        # Stage 0 ends with attention layer 3, stage 1 holds 4-7; four workers on two cores.
        pytest.param("tp2-pp2-4,4", 2, "4,4", "0|1|0|1", id="TP2xPP2-attention-in-every-stage"),
    ],
)
def test_pipeline_parallel_equals_one_stage(store, eight_layers, prompts, pp1, name, tp, partition, bind):
    pp = _engine(store, name, eight_layers, prompts, **_pp(tp, partition, bind))
    assert _ids(pp) == _ids(pp1)
    assert pp["passes"] == pp1["passes"] and pp["passes"][1] == _ids(pp1)[1:4]
    diff = _max_logprob_diff(pp, pp1)
    hits = pp["metrics"]["vllm:prefix_cache_hits"]
    print(f"[{name}] vs PP 1 / TP 1: max |logprob diff| {diff:.2e}; prefix cache {hits:.0f} hit tokens")
    assert diff < 1e-3
    assert hits >= 3 * 256
    stages = _stages(pp)
    assert sorted(stages) == [(p, t) for p in range(2) for t in range(tp)]
    split = int(partition.split(",")[0])
    types = _stages(pp1)[(0, 0)]["layers"]
    for (rank, _), stage in stages.items():
        own = range(split) if rank == 0 else range(split, len(types))
        # Each stage builds exactly its layers, registers exactly their caches ...
        assert stage["layers"] == [types[i] if i in own else None for i in range(len(types))]
        assert stage["norm"] == (rank == 1)
        assert stage["cache_specs"] == {
            f"model.layers.{i}.{'linear_attn' if types[i] == 'linear_attention' else 'self_attn.attn'}":
                "MambaSpec" if types[i] == "linear_attention" else "FullAttentionSpec"
            for i in own
        }
        # ... and the same YaRN table as the single stage for each of its attention layers.
        reference_tables = _stages(pp1)[(0, 0)]["rotary_tables"]
        assert stage["rotary_tables"] == {
            name: table for name, table in reference_tables.items() if int(name.split(".")[2]) in own
        }
    # The layout fix acts only where a stage has no attention layer.
    gdn_only_stage = any(all(types[i] == "linear_attention" for i in own) for own in (range(split), range(split, 8)))
    assert ("resolving over the common ones ['LBHNC']" in pp["log"]) == gdn_only_stage
    assert ("this pipeline stage holds no attention layer" in pp["log"]) == gdn_only_stage
    groups = [line.split("kv cache group sizes")[1].strip() for line in pp["log"].splitlines() if "kv cache group sizes" in line]
    print(f"[{name}] kv cache group sizes {groups[0]}")
    assert len(set(groups[0].strip("()").split(", "))) == 1  # GDN blocks = attention blocks, every stage


def test_mtp_with_pipeline_parallel_refused_at_start(store):
    """MTP k = 2 under PP 2 cannot run on vLLM 0.32 for CPU: without our check its V1 runner stops
    at start on stage 0 ("'CPUModelRunner' object has no attribute 'drafter'": the drafter is built
    on the last stage only and read on every stage), and it counts accepted drafts on the last
    stage only, so stage 0's GDN states would resume from the wrong token. We refuse it first,
    naming the reason."""
    from vllm_qwen3next.model import PP_WITH_MTP

    ckpt = store.checkpoint("tiny")
    with pytest.raises(RuntimeError) as err:
        store.engine(
            "pp2-mtp",
            {
                "llm": _llm(ckpt, speculative_config={"method": "qwen3_next_mtp", "num_speculative_tokens": 2})
                | _pp(1, "2,2", "0|1")["llm_extra"],
                "prompts": [[1, 2, 3]],
                "max_tokens": 4,
                "env": _pp(1, "2,2", "0|1")["env"],
            },
        )
    assert f"NotImplementedError: {PP_WITH_MTP}" in str(err.value)
