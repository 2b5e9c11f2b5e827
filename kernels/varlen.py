"""Helpers for varlen batches on CPU."""
import torch


def sequences_by_length(cu: list[int], first_slots: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{Q: (seqs [N'], tokens [N', Q])} for the sequences with Q > 0 tokens and a slot, so that each length runs
    batched: seqs are the sequence indices, tokens[i, j] the index of token j of sequence seqs[i]."""
    groups: dict[int, list[int]] = {}
    for n, slot in enumerate(first_slots.tolist()):
        if slot >= 0 and cu[n + 1] > cu[n]:
            groups.setdefault(cu[n + 1] - cu[n], []).append(n)
    starts = torch.tensor(cu[:-1])
    return {Q: (torch.tensor(seqs), starts[seqs, None] + torch.arange(Q)) for Q, seqs in groups.items()}
