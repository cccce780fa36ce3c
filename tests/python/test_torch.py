"""The torch module on CPU tensors (skipped without torch): SVDQuantLinear, the svdquant::linear
custom op, torch.compile, load_into / quantize_model / save_quantized."""
import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import svdquant  # noqa: E402
import st_files  # noqa: E402
from conftest import PREFIX, run_cli  # noqa: E402
from svdquant.nn import SVDQuantLinear  # noqa: E402


def bf16(bits):
    return torch.from_numpy(bits.astype(np.uint16).view(np.int16)).view(torch.bfloat16)


def bits(t):
    return t.detach().cpu().contiguous().view(torch.int16).numpy().view(np.uint16)


def test_import_svdquant_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, svdquant; assert 'torch' not in sys.modules; svdquant.SVDQuantLinear; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_module_equals_numpy_layer(fixture):
    m = SVDQuantLinear.from_checkpoint(fixture.folder, PREFIX)
    assert (m.in_features, m.out_features, m.rank, m.dtype) == (fixture.case["K"], fixture.case["N"], 32, torch.bfloat16)
    x = bf16(fixture.x)
    y = m(x)
    assert y.dtype == torch.bfloat16 and y.shape == (x.shape[0], m.out_features)
    ref = svdquant.Layer(svdquant.Checkpoint(str(fixture.folder)), PREFIX, backend="cpu")(fixture.x, dtype="bfloat16")
    np.testing.assert_array_equal(bits(y), ref)
    # Any leading dims, non-contiguous inputs.
    rows = x.shape[0] // 2 * 2
    y3 = m(x[:rows].reshape(2, rows // 2, -1))
    assert y3.shape == (2, rows // 2, m.out_features)
    np.testing.assert_array_equal(bits(y3.reshape(rows, -1)), ref[:rows])
    xt = x.t().contiguous().t()
    assert not xt.is_contiguous()
    np.testing.assert_array_equal(bits(m(xt)), ref)


def test_module_errors(fixtures):
    m = SVDQuantLinear.from_checkpoint(fixtures["int4_k256_n256_r32"].folder, PREFIX)
    with pytest.raises(svdquant.FormatError, match=r"input dtype torch.float32, but the layer dtype is torch.bfloat16"):
        m(torch.zeros(3, 256))
    with pytest.raises(ValueError, match=re.escape("expected input [..., 256], found [3, 255]")):
        m(torch.zeros(3, 255, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="expected svdquant.Weights"):
        SVDQuantLinear("nope")
    if not torch.cuda.is_available():
        with pytest.raises(Exception, match="cuda|CUDA"):
            m(torch.zeros(3, 256, dtype=torch.bfloat16, device="cuda"))


def test_custom_op_registered_with_fake(fixtures):
    m = SVDQuantLinear.from_checkpoint(fixtures["int4_k256_n256_r32"].folder, PREFIX)
    x = torch.randn(5, 256).to(torch.bfloat16)
    op = torch.ops.svdquant.linear.default
    torch.library.opcheck(op, (x, m._handle, m.out_features),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fx = mode.from_tensor(torch.empty(2, 7, 256, dtype=torch.bfloat16))
        fy = torch.ops.svdquant.linear(fx, m._handle, m.out_features)
        assert fy.shape == (2, 7, 256) and fy.dtype == torch.bfloat16


def test_torch_compile_cpu(fixtures):
    m = SVDQuantLinear.from_checkpoint(fixtures["int4_k256_n256_r32"].folder, PREFIX)
    model = torch.nn.Sequential(m, torch.nn.GELU())
    x = torch.randn(2, 9, 256).to(torch.bfloat16)
    eager = model(x)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), eager, rtol=0, atol=0)


def test_from_linear_close_to_linear():
    torch.manual_seed(0)
    lin = torch.nn.Linear(512, 192).to(torch.bfloat16)
    m = SVDQuantLinear.from_linear(lin, rank=32, prefix="fc")
    assert m.dtype == torch.bfloat16 and m.prefix == "fc" and m.quality["svdquant"] < m.quality["rtn"]
    x = torch.randn(64, 512).to(torch.bfloat16)
    with torch.no_grad():
        y, ref = m(x).double(), lin(x).double()
    assert float((y - ref).norm() / ref.norm()) < 0.2
    # Bitwise the same as the numpy path through the C++ quantizer.
    w, _ = svdquant.quantize_linear(lin.weight.detach().float().numpy(), lin.bias.detach().float().numpy(), prefix="fc")
    np.testing.assert_array_equal(bits(m(x)), svdquant.Layer(w, backend="cpu")(bits(x), dtype="bfloat16"))
    m16 = SVDQuantLinear.from_linear(lin.to(torch.float16))
    assert m16.dtype == torch.float16 and m16(x.half()).dtype == torch.float16
    with pytest.raises(TypeError):
        SVDQuantLinear.from_linear(torch.nn.Conv1d(1, 1, 1))


class Block(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = torch.nn.LayerNorm(d)
        self.attn = torch.nn.Module()
        self.attn.to_q = torch.nn.Linear(d, d)
        self.attn.to_out = torch.nn.ModuleList([torch.nn.Linear(d, d)])
        self.ff = torch.nn.Module()
        self.ff.net = torch.nn.ModuleList([torch.nn.Linear(d, 4 * d), torch.nn.GELU(), torch.nn.Linear(4 * d, d)])

    def forward(self, x):
        h = self.attn.to_out[0](self.attn.to_q(self.norm(x)))
        return x + self.ff.net[2](self.ff.net[1](self.ff.net[0](h)))


class FluxTransformer2DModel(torch.nn.Module):
    """A stand-in with FLUX's module naming (the family tables go by the class name)."""

    def __init__(self, d=128):
        super().__init__()
        self.x_embedder = torch.nn.Linear(64, d)
        self.transformer_blocks = torch.nn.ModuleList([Block(d), Block(d)])
        self.proj_out = torch.nn.Linear(d, 64)

    def forward(self, x):
        h = self.x_embedder(x)
        for b in self.transformer_blocks:
            h = b(h)
        return self.proj_out(h)


def make_model(seed=0):
    torch.manual_seed(seed)
    return FluxTransformer2DModel().to(torch.bfloat16).eval()


def test_quantize_model_save_and_load_into(tmp_path):
    model = make_model()
    x = torch.randn(2, 10, 64).to(torch.bfloat16)
    with torch.no_grad():
        y16 = model(x)
    report = svdquant.quantize_model(model)
    assert report["family"] == "flux"
    assert set(report["kept_16bit"]) == {"x_embedder", "proj_out"}
    names = [layer["module"] for layer in report["layers"]]
    assert names == [f"transformer_blocks.{i}.{n}" for i in range(2)
                     for n in ("attn.to_q", "attn.to_out.0", "ff.net.0", "ff.net.2")]
    assert [layer["act_unsigned"] for layer in report["layers"]] == [False, False, False, True] * 2
    assert isinstance(model.transformer_blocks[0].ff.net[2], SVDQuantLinear)
    assert isinstance(model.proj_out, torch.nn.Linear)
    with torch.no_grad():
        yq = model(x)
    err = float((yq.double() - y16.double()).norm() / y16.double().norm())
    assert err < 0.15, err

    folder = tmp_path / "q"
    svdquant.save_quantized(model, folder)
    ck = svdquant.Checkpoint(str(folder))
    assert ck.quantized_layers() == sorted(names)
    assert ck.quantization_config["act_unsigned_modules"] == ["transformer_blocks.0.ff.net.2", "transformer_blocks.1.ff.net.2"]
    assert ck.quantization_config["modules_to_not_convert"] == ["x_embedder", "proj_out"]
    fresh = make_model(seed=1)
    replaced = svdquant.load_into(fresh, folder)
    assert replaced == sorted(names)
    with torch.no_grad():
        np.testing.assert_array_equal(bits(fresh(x)), bits(yq))


def test_load_into_errors(tmp_path):
    model = make_model()
    svdquant.quantize_model(model)
    folder = tmp_path / "q"
    svdquant.save_quantized(model, folder)

    class Other(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.x_embedder = torch.nn.Linear(64, 128)

    with pytest.raises(svdquant.FormatError, match=r"quantized layers that are not modules of the Other: transformer_blocks.0.attn.to_out.0"):
        svdquant.load_into(Other().to(torch.bfloat16), folder)
    wrong = make_model()
    wrong.transformer_blocks[0].attn.to_q = torch.nn.Linear(128, 64)
    with pytest.raises(svdquant.FormatError, match=r"transformer_blocks.0.attn.to_q: the checkpoint's layer is \[128, 128\]"):
        svdquant.load_into(wrong, folder)
    extra = make_model()
    extra.extra = torch.nn.Linear(4, 4)
    with pytest.raises(svdquant.FormatError, match="model tensors not in the checkpoint: extra.bias, extra.weight"):
        svdquant.load_into(extra, folder)
    extra2 = make_model()
    extra2.extra = torch.nn.Linear(4, 4)
    svdquant.load_into(extra2, folder, strict=False)
    assert isinstance(extra2.transformer_blocks[1].attn.to_q, SVDQuantLinear)


def test_quantize_model_equals_cli_quantize(cli, tmp_path):
    # The same weights quantized in memory and by `svdquant quantize` give the same tensors.
    model = make_model(3)
    comp = tmp_path / "bf16" / "transformer"
    comp.mkdir(parents=True)
    st_files.write(comp / "diffusion_pytorch_model.safetensors",
                   {n: ("BF16", bits(t)) for n, t in model.state_dict().items()})
    (comp / "config.json").write_text(json.dumps({"_class_name": "FluxTransformer2DModel"}))
    r = run_cli(cli, "quantize", comp.parent, "-o", tmp_path / "cli-q")
    assert r.returncode == 0, r.stderr
    ck = svdquant.Checkpoint(str(tmp_path / "cli-q"))
    svdquant.quantize_model(model)
    for name in ck.quantized_layers():
        mine = model.get_submodule(name).weights.tensors()
        theirs = ck.layer(name).tensors()
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert mine[key][0] == theirs[key][0], key
            np.testing.assert_array_equal(mine[key][1], theirs[key][1], err_msg=key)


def test_family_plans():
    from svdquant.quantize import plan_layers

    def tree(cls_name, linears):
        root = type(cls_name, (torch.nn.Module,), {})()
        for name in linears:
            parent = root
            parts = name.split(".")
            for p in parts[:-1]:
                if not hasattr(parent, p):
                    parent.add_module(p, torch.nn.Module())
                parent = getattr(parent, p)
            parent.add_module(parts[-1], torch.nn.Linear(64, 64))
        return root

    qwen = tree("QwenImageTransformer2DModel", ["img_in", "txt_in", "transformer_blocks.0.img_mod.1",
                                                 "transformer_blocks.0.attn.to_q", "transformer_blocks.0.img_mlp.net.2",
                                                 "transformer_blocks.0.txt_mlp.net.0.proj", "proj_out"])
    fam, plan, kept = plan_layers(qwen)
    assert fam["family"] == "qwen-image"
    assert [(n, u) for n, _, u in plan] == [("transformer_blocks.0.attn.to_q", False),
                                            ("transformer_blocks.0.img_mlp.net.2", True),
                                            ("transformer_blocks.0.txt_mlp.net.0.proj", False)]
    assert kept == ["img_in", "txt_in", "transformer_blocks.0.img_mod.1", "proj_out"]
    zimage = tree("ZImageTransformer2DModel", ["t_embedder.mlp.0", "layers.0.attention.to_q", "layers.0.adaLN_modulation.0",
                                               "layers.0.feed_forward.w2", "all_final_layer.2-1.linear"])
    fam, plan, kept = plan_layers(zimage)
    assert [n for n, _, _ in plan] == ["layers.0.attention.to_q", "layers.0.feed_forward.w2"]
    sd3 = tree("SD3Transformer2DModel", ["pos_embed.proj", "transformer_blocks.0.norm1.linear", "transformer_blocks.0.ff.net.2",
                                         "transformer_blocks.0.attn.add_q_proj", "proj_out"])
    fam, plan, kept = plan_layers(sd3, modules_to_not_convert=["add_q_proj"])
    assert [(n, u) for n, _, u in plan] == [("transformer_blocks.0.ff.net.2", True)]
    with pytest.raises(svdquant.UnsupportedError, match=re.escape("odd.weight: K = 100 is not a multiple of the int4 group size 64; keep it in 16 bits "
                                                                "with modules_to_not_convert=['odd']")):
        m = torch.nn.Module()
        m.odd = torch.nn.Linear(100, 64)
        plan_layers(m)
