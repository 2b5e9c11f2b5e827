"""``vllm_qwen3next.rope:YarnFactorSelector``, the documented logits-processor name.

The rope code is in ``rope_config.py`` (settings), ``layers/rotary_embedding.py``
(tables and module) and ``yarn_selector.py`` (the per-request selector).
"""

from vllm_qwen3next.yarn_selector import YarnFactorSelector  # noqa: F401
