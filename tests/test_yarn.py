"""YaRN rope scaling (issue 4): the settings, the tables, and the engine against
transformers in float32.

YaRN here: factor 4 over an original maximum of 256 (the model card's recipe,
262,144 -> 1M, scaled down so that prompts of 300 and 700 tokens reach far past
the original maximum), on top of the tiny checkpoint's own theta (1e6) and
partial rotary factor (0.25: 16 of 64 dims).
"""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from harness import make_prompts
from reference import hf_reference
from vllm_qwen3next.rope_config import (
    checkpoint_rope_parameters,
    per_request_factors,
    resolve_rope_parameters,
    rope_parameters_for,
)

YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}
LONG_LENS = (300, 700)
MAX_TOKENS = 8
LONG_MAX_MODEL_LEN = 1_010_000
SELECTOR = "vllm_qwen3next.rope:YarnFactorSelector"


def _rotary_inputs(head_dim: int, positions: torch.Tensor):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(len(positions), 4, head_dim, generator=g)
    k = torch.randn(len(positions), 2, head_dim, generator=g)
    return q, k


def _transformers_rope(params: dict, head_dim: int, max_positions: int, positions, q, k):
    from transformers.models.qwen3_next.configuration_qwen3_next import Qwen3NextConfig
    from transformers.models.qwen3_next.modeling_qwen3_next import (
        Qwen3NextRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    config = Qwen3NextConfig(
        head_dim=head_dim,
        hidden_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        rope_parameters=dict(params),
    )
    cos, sin = Qwen3NextRotaryEmbedding(config)(q, positions[None])
    q_out, k_out = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin)
    half = cos.shape[-1] // 2
    table = torch.cat((cos[0, :, :half], sin[0, :, :half]), dim=-1)  # [P, Dr]: vLLM's cos_sin_cache layout
    return q_out[0].transpose(0, 1), k_out[0].transpose(0, 1), table


ROPE_CASES = [
    pytest.param(64, {"rope_type": "default", "rope_theta": 1e6}, 4096, id="default-D64"),
    pytest.param(64, {**YARN, "rope_theta": 1e6}, 4096, id="yarn-D64-f4-orig256"),
    pytest.param(256, {**YARN, "rope_theta": 1e7, "original_max_position_embeddings": 4096}, 40000,
                 id="yarn-D256-f4-orig4096"),
    pytest.param(64, {**YARN, "rope_theta": 1e6, "factor": 2.5, "beta_fast": 16, "beta_slow": 2,
                      "truncate": False}, 4096, id="yarn-beta-truncate"),
    pytest.param(64, {**YARN, "rope_theta": 1e6, "attention_factor": 1.3}, 4096, id="yarn-attention_factor"),
    pytest.param(64, {**YARN, "rope_theta": 1e6, "mscale": 1.0, "mscale_all_dim": 0.5}, 4096, id="yarn-mscale"),
]


@pytest.mark.parametrize("head_dim, params, max_positions", ROPE_CASES)
def test_rotary_embedding_matches_transformers(head_dim, params, max_positions):
    """Our table + vLLM's CPU rotary kernel against transformers' Qwen3-Next rope
    (partial: 1/4 of the head), at every position below ``max_positions``,
    which lies past ``original_max_position_embeddings * factor``."""
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.model_executor.layers.rotary_embedding import get_rope

    from vllm_qwen3next.layers.rotary_embedding import get_rotary_embedding

    params = params | {"partial_rotary_factor": 0.25}
    positions = torch.arange(max_positions)
    q, k = _rotary_inputs(head_dim, positions)
    q_ref, k_ref, table_ref = _transformers_rope(params, head_dim, max_positions, positions, q, k)
    with set_current_vllm_config(VllmConfig()):
        ours = get_rotary_embedding(head_dim, params, max_positions, torch.float32)
        vllm_rope = get_rope(head_dim, max_positions, True, dict(params), dtype=torch.float32)
    assert ours.rotary_dim == head_dim // 4
    torch.testing.assert_close(ours.cos_sin_cache, table_ref, rtol=0, atol=0)
    for forward in (ours.forward_native, ours.forward_cpu):
        q_out, k_out = forward(positions, q.flatten(1).clone(), k.flatten(1).clone())
        torch.testing.assert_close(q_out.view_as(q), q_ref, rtol=0, atol=2e-6)
        torch.testing.assert_close(k_out.view_as(k), k_ref, rtol=0, atol=2e-6)

    # vLLM's own YaRN follows the same definition (to float32 rounding), but its
    # table ends at original_max_position_embeddings * factor.
    rows = vllm_rope.cos_sin_cache.shape[0]
    if params["rope_type"] == "yarn":
        assert rows == int(params["original_max_position_embeddings"] * params["factor"]) < max_positions
    torch.testing.assert_close(vllm_rope.cos_sin_cache, table_ref[:rows], rtol=0, atol=2e-7)


