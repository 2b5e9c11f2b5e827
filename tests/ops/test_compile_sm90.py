"""Every Triton kernel compiles for Hopper (sm_90) with the Triton installed here, on a machine without a GPU.

The interpreter runs the kernels' arithmetic but not Triton's compiler, which rejects more (a helper whose
constexpr branches return tiles of different shapes, say). Here the launchers run with Triton's CUDA driver
replaced by one that names an sm_90 target and with every launch turned into a compile-only warm-up, through
ptxas to a cubin; nothing runs. Launch configurations: each kernel's constexpr branches (state layout and dtype,
fused or composed decode, one or several value blocks); with SM90_ALL_VARIANTS=1 (about 5 minutes) every variant
the H200 benchmark times, in both activation dtypes: run that before a device run."""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU compiles and runs the kernels itself")

BF16, FP32 = torch.bfloat16, torch.float32
H, HV, K, V = 16, 32, 128, 128
D = 2 * H * K + HV * V
ALL = os.environ.get("SM90_ALL_VARIANTS") == "1"
NORM_BLOCKS = ((None, 4), (16, 4), (8, 4), (8, 2), (4, 2), (4, 1), (2, 1), (1, 1))  # bench_h200.py's


def _compile_only():
    """Installs the sm_90 driver and the compile-only launch in this (worker) process."""
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.driver import CudaDriver
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    class Sm90Driver(CudaDriver):
        def __init__(self):  # no CUDA library to load
            pass

        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_active_torch_device(self):
            return torch.device("cpu")

    driver.set_active(Sm90Driver())
    JITFunction.__getitem__ = lambda self, grid: (lambda *a, **kw: self.run(*a, grid=grid, warmup=True, **kw))


def _states(S, dtype, vk):
    return torch.zeros(S, HV, V, K, dtype=dtype).transpose(-1, -2) if vk else torch.zeros(S, HV, K, V, dtype=dtype)


def _compile(family: str) -> int:
    """Runs family's launchers in every configuration; returns how many launches compiled."""
    _compile_only()
    from qwen3next_kernels.conv import triton as conv
    from qwen3next_kernels.gated_delta_rule import (library_chunk, triton_chunk, triton_decode, triton_fused_recurrent,
                                                    triton_verify)
    from qwen3next_kernels.gating.triton import gdn_gating_triton
    from qwen3next_kernels.norm.triton import gated_rms_norm_triton

    library_chunk._on_triton = lambda t: True  # the library backends' slot kernels take these CPU tensors too
    n = 0
    i32 = torch.int32
    for dt in (FP32, BF16) if ALL else (BF16,):
        x = torch.zeros(6, D, dtype=dt)
        cs = torch.zeros(8, 3, D, dtype=dt)
        w = torch.zeros(D, 4, dtype=dt)
        idx = torch.arange(1, 4, dtype=i32)
        cu = torch.tensor([0, 1, 3, 6], dtype=i32)
        if family == "conv":
            variants = [{}, dict(rows=False)] + [dict(rows=True, BT=BT, BD=BD, num_warps=nw) for BT, BD, nw in (
                (32, 256, 2), (16, 256, 2), (64, 256, 2), (32, 512, 4), (16, 512, 2), (32, 128, 1), (64, 512, 4),
                (8, 1024, 4)) if ALL]
            for kw in variants:
                conv.causal_conv1d_fwd_triton(x, w, None, cs, cu, idx, torch.ones(3, dtype=torch.bool), True, **kw)
                n += 1
            for BD, nw in ((256, 2), (256, 4), (512, 4), (1024, 4), (1024, 8), (2048, 8)) if ALL else ((256, 4),):
                conv.causal_conv1d_update_triton(x[:3], w, None, cs, idx, True, BD=BD, num_warps=nw)
                n += 1
            conv.causal_conv1d_verify_triton(x, w, None, torch.zeros(8, 5, D, dtype=dt), cu, idx,
                                             torch.ones(3, dtype=i32), True)
            gdn_gating_triton(torch.zeros(HV), torch.zeros(6, HV, dtype=dt), torch.zeros(6, HV, dtype=dt),
                              torch.zeros(HV, dtype=dt))
            n += 2
            for BR, nw in NORM_BLOCKS if ALL else ((None, 4),):
                gated_rms_norm_triton(torch.zeros(6, HV, V, dtype=dt), torch.zeros(6, HV, V, dtype=dt),
                                      torch.ones(V, dtype=dt), 1e-6, BR=BR, num_warps=nw)
                n += 1
            continue
        q = torch.zeros(6, H, K, dtype=dt)
        v = torch.zeros(6, HV, V, dtype=dt)
        g = torch.zeros(6, HV)
        for sdt in (FP32, BF16):
            for vk in (True, False):
                st = _states(12, sdt, vk)
                if family == "recurrent":
                    blocks = ((None, None), (32, 1), (16, 1), (32, 2), (64, 2), (64, 4)) if ALL else ((None, None),)
                    for BV, nw in blocks:
                        triton_fused_recurrent.fused_recurrent_gated_delta_rule_triton(
                            q[:3], q[:3], v[:3], g[:3], g[:3], 0.1, st, idx, True, BV=BV, num_warps=nw)
                        triton_verify.recurrent_gated_delta_rule_verify_triton(
                            q, q, v, g, g, 0.1, st, cu, idx[:, None].repeat(1, 3).contiguous(),
                            torch.ones(3, dtype=i32), True, BV=BV, num_warps=nw)
                        n += 2
                elif family == "decode":
                    args = dict(mixed_qkv=x[:3], z=v[:3], a=g[:3].to(dt), b=g[:3].to(dt), conv_weight=w,
                                conv_bias=None, conv_states=cs, A_log=torch.zeros(HV), dt_bias=torch.zeros(HV),
                                norm_weight=torch.ones(V, dtype=dt), norm_eps=1e-6, scale=0.1, ssm_states=st,
                                state_indices=idx, use_qk_l2norm=True)
                    # (BV, num_warps, the state streamed): None, the plan's
                    blocks = ((None, None, None), (32, 1, False), (32, 1, True), (32, 2, None), (64, 2, None),
                              (128, 8, None), (128, 16, False), (128, 16, True)) if ALL else \
                        ((None, None, None), (32, 1, False), (32, 1, True), (128, 16, True))
                    for BV, nw, stream in blocks if vk else ((None, None, None),):
                        triton_decode.gdn_decode_triton(**args, BV=BV, num_warps=nw, stream_state=stream)
                        n += 1
                elif family == "chunk":
                    triton_chunk.chunk_gated_delta_rule_fwd_triton(q, q, v, g, g, 0.1, st, cu, idx,
                                                                   torch.ones(3, dtype=torch.bool), True)
                    # the library backends' slot kernels, through their host functions
                    cache = st.transpose(-1, -2) if vk else st  # the memory's own layout
                    h0 = library_chunk.initial_states(cache, idx, torch.ones(3, dtype=torch.bool))
                    library_chunk.write_back(v.clone(), h0, cache, cu, idx)
                    n += 3
    return n


@pytest.mark.parametrize("family", ["conv", "recurrent", "decode", "chunk"])
def test_triton_kernels_compile_for_sm90(family):
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        n = pool.submit(_compile, family).result()
    assert n > 0
    print(f"{family}: {n} launches compiled for sm_90")
