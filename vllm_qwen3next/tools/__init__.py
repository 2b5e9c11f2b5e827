"""Checkpoint tools: the random-weight checkpoint maker and the tiny trainer.

Run as ``python -m vllm_qwen3next.make_checkpoint`` and ``python -m vllm_qwen3next.train_tiny``
(short modules at the old paths that call these).
"""
