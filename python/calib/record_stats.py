#!/usr/bin/env python3
"""Records calibration statistics for `svdquant quantize --calib` from a diffusers pipeline.

For every torch.nn.Linear inside the pipeline's transformer it registers a forward hook that keeps
  <module>.input_absmax   float32 [K]      running per-input-channel max |x| over all calls
  <module>.input_samples  bfloat16 [S, K]  up to --samples input rows, reservoir-sampled uniformly
                                           over all rows seen (fixed seed)
and writes them with safetensors (format: docs/QUANTIZER.md "Calibration statistics").
Module names are those of transformer.named_modules(), i.e. the checkpoint's tensor prefixes.

Runs where torch, diffusers and the model are (a GPU is advisable):
  python record_stats.py --model black-forest-labs/FLUX.1-dev --prompts prompts.txt \
      --steps 20 --out flux_calib.safetensors
"""
import argparse

import torch
from safetensors.torch import save_file


class LinearStats:
    def __init__(self, k, max_samples, generator):
        self.absmax = torch.zeros(k, dtype=torch.float32)
        self.samples = torch.empty(0, k, dtype=torch.bfloat16)
        self.seen = 0
        self.calls = 0
        self.max_samples = max_samples
        self.gen = generator

    @torch.no_grad()
    def update(self, x):
        self.calls += 1
        rows = x.detach().reshape(-1, x.shape[-1]).float()
        self.absmax = torch.maximum(self.absmax, rows.abs().amax(dim=0).cpu())
        if self.max_samples == 0:
            return
        rows = rows.to(torch.bfloat16).cpu()
        free = min(self.max_samples - self.samples.shape[0], rows.shape[0])
        if free > 0:  # fill the reservoir first
            self.samples = torch.cat([self.samples, rows[:free]])
            self.seen += free
            rows = rows[free:]
        if rows.shape[0] == 0:
            return
        # Reservoir sampling (Algorithm R), vectorised: row i replaces slot j ~ U[0, seen_i) if j < S.
        t = self.seen + 1 + torch.arange(rows.shape[0], dtype=torch.float64)
        j = (torch.rand(rows.shape[0], generator=self.gen, dtype=torch.float64) * t).long()
        keep = j < self.max_samples
        self.samples[j[keep]] = rows[keep]
        self.seen += rows.shape[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="diffusers pipeline id or folder")
    ap.add_argument("--prompts", required=True, help="text file, one prompt per line")
    ap.add_argument("--out", required=True, help="output .safetensors")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--samples", type=int, default=256, help="sampled input rows per layer (0: absmax only)")
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(args.model, torch_dtype=getattr(torch, args.dtype)).to(args.device)
    model = pipe.transformer
    gen = torch.Generator().manual_seed(args.seed)
    stats, hooks = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            stats[name] = LinearStats(mod.in_features, args.samples, gen)
            hooks.append(mod.register_forward_hook(lambda m, inp, out, s=stats[name]: s.update(inp[0])))
    prompts = [p.strip() for p in open(args.prompts) if p.strip()]
    for i, prompt in enumerate(prompts):
        pipe(prompt, num_inference_steps=args.steps, height=args.height, width=args.width,
             generator=torch.Generator(args.device).manual_seed(args.seed + i))
        print(f"[{i + 1}/{len(prompts)}] {prompt[:60]}")
    for h in hooks:
        h.remove()
    tensors = {}
    for name, s in stats.items():
        if s.calls == 0:
            continue  # never called
        tensors[name + ".input_absmax"] = s.absmax.contiguous()
        if s.samples.shape[0] > 0:
            tensors[name + ".input_samples"] = s.samples.contiguous()
    save_file(tensors, args.out, metadata={"svdquant_calibration": "1", "model": args.model,
                                           "prompts": str(len(prompts)), "steps": str(args.steps)})
    print(f"wrote {args.out}: {len(stats)} linear layers")


if __name__ == "__main__":
    main()
