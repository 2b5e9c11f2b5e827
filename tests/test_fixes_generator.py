"""The seeded-sampling fix for vLLM 0.32 for CPU (vllm_qwen3next/fixes/generator.py), and the fault it
replaces. The end-to-end checks (a seeded request with a split prefill, through `LLM` and through the
server) are in tests/test_client_faults.py."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vllm_qwen3next.fixes.generator import cpu_generators_lack_offset, without_discarded_generators


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def test_vllm_rewinds_cpu_generators_by_offset():
    """Why we patch: vLLM's bookkeeping rewinds the generator of a request whose token it discards
    with set_offset, which a CPU generator refuses (the worker, then the engine, stops)."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    assert cpu_generators_lack_offset()
    runner = SimpleNamespace(
        input_batch=SimpleNamespace(num_reqs=2, generators={0: _seeded(0), 1: _seeded(1)}),
        discard_request_mask=SimpleNamespace(np=np.array([False, True])),
    )
    with pytest.raises(RuntimeError, match="CPU Generator does not use offset"):
        GPUModelRunner._bookkeeping_sync(runner, None, None, None, None, 0)


def test_discarded_requests_keep_their_generator_state():
    """A request whose token is discarded does not draw from its own generator; the others do, and the
    batch's generator dict (the one the sampler reads) is whole again afterwards."""
    generators = {0: _seeded(0), 2: _seeded(2), 3: _seeded(3)}
    states = {i: g.get_state() for i, g in generators.items()}
    drawn = {}

    class Runner:
        input_batch = SimpleNamespace(num_reqs=4, generators=generators)
        discard_request_mask = SimpleNamespace(np=np.array([False, False, True, False, True]))  # padded

        def sample_tokens(self, grammar_output):
            for i, gen in self.input_batch.generators.items():
                drawn[i] = torch.randint(0, 2**31, (1,), generator=gen).item()
            return grammar_output

    Runner.sample_tokens = without_discarded_generators(Runner.sample_tokens)
    assert Runner().sample_tokens("out") == "out"
    assert sorted(drawn) == [0, 3]
    assert drawn[0] == torch.randint(0, 2**31, (1,), generator=_seeded(0)).item()
    assert sorted(generators) == [0, 2, 3]
    assert torch.equal(generators[2].get_state(), states[2])  # untouched: as if never sampled
    assert not torch.equal(generators[3].get_state(), states[3])


def test_generators_come_back_when_sampling_fails():
    generators = {1: _seeded(1)}

    class Runner:
        input_batch = SimpleNamespace(num_reqs=2, generators=generators)
        discard_request_mask = SimpleNamespace(np=np.array([False, True]))

        def sample_tokens(self, grammar_output):
            raise ValueError("boom")

    Runner.sample_tokens = without_discarded_generators(Runner.sample_tokens)
    with pytest.raises(ValueError):
        Runner().sample_tokens(None)
    assert list(generators) == [1]
