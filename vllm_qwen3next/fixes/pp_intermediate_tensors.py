"""vLLM 0.32 for CPU: the fix that lets a later pipeline stage run without torch.compile.

A stage other than the first receives the previous stage's hidden states into a buffer
the model runner allocates once, `GPUModelRunner.intermediate_tensors`, and only its dummy
run allocates it (`_dummy_run`: "if self.intermediate_tensors is None: ..."). On GPU the
memory profiling always makes a dummy run. On CPU the only dummy run is the compile
warm-up (`CPUModelRunner.warming_up_model`), which returns at once when compilation is off
(`enforce_eager=True`, `-cc.mode=none`), so the first real step of stage 1 fails in
`sync_and_gather_intermediate_tensors` with a bare `assert self.intermediate_tensors is not
None` (for vLLM's built-in Qwen3-Next too, and for any model under PP on CPU in eager mode).

`install()` wraps `sync_and_gather_intermediate_tensors` so that it allocates the buffer
the way `_dummy_run` does when it is missing. The model's constructor calls it in each
worker of a pipeline stage after the first, on CPU, where vLLM's CPU warm-up skips eager
mode.
"""

from vllm.logger import init_logger

logger = init_logger(f"vllm.{__name__}")


def warm_up_skips_eager() -> bool:
    """True where vLLM's CPU model runner makes no dummy run with compilation off."""
    from vllm.config import CompilationMode
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner

    class Probe:
        profiled = False
        vllm_config = type("C", (), {"compilation_config": type("CC", (), {"mode": CompilationMode.NONE})})

        def profile_run(self):
            Probe.profiled = True

    try:
        CPUModelRunner.warming_up_model(Probe())
    except Exception:  # noqa: BLE001  (vLLM's warm-up changed: not the runner we know)
        return False
    return not Probe.profiled


def install() -> None:
    """Allocate a later stage's intermediate-tensor buffer on first use, where vLLM never does."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    sync_and_gather = GPUModelRunner.sync_and_gather_intermediate_tensors
    if getattr(sync_and_gather, "allocates_buffer", False) or not warm_up_skips_eager():
        return

    def sync_and_gather_intermediate_tensors(self, num_tokens, intermediate_tensors, sync_self):
        if self.intermediate_tensors is None:
            self.intermediate_tensors = self.model.make_empty_intermediate_tensors(
                batch_size=self.max_num_tokens, dtype=self.model_config.dtype, device=self.device
            )
        return sync_and_gather(self, num_tokens, intermediate_tensors, sync_self)

    sync_and_gather_intermediate_tensors.allocates_buffer = True
    GPUModelRunner.sync_and_gather_intermediate_tensors = sync_and_gather_intermediate_tensors
    logger.info(
        "vllm_qwen3next: a later pipeline stage allocates its intermediate-tensor buffer on "
        "first use (vLLM 0.32's CPU runner only allocates it in the compile warm-up, which "
        "eager mode skips)"
    )
