"""Train a tiny Qwen3-Next and its MTP layer on a predictable synthetic corpus, on CPU.

    python -m vllm_qwen3next.train_tiny OUT_DIR [--steps N] [--seed S] [--threads T] [--check-vllm]

The result is a checkpoint in exactly the layout `make_checkpoint.build_checkpoint` writes (its
config, tokenizer and writer are reused; only the weights are trained), so transformers and vLLM
load it, and `qwen3_next_mtp` speculative decoding on corpus-like prompts is accepted often.

Model: transformers' `Qwen3NextForCausalLM` (float32; its torch GDN fallback is differentiable),
started from the random `tiny` checkpoint, plus `MTPHead`, the MTP draft built from transformers'
own decoder layer and norms. The draft at position t reads `fc(cat(norm_e(embed(token[t+1])),
norm_h(h[t])))`, runs one full-attention MoE layer and `mtp.norm`, and predicts token t+2 through
the shared lm_head; a second draft step feeds its own output back, as vLLM does for k > 1.
Loss: CE(next token) + CE(draft step 1: token t+2) + CE(draft step 2: token t+3).

Corpus (`corpus_sequence`): each sequence follows one pattern, picked at random: counting with a
step, two interleaved counters, a walk along a fixed cycle through the symbols, or one of a fixed
set of short phrases repeated; each pattern has its own block of token ids. Every sequence is
determined by its first three tokens, so a trained model predicts almost every token, and t+2
as well (counting and the interleaved counters need the hidden state for that).

Shapes (a training batch, not the kernels' varlen notation): B = sequences in the batch,
T = sequence length, L = positions a draft step reads (T - k), H = hidden size, V = vocab size,
E = experts, I = moe_intermediate_size.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from vllm_qwen3next.tools.make_checkpoint import build_checkpoint, save_state_dict, weight_specs

# Corpus: each kind of pattern has its own block of NUM_SYMBOLS token ids (plain BPE merges of the
# tokenizer), from SYMBOL_BASE up in KINDS order, so one token tells the kind.
KINDS = ("count", "interleave", "walk", "phrase")
SYMBOL_BASE = 256
NUM_SYMBOLS = 256
COUNT_STEPS = (1, 2, 3, 5)
PHRASE_LENS = (3, 8)  # min, max length of a phrase
CORPUS_SEED = 4321  # the walk's cycle and the phrases, the same for every training seed
SEQ_LEN = 128

# Training defaults: about 1.5 minutes on 2 CPU threads.
DEFAULT_STEPS = 300
BATCH_SIZE = 8
LR = 1e-2
WARMUP_STEPS = 20
MTP_STEPS = 2  # draft steps trained (vLLM feeds step 1's output to step 2)
EVAL_SEQS_PER_KIND = 8


def _log(verbose: bool, msg: str) -> None:
    if verbose:
        print(f"[train_tiny] {msg}", flush=True)


@functools.lru_cache(maxsize=1)
def _successors() -> dict[str, list[int]]:
    """Next symbol of the walk (one cycle through all symbols) and of the phrases (short cycles
    that partition the symbols); fixed by CORPUS_SEED."""
    rng = random.Random(CORPUS_SEED)
    walk, phrase = list(range(NUM_SYMBOLS)), list(range(NUM_SYMBOLS))
    rng.shuffle(walk)
    rng.shuffle(phrase)
    succ = {"walk": [0] * NUM_SYMBOLS, "phrase": [0] * NUM_SYMBOLS}
    for i, x in enumerate(walk):
        succ["walk"][x] = walk[(i + 1) % NUM_SYMBOLS]
    start = 0
    while start < NUM_SYMBOLS:
        n = rng.randint(*PHRASE_LENS)
        if NUM_SYMBOLS - start - n < PHRASE_LENS[0]:
            n = NUM_SYMBOLS - start
        for j in range(n):
            succ["phrase"][phrase[start + j]] = phrase[start + (j + 1) % n]
        start += n
    return succ


def corpus_sequence(rng: random.Random, length: int, kind: str | None = None) -> list[int]:
    """One corpus sequence of token ids, of a random kind (one of KINDS) unless `kind` is given.
    The random draws do not depend on `length`, so a shorter sequence from the same rng state
    is a prefix of a longer one."""
    n = NUM_SYMBOLS
    kind = KINDS[rng.randrange(len(KINDS))] if kind is None else kind
    if kind == "count":  # x0, x0 + d, x0 + 2d, ...
        x0, d = rng.randrange(n), rng.choice(COUNT_STEPS)
        seq = [(x0 + i * d) % n for i in range(length)]
    elif kind == "interleave":  # two counters: a, b, a+1, b+1, ...
        a, b = rng.randrange(n), rng.randrange(n)
        seq = [((a, b)[i % 2] + i // 2) % n for i in range(length)]
    elif kind in ("walk", "phrase"):  # the fixed long cycle, or one of the fixed phrases repeated
        succ, x, seq = _successors()[kind], rng.randrange(n), []
        for _ in range(length):
            seq.append(x)
            x = succ[x]
    else:
        raise ValueError(f"unknown corpus kind {kind!r}; choose from {KINDS}")
    return [SYMBOL_BASE + KINDS.index(kind) * n + x for x in seq]


def corpus_prompts(n: int, length: int, seed: int = 0) -> list[list[int]]:
    """`n` corpus sequences of `length` token ids; with the same (n, seed), longer sequences
    extend shorter ones, so `corpus_prompts(n, L + k, s)[i][L:]` is the expected continuation."""
    rng = random.Random(f"prompts-{seed}")
    return [corpus_sequence(rng, length) for _ in range(n)]


def corpus_batch(rng: random.Random, batch: int, length: int, kind: str | None = None) -> torch.Tensor:
    return torch.tensor([corpus_sequence(rng, length, kind) for _ in range(batch)])  # [B, T]


class MTPHead(nn.Module):
    """The MTP draft from transformers' Qwen3-Next parts; parameter names are the checkpoint's
    `mtp.*` names without the prefix (experts packed as transformers packs them)."""

    def __init__(self, config):
        from transformers.models.qwen3_next.modeling_qwen3_next import (
            Qwen3NextDecoderLayer,
            Qwen3NextRMSNorm,
            Qwen3NextRotaryEmbedding,
        )

        super().__init__()
        hidden, eps = config.hidden_size, config.rms_norm_eps
        self.fc = nn.Linear(2 * hidden, hidden, bias=False)
        self.pre_fc_norm_embedding = Qwen3NextRMSNorm(hidden, eps=eps)
        self.pre_fc_norm_hidden = Qwen3NextRMSNorm(hidden, eps=eps)
        # The layer reads its type from config.layer_types[layer_idx]: take a full-attention index.
        self.layers = nn.ModuleList([Qwen3NextDecoderLayer(config, config.layer_types.index("full_attention"))])
        self.norm = Qwen3NextRMSNorm(hidden, eps=eps)
        self.rotary_emb = Qwen3NextRotaryEmbedding(config)

    def forward(self, embeds: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """embeds: [B, L, H] embeddings of tokens t+1; hidden: [B, L, H] hidden states at t
        (the target's after model.norm, or the previous draft step's). Returns [B, L, H]."""
        x = self.fc(torch.cat([self.pre_fc_norm_embedding(embeds), self.pre_fc_norm_hidden(hidden)], dim=-1))
        L = x.shape[1]
        positions = torch.arange(L, device=x.device)[None]  # [1, L]
        causal = torch.full((L, L), float("-inf"), device=x.device, dtype=x.dtype).triu(1)[None, None]  # [1, 1, L, L]
        x = self.layers[0](
            x, position_embeddings=self.rotary_emb(x, positions), attention_mask=causal, position_ids=positions
        )
        return self.norm(x)


_EXPERT = re.compile(r"(.+\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight")


def to_transformers(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint names -> transformers' state dict: per-expert tensors become
    `experts.gate_up_proj` [E, 2I, H] (gate rows first) and `experts.down_proj` [E, H, I]."""
    out, experts = {}, {}
    for name, t in tensors.items():
        m = _EXPERT.fullmatch(name)
        if m:
            experts.setdefault(m[1], {})[(int(m[2]), m[3])] = t
        else:
            out[name] = t
    for prefix, ws in experts.items():
        num = 1 + max(e for e, _ in ws)
        out[f"{prefix}.gate_up_proj"] = torch.stack(
            [torch.cat([ws[(e, "gate_proj")], ws[(e, "up_proj")]]) for e in range(num)]
        )
        out[f"{prefix}.down_proj"] = torch.stack([ws[(e, "down_proj")] for e in range(num)])
    return out


