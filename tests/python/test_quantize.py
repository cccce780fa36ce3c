"""quantize_linear (the C++ quantizer) from numpy, write_checkpoint, and the result through the CLI."""
import json

import numpy as np
import pytest

import svdquant
from conftest import cli_forward

N, K = 192, 512


def random_layer(seed=0, outliers=True):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((N, K)).astype(np.float32) / np.sqrt(K)
    # A few large weight columns and input channels: what SVDQuant's low-rank branch absorbs.
    cols = rng.choice(K, 8, replace=False)
    W[:, cols] *= 12
    b = rng.standard_normal(N).astype(np.float32) * 0.1
    x = rng.standard_normal((64, K)).astype(np.float32)
    if outliers:
        x[:, rng.choice(K, 5, replace=False)] *= 25
    return W, b, x


def rel_err(y, ref):
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


def rtn_int4(a):
    """Plain W4A4 round-to-nearest, independently of svdquant: per-64 group absmax scales."""
    g = a.reshape(a.shape[0], -1, 64)
    s = np.abs(g).max(axis=2, keepdims=True) / 7
    s[s == 0] = 1
    return (np.clip(np.round(g / s), -8, 7) * s).reshape(a.shape)


# (precision, calibrated): bound on the relative output error against the float64 layer. With the
# inputs' absmax the smoothing moves the input outliers into the weights (~0.045 int4, ~0.038 nvfp4
# measured); data-free, the low-rank branch alone (~0.17 int4, ~0.09 nvfp4) against 0.57 for RTN.
BOUNDS = {("int4", True): 0.07, ("nvfp4", True): 0.06, ("int4", False): 0.22, ("nvfp4", False): 0.13}


@pytest.mark.parametrize("precision", ["int4", "nvfp4"])
@pytest.mark.parametrize("calibrated", [True, False])
def test_quantize_then_forward_beats_rtn(precision, calibrated):
    W, b, x = random_layer()
    x16 = x.astype(np.float16)
    absmax = np.abs(x16).max(axis=0).astype(np.float32) if calibrated else None
    w, quality = svdquant.quantize_linear(W, b, prefix="blk.0.fc", rank=32, precision=precision, dtype="float16",
                                          act_absmax=absmax)
    assert (w.prefix, w.out_features, w.in_features, w.rank, w.precision, w.dtype) == \
        ("blk.0.fc", N, K, 32, precision, "float16")
    assert set(quality) >= {"rtn", "smooth_only", "lowrank_only", "svdquant", "alpha"}
    assert quality["svdquant"] < 0.5 * quality["rtn"]
    y = svdquant.Layer(w, backend="cpu")(x16)
    assert y.dtype == np.float16 and y.shape == (64, N)
    ref = x16.astype(np.float64) @ W.astype(np.float64).T + b
    err = rel_err(y.astype(np.float64), ref)
    assert err < BOUNDS[precision, calibrated], err
    if precision == "int4":
        err_rtn = rel_err(rtn_int4(x16.astype(np.float64)) @ rtn_int4(W.astype(np.float64)).T + b, ref)
        assert err < (0.15 if calibrated else 0.4) * err_rtn, (err, err_rtn)


def test_quantize_is_deterministic_and_accepts_dtypes():
    W, b, _ = random_layer(1)
    w1, _ = svdquant.quantize_linear(W, b, prefix="m", report=False)
    w2, _ = svdquant.quantize_linear(W.astype(np.float64), b, prefix="m", report=False)
    w3, _ = svdquant.quantize_linear(np.asfortranarray(W), b, prefix="m", report=False)
    t1 = w1.tensors()
    for w in (w2, w3):
        for name, (dtype, arr) in w.tensors().items():
            assert t1[name][0] == dtype
            np.testing.assert_array_equal(t1[name][1], arr)
    assert w1.dtype == "bfloat16" and w1.has_bias


