"""Tiny quantized Qwen3-Next checkpoints, one per format vLLM reads, with the real
tensor names and each format's ``quantization_config``.

    python -m vllm_qwen3next.tools.quantize OUT --format FORMAT [--preset tiny|slice]

Formats (tensors per quantized linear layer, dequantized weight W [out, in]):

- ``w8a8-int8``: compressed-tensors ``int-quantized``; ``weight`` int8 [out, in],
  ``weight_scale`` [out, 1]; W = weight * weight_scale. Activations int8 per token.
- ``fp8-dynamic``: compressed-tensors ``float-quantized``; ``weight`` float8_e4m3fn,
  ``weight_scale`` [out, 1]. Activations fp8 per token.
- ``w4a16``: compressed-tensors ``pack-quantized``; ``weight_packed`` int32
  [out, in/8] (4-bit values + 8, eight per int32 along the input, low bits first),
  ``weight_scale`` [out, in/G], ``weight_shape`` [2].
- ``fp8-block``: Qwen's FP8 (``quant_method: fp8``); ``weight`` float8_e4m3fn,
  ``weight_scale_inv`` fp32 [ceil(out/128), ceil(in/128)]; needs linear sizes that are
  multiples of 128 (the ``slice`` preset).
- ``awq``: AutoAWQ GEMM; ``qweight`` int32 [in, out/8] and ``qzeros`` int32
  [in/G, out/8] packed along the output in AWQ's order 0 2 4 6 1 3 5 7, ``scales`` [in/G, out];
  W^T = (q - z) * s.
- ``gptq``: AutoGPTQ (sym, v1 zeros); ``qweight`` int32 [in/8, out] packed along the
  input, ``qzeros`` int32 [in/G, out/8] holding z - 1, ``scales`` [in/G, out]; no
  ``g_idx`` (``desc_act`` false: vLLM 0.32's AutoGPTQ method has no such parameter).

Unquantized, as in Qwen's FP8 checkpoint: embeddings, ``lm_head``, norms, the GDN
conv, ``A_log``, ``dt_bias``, the router ``mlp.gate``, ``mlp.shared_expert_gate``,
``in_proj_ba`` (``quantize_in_proj_ba=True`` quantizes it), and the routed experts
unless ``dense_experts=False`` (vLLM for CPU has no quantized MoE kernel without AMX).
``dequantized_checkpoint`` writes the same model with the dequantized weights in
float32 (the reference that transformers runs).
"""

import argparse
import json
import math
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vllm_qwen3next.tools.make_checkpoint import build_checkpoint

FORMATS = ("w8a8-int8", "fp8-dynamic", "w4a16", "fp8-block", "awq", "gptq")
BLOCK = 128
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
FP8_MAX = torch.finfo(torch.float8_e4m3fn).max

_LINEAR = re.compile(
    r"\.(linear_attn\.(in_proj_qkvz|in_proj_ba|out_proj)|self_attn\.[qkvo]_proj"
    r"|mlp\.shared_expert\.(gate|up|down)_proj|mlp\.experts\.\d+\.(gate|up|down)_proj)$"
)


def quantized_modules(names, dense_experts: bool = True, quantize_in_proj_ba: bool = False) -> list[str]:
    """Checkpoint module names (without ``.weight``) that the format quantizes."""
    out = []
    for name in names:
        module = name.removesuffix(".weight")
        if not name.endswith(".weight") or not _LINEAR.search(module) or name.startswith("mtp."):
            continue
        if dense_experts and ".mlp.experts." in module:
            continue
        if not quantize_in_proj_ba and module.endswith("in_proj_ba"):
            continue
        out.append(module)
    return out


