"""rcot_jax.data.sources: embedded photographs, decoding, folders of clean images and of pairs, bad input."""
import itertools
import os

import numpy as np
import pytest
from PIL import Image

from fakes import HW, rain_folders, save_image
from rcot_jax.configs import derain
from rcot_jax.data import pipeline, sources


# ------------------------------------------------------------------------------------------- embedded, decoding
def test_embedded_splits():
    train_src, held = sources.EmbeddedSource("train"), sources.EmbeddedSource("heldout")
    assert held.names == ["astronaut.png", "chelsea.png", "coffee.png"]
    assert len(train_src) >= 10 and not set(train_src.names) & set(held.names)
    for src in (train_src, held):
        for i in range(len(src)):
            img = src[i]["target"]
            assert img.dtype == np.uint8 and img.shape[2] == 3 and tuple(img.shape[:2]) == tuple(src.sizes[i])
            assert img.shape[0] % 16 == 0 and img.shape[1] % 16 == 0 and max(img.shape[:2]) <= 512
            assert img.std() > 5 and not img.flags.writeable
    assert held[0]["target"] is held[0]["target"]                  # decoded once
    with pytest.raises(ValueError, match="valid"):
        sources.EmbeddedSource("valid")


def test_decoding_converts_every_mode_to_rgb_uint8(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (20, 20), dtype=np.uint8)
    save_image(tmp_path / "grey.png", grey)
    save_image(tmp_path / "rgba.png", np.concatenate([rgb, np.full((20, 20, 1), 7, np.uint8)], axis=2))
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(tmp_path / "palette.png")
    grey16 = (grey.astype(np.uint16) * 257 + (grey < 255) * 100).astype(np.uint16)   # rounds back to grey
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    Image.fromarray(rgb).save(tmp_path / "photo.webp", lossless=True)
    dec = {f: sources.decode_image(str(tmp_path / f), f) for f in os.listdir(tmp_path)}
    assert all(v.dtype == np.uint8 and v.shape == (20, 20, 3) for v in dec.values())
    np.testing.assert_array_equal(dec["grey.png"], np.repeat(grey[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(dec["rgba.png"], rgb)
    np.testing.assert_array_equal(dec["grey16.png"][:, :, 0], grey)          # scaled by 1/257, not clipped
    np.testing.assert_array_equal(dec["photo.webp"], rgb)
    palette = np.asarray(Image.open(tmp_path / "palette.png").convert("RGB"))
    np.testing.assert_array_equal(dec["palette.png"], palette)
    # CMYK JPEG: the right colours (not the 4 channels taken as RGBA, not inverted); JPEG rounding aside.
    assert np.abs(dec["cmyk.jpg"].astype(int) - rgb).mean() < 12


def test_bad_files_are_named(tmp_path):
    ok = tmp_path / "ok.jpg"
    save_image(ok, quality=95)
    data = ok.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[:len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(sources.ImageError, match=r"truncated.jpg: cannot decode image"):
        sources.decode_image(str(tmp_path / "truncated.jpg"), str(tmp_path / "truncated.jpg"))
    with pytest.raises(sources.ImageError, match=r"empty.png: empty file"):
        sources.decode_image(str(tmp_path / "empty.png"), str(tmp_path / "empty.png"))
    with pytest.raises(sources.ImageError, match=r"2 bad input\(s\): .*empty.png: empty file.*notes.png: not a "
                                                 r"readable image"):
        sources.clean_folder(str(tmp_path))
    src = sources.clean_folder(str(tmp_path), bad_files="skip")      # decoded in full: the truncated one too
    assert src.names == ["ok.jpg"]


def test_folder_errors(tmp_path):
    with pytest.raises(sources.ImageError, match=r"config.data.train_dir='.*missing' does not exist"):
        sources.clean_folder(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(sources.ImageError, match="holds no images"):
        sources.clean_folder(str(tmp_path / "empty"))
    save_image(tmp_path / "dup" / "a.png")
    save_image(tmp_path / "dup" / "a.jpg")
    with pytest.raises(sources.ImageError, match=r"a.jpg and .*a.png: two images with the same name"):
        sources.clean_folder(str(tmp_path / "dup"))


# ------------------------------------------------------------------------------------------------ paired folders
def test_paired_folders_match_by_template_and_file_list(tmp_path):
    deg, tgt = rain_folders(tmp_path)
    src = sources.paired_folders(deg, tgt, "rain-{id} -> norain-{id}", degradation="rain")
    assert src.kind == "paired" and len(src) == 4 and src.names == ["rain-1", "rain-2", "rain-3", "rain-4"]
    r = src[2]
    np.testing.assert_array_equal(r["target"], np.asarray(Image.open(os.path.join(tgt, "norain-3.png"))))
    assert r["degraded"].shape == r["target"].shape == (*HW, 3)
    (tmp_path / "list.txt").write_text("rainy/rain-2.png\nrain-4\n")
    assert sources.paired_folders(deg, tgt, "rain-{id} -> norain-{id}", str(tmp_path / "list.txt")).names == \
        ["rain-2", "rain-4"]
    with pytest.raises(sources.ImageError, match=r"rain-1.png: no target 'rain-1'"):
        sources.paired_folders(deg, tgt)                            # the same names: nothing matches
    with pytest.raises(ValueError, match=r"config.data.match='rain-\{id\}': expected"):
        sources.parse_match("rain-{id}")


def test_paired_folders_many_to_one_and_bad_pairs(tmp_path, caplog):
    hazy, clear = tmp_path / "hazy", tmp_path / "clear"
    for i in range(3):
        save_image(clear / f"{i:04d}.png", seed=i)
        for beta in ("0.8", "0.9"):
            save_image(hazy / f"{i:04d}_{beta}_0.04.jpg", seed=i)
    src = sources.paired_folders(str(hazy), str(clear), "{id}_{beta}_{a} -> {id}")
    assert len(src) == 6 and len({e[0] for e in src.entries}) == 3
    save_image(hazy / "0007_0.8_0.04.jpg")                                 # no target
    save_image(hazy / "0002_0.7_0.04.jpg", hw=(32, 32))                    # wrong size
    with pytest.raises(sources.ImageError, match=r"2 bad input.*0002_0.7_0.04.jpg: 32x32 but its target .*0002.png "
                                                 r"is 48x64.*0007_0.8_0.04.jpg: no target '0007'"):
        sources.paired_folders(str(hazy), str(clear), "{id}_{beta}_{a} -> {id}")
    assert len(sources.paired_folders(str(hazy), str(clear), "{id}_{beta}_{a} -> {id}", bad_files="skip")) == 6
    assert "skipped 2 bad input(s)" in caplog.text


def test_unpaired_folders_never_show_a_degraded_image_with_its_own_target(tmp_path):
    deg, tgt = rain_folders(tmp_path, n=6)
    os.rename(tgt, tmp_path / "clean")
    for i in range(1, 7):    # the clean folder holds the true targets under the degraded images' names
        os.rename(tmp_path / "clean" / f"norain-{i}.png", tmp_path / "clean" / f"rain-{i}.png")
    c = derain.get_config("tiny")
    c.data.update(source="unpaired_folders", degraded_dir=deg, target_dir=str(tmp_path / "clean"))
    (component,) = pipeline.train_components(c.data)
    batches = list(itertools.islice(pipeline.train_dataset(c, [component]), 6))
    src = component[0]
    for b in batches:
        assert not b["paired"].any()
        for s, t in zip(b["source"], b["target_source"]):
            assert src.names[s] != src.targets.names[t]
    assert len({int(t) for b in batches for t in b["target_source"]}) >= 4
