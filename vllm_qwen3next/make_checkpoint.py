"""``python -m vllm_qwen3next.make_checkpoint``: the code is in ``vllm_qwen3next/tools/make_checkpoint.py``."""

from vllm_qwen3next.tools.make_checkpoint import PRESETS, build_checkpoint, main  # noqa: F401

if __name__ == "__main__":
    main()
