"""``python -m vllm_qwen3next.train_tiny``: the code is in ``vllm_qwen3next/tools/train_tiny.py``."""

from vllm_qwen3next.tools.train_tiny import corpus_prompts, main, train_tiny_checkpoint  # noqa: F401

if __name__ == "__main__":
    main()
