"""Helpers for varlen batches on CPU."""
import torch


def sequences_by_length(cu: list[int], first_slots: torch.Tensor) -> dict[int, torch.Tensor]:
    """{Q: indices of the sequences with Q > 0 tokens and a slot}, so that each length runs batched."""
    groups: dict[int, list[int]] = {}
    for n, slot in enumerate(first_slots.tolist()):
        if slot >= 0 and cu[n + 1] > cu[n]:
            groups.setdefault(cu[n + 1] - cu[n], []).append(n)
    return {Q: torch.tensor(seqs) for Q, seqs in groups.items()}
