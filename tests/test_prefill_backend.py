"""vLLM's --gdn-prefill-backend on our chunked-prefill op (vllm_qwen3next/prefill_backend.py), against the built-in's
own resolution (vLLM's _resolve_gdn_prefill_backend) on the same settings and GPUs: what it runs, we prefer the
backend of the same kernels; what it refuses, we refuse; what only it has, we refuse at start naming VLLM_PLUGINS=."""
import types

import pytest
from vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn import _resolve_gdn_prefill_backend

from vllm_qwen3next import prefill_backend

GPUS = {"hopper": (9, 0), "sm100": (10, 0), "ampere": (8, 0)}


@pytest.fixture
def gpu(monkeypatch):
    """gpu(name): vLLM's current_platform answers as a CUDA GPU of that capability (CUDA runtime 13); returns the
    preferences our op would be registered with."""
    registered = []
    monkeypatch.setattr(prefill_backend.backends, "register", lambda prefer=None: registered.append(prefer))

    def set_gpu(name):
        platform = prefill_backend.current_platform
        major, minor = GPUS[name]
        monkeypatch.setattr(platform, "is_cuda", lambda: True)
        monkeypatch.setattr(platform, "is_rocm", lambda: False)
        monkeypatch.setattr(platform, "is_device_capability", lambda cap: cap == 10 * major + minor)
        monkeypatch.setattr(platform, "is_device_capability_family", lambda cap: cap // 10 == major)
        monkeypatch.setattr(platform, "get_cuda_runtime_major", lambda: 13, raising=False)
        return registered
    return set_gpu


def config(backend):
    return types.SimpleNamespace(
        additional_config={} if backend is None else {"gdn_prefill_backend": backend},
        model_config=types.SimpleNamespace(hf_text_config=types.SimpleNamespace(
            linear_key_head_dim=128, linear_value_head_dim=128)))


def builtin_choice(cfg):
    return _resolve_gdn_prefill_backend(cfg)[1]


@pytest.mark.parametrize("name", list(GPUS))
@pytest.mark.parametrize(("backend", "ours"), [
    (None, None), ("auto", None), ("flashinfer", ["flashinfer"]), ("triton", ["fla", "triton"]),
    ("cutedsl", ["fla", "triton"]), ("FlashInfer ", ["flashinfer"]),
])
def test_requests_map_onto_our_backends(gpu, name, backend, ours):
    registered = gpu(name)
    cfg = config(backend)
    builtin = builtin_choice(cfg)
    if backend == "cutedsl" and name == "sm100":
        assert builtin == "cutedsl"  # only the built-in has it: refused at start
        with pytest.raises(ValueError, match=r"CuTe DSL GDN prefill.*VLLM_PLUGINS="):
            prefill_backend.check(cfg)
        return
    prefill_backend.check(cfg)  # as the model does: refuse_unsupported, then apply
    prefill_backend.apply(cfg)
    assert registered == ([] if ours is None else [{"chunk_gated_delta_rule": ours}])
    # the built-in runs FlashInfer's kernel or its Triton port of fla's: ours prefers the same kernels
    if builtin == "triton":
        assert ours is None or ours[0] == "fla" or name == "ampere"
    else:
        assert builtin == "flashinfer" and (ours is None or ours[0] == "flashinfer")


def test_rocm_backend_refused_off_rocm_like_the_builtin(gpu):
    gpu("hopper")
    with pytest.raises(RuntimeError, match="aiter_flydsl"):
        builtin_choice(config("aiter_flydsl"))
    with pytest.raises(ValueError, match="aiter_flydsl is ROCm AITER's GDN prefill"):
        prefill_backend.check(config("aiter_flydsl"))


def test_nothing_registered_without_a_gpu(monkeypatch):
    monkeypatch.setattr(prefill_backend.current_platform, "is_cuda", lambda: False)
    monkeypatch.setattr(prefill_backend.backends, "register", lambda prefer=None: pytest.fail("registered"))
    prefill_backend.apply(config("triton"))
