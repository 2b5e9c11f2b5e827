"""Reference gated delta rule: the recurrence token by token, fp32. This file is the specification."""
import torch


def naive_recurrent_gated_delta_rule(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                     has_initial_state, use_qk_l2norm):
    """q, k: [T, H, K], v: [T, HV, V], g, beta: [T, HV], ssm_states: [h, HV, K, V] (mutated),
    cu_seqlens: [N+1], state_indices: [N] (-1: skip), has_initial_state: [N]. Returns o: [T, HV, V] fp32."""
    T, H, K = q.shape
    HV, V = v.shape[1:]
    key_head = torch.arange(HV) // (HV // H)  # [HV]
    o = torch.zeros(T, HV, V)
    for n in range(len(state_indices)):
        slot = int(state_indices[n])
        if slot < 0:
            continue
        h = ssm_states[slot].float() if bool(has_initial_state[n]) else torch.zeros(HV, K, V)  # [HV, K, V]
        for t in range(int(cu_seqlens[n]), int(cu_seqlens[n + 1])):
            q_t, k_t = q[t, key_head].float(), k[t, key_head].float()  # [HV, K]
            if use_qk_l2norm:
                q_t = q_t / torch.sqrt((q_t * q_t).sum(-1, keepdim=True) + 1e-6)
                k_t = k_t / torch.sqrt((k_t * k_t).sum(-1, keepdim=True) + 1e-6)
            q_t = q_t * scale
            h = h * torch.exp(g[t].float())[:, None, None]
            v_pred = torch.einsum("hkv,hk->hv", h, k_t)  # h^T k_t: [HV, V]
            h = h + torch.einsum("hk,hv->hkv", k_t, beta[t].float()[:, None] * (v[t].float() - v_pred))
            o[t] = torch.einsum("hkv,hk->hv", h, q_t)
        ssm_states[slot] = h.to(ssm_states.dtype)
    return o


def naive_fused_recurrent_gated_delta_rule(q, k, v, g, beta, scale, ssm_states, state_indices, use_qk_l2norm):
    """One token per sequence: q, k: [B, H, K], v: [B, HV, V], g, beta: [B, HV], state_indices: [B].
    Returns o: [B, HV, V] fp32."""
    B = q.shape[0]
    cu_seqlens = torch.arange(B + 1, dtype=torch.int32)
    has_initial_state = torch.ones(B, dtype=torch.bool)
    return naive_recurrent_gated_delta_rule(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                            has_initial_state, use_qk_l2norm)


def naive_recurrent_gated_delta_rule_verify(q, k, v, g, beta, scale, ssm_states, cu_seqlens, state_indices,
                                            num_accepted, use_qk_l2norm):
    """Token by token on top of the naive recurrence. Returns o [T, HV, V] fp32; mutates ssm_states."""
    o = torch.zeros(v.shape)
    for n in range(state_indices.shape[0]):
        slots = state_indices[n]
        if int(slots[0]) < 0:
            continue
        state = ssm_states[int(slots[int(num_accepted[n]) - 1])].clone()
        for t in range(int(cu_seqlens[n]), int(cu_seqlens[n + 1])):
            cache = state[None].clone()
            one = torch.tensor([0, 1], dtype=torch.int32)
            o[t:t + 1] = naive_recurrent_gated_delta_rule(
                q[t:t + 1], k[t:t + 1], v[t:t + 1], g[t:t + 1], beta[t:t + 1], scale, cache, one,
                torch.zeros(1, dtype=torch.int32), torch.ones(1, dtype=torch.bool), use_qk_l2norm)
            state = cache[0]
            ssm_states[int(slots[t - int(cu_seqlens[n])])] = state
    return o
