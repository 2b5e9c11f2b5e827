"""Helpers shared by the CPU implementations."""
import torch


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """fla's l2norm over the last dim: x * rsqrt(sum(x^2) + eps)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def sequences_by_length(cu: list[int], first_slots: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{Q: (seqs [N'], tokens [N', Q])} for the sequences with Q > 0 tokens and a slot, so that each length runs
    batched: seqs are the sequence indices, tokens[i, j] the index of token j of sequence seqs[i]."""
    groups: dict[int, list[int]] = {}
    for n, slot in enumerate(first_slots.tolist()):
        if slot >= 0 and cu[n + 1] > cu[n]:
            groups.setdefault(cu[n + 1] - cu[n], []).append(n)
    starts = torch.tensor(cu[:-1])
    return {Q: (torch.tensor(seqs), starts[seqs, None] + torch.arange(Q)) for Q, seqs in groups.items()}