def test_written_checkpoint_runs_the_same_through_the_cli(cli, tmp_path):
    W, b, x = random_layer(2)
    w_signed, _ = svdquant.quantize_linear(W, b, prefix="blocks.0.ff.net.0.proj", dtype="float16", report=False)
    w_unsigned, _ = svdquant.quantize_linear(W, b, prefix="blocks.0.ff.net.2", dtype="float16", act_unsigned=True,
                                             report=False)
    extra = {"norm.weight": ("F16", np.ones(K, np.float16)), "pos": ("F32", np.arange(4, dtype=np.float32))}
    folder = tmp_path / "model"
    svdquant.write_checkpoint(str(folder), [w_signed, w_unsigned], extra, rank=32, precision="int4",
                              config_json=json.dumps({"_class_name": "Test"}), modules_to_not_convert=["norm"])
    ck = svdquant.Checkpoint(str(folder))
    assert ck.quantized_layers() == ["blocks.0.ff.net.0.proj", "blocks.0.ff.net.2"]
    qc = ck.quantization_config
    assert qc["rank"] == 32 and qc["act_unsigned_modules"] == ["blocks.0.ff.net.2"]
    assert qc["modules_to_not_convert"] == ["norm"]
    assert json.loads(ck.config_json)["_class_name"] == "Test"
    assert ck.tensor_dtype("norm.weight") == "F16"
    np.testing.assert_array_equal(ck.tensor("pos"), np.arange(4, dtype=np.float32))
    x16 = x.astype(np.float16)
    for w in (w_signed, w_unsigned):
        loaded = svdquant.Layer(ck, w.prefix, backend="cpu")
        assert loaded.act_unsigned == w.act_unsigned
        y = loaded(x16)
        np.testing.assert_array_equal(y, svdquant.Layer(w, backend="cpu")(x16))
        np.testing.assert_array_equal(y, cli_forward(cli, folder, w.prefix, x16, "F16", tmp_path))
    with pytest.raises(svdquant.Error, match="model"):
        svdquant.write_checkpoint(str(folder), [w_signed], rank=32, precision="int4")  # not empty
    with pytest.raises(svdquant.ConfigError, match="blocks.0.ff.net.2: rank 32 differs from the checkpoint rank 16"):
        svdquant.write_checkpoint(str(tmp_path / "other"), [w_unsigned], rank=16, precision="int4")


def test_calibration_absmax_and_samples(tmp_path):
    import st_files
    W, b, x = random_layer(3)
    absmax = np.abs(x).max(axis=0).astype(np.float32)
    path = tmp_path / "calib.safetensors"
    st_files.write(path, {"fc.input_absmax": ("F32", absmax), "fc.input_samples": ("F32", x)})
    cal = svdquant.Calibration(str(path))
    assert cal.has("fc") and not cal.has("other") and cal.modules() == ["fc"]
    np.testing.assert_array_equal(cal.absmax("fc", K), absmax)
    np.testing.assert_array_equal(cal.samples("fc", K, 16), x[:16])
    w_cal, q_cal = svdquant.quantize_linear(W, b, prefix="fc", act_absmax=cal.absmax("fc", K),
                                            samples=cal.samples("fc", K, 128))
    w_free, q_free = svdquant.quantize_linear(W, b, prefix="fc")
    assert q_cal["alpha_errors"], "the alpha grid is searched with calibration statistics"
    assert q_cal["svdquant"] < q_cal["rtn"]
    with pytest.raises(svdquant.ConfigError, match="other"):
        cal.absmax("other", K)


def test_quantize_errors():
    W, b, _ = random_layer()
    with pytest.raises(svdquant.UnsupportedError,
                       match="fc: K = 500 is not a multiple of the int4 group size 64; keep it in 16 bits"):
        svdquant.quantize_linear(W[:, :500], prefix="fc")
    with pytest.raises(svdquant.FormatError, match="weight: expected a 2-D array"):
        svdquant.quantize_linear(W[0])
    with pytest.raises(svdquant.FormatError, match=r"bias: expected shape \[192\], found \[191\]"):
        svdquant.quantize_linear(W, b[:191])
    with pytest.raises(svdquant.FormatError, match="weight: expected a floating-point array"):
        svdquant.quantize_linear(W.astype(np.int32))
    with pytest.raises(svdquant.ConfigError, match=r"precision: unknown value 'int3' \(accepted: int4, nvfp4\)"):
        svdquant.quantize_linear(W, precision="int3")
    with pytest.raises(svdquant.ConfigError, match="dtype: unknown value 'float32'"):
        svdquant.quantize_linear(W, dtype="float32")
    with pytest.raises(svdquant.Error, match="unsigned"):
        svdquant.quantize_linear(W, precision="nvfp4", act_unsigned=True)


def test_family_defaults_and_patterns():
    fam = svdquant.family_defaults(json.dumps({"_class_name": "FluxTransformer2DModel"}))
    assert fam["family"] == "flux" and "x_embedder" in fam["skip"] and fam["skip_top_level"] == ["proj_out"]
    assert fam["act_unsigned"] == ["ff.net.2", "ff_context.net.2"]
    assert svdquant.family_defaults("")["family"] == ""
    assert svdquant.module_matches("ff.net.2", "transformer_blocks.7.ff.net.2")
    assert not svdquant.module_matches("ff.net.2", "transformer_blocks.7.ff.net.20")
    assert svdquant.module_matches("transformer_blocks.*.ff", "transformer_blocks.3.ff.net.0.proj")
    with pytest.raises(svdquant.ConfigError, match="invalid JSON"):
        svdquant.family_defaults("{nope")
