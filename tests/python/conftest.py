"""Shared fixtures: canonical folders built from tests/data, the CLI, inputs."""
import json
import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

import st_files

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = pathlib.Path(os.environ.get("SVDQUANT_TEST_DATA", ROOT / "tests" / "data"))
FIXTURES = ["int4_k256_n256_r32", "int4_unsigned_k512_n128_r32", "nvfp4_k256_n256_r32"]
PREFIX = "transformer_blocks.0.attn.to_q"


def pack_codes(codes):
    """canonical.codes [N, K] (one 4-bit code per int8) -> qweight [N, K/2], low nibble = even k."""
    c = codes.astype(np.uint8) & 0xF
    return (c[:, 0::2] | (c[:, 1::2] << 4)).astype(np.uint8).view(np.int8)


class Fixture:
    """One tests/data case as a canonical diffusers folder with one layer under PREFIX."""

    def __init__(self, name, root):
        self.name = name
        tensors, meta = st_files.read(DATA / f"{name}.safetensors")
        self.case = json.loads(meta["case"])
        self.tensors = tensors
        self.x = tensors["forward.x"][1]          # bf16 bits [M, K]
        self.y_ref = tensors["forward.y_ref"][1]  # bf16 bits [M, N]
        self.folder = root / name
        comp = self.folder / "transformer"
        comp.mkdir(parents=True)
        layer = {f"{PREFIX}.qweight": ("I8", pack_codes(tensors["canonical.codes"][1]))}
        for src, dst in [("wscales", "wscales"), ("smooth", "smooth_factor"), ("proj_down", "proj_down"),
                         ("proj_up", "proj_up"), ("bias", "bias"), ("wcscales", "wcscales"), ("wtscale", "wtscale")]:
            layer[f"{PREFIX}.{dst}"] = tensors[f"canonical.{src}"]
        st_files.write(comp / "diffusion_pytorch_model.safetensors", layer)
        qc = {"quant_method": "svdquant", "rank": self.case["rank"], "precision": self.case["precision"],
              "act_unsigned": bool(self.case["act_unsigned"]), "modules_to_not_convert": []}
        (comp / "config.json").write_text(json.dumps({"_class_name": "TestModel", "quantization_config": qc}))


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("canonical")
    return {name: Fixture(name, root) for name in FIXTURES}


@pytest.fixture(params=FIXTURES)
def fixture(request, fixtures):
    return fixtures[request.param]


def cli_path():
    env = os.environ.get("SVDQUANT_CLI")
    if env:
        return env
    found = shutil.which("svdquant")
    for p in [ROOT / "build" / "svdquant", found]:
        if p and pathlib.Path(p).is_file():
            return str(p)
    return None


@pytest.fixture(scope="session")
def cli():
    path = cli_path()
    if path is None:
        pytest.skip("the svdquant CLI is not built (set SVDQUANT_CLI)")
    return path


def run_cli(cli, *args):
    return subprocess.run([cli, *map(str, args)], capture_output=True, text=True)


def cli_forward(cli, model, layer, x, dtype, tmp_path, backend="cpu", accumulate="fp32", activations="auto"):
    """`svdquant forward` on x (an array of `dtype` 'BF16' bits or 'F16'); returns y as stored."""
    xin, yout = tmp_path / "x.safetensors", tmp_path / "y.safetensors"
    st_files.write(xin, {"x": (dtype, x)})
    r = run_cli(cli, "forward", "--model", model, "--layer", layer, "--input", xin, "--output", yout,
                "--backend", backend, "--accumulate", accumulate, "--activations", activations)
    assert r.returncode == 0, r.stderr
    tensors, _ = st_files.read(yout)
    assert tensors["y"][0] == dtype
    return tensors["y"][1]


def ulp_distance(a, b):
    """Elementwise distance in ulps between two arrays of 16-bit float bits (bf16 or fp16)."""
    def ordered(v):
        v = v.astype(np.int32)
        return np.where(v & 0x8000, -(v & 0x7FFF), v)
    return np.abs(ordered(a.view(np.uint16)) - ordered(b.view(np.uint16)))
