#!/usr/bin/env python3
"""Writes a synthetic 16-bit FLUX.1-shaped diffusers transformer folder (and optionally matching
calibration statistics) for the quantizer benchmark and tests. Never commit its output.

Weights have realistic statistics: a decaying singular spectrum (sigma_i ~ 1/(1+i), i < 64) on top of
Gaussian noise, and a few large input columns. Calibration inputs have a few outlier channels.

  scripts/make_synthetic_checkpoint.py OUT [--double-blocks 19] [--single-blocks 38]
      [--hidden 3072] [--mlp 12288] [--calib CALIB.safetensors] [--calib-rows 64] [--seed 0]

Only numpy is needed. bf16 values are produced by round-to-nearest-even from float32.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np


def to_bf16_bits(a):
    """float32 array -> uint16 bf16 bits, round to nearest even (no NaN in our data)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounding = ((u >> 16) & 1) + 0x7FFF
    return ((u + rounding) >> 16).astype(np.uint16)


class SafetensorsWriter:
    """Streams tensors to a .safetensors file: the header is computed from the planned shapes first."""

    def __init__(self, path, plan):  # plan: list of (name, dtype, shape)
        self.path, self.offsets, off = path, {}, 0
        header = {"__metadata__": {"format": "pt"}}
        for name, dtype, shape in plan:
            n = int(np.prod(shape)) * {"BF16": 2, "F32": 4}[dtype]
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
            self.offsets[name] = (off, n)
            off += n
        hj = json.dumps(header, separators=(",", ":")).encode()
        hj += b" " * ((8 - len(hj) % 8) % 8)
        self.tmp = path + ".tmp"
        self.f = open(self.tmp, "wb")
        self.f.write(struct.pack("<Q", len(hj)) + hj)
        self.base = 8 + len(hj)
        self.total = off

    def write(self, name, data_bytes):
        off, n = self.offsets[name]
        assert len(data_bytes) == n, name
        self.f.seek(self.base + off)
        self.f.write(data_bytes)

    def close(self):
        self.f.truncate(self.base + self.total)
        self.f.close()
        os.replace(self.tmp, self.path)


def flux_layers(args):
    """(module, N, K, has_bias) of every linear, diffusers FluxTransformer2DModel names."""
    h, f = args.hidden, args.mlp
    out = [("x_embedder", h, 64, True), ("context_embedder", h, 4096, True),
           ("time_text_embed.timestep_embedder.linear_1", h, 256, True),
           ("time_text_embed.timestep_embedder.linear_2", h, h, True),
           ("time_text_embed.guidance_embedder.linear_1", h, 256, True),
           ("time_text_embed.guidance_embedder.linear_2", h, h, True),
           ("time_text_embed.text_embedder.linear_1", h, 768, True),
           ("time_text_embed.text_embedder.linear_2", h, h, True)]
    for i in range(args.double_blocks):
        p = f"transformer_blocks.{i}."
        out += [(p + "norm1.linear", 6 * h, h, True), (p + "norm1_context.linear", 6 * h, h, True)]
        for m in ["to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"]:
            out.append((p + "attn." + m, h, h, True))
        for ff in ["ff", "ff_context"]:
            out += [(p + ff + ".net.0.proj", f, h, True), (p + ff + ".net.2", h, f, True)]
    for i in range(args.single_blocks):
        p = f"single_transformer_blocks.{i}."
        out += [(p + "norm.linear", 3 * h, h, True), (p + "proj_mlp", f, h, True)]
        for m in ["to_q", "to_k", "to_v"]:
            out.append((p + "attn." + m, h, h, True))
        out.append((p + "proj_out", h, h + f, True))
    out += [("norm_out.linear", 2 * h, h, True), ("proj_out", 64, h, True)]
    return out


