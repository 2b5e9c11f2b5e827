"""The recurrent-state ops on states laid out [HV, V, K] (the CUDA cache layout, vllm_qwen3next/layers/state.py)
through the transposed view they take, against the CPU op on the same values laid out [HV, K, V]: our Triton kernels
(interpreted, and on CUDA with each backend), the fla backend included."""
import functools

import pytest
import torch
from utils import check_state_layout, devices

from qwen3next_kernels.gated_delta_rule.triton_decode import gdn_decode_triton

OPS = ["chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule", "recurrent_gated_delta_rule_verify",
       "gdn_decode"]
SMALL = dict(B=3, H=1, HV=2, K=16, V=32)
QWEN = dict(B=33, H=16, HV=32, K=128, V=128)


def params():
    out = []
    for op in OPS:
        for p in devices(op, cpu=False):
            sizes = SMALL if p.values[0] == "interpret" else QWEN
            for name, dtypes in {"fp32": {}, "bf16": dict(dtype=torch.bfloat16, state_dtype=torch.bfloat16)}.items():
                out.append(pytest.param(p.values[0], op, sizes | dtypes, id=f"{op}-{p.id}-{name}", marks=p.marks))
    return out


@pytest.mark.parametrize(("device", "op", "case"), params())
def test_state_layout(run, device, op, case):
    run(check_state_layout, device, op, **case)


@pytest.mark.parametrize(("BV", "num_warps", "stream"), [(32, 1, False), (32, 1, True), (128, 16, True)],
                         ids=["norm_launched", "norm_launched-streamed", "norm_in_place-streamed"])
@pytest.mark.parametrize("device", [p for p in devices("gdn_decode", cpu=False) if p.values[0] != "cuda:fla"])
def test_gdn_decode_value_blocks_state_layout(run, device, BV, num_warps, stream):
    """gdn_decode over several value blocks per head (the norm a launch of its own) and over one (the norm in
    place), the state streamed or not: the plans decode_plan picks between, on the [V, K] layout."""
    sizes = SMALL if device == "interpret" else QWEN | dict(B=1)
    run(check_state_layout, device, "gdn_decode", **sizes,
        impl=functools.partial(gdn_decode_triton, BV=min(BV, sizes["V"]), num_warps=num_warps,
                               stream_state=stream))
