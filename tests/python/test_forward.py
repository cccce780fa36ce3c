"""Layer.forward on numpy arrays, against the CLI (`svdquant forward`) and the fixtures' references."""
import numpy as np
import pytest

import svdquant
from conftest import PREFIX, cli_forward, ulp_distance


def test_cpu_forward_equals_cli_bitwise(fixture, cli, tmp_path):
    layer = svdquant.Layer(svdquant.Checkpoint(str(fixture.folder)), PREFIX, backend="cpu")
    y = layer(fixture.x, dtype="bfloat16")
    assert y.dtype == np.uint16 and y.shape == (fixture.x.shape[0], layer.out_features)
    y_cli = cli_forward(cli, fixture.folder, PREFIX, fixture.x, "BF16", tmp_path)
    np.testing.assert_array_equal(y, y_cli)


@pytest.mark.parametrize("accumulate", ["fp32", "half"])
def test_accumulate_modes_equal_cli(fixtures, cli, tmp_path, accumulate):
    f = fixtures["int4_k256_n256_r32"]
    layer = svdquant.Layer(svdquant.Checkpoint(str(f.folder)), PREFIX, backend="cpu", accumulate=accumulate)
    assert layer.accumulate == accumulate
    y_cli = cli_forward(cli, f.folder, PREFIX, f.x, "BF16", tmp_path, accumulate=accumulate)
    np.testing.assert_array_equal(layer(f.x, dtype="bfloat16"), y_cli)


@pytest.mark.parametrize("activations", ["auto", "checkpoint", "fp8"])
def test_activation_modes_equal_cli(fixtures, cli, tmp_path, activations):
    f = fixtures["int4_unsigned_k512_n128_r32"]
    layer = svdquant.Layer(svdquant.Checkpoint(str(f.folder)), PREFIX, backend="cpu", activations=activations)
    assert layer.activations == ("checkpoint" if activations == "auto" else activations)  # the CPU's auto
    y_cli = cli_forward(cli, f.folder, PREFIX, f.x, "BF16", tmp_path, activations=activations)
    np.testing.assert_array_equal(layer(f.x, dtype="bfloat16"), y_cli)


def test_forward_matches_fixture_reference(fixture):
    # As tests/backend/cpu_fixture_test.cpp: within 1 ulp of the float64 result rounded to bf16,
    # and at least 90% bitwise equal.
    layer = svdquant.Layer(svdquant.Checkpoint(str(fixture.folder)), PREFIX, backend="cpu")
    d = ulp_distance(layer(fixture.x, dtype="bfloat16"), fixture.y_ref)
    assert d.max() <= 1
    assert (d == 0).mean() > 0.9


def test_layer_properties(fixtures):
    f = fixtures["int4_unsigned_k512_n128_r32"]
    ck = svdquant.Checkpoint(str(f.folder))
    assert ck.quantized_layers() == [PREFIX]
    assert ck.quantization_config["precision"] == "int4"
    layer = svdquant.Layer(ck, PREFIX, backend="cpu")
    assert (layer.in_features, layer.out_features, layer.rank) == (512, 128, 32)
    assert layer.precision == "int4" and layer.dtype == "bfloat16" and layer.act_unsigned and layer.has_bias
    assert layer.backend == "cpu" and layer.device_type == "cpu"
    w = ck.layer(PREFIX)
    assert (w.prefix, w.in_features, w.out_features, w.rank, w.act_unsigned) == (PREFIX, 512, 128, 32, True)
    tensors = w.tensors()
    assert tensors[f"{PREFIX}.qweight"][0] == "I8" and tensors[f"{PREFIX}.qweight"][1].shape == (128, 256)
    assert tensors[f"{PREFIX}.proj_up"][0] == "BF16" and tensors[f"{PREFIX}.proj_up"][1].dtype == np.uint16
    np.testing.assert_array_equal(tensors[f"{PREFIX}.proj_up"][1], f.tensors["canonical.proj_up"][1])
    # A Layer from the Weights computes the same as one from the checkpoint.
    np.testing.assert_array_equal(svdquant.Layer(w, backend="cpu")(f.x, dtype="bfloat16"), layer(f.x, dtype="bfloat16"))


def test_leading_dims_and_layouts(fixtures):
    f = fixtures["int4_k256_n256_r32"]
    layer = svdquant.Layer(svdquant.Checkpoint(str(f.folder)), PREFIX, backend="cpu")
    x = f.x[:36]  # 36 rows
    y2 = layer(x, dtype="bfloat16")
    y4 = layer(x.reshape(2, 3, 6, 256), dtype="bfloat16")
    assert y4.shape == (2, 3, 6, 256)
    np.testing.assert_array_equal(y4.reshape(36, 256), y2)
    y1 = layer(x[5], dtype="bfloat16")  # a single vector [K]
    assert y1.shape == (256,)
    np.testing.assert_array_equal(y1, y2[5])
    # A non-contiguous input (every other row of a bigger array) gives the same rows.
    big = np.zeros((72, 256), np.uint16)
    big[::2] = x
    np.testing.assert_array_equal(layer(big[::2], dtype="bfloat16"), y2)
    # Zero rows.
    assert layer(np.zeros((0, 256), np.uint16), dtype="bfloat16").shape == (0, 256)
    assert layer(np.zeros((4, 0, 256), np.uint16), dtype="bfloat16").shape == (4, 0, 256)


def test_out_argument(fixtures):
    f = fixtures["int4_k256_n256_r32"]
    layer = svdquant.Layer(svdquant.Checkpoint(str(f.folder)), PREFIX, backend="cpu")
    out = np.zeros((f.x.shape[0], 256), np.uint16)
    ret = layer.forward(f.x, out=out, dtype="bfloat16")
    assert ret is out
    np.testing.assert_array_equal(out, layer(f.x, dtype="bfloat16"))
    with pytest.raises(svdquant.FormatError, match=r"out: expected shape \[37, 256\], found \[37, 128\]"):
        layer.forward(f.x, out=np.zeros((37, 128), np.uint16), dtype="bfloat16")
    with pytest.raises(svdquant.FormatError, match="out: must be contiguous"):
        layer.forward(f.x, out=np.zeros((256, 37), np.uint16).T, dtype="bfloat16")


def test_bfloat16_helpers_round_trip(fixtures):
    f = fixtures["int4_k256_n256_r32"]
    x32 = svdquant.from_bfloat16_bits(f.x)
    np.testing.assert_array_equal(svdquant.bfloat16_bits(x32), f.x)
    # Round to nearest, ties to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 -> 1.
    v = np.array([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, -2.5, np.inf], np.float32)
    np.testing.assert_array_equal(svdquant.from_bfloat16_bits(svdquant.bfloat16_bits(v)),
                                  np.array([1.0, 1.0 + 2.0**-6, -2.5, np.inf], np.float32))
    assert np.isnan(svdquant.from_bfloat16_bits(svdquant.bfloat16_bits(np.array([np.nan], np.float32))))[0]