def _write_config(tmp_path, name: str, config: dict):
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return path


TOP_LEVEL_STYLE = {"rope_theta": 1_000_000, "partial_rotary_factor": 0.25, "rope_scaling": None}
ROPE_PARAMETERS_STYLE = {"rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000,
                                             "partial_rotary_factor": 0.25}}


@pytest.mark.parametrize("style", [TOP_LEVEL_STYLE, ROPE_PARAMETERS_STYLE], ids=["top-level", "rope_parameters"])
@pytest.mark.parametrize("key", ["rope_scaling", "rope_parameters"])
def test_override_keeps_checkpoint_theta_and_partial_factor(store, tmp_path, style, key):
    """vLLM's own ModelConfig applies the dict override by replacing the whole
    rope dict; rope_parameters_for merges it back onto config.json's values."""
    from vllm.config import ModelConfig

    ckpt = store.checkpoint("tiny")
    config = {k: v for k, v in json.loads((ckpt / "config.json").read_text()).items()
              if k not in ("rope_theta", "partial_rotary_factor", "rope_scaling")} | style
    path = _write_config(tmp_path, "ckpt", config)
    for f in ckpt.glob("tokenizer*"):
        shutil.copy(f, path)
    model_config = ModelConfig(model=str(path), hf_overrides={key: dict(YARN)}, max_model_len=4096)
    # The pitfall: what vLLM hands the model has lost theta (the built-in falls back to 10000).
    assert "rope_theta" not in model_config.hf_text_config.rope_parameters

    vllm_config = SimpleNamespace(
        model_config=model_config,
        speculative_config=None,
        cache_config=SimpleNamespace(enable_prefix_caching=True),
    )
    expected = {**YARN, "rope_theta": 1_000_000, "partial_rotary_factor": 0.25}
    assert rope_parameters_for(vllm_config) == expected
    # The MTP draft calls the same function with the draft's vllm_config, whose
    # speculative_config points at the target.
    draft_config = SimpleNamespace(
        model_config=None,
        speculative_config=SimpleNamespace(target_model_config=model_config),
        cache_config=vllm_config.cache_config,
    )
    assert rope_parameters_for(draft_config) == expected
    # config.json carrying the same rope_scaling gives the same settings.
    in_config = {**config, "rope_scaling": dict(YARN)} if "rope_theta" in config else {
        **config, "rope_parameters": {**config["rope_parameters"], **YARN}}
    assert resolve_rope_parameters(in_config, head_dim=64) == expected


