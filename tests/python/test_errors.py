"""Errors from C++ arrive as svdquant exceptions (ValueError / NotImplementedError subclasses) with
the C++ message unchanged; bad arrays are refused with the problem named."""
import json
import re

import numpy as np
import pytest

import svdquant
import st_files
from conftest import PREFIX, run_cli


@pytest.fixture
def layer(fixtures):
    f = fixtures["int4_k256_n256_r32"]
    return svdquant.Layer(svdquant.Checkpoint(str(f.folder)), PREFIX, backend="cpu")


def test_exception_classes():
    assert issubclass(svdquant.FormatError, svdquant.Error) and issubclass(svdquant.FormatError, ValueError)
    assert issubclass(svdquant.ConfigError, svdquant.Error) and issubclass(svdquant.ConfigError, ValueError)
    assert issubclass(svdquant.UnsupportedError, svdquant.Error)
    assert issubclass(svdquant.UnsupportedError, NotImplementedError)
    assert issubclass(svdquant.Error, RuntimeError)


def test_wrong_dtype(layer):
    x = np.zeros((3, 256), np.float16)
    with pytest.raises(svdquant.FormatError, match="input x: dtype float16, but the layer dtype is bfloat16$"):
        layer(x)
    with pytest.raises(ValueError, match=re.escape("input x: dtype uint16, but the layer dtype is bfloat16 "
                                                   "(uint16 bits of bfloat16 need dtype='bfloat16')")):
        layer(np.zeros((3, 256), np.uint16))
    with pytest.raises(svdquant.FormatError, match="input x: dtype float32, but the layer dtype is bfloat16"):
        layer(np.zeros((3, 256), np.float32))
    with pytest.raises(svdquant.FormatError, match="dtype='float16', but the layer dtype is bfloat16"):
        layer(np.zeros((3, 256), np.uint16), dtype="float16")
    with pytest.raises(svdquant.FormatError, match=r"dtype='bfloat16' reinterprets 16-bit integer bits \(uint16\), "
                                                   r"but the array is float32"):
        layer(np.zeros((3, 256), np.float32), dtype="bfloat16")
    with pytest.raises(svdquant.ConfigError, match=r"dtype: unknown value 'bf16' \(accepted: bfloat16, float16\)"):
        layer(np.zeros((3, 256), np.uint16), dtype="bf16")
    with pytest.raises(svdquant.FormatError, match="input x: unsupported dtype complex64"):
        layer(np.zeros((3, 256), np.complex64))


def test_wrong_shape(layer):
    with pytest.raises(svdquant.FormatError, match=re.escape("input x: expected shape [..., 256], found [3, 128]")):
        layer(np.zeros((3, 128), np.uint16), dtype="bfloat16")
    with pytest.raises(svdquant.FormatError, match=re.escape("input x: expected shape [..., 256], found []")):
        layer(np.zeros((), np.uint16), dtype="bfloat16")


def test_not_an_array(layer):
    with pytest.raises(TypeError):
        layer("not an array")


def test_bad_options(fixtures):
    ck = svdquant.Checkpoint(str(fixtures["int4_k256_n256_r32"].folder))
    with pytest.raises(svdquant.UnsupportedError, match=r"^unknown backend 'nope' \(available: auto, cpu, cuda, "):
        svdquant.Layer(ck, PREFIX, backend="nope")
    with pytest.raises(svdquant.ConfigError, match=r"^accumulate: unknown value 'fp64'"):
        svdquant.Layer(ck, PREFIX, accumulate="fp64")
    with pytest.raises(svdquant.UnsupportedError, match="half accumulation is defined for 4-bit activations only"):
        svdquant.Layer(ck, PREFIX, backend="cpu", accumulate="half", activations="fp8")


def test_cuda_backend_without_a_gpu(fixtures):
    # Here (no Hopper GPU, or a build without CUDA) the CUDA backend refuses with its reason.
    ck = svdquant.Checkpoint(str(fixtures["int4_k256_n256_r32"].folder))
    try:
        svdquant.Layer(ck, PREFIX, backend="cuda")
    except svdquant.UnsupportedError as e:
        assert "cuda" in str(e)
    else:
        pytest.skip("a CUDA backend is usable here")


def test_missing_layer(fixtures):
    ck = svdquant.Checkpoint(str(fixtures["int4_k256_n256_r32"].folder))
    with pytest.raises(svdquant.Error, match="blocks.9.nothing"):
        ck.layer("blocks.9.nothing")


def test_missing_path():
    with pytest.raises(svdquant.FormatError, match="^/no/such/folder: no such file or folder$"):
        svdquant.Checkpoint("/no/such/folder")


def cli_error(cli, path):
    r = run_cli(cli, "inspect", path)
    assert r.returncode == 1
    m = re.search(r"svdquant: error: (.*)", r.stderr, re.S)
    assert m, r.stderr
    return m.group(1).strip()


def test_truncated_file_same_message_as_cli(fixtures, cli, tmp_path):
    good = fixtures["int4_k256_n256_r32"].folder / "transformer" / "diffusion_pytorch_model.safetensors"
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(svdquant.FormatError) as e:
        svdquant.Checkpoint(str(bad))
    assert str(e.value) == cli_error(cli, bad)
    assert "truncated.safetensors" in str(e.value)


def test_bad_header_same_message_as_cli(cli, tmp_path):
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(svdquant.FormatError) as e:
        svdquant.Checkpoint(str(bad))
    assert str(e.value) == cli_error(cli, bad)


def test_bad_quantization_config(fixtures, tmp_path):
    import shutil
    src = fixtures["int4_k256_n256_r32"].folder
    dst = tmp_path / "badcfg"
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "transformer" / "config.json").read_text())
    cfg["quantization_config"]["precision"] = "int3"
    (dst / "transformer" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(svdquant.ConfigError,
                       match=re.escape("quantization_config.precision: unknown value 'int3' (accepted: int4, nvfp4)")):
        svdquant.Checkpoint(str(dst))


def test_bad_layer_tensor_shape(fixtures, tmp_path):
    f = fixtures["int4_k256_n256_r32"]
    comp = tmp_path / "badshape" / "transformer"
    comp.mkdir(parents=True)
    tensors, _ = st_files.read(f.folder / "transformer" / "diffusion_pytorch_model.safetensors")
    dtype, smooth = tensors[f"{PREFIX}.smooth_factor"]
    tensors[f"{PREFIX}.smooth_factor"] = (dtype, smooth[:128])
    st_files.write(comp / "diffusion_pytorch_model.safetensors", tensors)
    (comp / "config.json").write_text((f.folder / "transformer" / "config.json").read_text())
    ck = svdquant.Checkpoint(str(comp.parent))
    with pytest.raises(svdquant.FormatError, match=re.escape(f"{PREFIX}.smooth_factor")):
        svdquant.Layer(ck, PREFIX, backend="cpu")
