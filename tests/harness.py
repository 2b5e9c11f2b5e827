"""Helpers shared by the end-to-end tests: prompts, and a session cache of
checkpoints and engine runs (one engine per configuration)."""

import os
import random
from pathlib import Path

from engine_runner import run_engine
from vllm_qwen3next.tools.make_checkpoint import build_checkpoint

# Lengths around the GDN chunk size (64) and over many chunks.
PROMPT_LENS = (1, 63, 64, 65, 700, 2000)


def make_prompts(checkpoint: Path, lens=PROMPT_LENS, seed: int = 0) -> list[list[int]]:
    from transformers import AutoTokenizer

    # Plain tokens only: the added (special) tokens sit at the top of the vocabulary.
    vocab = min(AutoTokenizer.from_pretrained(checkpoint).added_tokens_decoder)
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(n)] for n in lens]


class Store:
    """Session-wide cache of checkpoints and engine results (one engine per configuration)."""

    def __init__(self, root: Path):
        self.root = root
        self._checkpoints: dict = {}
        self._engines: dict = {}

    def checkpoint(self, preset: str, dtype: str = "float32", **overrides) -> Path:
        key = (preset, dtype, tuple(sorted(overrides.items())))
        if key not in self._checkpoints:
            name = f"{preset}-{dtype}-{len(self._checkpoints)}"
            self._checkpoints[key] = build_checkpoint(
                self.root / name, preset, dtype=dtype, verbose=False, **overrides
            )
        return self._checkpoints[key]

    def trained_checkpoint(self) -> Path:
        """A tiny model and MTP layer trained on a predictable corpus (a minute or two on
        idle cores; QWEN3NEXT_TRAINED_CHECKPOINT names one already built by train_tiny)."""
        if "trained" not in self._checkpoints and os.environ.get("QWEN3NEXT_TRAINED_CHECKPOINT"):
            self._checkpoints["trained"] = Path(os.environ["QWEN3NEXT_TRAINED_CHECKPOINT"])
        if "trained" not in self._checkpoints:
            from vllm_qwen3next.tools.train_tiny import train_tiny_checkpoint

            self._checkpoints["trained"] = train_tiny_checkpoint(self.root / "trained")
        return self._checkpoints["trained"]

    def engine(self, name: str, spec: dict) -> dict:
        if name not in self._engines:
            self._engines[name] = run_engine(spec, self.root / "engines", name)
        return self._engines[name]
