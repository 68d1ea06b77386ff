"""rcot_jax.export and rcot_jax.to_onnx: StableHLO and ONNX exports of the tiny Restormer and MPRNet maps reproduce
`inference.Restorer` (one polymorphic export at two sizes; a fixed-size export sets the tile and batch; ONNX run by
onnxruntime, also for a bf16 map); an untranslatable primitive, a damaged or truncated file, and a failed write are named
and leave nothing behind; the commands end to end (`export`, then `restore --exported` against `restore --workdir`)."""
import os

import numpy as np
import pytest
from PIL import Image

from fakes import command, photo, tiny_t_params
from rcot_jax import export, inference


@pytest.fixture(scope="module", params=["restormer", "mprnet"])
def tiny_maps(request):
    from rcot_jax import models
    from rcot_jax.configs import denoise
    c = denoise.get_config("tiny")
    c.model.backbone, c.model.remat = request.param, "full"     # as the task configs train them
    return models.build_models(c)[0], tiny_t_params(request.param)


def _save(path, data):
    export.write(str(path), data)
    return str(path)


# The Restormer's four compilations of its map (two sizes, exported and not) were among the fast tier's longest; its
# MPRNet one and the Restormer's ONNX export stay there.
@pytest.mark.parametrize("tiny_maps", [pytest.param("restormer", marks=pytest.mark.slow), "mprnet"], indirect=True)
def test_a_polymorphic_stablehlo_export_reproduces_the_restorer(tiny_maps, tmp_path):
    model, params = tiny_maps
    path = _save(tmp_path / "map.jax_exported", export.stablehlo(model, params, export.input_shape(0, 0, 1, True)))
    whole = inference.load_exported(path, tile=0)
    assert whole.tile is None and len(whole.mesh.devices.flat) == 1
    for hw in ((40, 56), (64, 48)):                 # one export, two sizes (tiles: the fixed-size and ONNX tests)
        x = photo(hw)
        np.testing.assert_allclose(whole(x), inference.Restorer(model, params, tile=0)(x), atol=1e-5)


def test_onnx_exports_run_by_onnxruntime_reproduce_the_restorer(tiny_maps, tmp_path):
    pytest.importorskip("onnxruntime")
    model, params = tiny_maps
    path = _save(tmp_path / "map.onnx", export.onnx_model(model, params, export.input_shape(0, 0, 1, True)))
    whole = inference.load_exported(path, tile=0)
    for hw in ((40, 56), (64, 48)):                 # one export, two sizes
        x = photo(hw)
        np.testing.assert_allclose(whole(x), inference.Restorer(model, params, tile=0)(x), atol=1e-4)
    path = _save(tmp_path / "fixed.onnx", export.onnx_model(model, params, export.input_shape(32, 48, 1, False)))
    restorer = inference.load_exported(path, overlap=8, batch_size=3)      # the batch axis stays dynamic
    assert restorer.tile == (32, 48) and restorer.batch_size == 3
    x = photo((70, 90))
    np.testing.assert_allclose(restorer(x), inference.Restorer(model, params, tile=(32, 48), overlap=8)(x),
                               atol=1e-4)


def test_a_fixed_size_export_sets_the_tile_and_batch_and_refuses_others(tiny_map, tmp_path):
    model, params = tiny_map
    path = _save(tmp_path / "map.jax_exported", export.stablehlo(model, params, export.input_shape(32, 48, 2, False),
                                                                 platforms=("cpu",)))
    restorer = inference.load_exported(path, overlap=8)
    assert restorer.tile == (32, 48) and restorer.batch_size == 2
    x = photo((50, 100))
    np.testing.assert_allclose(restorer(x), inference.Restorer(model, params, tile=(32, 48), overlap=8)(x),
                               atol=1e-5)
    import jax                                      # JAX alone runs the file (the SHA-256 trailer is ignored)
    batch = np.stack([x[:32, :48], x[-32:, -48:]])
    np.testing.assert_allclose(jax.export.deserialize(bytearray(open(path, "rb").read())).call(batch),
                               restorer._run(batch), atol=1e-6)
    with pytest.raises(ValueError, match="takes 32x48 inputs only"):
        inference.load_exported(path, tile=64)
    with pytest.raises(ValueError, match="batches of 2 only"):
        inference.load_exported(path, overlap=8, batch_size=4)
    with pytest.raises(ValueError, match="needs a square export"):
        inference.load_exported(path, overlap=8, ensemble=True)
    for h, w in ((0, 32), (40, 32)):
        with pytest.raises(ValueError, match="multiples of 16"):
            export.input_shape(h, w, 1, False)


