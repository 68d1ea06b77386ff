"""rcot_jax.restore: image files and folders in and out (modes and bit depths kept, EXIF and ICC, unreadable files
named and skipped, outputs that would replace inputs refused), the command on a trained run. The restore path
itself (tiles, one compilation, the ensemble): tests/test_inference.py."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fakes import photo
from rcot_jax import inference, restore, train
from rcot_jax.configs import denoise

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_modes_and_bit_depths_round_trip(tiny_map, tmp_path):
    import tifffile
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)).save(src / "grey.png")
    rgba = rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(src / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (40, 50), dtype=np.uint16)).save(src / "grey16.png")
    tifffile.imwrite(src / "rgb16.tif", rng.integers(0, 65536, (40, 50, 3), dtype=np.uint16))
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(src / "photo.jpg")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    restorer = inference.Restorer(*tiny_map, tile=32, overlap=8)
    written, kept, failed = restore.restore_files(restorer, restore.list_inputs(str(src)), str(tmp_path / "out"))
    assert [os.path.basename(p) for p, _ in failed] == ["broken.png"] and len(written) == 5
    out = tmp_path / "out"
    assert Image.open(out / "grey.png").mode == "L" and Image.open(out / "grey16.png").mode.startswith("I;16")
    assert Image.open(out / "rgba.png").mode == "RGBA" and Image.open(out / "photo.jpg").size == (50, 40)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "rgba.png"))[:, :, 3], rgba[:, :, 3])
    assert tifffile.imread(out / "rgb16.tif").dtype == np.uint16 and tifffile.imread(out / "rgb16.tif").shape == \
        (40, 50, 3)
    before = (out / "grey.png").read_bytes()
    (out / "grey.png").write_bytes(b"mine")
    _, kept, _ = restore.restore_files(restorer, [str(src / "grey.png")], str(out))
    assert kept and (out / "grey.png").read_bytes() == b"mine"
    restore.restore_files(restorer, [str(src / "grey.png")], str(out), overwrite=True)
    assert (out / "grey.png").read_bytes() == before


@pytest.mark.slow
def test_the_command_restores_with_a_trained_run(tmp_path):
    c = denoise.get_config("tiny")
    c.model.backbone = "mprnet"
    c.num_train_steps = 1
    train.train_and_evaluate(c, str(tmp_path / "run"))
    Image.fromarray((photo((70, 90)) * 255).astype(np.uint8)).save(tmp_path / "photo.png")
    proc = subprocess.run([sys.executable, "-m", "rcot_jax.restore", f"--workdir={tmp_path / 'run'}",
                           f"--input={tmp_path / 'photo.png'}", f"--output={tmp_path / 'out'}", "--tile=64"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Image.open(tmp_path / "out" / "photo.png").size == (90, 70)


def test_exif_and_icc_are_kept_with_the_orientation_applied(tmp_path):
    """A phone photo rotated by its EXIF: the pixels are read upright, and the result keeps the camera's tags and
    colour profile but not the orientation, which would rotate it a second time."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "TestCam", 6              # Make; Orientation: rotate 90 degrees to view
    icc = b"\0" * 128 + b"fake profile"
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    for name in ("phone.jpg", "phone.png", "phone.webp"):
        Image.fromarray(pixels).save(tmp_path / name, exif=exif.tobytes(), icc_profile=icc)
        rgb, meta = restore.read_image(str(tmp_path / name))
        assert rgb.shape == (40, 30, 3)                     # upright
        restore.write_image(str(tmp_path / f"out_{name}"), rgb, meta)
        with Image.open(tmp_path / f"out_{name}") as out:
            assert out.size == (30, 40) and out.info.get("icc_profile") == icc, name
            assert out.getexif().get(0x010F) == "TestCam" and out.getexif().get(0x0112, 1) == 1, name


def test_an_output_folder_that_would_replace_the_inputs_and_an_empty_input_are_refused(tmp_path):
    (tmp_path / "photos").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "photos" / "a.png")
    inputs = restore.list_inputs(str(tmp_path / "photos"))
    for output in (tmp_path / "photos", tmp_path / "photos" / "."):
        with pytest.raises(ValueError, match=r"--output=.*: the restored images would replace their inputs "
                                             r"\(.*a\.png\)"):
            restore.check_output(inputs, str(output))
    restore.check_output(inputs, str(tmp_path / "restored"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"--input=.*empty: the folder holds no images \(png, jpg"):
        restore.list_inputs(str(tmp_path / "empty"))