def _pack_int4(q: torch.Tensor, dim: int, order=tuple(range(8))) -> torch.Tensor:
    """Unsigned 4-bit values -> int32, eight per word along ``dim``, value order[i] at bits 4i."""
    q = q.movedim(dim, -1).to(torch.int64)
    q = q.reshape(*q.shape[:-1], -1, 8)
    word = sum(q[..., order[i]] << (4 * i) for i in range(8))
    word = torch.where(word >= 2**31, word - 2**32, word)
    return word.to(torch.int32).movedim(-1, dim).contiguous()


def _unpack_int4(packed: torch.Tensor, dim: int, order=tuple(range(8))) -> torch.Tensor:
    word = packed.movedim(dim, -1).to(torch.int64) & 0xFFFFFFFF
    nibbles = [(word >> (4 * i)) & 0xF for i in range(8)]
    values = [None] * 8
    for i, pos in enumerate(order):
        values[pos] = nibbles[i]
    out = torch.stack(values, dim=-1).reshape(*word.shape[:-1], -1)
    return out.movedim(-1, dim)


def _half(scale: torch.Tensor) -> torch.Tensor:
    """float16 scales that bfloat16 holds exactly (vLLM keeps them in the model dtype)."""
    return scale.to(torch.bfloat16).to(torch.float16)