def test_checkpoint_rope_parameters_both_styles():
    assert checkpoint_rope_parameters(TOP_LEVEL_STYLE) == checkpoint_rope_parameters(ROPE_PARAMETERS_STYLE) == {
        "rope_type": "default", "rope_theta": 1_000_000, "partial_rotary_factor": 0.25}
    # The released model's config.json with the model card's rope_scaling (legacy "type" accepted).
    card = {"rope_theta": 10_000_000, "partial_rotary_factor": 0.25, "rope_scaling": {
        "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 262144}}
    assert resolve_rope_parameters(card, head_dim=256) == {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 262144,
        "rope_theta": 10_000_000, "partial_rotary_factor": 0.25}


MALFORMED = [
    pytest.param({"rope_type": "yarm", "factor": 4.0, "original_max_position_embeddings": 256}, "rope_type",
                 id="unknown-type"),
    pytest.param({**YARN, "factor": 1.0}, "factor must be a number > 1", id="factor-1"),
    pytest.param({**YARN, "factor": 0.5}, "factor must be a number > 1", id="factor-below-1"),
    pytest.param({**YARN, "factor": "4"}, "factor must be a number > 1", id="factor-string"),
    pytest.param({"rope_type": "yarn", "factor": 4.0}, "original_max_position_embeddings is missing",
                 id="missing-original"),
    pytest.param({"rope_type": "yarn", "original_max_position_embeddings": 256}, "factor is missing",
                 id="missing-factor"),
    pytest.param({**YARN, "original_max_position_embeddings": 256.5}, "original_max_position_embeddings must be",
                 id="original-not-int"),
    pytest.param({**YARN, "beta_fast": 1, "beta_slow": 32}, "beta_fast", id="beta-order"),
    pytest.param({**YARN, "orignal_max_position_embeddings": 256}, "unknown keys", id="typo-key"),
    pytest.param({**YARN, "partial_rotary_factor": 0.0}, "partial_rotary_factor", id="partial-0"),
    pytest.param({**YARN, "rope_theta": -1}, "rope_theta", id="theta-negative"),
    pytest.param({"rope_type": "yarn", "type": "linear", "factor": 4.0}, "disagree", id="type-conflict"),
]


@pytest.mark.parametrize("override, field", MALFORMED)
def test_malformed_rope_rejected(override, field):
    with pytest.raises(ValueError, match=field) as err:
        resolve_rope_parameters(TOP_LEVEL_STYLE, head_dim=64, override=override)
    assert "hf_overrides['rope_scaling']" in str(err.value)
    # The same dict in config.json is rejected too, naming config.json.
    with pytest.raises(ValueError, match=field) as err:
        resolve_rope_parameters({**TOP_LEVEL_STYLE, "rope_scaling": override}, head_dim=64)
    assert "config.json rope_scaling" in str(err.value)


def test_per_request_factors():
    assert per_request_factors(4.0) == (1.0, 2.0, 4.0)
    assert per_request_factors(3.0) == (1.0, 2.0, 3.0)
    assert per_request_factors(8) == (1.0, 2.0, 4.0, 8.0)


def _yarn_checkpoint(store, rope_scaling: dict):
    """The tiny checkpoint (same weights) with ``rope_scaling`` in config.json
    (the store keys checkpoints by hashable overrides only)."""
    from vllm_qwen3next.tools.make_checkpoint import build_checkpoint

    name = "tiny-float32-rope-" + "-".join(f"{k}{v}" for k, v in sorted(rope_scaling.items()))
    path = store.root / name
    if not (path / "config.json").exists():
        build_checkpoint(path, "tiny", dtype="float32", verbose=False, rope_scaling=rope_scaling)
    return path


def _llm_args(checkpoint, **kwargs) -> dict:
    return dict(model=str(checkpoint), dtype="float32", max_model_len=4096, enforce_eager=True, seed=0) | kwargs


def _max_logprob_diff(results: list[dict], reference: list[dict], start: int = 1) -> float:
    return max(
        abs(a - b)
        for r, ref in zip(results, reference)
        for a, b in zip(r["prompt_logprobs"][start:], ref["prompt_logprobs"][start:])
    )


@pytest.fixture(scope="module")
def yarn_runs(store):
    """Both ways, on prompts of 300 and 700 tokens: rope_scaling in config.json
    (max_model_len 4096), and the override on a plain checkpoint with
    max_model_len 1,010,000 (the 1M-token start)."""
    plain = store.checkpoint("tiny")
    in_config = _yarn_checkpoint(store, YARN)
    prompts = make_prompts(plain, lens=LONG_LENS)
    spec = {"prompts": prompts, "max_tokens": MAX_TOKENS}
    config_run = store.engine("yarn-config", spec | {"llm": _llm_args(in_config)})
    override_run = store.engine(
        "yarn-override-1m",
        spec | {
            "llm": _llm_args(plain, hf_overrides={"rope_scaling": dict(YARN)}, max_model_len=LONG_MAX_MODEL_LEN),
            "env": {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"},
        },
    )
    reference = hf_reference(in_config, prompts, MAX_TOKENS)
    unscaled = hf_reference(plain, prompts, 1)
    return prompts, config_run, override_run, reference, unscaled


def test_yarn_in_config_matches_transformers(yarn_runs):
    prompts, config_run, _, reference, unscaled = yarn_runs
    assert config_run["classes"]["model"] == "vllm_qwen3next.model.Qwen3NextForCausalLM"
    diff = _max_logprob_diff(config_run["results"], reference)
    past = _max_logprob_diff(config_run["results"], reference, start=YARN["original_max_position_embeddings"])
    scaling_effect = _max_logprob_diff(reference, unscaled, start=YARN["original_max_position_embeddings"])
    print(f"yarn config.json vs transformers fp32: max |logprob diff| {diff:.2e} over all "
          f"{sum(len(p) - 1 for p in prompts)} prompt tokens, {past:.2e} past position 256 "
          f"(YaRN itself moves them by up to {scaling_effect:.2f})")
    assert diff < 1e-3
    assert scaling_effect > 0.1  # the test would notice YaRN missing
    for r, ref in zip(config_run["results"], reference):
        assert r["output_ids"] == ref["output_ids"]


def test_yarn_override_equals_config(yarn_runs):
    _, config_run, override_run, reference, _ = yarn_runs
    diff = _max_logprob_diff(override_run["results"], config_run["results"])
    print(f"yarn hf_overrides (max_model_len {LONG_MAX_MODEL_LEN}) vs config.json run: max |logprob diff| {diff:.2e}; "
          f"vs transformers {_max_logprob_diff(override_run['results'], reference):.2e}")
    assert diff < 1e-4
    for r, c in zip(override_run["results"], config_run["results"]):
        assert r["output_ids"] == c["output_ids"]


def test_engine_starts_with_1m_context(yarn_runs):
    _, _, override_run, _, _ = yarn_runs
    assert f"max_seq_len={LONG_MAX_MODEL_LEN}" in override_run["log"]


def test_1m_context_needs_the_env_var(store, monkeypatch):
    """vLLM 0.32 does not scale max_position_embeddings by a YaRN factor when it
    derives the longest max_model_len; past it, VLLM_ALLOW_LONG_MAX_MODEL_LEN=1."""
    from vllm.config import ModelConfig

    monkeypatch.delenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", raising=False)
    with pytest.raises(ValueError, match="VLLM_ALLOW_LONG_MAX_MODEL_LEN=1"):
        ModelConfig(model=str(store.checkpoint("tiny")), hf_overrides={"rope_scaling": dict(YARN)},
                    max_model_len=LONG_MAX_MODEL_LEN)


# The engine core in a process of its own, as `vllm serve` and LLM() run it by default: the front end logs
# neither the plugin's registration line (vLLM 0.32 configures its logging there only after loading plugins)
# nor the core's start-up failure as such.
ENGINE_CORE_PROCESS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}


def test_malformed_override_fails_at_start(store):
    """The engine stops while building the model (on CPU the platform asks no
    earlier hook), with the error naming the field."""
    plain = store.checkpoint("tiny")
    bad = {"rope_type": "yarn", "factor": 4.0}
    with pytest.raises(RuntimeError, match="Engine core initialization failed"):
        store.engine("yarn-malformed", {"llm": _llm_args(plain, hf_overrides={"rope_scaling": bad}),
                                        "prompts": [[1, 2, 3]], "max_tokens": 1, "env": ENGINE_CORE_PROCESS})
    log = (store.root / "engines" / "yarn-malformed.log").read_text()
    assert (
        "ValueError: Invalid Qwen3-Next rope settings (hf_overrides['rope_scaling']): "
        "original_max_position_embeddings is missing"
    ) in log


def test_per_request_mode_needs_prefix_caching_off(tmp_path):
    from vllm.config import ModelConfig

    path = _write_config(tmp_path, "ckpt", {"model_type": "qwen3_next", "architectures": ["Qwen3NextForCausalLM"],
                                            "head_dim": 64, **TOP_LEVEL_STYLE, "rope_scaling": dict(YARN)})
    model_config = ModelConfig(model=str(path), tokenizer=None, skip_tokenizer_init=True, max_model_len=4096)
    model_config.logits_processors = [SELECTOR]
    vllm_config = SimpleNamespace(model_config=model_config, speculative_config=None,
                                  cache_config=SimpleNamespace(enable_prefix_caching=True))
    with pytest.raises(ValueError, match="enable_prefix_caching=False"):
        rope_parameters_for(vllm_config)
    vllm_config.cache_config.enable_prefix_caching = False
    assert rope_parameters_for(vllm_config)["per_request_factors"] == (1.0, 2.0, 4.0)


def test_per_request_factor_in_one_batch(store, yarn_runs):
    """One batch, tables for factors 1 / 2 / 4 over an original maximum of 256:
    prompt + max_tokens = 108 -> plain rope, 258 -> YaRN 2 (its prompt alone would
    fit 256), 708 -> YaRN 4. Each request's prompt and greedy log-probs match
    transformers run with that request's rope."""
    plain = store.checkpoint("tiny")
    long_prompt = yarn_runs[0][1]
    prompts = make_prompts(plain, lens=(100, 250), seed=1) + [long_prompt]
    factors = (1, 2, 4)
    run = store.engine(
        "yarn-per-request",
        {
            "llm": _llm_args(plain, hf_overrides={"rope_scaling": dict(YARN)}, logits_processors=[SELECTOR],
                             enable_prefix_caching=False),
            "prompts": prompts,
            "max_tokens": MAX_TOKENS,
        },
    )
    checkpoints = {1: plain, 2: _yarn_checkpoint(store, {**YARN, "factor": 2.0}), 4: _yarn_checkpoint(store, YARN)}
    references = {f: hf_reference(ckpt, prompts, MAX_TOKENS) for f, ckpt in checkpoints.items()}
    for i, (prompt, result, factor) in enumerate(zip(prompts, run["results"], factors)):
        diffs = {f: _max_logprob_diff([result], [ref[i]]) for f, ref in references.items()}
        decode = max(abs(a - b) for a, b in zip(result["output_logprobs"], references[factor][i]["output_logprobs"]))
        print(f"per-request YaRN, prompt {len(prompt)} + {MAX_TOKENS} tokens -> factor {factor}: max |logprob diff| "
              f"vs transformers with factor {factor}: {diffs[factor]:.2e} (prompt), {decode:.2e} (greedy); "
              f"vs the other factors: " + ", ".join(f"{f}: {d:.2f}" for f, d in diffs.items() if f != factor))
        assert diffs[factor] < 1e-3 and decode < 1e-3
        assert all(d > 100 * diffs[factor] for f, d in diffs.items() if f != factor)
        assert result["output_ids"] == references[factor][i]["output_ids"]
    # The long request equals the static factor-4 engine's result for the same prompt.
    static = yarn_runs[1]["results"][1]
    diff = _max_logprob_diff([run["results"][2]], [static])
    print(f"per-request factor 4 vs static YaRN engine, same prompt: max |logprob diff| {diff:.2e}")
    assert diff < 1e-4


def test_mtp_draft_uses_the_target_rope(store, yarn_runs):
    """With the override only on the command line, the MTP draft's attention gets
    the target's merged rope: one rotary module (one INFO line) serves both, and
    speculative decoding stays lossless."""
    prompts, config_run, _, _, _ = yarn_runs
    run = store.engine(
        "yarn-override-mtp",
        {
            "llm": _llm_args(store.checkpoint("tiny"), hf_overrides={"rope_scaling": dict(YARN)},
                             speculative_config={"method": "qwen3_next_mtp", "num_speculative_tokens": 2}),
            "prompts": prompts,
            "max_tokens": MAX_TOKENS,
            "env": ENGINE_CORE_PROCESS,
        },
    )
    # Our Qwen3NextMTP is the one registered for the draft architecture vLLM resolves.
    assert "Resolved architecture: Qwen3NextMTP" in run["log"]
    assert "replacing vLLM's built-in Qwen3NextForCausalLM, Qwen3NextMTP" in run["log"]
    merged = json.dumps({**YARN, "rope_theta": 1_000_000, "partial_rotary_factor": 0.25}, sort_keys=True)
    rope_lines = [line for line in run["log"].splitlines() if "vllm_qwen3next: rope " in line]
    assert len(rope_lines) == 1 and merged in rope_lines[0], rope_lines
    assert [r["output_ids"] for r in run["results"]] == [r["output_ids"] for r in config_run["results"]]
