"""A small diffusers FLUX transformer (random init), quantized: against its 16-bit outputs, through
save_quantized / load_into, torch.compile, CUDA-graph capture, and the CLI on the same numbers.
Skipped without torch and diffusers; the GPU parts without a CUDA device the backend accepts."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import svdquant  # noqa: E402
import st_files  # noqa: E402
from conftest import cli_forward  # noqa: E402
from svdquant.nn import SVDQuantLinear  # noqa: E402

CONFIG = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=64,
              num_attention_heads=2, joint_attention_dim=64, pooled_projection_dim=32, axes_dims_rope=(16, 24, 24))
IMG, TXT = 64, 16


def flux(seed=0):
    torch.manual_seed(seed)
    return diffusers.FluxTransformer2DModel(**CONFIG).to(torch.bfloat16).eval()


def inputs(device, seed=1):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g).to(torch.bfloat16).to(device)

    img_ids = torch.zeros(IMG, 3)
    img_ids[:, 1] = torch.arange(IMG) // 8
    img_ids[:, 2] = torch.arange(IMG) % 8
    return dict(hidden_states=r(2, IMG, 16), encoder_hidden_states=r(2, TXT, 64), pooled_projections=r(2, 32),
                timestep=torch.full((2,), 0.5, dtype=torch.bfloat16, device=device),
                img_ids=img_ids.to(device), txt_ids=torch.zeros(TXT, 3, device=device), return_dict=False)


def rel(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def bits(t):
    return t.detach().cpu().contiguous().view(torch.int16).numpy().view(np.uint16)


def cuda_ok():
    if not torch.cuda.is_available():
        return "no CUDA device"
    if "cuda-sm90" not in svdquant.backends():
        return "the extension was built without CUDA"
    if torch.cuda.get_device_capability() != (9, 0):
        return "the cuda-sm90 backend needs an sm_90 GPU"
    return None


needs_gpu = pytest.mark.skipif(cuda_ok() is not None, reason=str(cuda_ok()))


@pytest.fixture(scope="module")
def models():
    ref = flux()
    q = flux()
    report = svdquant.quantize_model(q)
    return ref, q, report


def test_quantized_flux_cpu(models, tmp_path):
    ref, q, report = models
    assert report["family"] == "flux"
    quantized = {layer["module"] for layer in report["layers"]}
    assert "transformer_blocks.0.attn.to_q" in quantized and "single_transformer_blocks.1.proj_out" in quantized
    assert "transformer_blocks.0.ff.net.2" in quantized
    assert {"x_embedder", "context_embedder", "proj_out", "transformer_blocks.0.norm1.linear"} <= set(report["kept_16bit"])
    x = inputs("cpu")
    with torch.no_grad():
        y16 = ref(**x)[0]
        yq = q(**x)[0]
    assert yq.dtype == torch.bfloat16 and yq.shape == y16.shape
    err = rel(yq, y16)
    print(f"FLUX (random init) W4A4 vs bf16 on CPU: relative error {err:.4f}")
    assert err < 0.25

    # save_quantized -> load_into a fresh random model -> the same outputs, bit for bit.
    svdquant.save_quantized(q, tmp_path / "flux-q")
    # The README's way: the model class from the saved config.json, then load_into.
    config = diffusers.FluxTransformer2DModel.load_config(tmp_path / "flux-q" / "transformer")
    fresh = diffusers.FluxTransformer2DModel.from_config(config).to(torch.bfloat16)
    svdquant.load_into(fresh, tmp_path / "flux-q")
    assert isinstance(fresh.transformer_blocks[0].attn.to_q, SVDQuantLinear)
    with torch.no_grad():
        np.testing.assert_array_equal(bits(fresh(**x)[0]), bits(yq))


@needs_gpu
def test_quantized_flux_cuda(models, tmp_path, cli):
    ref, q, _ = models
    ref = ref.to("cuda")
    q = q.to("cuda")
    x = inputs("cuda")
    with torch.no_grad():
        y16 = ref(**x)[0]
        yq = q(**x)[0]
    assert yq.device.type == "cuda" and yq.dtype == torch.bfloat16
    assert q.transformer_blocks[0].attn.to_q.prepare("cuda").backend == "cuda-sm90"
    err = rel(yq, y16)
    print(f"FLUX (random init) W4A4 vs bf16 on cuda-sm90: relative error {err:.4f}")
    assert err < 0.25
    # Close to the CPU reference in the same activation mode for one layer (activations=auto runs
    # fp8 on cuda-sm90; tests/cuda holds the kernels' own checks).
    layer = q.transformer_blocks[0].ff.net[2]
    mode = layer.prepare("cuda").activations
    seen = {}
    hook = layer.register_forward_hook(lambda m, a, out: seen.update(x=a[0].detach().clone(), y=out.detach().clone()))
    with torch.no_grad():
        q(**x)
    hook.remove()
    cpu = svdquant.Layer(layer.weights, backend="cpu", activations=mode)
    y_cpu = torch.from_numpy(cpu(bits(seen["x"]), dtype="bfloat16").view(np.int16)).view(torch.bfloat16)
    print(f"ff.net.2 on cuda-sm90 (activations={mode}) vs the CPU: {rel(seen['y'].cpu(), y_cpu):.2e}")
    assert rel(seen["y"].cpu(), y_cpu) < 5e-3

    # `svdquant forward` (auto backend: cuda-sm90 here) on the same input gives the same numbers.
    svdquant.save_quantized(q, tmp_path / "flux-q")
    xin = bits(seen["x"].reshape(-1, layer.in_features))
    y_cli = cli_forward(cli, tmp_path / "flux-q", "transformer_blocks.0.ff.net.2", xin, "BF16", tmp_path, backend="auto")
    np.testing.assert_array_equal(y_cli, bits(seen["y"].reshape(-1, layer.out_features)))

    # torch.compile (inductor): the custom op is traced through its fake implementation, with no
    # graph break of its own (diffusers' code may have others).
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(q)(**x)
    reasons = [str(getattr(r, "reason", r)) for r in explained.break_reasons]
    print(f"dynamo: {explained.graph_count} graphs, {explained.graph_break_count} breaks {reasons}")
    assert not [r for r in reasons if "svdquant" in r]
    torch._dynamo.reset()
    compiled = torch.compile(q)
    with torch.no_grad():
        yc = compiled(**x)[0]
    assert rel(yc, yq) < 2e-2, rel(yc, yq)

    # CUDA graph capture and replay: bitwise the eager result. Warm up on the capture stream (the
    # layer's workspace is sized then; later calls on the stream need no allocation).
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.no_grad():
        for _ in range(2):
            q(**x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=s), torch.no_grad():
        yg = q(**x)[0]
    g.replay()
    torch.cuda.synchronize()
    np.testing.assert_array_equal(bits(yg), bits(yq))
    for v in x.values():  # new inputs in the captured buffers
        if isinstance(v, torch.Tensor) and v.dtype == torch.bfloat16 and v.dim() == 3:
            v.mul_(0.5)
    g.replay()
    with torch.cuda.stream(s), torch.no_grad():
        y_half = q(**x)[0]
    torch.cuda.synchronize()
    np.testing.assert_array_equal(bits(yg), bits(y_half))


@needs_gpu
def test_module_on_cuda_and_stream():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 128).to(torch.bfloat16)
    m = SVDQuantLinear.from_linear(lin, prefix="fc")
    x = torch.randn(3, 5, 256).to(torch.bfloat16)
    y_cpu = SVDQuantLinear(m.weights, activations=m.prepare("cuda").activations)(x)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y = m(x.cuda())
    torch.cuda.synchronize()
    assert y.shape == (3, 5, 128) and y.device.type == "cuda"
    assert rel(y.cpu(), y_cpu) < 5e-3
    with pytest.raises(svdquant.FormatError, match="input dtype torch.float16"):
        m(x.cuda().half())
    # A whole graph with inductor around the op; bitwise the eager result for the op itself.
    model = torch.nn.Sequential(m, torch.nn.GELU(), torch.nn.Linear(128, 64).to(torch.bfloat16)).cuda()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    xc = x.cuda()
    with torch.no_grad():
        assert rel(compiled(xc), model(xc)) < 1e-2
    compiled_op = torch.compile(m, fullgraph=True)
    np.testing.assert_array_equal(bits(compiled_op(xc)), bits(m(xc)))