def quantize(w: torch.Tensor, fmt: str, group_size: int) -> dict[str, torch.Tensor]:
    """One weight [out, in] (float32) -> the format's tensors (suffixes)."""
    out_dim, in_dim = w.shape
    if fmt == "w8a8-int8":
        scale = (w.abs().amax(1, keepdim=True) / 127).clamp_min(1e-8).to(torch.bfloat16)
        q = torch.round(w / scale.float()).clamp(-128, 127).to(torch.int8)
        return {"weight": q, "weight_scale": scale}
    if fmt == "fp8-dynamic":
        scale = (w.abs().amax(1, keepdim=True) / FP8_MAX).clamp_min(1e-12).to(torch.bfloat16)
        return {"weight": (w / scale.float()).to(torch.float8_e4m3fn), "weight_scale": scale}
    if fmt == "fp8-block":
        nb_out, nb_in = math.ceil(out_dim / BLOCK), math.ceil(in_dim / BLOCK)
        padded = torch.zeros(nb_out * BLOCK, nb_in * BLOCK)
        padded[:out_dim, :in_dim] = w
        blocks = padded.reshape(nb_out, BLOCK, nb_in, BLOCK)
        scale = (blocks.abs().amax((1, 3)) / FP8_MAX).clamp_min(1e-12)
        q = (blocks / scale[:, None, :, None]).reshape(nb_out * BLOCK, nb_in * BLOCK)
        return {"weight": q[:out_dim, :in_dim].to(torch.float8_e4m3fn), "weight_scale_inv": scale}
    g = w.reshape(out_dim, in_dim // group_size, group_size)
    if fmt == "w4a16":
        scale = (g.abs().amax(-1) / 7).clamp_min(1e-8).to(torch.bfloat16)  # [out, in/G]
        q = torch.round(g / scale.float()[..., None]).clamp(-8, 7).reshape(out_dim, in_dim) + 8
        return {
            "weight_packed": _pack_int4(q, 1),
            "weight_scale": scale,
            "weight_shape": torch.tensor([out_dim, in_dim], dtype=torch.int64),
        }
    if fmt == "awq":
        lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)
        scale = _half(((hi - lo) / 15).clamp_min(1e-8))
        zero = torch.round(-lo / scale.float()).clamp(0, 15)
        q = (torch.round(g / scale.float()[..., None]) + zero[..., None]).clamp(0, 15)
        q = q.reshape(out_dim, in_dim)
        return {
            "qweight": _pack_int4(q.t(), 1, AWQ_ORDER),
            "qzeros": _pack_int4(zero.t(), 1, AWQ_ORDER),
            "scales": scale.t().contiguous(),
        }
    if fmt == "gptq":
        scale = _half((g.abs().amax(-1) / 7.5).clamp_min(1e-8))
        q = (torch.round(g / scale.float()[..., None]) + 8).clamp(0, 15).reshape(out_dim, in_dim)
        zeros = torch.full((in_dim // group_size, out_dim), 8 - 1)
        return {
            "qweight": _pack_int4(q.t(), 0),
            "qzeros": _pack_int4(zeros, 1),
            "scales": scale.t().contiguous(),
        }
    raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")


def dequantize(t: dict[str, torch.Tensor], fmt: str) -> torch.Tensor:
    """The format's tensors of one linear layer -> W [out, in] float32. Works on a
    checkpoint's tensors and on vLLM's loaded (re-ordered, sharded) parameters alike."""
    if fmt in ("w8a8-int8", "fp8-dynamic"):
        return t["weight"].float() * t["weight_scale"].float()
    if fmt == "fp8-block":
        out_dim, in_dim = t["weight"].shape
        s = t["weight_scale_inv"].float().repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)
        return t["weight"].float() * s[:out_dim, :in_dim]
    if fmt == "w4a16":
        q = _unpack_int4(t["weight_packed"], 1).float() - 8
        group = q.shape[1] // t["weight_scale"].shape[1]
        return q * t["weight_scale"].float().repeat_interleave(group, 1)
    if fmt == "awq":
        q = _unpack_int4(t["qweight"], 1, AWQ_ORDER).float()  # [in, out]
        group = q.shape[0] // t["scales"].shape[0]
        z = _unpack_int4(t["qzeros"], 1, AWQ_ORDER).float().repeat_interleave(group, 0)
        return ((q - z) * t["scales"].float().repeat_interleave(group, 0)).t()
    if fmt == "gptq":
        q = _unpack_int4(t["qweight"], 0).float()  # [in, out]
        z = _unpack_int4(t["qzeros"], 1).float() + 1
        g_idx = torch.arange(q.shape[0]) // (q.shape[0] // t["scales"].shape[0])
        return ((q - z[g_idx]) * t["scales"].float()[g_idx]).t()
    raise ValueError(f"unknown format {fmt!r}")


def quantization_config(fmt: str, modules: list[str], all_linear: list[str], group_size: int) -> dict:
    """config.json's ``quantization_config`` for ``fmt``; ``modules`` are quantized."""
    skipped = sorted(set(all_linear) - set(modules))
    if fmt in ("w8a8-int8", "fp8-dynamic", "w4a16"):
        if fmt == "w4a16":
            weights = dict(num_bits=4, type="int", symmetric=True, strategy="group",
                           group_size=group_size, dynamic=False)
            activations = None
        else:
            kind = "int" if fmt == "w8a8-int8" else "float"
            weights = dict(num_bits=8, type=kind, symmetric=True, strategy="channel", dynamic=False)
            activations = dict(num_bits=8, type=kind, symmetric=True, strategy="token", dynamic=True)
        return {
            "quant_method": "compressed-tensors",
            "format": {"w8a8-int8": "int-quantized", "fp8-dynamic": "float-quantized",
                       "w4a16": "pack-quantized"}[fmt],
            "quantization_status": "compressed",
            "config_groups": {
                "group_0": {"targets": ["Linear"], "weights": weights, "input_activations": activations}
            },
            "ignore": ["lm_head", *skipped],
        }
    if fmt == "fp8-block":
        return {
            "quant_method": "fp8",
            "fmt": "e4m3",
            "activation_scheme": "dynamic",
            "weight_block_size": [BLOCK, BLOCK],
            "modules_to_not_convert": ["lm_head", *skipped],
        }
    if fmt == "awq":
        return {
            "quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True,
            "version": "gemm", "modules_to_not_convert": skipped,
        }
    if fmt == "gptq":
        return {
            "quant_method": "gptq", "bits": 4, "group_size": group_size, "desc_act": False,
            "sym": True, "checkpoint_format": "gptq",
            "dynamic": {f"-:{re.escape(m)}$": {} for m in skipped},
        }
    raise ValueError(f"unknown format {fmt!r}")


def _all_linear(names) -> list[str]:
    return quantized_modules(names, dense_experts=False, quantize_in_proj_ba=True) + [
        n.removesuffix(".weight") for n in names
        if n.endswith((".mlp.gate.weight", ".shared_expert_gate.weight")) and not n.startswith("mtp.")
    ]


def build_quantized_checkpoint(
    out: Path,
    fmt: str,
    preset: str = "tiny",
    dense_experts: bool = True,
    quantize_in_proj_ba: bool = False,
    group_size: int = 32,
    **overrides,
) -> Path:
    """A ``preset`` checkpoint (bf16, no MTP layer) quantized in ``fmt``."""
    out = Path(out)
    base = build_checkpoint(out / "base", preset, dtype="float32", verbose=False, with_mtp=False, **overrides)
    tensors = load_file(base / "model.safetensors")
    modules = quantized_modules(tensors, dense_experts, quantize_in_proj_ba)
    result = {}
    for name, t in tensors.items():
        module = name.removesuffix(".weight")
        if module in modules:
            for suffix, q in quantize(t, fmt, group_size).items():
                result[f"{module}.{suffix}"] = q
        else:
            result[name] = t.to(torch.bfloat16)
    for f in base.iterdir():
        if f.name not in ("model.safetensors", "config.json"):
            shutil.copy(f, out / f.name)
    cfg = json.loads((base / "config.json").read_text())
    cfg["torch_dtype"] = cfg["dtype"] = "bfloat16"
    cfg["quantization_config"] = quantization_config(fmt, modules, _all_linear(tensors), group_size)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(result, out / "model.safetensors", metadata={"format": "pt"})
    shutil.rmtree(base)
    return out


def dequantized_checkpoint(quantized: Path, out: Path) -> Path:
    """The quantized checkpoint's model with dequantized float32 weights, unquantized."""
    quantized, out = Path(quantized), Path(out)
    cfg = json.loads((quantized / "config.json").read_text())
    qcfg = cfg.pop("quantization_config")
    fmt = _format_of(qcfg)
    tensors = load_file(quantized / "model.safetensors")
    modules = {n.rsplit(".", 1)[0] for n in tensors if not n.endswith((".weight", "A_log", "dt_bias"))}
    result = {}
    for name, t in tensors.items():
        module, suffix = name.rsplit(".", 1)
        if module in modules:
            if module + ".weight" not in result:
                parts = {s: tensors[k] for k in tensors if (s := k.removeprefix(module + ".")) != k and "." not in s}
                result[module + ".weight"] = dequantize(parts, fmt)
        else:
            result[name] = t.float()
    out.mkdir(parents=True, exist_ok=True)
    for f in quantized.iterdir():
        if f.name not in ("model.safetensors", "config.json"):
            shutil.copy(f, out / f.name)
    cfg["torch_dtype"] = cfg["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file(result, out / "model.safetensors", metadata={"format": "pt"})
    return out


def _format_of(qcfg: dict) -> str:
    method = qcfg["quant_method"]
    if method == "compressed-tensors":
        return {"int-quantized": "w8a8-int8", "float-quantized": "fp8-dynamic",
                "pack-quantized": "w4a16"}[qcfg["format"]]
    return {"fp8": "fp8-block", "awq": "awq", "gptq": "gptq"}[method]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--quantized-experts", action="store_true", help="quantize the routed experts too")
    parser.add_argument("--quantize-in-proj-ba", action="store_true")
    parser.add_argument("--group-size", type=int, default=32)
    args = parser.parse_args(argv)
    path = build_quantized_checkpoint(
        args.out, args.format, args.preset, dense_experts=not args.quantized_experts,
        quantize_in_proj_ba=args.quantize_in_proj_ba, group_size=args.group_size,
    )
    print(path)


if __name__ == "__main__":
    main()
