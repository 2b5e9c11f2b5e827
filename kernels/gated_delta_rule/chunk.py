"""Chunked gated delta rule on CPU: fla's WY/UT chunk form in plain PyTorch, fp32.

BT = chunk size, NT = chunks in a group of chunks.

Within a chunk (positions i, j; gc = cumsum of g inside the chunk):
    A[i, j] = beta_i (k_i . k_j) exp(gc_i - gc_j) for j < i,   u = (I + A)^-1 beta v,   w = (I + A)^-1 beta exp(gc) k
and with h the state at the chunk start:
    v_new = u - w h,   o = (exp(gc) q) h + (q k^T * exp(gc_i - gc_j))_{j <= i} v_new,
    h <- exp(gc_last) h + (exp(gc_last - gc) k)^T v_new.
All but the chunk-to-chunk recurrence runs batched over the chunks of every sequence in a group.
"""
import torch

from ..utils.cpu import l2norm

BT = 64
GROUP_CHUNKS = 8  # chunks per group: bounds the scratch memory of long prefills, keeps it in cache


def _chunk_token_indices(cu_seqlens: list[int], seqs: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Lay the chunks out step-major: chunk 0 of every sequence, then chunk 1 of those still running, ...

    seqs must be sorted longest first, so the sequences running at step j are seqs[:n_running[j]].
    Returns token_idx: [NT, BT] (positions past a sequence's end point at token 0), valid: [NT, BT] bool,
    n_running: one count per step.
    """
    n_chunks = [-(-(cu_seqlens[n + 1] - cu_seqlens[n]) // BT) for n in seqs]
    n_running = [sum(c > j for c in n_chunks) for j in range(max(n_chunks, default=0))]
    starts = [cu_seqlens[seqs[r]] + j * BT for j, n_j in enumerate(n_running) for r in range(n_j)]
    ends = [cu_seqlens[seqs[r] + 1] for n_j in n_running for r in range(n_j)]
    token_idx = torch.tensor(starts, dtype=torch.long)[:, None] + torch.arange(BT)  # [NT, BT]
    valid = token_idx < torch.tensor(ends, dtype=torch.long)[:, None]
    return token_idx.where(valid, 0), valid, n_running


def _step_groups(n_running: list[int]) -> list[list[int]]:
    """Split the steps into consecutive groups of about GROUP_CHUNKS chunks (a step is never split)."""
    groups = [[]]
    for n_j in n_running:
        if groups[-1] and sum(groups[-1]) + n_j > GROUP_CHUNKS:
            groups.append([])
        groups[-1].append(n_j)
    return groups if groups[0] else []


def _chunk_group_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                     state: torch.Tensor, o: torch.Tensor, token_idx: torch.Tensor, valid: torch.Tensor,
                     n_running: list[int]) -> None:
    """One group of steps. q, k: [T, H, K] fp32 (normed, scaled), v: [T, HV, V], g, beta: [T, HV],
    state: [N', H, G, K, V] fp32 (updated in place), o: [T, HV, V] (written at the group's tokens)."""
    NT = token_idx.shape[0]
    T, H, K = q.shape
    HV, V = v.shape[1:]
    G = HV // H

    def to_chunks(x: torch.Tensor) -> torch.Tensor:  # [T, X, ...] -> [NT, X, BT, ...], zeros past each end
        X = x.shape[1]
        x = x.reshape(T * X, *x.shape[2:])[token_idx[:, None, :] * X + torch.arange(X)[:, None]]
        return x.where(valid.view(NT, 1, BT, *[1] * (x.dim() - 3)), 0)

    q = to_chunks(q).unsqueeze(2)  # [NT, H, 1, BT, K]
    k = to_chunks(k).unsqueeze(2)  # [NT, H, 1, BT, K]
    v = to_chunks(v).float().view(NT, H, G, BT, V)
    g = to_chunks(g).float().view(NT, H, G, BT).cumsum(-1)
    beta = to_chunks(beta).float().view(NT, H, G, BT)

    causal = torch.ones(BT, BT, dtype=torch.bool).tril()
    decay = (g[..., :, None] - g[..., None, :]).masked_fill(~causal, float("-inf")).exp()  # [NT, H, G, BT, BT]
    A = ((k @ k.mT) * decay * beta[..., None]).tril(-1)  # [NT, H, G, BT, BT]
    # A_inv = (I + A)^-1 diag(beta): a unit lower triangular solve, A's diagonal is not read
    A_inv = torch.linalg.solve_triangular(A, torch.eye(BT), upper=False, unitriangular=True) * beta[..., None, :]
    u = A_inv @ v  # [NT, H, G, BT, V]
    w = (A_inv * g.exp()[..., None, :]) @ k  # [NT, H, G, BT, K]
    qk = (q @ k.mT) * decay  # [NT, H, G, BT, BT]
    qg = q * g.exp()[..., None]  # [NT, H, G, BT, K]
    kg = k * (g[..., -1:] - g).exp()[..., None]  # [NT, H, G, BT, K]
    g_last = g[..., -1, None, None].exp()  # [NT, H, G, 1, 1]

    o_chunks = torch.empty(NT, H, G, BT, V)
    c0 = 0
    for n_j in n_running:
        c = slice(c0, c0 + n_j)
        s = state[:n_j]  # [n_j, H, G, K, V], the running sequences' states (a view)
        v_new = u[c] - w[c] @ s  # [n_j, H, G, BT, V]
        o_chunks[c] = qg[c] @ s + qk[c] @ v_new
        s.mul_(g_last[c]).add_(kg[c].mT @ v_new)
        c0 += n_j

    o_idx = token_idx[:, None, :] * HV + torch.arange(HV)[:, None]  # [NT, HV, BT]
    o_valid = valid[:, None, :].expand(NT, HV, BT)
    o.view(T * HV, V)[o_idx[o_valid]] = o_chunks.view(NT, HV, BT, V)[o_valid].to(o.dtype)


def chunk_gated_delta_rule_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                               beta: torch.Tensor, scale: float, ssm_states: torch.Tensor,
                               cu_seqlens: torch.Tensor, state_indices: torch.Tensor,
                               has_initial_state: torch.Tensor, use_qk_l2norm: bool) -> torch.Tensor:
    T, H, K = q.shape
    HV, V = v.shape[1:]
    N = state_indices.shape[0]
    assert k.shape == (T, H, K) and v.shape == (T, HV, V) and HV % H == 0
    assert g.shape == (T, HV) and beta.shape == (T, HV)
    assert ssm_states.dim() == 4 and ssm_states.shape[1:] == (HV, K, V)
    assert cu_seqlens.dtype == torch.int32 and cu_seqlens.shape == (N + 1,)
    assert state_indices.dtype == torch.int32
    assert has_initial_state.dtype == torch.bool and has_initial_state.shape == (N,)
    G = HV // H
    cu = cu_seqlens.tolist()
    assert cu[0] == 0 and cu[-1] == T, f"cu_seqlens must span the T = {T} tokens, got {cu[0]}..{cu[-1]}"

    o = torch.zeros(T, HV, V, dtype=v.dtype)  # rows of padded sequences stay zero
    slots, init = state_indices.tolist(), has_initial_state.tolist()
    seqs = sorted((n for n in range(N) if slots[n] >= 0), key=lambda n: cu[n + 1] - cu[n], reverse=True)
    if not seqs:
        return o
    slot_idx = torch.tensor([slots[n] for n in seqs], dtype=torch.long)
    init_mask = torch.tensor([init[n] for n in seqs])
    state = ssm_states.index_select(0, slot_idx).float()  # [N', HV, K, V]
    state = torch.where(init_mask[:, None, None, None], state, 0).view(len(seqs), H, G, K, V)

    q, k = q.float(), k.float()
    if use_qk_l2norm:
        q, k = l2norm(q), l2norm(k)
    q, k = (q * scale).contiguous(), k.contiguous()
    v, g, beta = v.contiguous(), g.contiguous(), beta.contiguous()  # gathered once per group of chunks
    token_idx, valid, n_running = _chunk_token_indices(cu, seqs)
    c0 = 0
    for steps in _step_groups(n_running):
        c = slice(c0, c0 + sum(steps))
        _chunk_group_fwd(q, k, v, g, beta, state, o, token_idx[c], valid[c], steps)
        c0 = c.stop

    ssm_states.index_copy_(0, slot_idx, state.view(len(seqs), HV, K, V).to(ssm_states.dtype))
    return o
