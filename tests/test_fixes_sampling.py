"""Our stand-in for vLLM 0.32's CPU expand kernel (vllm_qwen3next/fixes/sampling.py) against the
semantics of vLLM's Triton `expand_kernel`, and the bug it replaces. The end-to-end check is
tests/test_mtp.py::test_sampled_distribution_unchanged."""

import pytest
import torch

from vllm_qwen3next.fixes.sampling import expand_kernel


def _reference(values, cu, replace_from, replace_to):
    out, start = [], 0
    for v, end in zip(values.tolist(), cu.tolist()):
        out += [replace_to if v == replace_from else v] * (end - start)
        start = end
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32, torch.int64])
def test_expand_kernel(dtype):
    values = torch.tensor([0.7, -1, 2, 5], dtype=torch.float32).to(dtype)  # -1: greedy marker
    cu = torch.tensor([2, 2, 5, 6], dtype=torch.int32)  # the second request has no draft tokens
    out = torch.full((6,), 99, dtype=dtype)
    expand_kernel(out, values, cu, -1, 1)
    assert out.tolist() == pytest.approx(_reference(values, cu, -1, 1))


def test_vllm_cpu_expand_kernel_drops_float_values():
    """Why we replace it: vLLM's C++ stand-in writes into an int64 copy, never into a float output."""
    cpu_triton_utils = pytest.importorskip("vllm.utils.cpu_triton_utils")
    from vllm.platforms import current_platform

    current_platform.import_kernels()
    out = torch.full((3,), 99.0)
    cpu_triton_utils._expand_kernel_impl(out, torch.tensor([0.5, 2.0]), torch.tensor([1, 3]), -1, 1)
    assert out.tolist() == [99.0, 99.0, 99.0]  # untouched (ours gives [0.5, 2.0, 2.0])