def test_a_map_trained_in_bf16_is_exported_in_float32(tiny_map, tmp_path):
    pytest.importorskip("onnxruntime")
    import jax.numpy as jnp
    model, params = tiny_map
    path = _save(tmp_path / "bf16.onnx", export.onnx_model(model.clone(dtype=jnp.bfloat16), params, (1, 32, 32, 3)))
    x = photo((32, 32))
    restored = inference.load_exported(path, overlap=8)(x)
    np.testing.assert_allclose(restored, inference.Restorer(model, params, tile=0)(x), atol=1e-4)


def test_a_primitive_without_translation_is_named_with_its_layer(tiny_map, monkeypatch):
    pytest.importorskip("onnx")
    from rcot_jax import to_onnx
    monkeypatch.delitem(to_onnx.RULES, "logistic")
    with pytest.raises(to_onnx.UnsupportedPrimitive, match=r"'logistic' in layer MPRNetRCOT/\w+"):
        export.onnx_model(*tiny_map, (1, 32, 32, 3))


def test_damaged_and_truncated_exports_are_named(tiny_map, tmp_path):
    pytest.importorskip("onnxruntime")
    model, params = tiny_map
    blobs = {"map.jax_exported": export.stablehlo(model, params, (1, 32, 32, 3), platforms=("cpu",)),
             "map.onnx": export.onnx_model(model, params, (1, 32, 32, 3))}
    for name, data in blobs.items():
        flipped = bytearray(data)
        flipped[len(data) // 2:len(data) // 2 + 16] = bytes(16)        # inside the weights
        for kind, bad in (("truncated", data[:len(data) // 2]), ("damaged", bytes(flipped)), ("empty", b"")):
            path = _save(tmp_path / f"{kind}_{name}", bad)
            with pytest.raises(ValueError, match=f"{path}: (damaged|not a complete)"):
                inference.load_exported(path)


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "map.jax_exported"
    path.write_bytes(b"the previous export")
    with pytest.raises(TypeError):
        export.write(str(path), "not bytes")
    assert path.read_bytes() == b"the previous export" and os.listdir(tmp_path) == ["map.jax_exported"]


def _command(name, *args):
    proc = command(name, *args)
    return proc.returncode, proc.stderr


@pytest.mark.slow
def test_the_commands_export_a_run_and_restore_with_it(saved_run, tmp_path):
    Image.fromarray((photo((70, 90)) * 255).astype(np.uint8)).save(tmp_path / "photo.png")
    stablehlo, onnx_file = tmp_path / "map.jax_exported", tmp_path / "map.onnx"
    for args in ([f"--output={stablehlo}", "--polymorphic"],
                 [f"--output={onnx_file}", "--format=onnx", "--height=64", "--width=64"]):
        rc, err = _command("export", f"--workdir={saved_run}", *args)
        assert rc == 0, err[-3000:]
    rc, err = _command("export", f"--workdir={saved_run}", f"--output={stablehlo}", "--polymorphic")
    assert rc == 1 and f"--output={stablehlo} exists" in err          # kept unless --overwrite
    rc, err = _command("export", f"--workdir={saved_run}", f"--output={tmp_path / 'map.jax'}", "--format=onnx",
                       "--polymorphic")
    assert rc == 1 and "name ONNX exports *.onnx" in err and not os.path.exists(tmp_path / "map.jax")
    outputs = {}
    for name, source in (("workdir", f"--workdir={saved_run}"), ("stablehlo", f"--exported={stablehlo}"),
                         ("onnx", f"--exported={onnx_file}")):
        rc, err = _command("restore", source, f"--input={tmp_path / 'photo.png'}", f"--output={tmp_path / name}",
                           "--tile=64", "--overlap=16")
        assert rc == 0, err[-3000:]
        outputs[name] = np.asarray(Image.open(tmp_path / name / "photo.png"), np.int16)
    for name in ("stablehlo", "onnx"):
        assert np.abs(outputs[name] - outputs["workdir"]).max() <= 1, name