def synthetic_weight(rng, n, k):
    r = 64
    sigma = (4.0 / (1.0 + np.arange(r))).astype(np.float32)
    u = rng.standard_normal((n, r), dtype=np.float32) / np.sqrt(n)
    v = rng.standard_normal((r, k), dtype=np.float32) / np.sqrt(k)
    w = (u * sigma) @ v
    w += rng.standard_normal((n, k), dtype=np.float32) * np.float32(0.16 / np.sqrt(k))
    w[:, 5::97] *= 6.0
    return w


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--double-blocks", type=int, default=19)
    ap.add_argument("--single-blocks", type=int, default=38)
    ap.add_argument("--hidden", type=int, default=3072)
    ap.add_argument("--mlp", type=int, default=12288)
    ap.add_argument("--calib", help="also write calibration statistics for the block linears")
    ap.add_argument("--calib-rows", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if os.path.exists(args.out):
        sys.exit(f"{args.out}: already exists")
    rng = np.random.default_rng(args.seed)
    layers = flux_layers(args)
    plan = []
    for m, n, k, b in layers:
        plan.append((m + ".weight", "BF16", (n, k)))
        if b:
            plan.append((m + ".bias", "BF16", (n,)))
    # non-linear tensors: the RMSNorm weights of attention
    norms = []
    for i in range(args.double_blocks):
        for nm in ["norm_q", "norm_k", "norm_added_q", "norm_added_k"]:
            norms.append(f"transformer_blocks.{i}.attn.{nm}.weight")
    for i in range(args.single_blocks):
        for nm in ["norm_q", "norm_k"]:
            norms.append(f"single_transformer_blocks.{i}.attn.{nm}.weight")
    plan += [(n, "BF16", (128,)) for n in norms]
    comp = os.path.join(args.out, "transformer")
    os.makedirs(comp)
    cfg = {"_class_name": "FluxTransformer2DModel", "_diffusers_version": "0.32.0", "attention_head_dim": 128,
           "num_attention_heads": args.hidden // 128, "num_layers": args.double_blocks,
           "num_single_layers": args.single_blocks, "in_channels": 64, "joint_attention_dim": 4096,
           "pooled_projection_dim": 768, "guidance_embeds": True, "patch_size": 1}
    with open(os.path.join(comp, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    w = SafetensorsWriter(os.path.join(comp, "diffusion_pytorch_model.safetensors"), plan)
    for m, n, k, b in layers:
        w.write(m + ".weight", to_bf16_bits(synthetic_weight(rng, n, k)).tobytes())
        if b:
            w.write(m + ".bias", to_bf16_bits(rng.standard_normal(n, dtype=np.float32) * 0.05).tobytes())
    for n in norms:
        w.write(n, to_bf16_bits(1.0 + 0.1 * rng.standard_normal(128, dtype=np.float32)).tobytes())
    w.close()
    if args.calib:
        cplan, data = [], {}
        for m, n, k, b in layers:
            if not m.startswith(("transformer_blocks.", "single_transformer_blocks.")):
                continue
            scale = np.ones(k, dtype=np.float32)
            scale[rng.choice(k, size=max(1, k // 256), replace=False)] = 30.0
            x = rng.standard_normal((args.calib_rows, k), dtype=np.float32) * scale
            if m.endswith("ff.net.2") or m.endswith("ff_context.net.2"):
                x = 0.5 * x * (1.0 + np.tanh(0.7978845608 * (x + 0.044715 * x ** 3)))  # GELU (tanh)
            data[m + ".input_absmax"] = np.abs(x).max(axis=0).astype(np.float32).tobytes()
            data[m + ".input_samples"] = to_bf16_bits(x).tobytes()
            cplan += [(m + ".input_absmax", "F32", (k,)), (m + ".input_samples", "BF16", (args.calib_rows, k))]
        cw = SafetensorsWriter(args.calib, cplan)
        for name, _, _ in cplan:
            cw.write(name, data[name])
        cw.close()
    total = sum(n * k for _, n, k, _ in layers)
    print(f"wrote {args.out}: {len(layers)} linear layers, {total / 1e9:.2f} G weights")


if __name__ == "__main__":
    main()
