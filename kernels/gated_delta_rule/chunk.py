"""Chunked gated delta rule on CPU: fla's WY/UT chunk form in plain PyTorch, fp32.

T = total tokens, N = sequences, S = state slots, H = key heads, HV = value heads, G = HV // H
(value head h * G + i reads key head h), K = key head dim, V = value head dim,
BT = chunk size, NT = chunks of the whole batch.

Within a chunk (positions i, j; gc = cumsum of g inside the chunk):
    A[i, j] = beta_i (k_i . k_j) exp(gc_i - gc_j) for j < i        (I + A) [u | w] = [beta v | beta exp(gc) k]
and with S the state at the chunk start:
    v_new = u - w S,   o = (exp(gc) q) S + (q k^T * exp(gc_i - gc_j))_{j <= i} v_new,
    S <- exp(gc_last) S + (exp(gc_last - gc) k)^T v_new.
Everything but the chunk-to-chunk recurrence is computed for all chunks of all sequences at once.
"""
import torch

from .utils import l2norm

BT = 64


def _chunk_token_indices(cu_seqlens: list[int], seqs: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Lay the chunks out step-major: chunk 0 of every sequence, then chunk 1 of those still running, ...

    seqs must be sorted longest first, so the sequences running at step j are seqs[:n_running[j]].
    Returns token_idx: [NT, BT] (clamped into range), valid: [NT, BT] bool, n_running: one count per step.
    """
    n_chunks = [-(-(cu_seqlens[n + 1] - cu_seqlens[n]) // BT) for n in seqs]
    n_running = [sum(c > j for c in n_chunks) for j in range(max(n_chunks, default=0))]
    starts = [cu_seqlens[seqs[r]] + j * BT for j, n_j in enumerate(n_running) for r in range(n_j)]
    ends = [cu_seqlens[seqs[r] + 1] for n_j in n_running for r in range(n_j)]
    token_idx = torch.tensor(starts, dtype=torch.long)[:, None] + torch.arange(BT)  # [NT, BT]
    valid = token_idx < torch.tensor(ends, dtype=torch.long)[:, None]
    return token_idx.where(valid, 0), valid, n_running


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
    state = ssm_states[slot_idx].float()  # [N', HV, K, V]
    state = torch.where(init_mask[:, None, None, None], state, 0).view(len(seqs), H, G, K, V)

    token_idx, valid, n_running = _chunk_token_indices(cu, seqs)
    if n_running:
        NT = token_idx.shape[0]
        q, k = q.float(), k.float()
        if use_qk_l2norm:
            q, k = l2norm(q), l2norm(k)
        q = q * scale

        def to_chunks(x: torch.Tensor) -> torch.Tensor:  # [T, ...] -> [NT, BT, ...], zeros past each sequence
            x = x[token_idx]
            return x.where(valid.view(NT, BT, *[1] * (x.dim() - 2)), 0)

        q = to_chunks(q).permute(0, 2, 1, 3).unsqueeze(2)  # [NT, H, 1, BT, K]
        k = to_chunks(k).permute(0, 2, 1, 3).unsqueeze(2)  # [NT, H, 1, BT, K]
        v = to_chunks(v.float()).view(NT, BT, H, G, V).permute(0, 2, 3, 1, 4)  # [NT, H, G, BT, V]
        g = to_chunks(g.float()).view(NT, BT, H, G).permute(0, 2, 3, 1).cumsum(-1)  # [NT, H, G, BT]
        beta = to_chunks(beta.float()).view(NT, BT, H, G).permute(0, 2, 3, 1)  # [NT, H, G, BT]

        causal = torch.ones(BT, BT, dtype=torch.bool).tril()
        decay = (g[..., :, None] - g[..., None, :]).masked_fill(~causal, float("-inf")).exp()  # [NT, H, G, BT, BT]
        A = ((k @ k.mT) * decay * beta[..., None]).tril(-1)  # [NT, H, G, BT, BT]
        rhs = torch.cat([v * beta[..., None], k * (beta * g.exp())[..., None]], -1)  # [NT, H, G, BT, V + K]
        u, w = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True).split([V, K], -1)
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
        o_chunks = o_chunks.permute(0, 3, 1, 2, 4).reshape(NT, BT, HV, V)
        o[token_idx[valid]] = o_chunks[valid].to(o.dtype)

    ssm_states[slot_idx] = state.view(len(seqs), HV, K, V).to(ssm_states.dtype)
    return o