def to_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `to_transformers`."""
    out = {}
    for name, t in state.items():
        if name.endswith(".experts.gate_up_proj"):
            prefix, inter = name.removesuffix(".gate_up_proj"), t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{prefix}.{e}.gate_proj.weight"] = t[e, :inter]
                out[f"{prefix}.{e}.up_proj.weight"] = t[e, inter:]
        elif name.endswith(".experts.down_proj"):
            prefix = name.removesuffix(".down_proj")
            for e in range(t.shape[0]):
                out[f"{prefix}.{e}.down_proj.weight"] = t[e]
        else:
            out[name] = t
    return out


def _read_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for f in sorted(ckpt.glob("model*.safetensors")):
        with safe_open(f, "pt") as st:
            tensors.update({k: st.get_tensor(k) for k in st.keys()})
    return tensors


def joint_forward(model, mtp: MTPHead, ids: torch.Tensor, mtp_steps: int = MTP_STEPS):
    """ids: [B, T]. Returns the main logits [B, T, V] and, per draft step k = 1.., logits
    [B, T-k, V] whose position t predicts token t+k+1."""
    h = model.model(input_ids=ids, use_cache=False).last_hidden_state  # [B, T, H], after model.norm
    embeds = model.model.embed_tokens(ids)  # [B, T, H]
    draft, mtp_logits = h, []
    for k in range(1, mtp_steps + 1):
        draft = mtp(embeds[:, k:], draft[:, :-1])  # [B, T-k, H]
        mtp_logits.append(model.lm_head(draft))
    return model.lm_head(h), mtp_logits


def _losses_and_accuracies(ids, logits, mtp_logits) -> tuple[list[torch.Tensor], list[float]]:
    """CE and argmax accuracy of the main head (token t+1) and of each draft step k (token t+k+1)."""
    losses, accs = [], []
    for k, lg in enumerate([logits, *mtp_logits]):
        pred, target = lg[:, :-1], ids[:, k + 1 :]  # [B, T-k-1, V], [B, T-k-1]
        losses.append(F.cross_entropy(pred.flatten(0, 1), target.flatten()))
        accs.append((pred.argmax(-1) == target).float().mean().item())
    return losses, accs


def _fmt(losses, accs) -> str:
    names = ["next token", *(f"MTP t+{k + 1}" for k in range(1, len(accs)))]
    return ", ".join(f"{n}: loss {l.item():.3f} acc {a:.3f}" for n, l, a in zip(names, losses, accs))


def train_tiny_checkpoint(
    out_dir: str | Path,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    *,
    batch_size: int = BATCH_SIZE,
    seq_len: int = SEQ_LEN,
    lr: float = LR,
    mtp_steps: int = MTP_STEPS,
    threads: int = 2,
    device: str = "cpu",
    log_every: int = 25,
    verify: bool = True,
    verbose: bool = True,
    history: list[dict] | None = None,
    **config_overrides,
) -> Path:
    """Trains the `tiny` preset (with `config_overrides`) and its MTP layer on the corpus and writes
    the checkpoint to `out_dir` (float32); returns its path.

    `device` is where training runs (the held-out evaluation and the checks run on the CPU).
    `history`, if given, receives one dict per step (step, losses, accuracies: next token, then
    draft steps) and a last one with the held-out figures (key "eval"). `verify` reloads the
    written checkpoint in transformers and checks its logits and mtp.* tensors against the trained ones.
    """
    from transformers import Qwen3NextForCausalLM

    t_start = time.perf_counter()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = build_checkpoint(out_dir, "tiny", seed=seed, dtype="float32", verbose=False, **config_overrides)
        cfg = json.loads((out / "config.json").read_text())
        model = Qwen3NextForCausalLM.from_pretrained(out, dtype=torch.float32)
        mtp = MTPHead(model.config)
        random_mtp = {k.removeprefix("mtp."): t for k, t in _read_weights(out).items() if k.startswith("mtp.")}
        mtp.load_state_dict(to_transformers(random_mtp))
        _log(verbose, f"tiny model {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M + MTP "
             f"{sum(p.numel() for p in mtp.parameters()) / 1e6:.2f}M params, layers {model.config.layer_types}; "
             f"{steps} steps of {batch_size} x {seq_len} tokens, {threads} threads")

        model.to(device).train()
        mtp.to(device).train()
        params = [*model.parameters(), *mtp.parameters()]
        opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
        warmup = min(WARMUP_STEPS, max(1, steps // 10))

        def lr_factor(step: int) -> float:  # linear warm-up, cosine down to 10%
            if step < warmup:
                return (step + 1) / warmup
            return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
        rng = random.Random(f"train-{seed}")
        t_train = time.perf_counter()
        for step in range(1, steps + 1):
            ids = corpus_batch(rng, batch_size, seq_len).to(device)
            logits, mtp_logits = joint_forward(model, mtp, ids, mtp_steps)
            losses, accs = _losses_and_accuracies(ids, logits, mtp_logits)
            opt.zero_grad(set_to_none=True)
            sum(losses).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            if history is not None:
                history.append(dict(step=step, losses=[l.item() for l in losses], accs=accs))
            if step % log_every == 0 or step in (1, steps):
                _log(verbose, f"step {step:4d} {time.perf_counter() - t_train:6.1f}s  {_fmt(losses, accs)}")
        train_s = time.perf_counter() - t_train

        model.cpu().eval()
        mtp.cpu().eval()
        eval_rng = random.Random(f"eval-{seed}")
        eval_ids = torch.cat([corpus_batch(eval_rng, EVAL_SEQS_PER_KIND, seq_len, kind) for kind in KINDS])
        with torch.no_grad():
            logits, mtp_logits = joint_forward(model, mtp, eval_ids, mtp_steps)
            losses, accs = _losses_and_accuracies(eval_ids, logits, mtp_logits)
            per_kind = {}
            for i, kind in enumerate(KINDS):
                rows = slice(i * EVAL_SEQS_PER_KIND, (i + 1) * EVAL_SEQS_PER_KIND)
                _, per_kind[kind] = _losses_and_accuracies(
                    eval_ids[rows], logits[rows], [lg[rows] for lg in mtp_logits]
                )
        _log(verbose, f"trained in {train_s:.1f}s; held-out ({len(eval_ids)} x {seq_len}): {_fmt(losses, accs)}")
        for kind, kind_accs in per_kind.items():
            _log(verbose, f"  {kind:10s} accuracy " + " / ".join(f"{a:.3f}" for a in kind_accs))
        if history is not None:
            history.append(dict(eval=True, train_s=train_s, losses=[l.item() for l in losses], accs=accs,
                                per_kind=per_kind))

        specs = weight_specs(cfg, with_mtp=True)
        state = {n: p.detach() for n, p in model.named_parameters()}
        state |= {f"mtp.{n}": p.detach() for n, p in mtp.named_parameters()}
        tensors = to_checkpoint(state)
        if set(tensors) != set(specs):
            raise RuntimeError(f"names differ from the checkpoint layout: extra {sorted(set(tensors) - set(specs))}, "
                               f"missing {sorted(set(specs) - set(tensors))}")
        for name, (shape, _) in specs.items():
            assert tuple(tensors[name].shape) == tuple(shape), (name, tensors[name].shape, shape)
        save_state_dict({name: tensors[name] for name in specs}, out, verbose=False)

        if verify:
            _verify(out, tensors, eval_ids, logits, verbose)
        _log(verbose, f"wrote {out} in {time.perf_counter() - t_start:.1f}s")
        return out
    finally:
        torch.set_num_threads(threads_before)


def _verify(out: Path, tensors: dict, ids: torch.Tensor, logits: torch.Tensor, verbose: bool) -> None:
    """The written checkpoint holds the trained tensors and transformers reloads it to the same logits."""
    from transformers import Qwen3NextForCausalLM

    written = _read_weights(out)
    assert all(torch.equal(written[n], t) for n, t in tensors.items()), "written tensors differ"
    model, info = Qwen3NextForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    unexpected = [k for k in info["unexpected_keys"] if not k.startswith("mtp.")]
    if info["missing_keys"] or unexpected or info["mismatched_keys"]:
        raise RuntimeError(f"transformers reload: {info}")
    with torch.no_grad():
        diff = (model(ids).logits - logits).abs().max().item()
    if diff > 1e-4:
        raise RuntimeError(f"reloaded logits differ from the trained model's by {diff:.2e}")
    _log(verbose, f"reload in transformers: no missing/unexpected keys (besides mtp.*), logits max diff {diff:.1e}")


def check_vllm(
    checkpoint: str | Path,
    prompts: list[list[int]],
    *,
    num_speculative_tokens: int = 2,
    max_tokens: int = 40,
    dtype: str = "float32",
) -> tuple[list[list[int]], dict]:
    """Greedy generation with `qwen3_next_mtp` speculative decoding; returns the output token ids
    and the spec-decode metrics. Call under `if __name__ == "__main__":` (vLLM spawns workers)."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(
        model=str(checkpoint),
        dtype=dtype,
        enforce_eager=True,
        max_model_len=1024,
        speculative_config={"method": "qwen3_next_mtp", "num_speculative_tokens": num_speculative_tokens},
        disable_log_stats=False,
    )
    outs = llm.generate(
        [TokensPrompt(prompt_token_ids=p) for p in prompts],
        SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True),
        use_tqdm=False,
    )
    metrics = {  # counters have a value, the per-position counts are a vector
        m.name: m.value if hasattr(m, "value") else list(m.values)
        for m in llm.get_metrics()
        if m.name.startswith("vllm:spec_decode")
    }
    return [list(o.outputs[0].token_ids) for o in outs], metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check-vllm", action="store_true",
                    help="then generate greedily in vLLM with qwen3_next_mtp (k=2) and print the acceptance")
    args = ap.parse_args(argv)
    out = train_tiny_checkpoint(args.out_dir, steps=args.steps, seed=args.seed, threads=args.threads)
    if args.check_vllm:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        prompt_len, max_tokens = 40, 40
        full = corpus_prompts(8, prompt_len + max_tokens, seed=args.seed)
        outputs, m = check_vllm(out, [s[:prompt_len] for s in full], max_tokens=max_tokens)
        pattern = sum(o == s[prompt_len:] for o, s in zip(outputs, full))
        drafted, accepted = m["vllm:spec_decode_num_draft_tokens"], m["vllm:spec_decode_num_accepted_tokens"]
        per_pos = m.get("vllm:spec_decode_num_accepted_tokens_per_pos")
        _log(True, f"vLLM qwen3_next_mtp k=2: {accepted:.0f}/{drafted:.0f} draft tokens accepted "
             f"({accepted / max(drafted, 1):.3f}), accepted per position {per_pos}; "
             f"{pattern}/{len(full)} greedy outputs continue their pattern exactly")


if __name__ == "__main__":
    main()
