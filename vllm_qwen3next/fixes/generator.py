"""vLLM 0.32 for CPU: the fix that keeps a seeded request with a split prefill from stopping the engine.

A request is sampled at every step it is scheduled, also when its prefill is split over
steps (chunked prefill) and the token is thrown away. vLLM undoes the draw of those
discarded tokens on the request's own `torch.Generator` by moving its Philox offset back
(`GPUModelRunner._bookkeeping_sync`: `gen.set_offset(gen.get_offset() - 4)`), so that a
seed gives the same tokens however the prompt was split. A CPU generator (Mersenne
Twister) has no offset: `set_offset` raises "CPU Generator does not use offset", the
worker dies, the engine core stops and every request in flight fails.

`install()` keeps the generators of discarded requests out of the step instead: during
`sample_tokens` they are taken out of the batch's generator dict (the one the sampler
reads), so a discarded token is drawn from the global generator and each request's own
generator advances only with tokens it keeps, which is what the rewind achieves on GPUs.
The model's constructor calls it (the worker process).
"""

import functools
import inspect

import torch

from vllm.logger import init_logger

logger = init_logger(f"vllm.{__name__}")


def cpu_generators_lack_offset() -> bool:
    try:
        torch.Generator(device="cpu").get_offset()
    except RuntimeError:
        return True
    return False


def rewinds_generator_offsets(runner_cls) -> bool:
    """True where vLLM's bookkeeping rewinds generators of discarded requests by offset."""
    return "set_offset" in inspect.getsource(runner_cls._bookkeeping_sync)


def without_discarded_generators(sample_tokens):
    """Wrap a runner's `sample_tokens` so that requests whose token is discarded sample
    without their own generator (they get it back afterwards, untouched)."""

    @functools.wraps(sample_tokens)
    def wrapper(self, *args, **kwargs):
        generators = self.input_batch.generators
        num_reqs = self.input_batch.num_reqs
        discarded = [int(i) for i in self.discard_request_mask.np[:num_reqs].nonzero()[0]]
        held = {i: generators.pop(i) for i in discarded if i in generators}
        try:
            return sample_tokens(self, *args, **kwargs)
        finally:
            generators.update(held)

    wrapper.keeps_discarded_generators = True
    return wrapper


def install() -> None:
    """On CPU, where vLLM rewinds generators by an offset CPU generators lack, wrap the
    CPU model runner's `sample_tokens`."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu() or not cpu_generators_lack_offset():
        return
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner

    if getattr(CPUModelRunner.sample_tokens, "keeps_discarded_generators", False):
        return
    if not rewinds_generator_offsets(CPUModelRunner):
        return
    CPUModelRunner.sample_tokens = without_discarded_generators(CPUModelRunner.sample_tokens)
    logger.info("vllm_qwen3next: seeded requests whose prefill is split sample their discarded tokens "
                "without their own generator (vLLM 0.32 rewinds it with set_offset, which CPU "
                "generators lack: the engine stopped)")
