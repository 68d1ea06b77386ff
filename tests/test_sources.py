"""Data sources, decoding, bad input, the paper's dataset layouts prepared with the TFDS builder, and training on
every source end to end (tiny config)."""
import csv
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from rcot_jax import evaluate, train
from rcot_jax.configs import allinone, deblur, dehaze, denoise, derain, lowlight, sr
from rcot_jax.data import builders, pipeline, sources

HW = (48, 64)          # fabricated images: small, and one bucket (64 x 64) for every whole-image evaluation


def _save(path, arr=None, hw=HW, seed=0, **kwargs):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    if arr is None:
        arr = np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)
    Image.fromarray(arr).save(str(path), **kwargs)
    return arr


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
    _save(tmp_path / "grey.png", grey)
    _save(tmp_path / "rgba.png", np.concatenate([rgb, np.full((20, 20, 1), 7, np.uint8)], axis=2))
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
    _save(ok, quality=95)
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
    _save(tmp_path / "dup" / "a.png")
    _save(tmp_path / "dup" / "a.jpg")
    with pytest.raises(sources.ImageError, match=r"a.jpg and .*a.png: two images with the same name"):
        sources.clean_folder(str(tmp_path / "dup"))


# ------------------------------------------------------------------------------------------------ paired folders
def _rain_folders(root, n=4):
    for i in range(1, n + 1):
        clean = _save(root / "gt" / f"norain-{i}.png", seed=i)
        _save(root / "rainy" / f"rain-{i}.png", np.clip(clean.astype(int) + 40, 0, 255).astype(np.uint8))
    return str(root / "rainy"), str(root / "gt")


def test_paired_folders_match_by_template_and_file_list(tmp_path):
    deg, tgt = _rain_folders(tmp_path)
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
        _save(clear / f"{i:04d}.png", seed=i)
        for beta in ("0.8", "0.9"):
            _save(hazy / f"{i:04d}_{beta}_0.04.jpg", seed=i)
    src = sources.paired_folders(str(hazy), str(clear), "{id}_{beta}_{a} -> {id}")
    assert len(src) == 6 and len({e[0] for e in src.entries}) == 3
    _save(hazy / "0007_0.8_0.04.jpg")                                 # no target
    _save(hazy / "0002_0.7_0.04.jpg", hw=(32, 32))                    # wrong size
    with pytest.raises(sources.ImageError, match=r"2 bad input.*0002_0.7_0.04.jpg: 32x32 but its target .*0002.png "
                                                 r"is 48x64.*0007_0.8_0.04.jpg: no target '0007'"):
        sources.paired_folders(str(hazy), str(clear), "{id}_{beta}_{a} -> {id}")
    assert len(sources.paired_folders(str(hazy), str(clear), "{id}_{beta}_{a} -> {id}", bad_files="skip")) == 6
    assert "skipped 2 bad input(s)" in caplog.text


def test_unpaired_folders_never_show_a_degraded_image_with_its_own_target(tmp_path):
    deg, tgt = _rain_folders(tmp_path, n=6)
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


# ------------------------------------------------------------------------------------- the paper's dataset layouts
def fabricate(name, root, n=2):
    """A tiny copy of dataset `name`'s layout (real file naming, small random images) under `root`."""
    layout = builders.LAYOUTS[name]
    for split, spec in layout.splits.items():
        folder = os.path.join(root, spec[0])
        for i in range(1, n + 1):
            if len(spec) == 1:
                _save(os.path.join(folder, "part", f"img{i:03d}.{'png' if i % 2 else 'jpg'}"), seed=i)
                continue
            fields = {"id": f"{i:04d}", "seq": f"GOPR{i % 2:04d}", "beta": "0.8", "a": "0.04"}
            target = _save(os.path.join(folder, spec[2].format(**fields) + ".png"), seed=i)
            small = np.clip(target[::layout.scale, ::layout.scale].astype(int) + 25, 0, 255).astype(np.uint8)
            _save(os.path.join(folder, spec[1].format(**fields) + ".png"), small)
            if "beta" in spec[1]:                                     # many hazy images share one clear image
                _save(os.path.join(folder, spec[1].format(**{**fields, "beta": "0.6"}) + ".png"), small)
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Every dataset fabricated and prepared into one data_dir."""
    root = tmp_path_factory.mktemp("datasets")
    for name in builders.LAYOUTS:
        builders.prepare(name, fabricate(name, str(root / "manual" / name)), str(root / "data"))
    return str(root / "data")


@pytest.mark.parametrize("name", sorted(builders.LAYOUTS))
def test_every_layout_prepares(name, prepared):
    layout = builders.LAYOUTS[name]
    for split, spec in layout.splits.items():
        src = sources.tfds_source(name, split, prepared)
        assert len(src) == (4 if len(spec) == 3 and "beta" in spec[1] else 2)
        assert src.kind == ("paired" if layout.degradation else "clean") and src.degradation == layout.degradation
        for i in range(len(src)):
            r = src[i]
            assert r["target"].shape == (*HW, 3) and tuple(src.sizes[i]) == HW and r["name"] == src.names[i]
            if layout.degradation:
                assert r["degraded"].shape == r["target"].shape
    with pytest.raises(ValueError, match="has no split 'valid'"):
        sources.tfds_source(name, "valid", prepared)


def test_div2k_inputs_are_upsampled_to_the_target_size(prepared):
    r = sources.tfds_source("div2k_x4", "test", prepared)[0]
    assert r["degraded"].shape == r["target"].shape
    assert np.abs(r["degraded"].astype(int) - r["target"]).mean() < np.abs(
        r["degraded"].astype(int) - np.roll(r["target"], 7, axis=1)).mean()


def test_a_failed_preparation_leaves_nothing_that_loads(tmp_path):
    manual = fabricate("rain100l", str(tmp_path / "manual"))
    bad = os.path.join(manual, "test", "rainy", "rain-0002")
    os.remove(bad + ".png")
    data = (tmp_path / "x.jpg", _save(tmp_path / "x.jpg", quality=95))[0].read_bytes()
    open(bad + ".jpg", "wb").write(data[:len(data) // 2])           # the header reads, the pixels are cut off
    with pytest.raises(sources.ImageError, match="rain-0002.jpg: cannot decode image"):
        builders.prepare("rain100l", manual, str(tmp_path / "data"))
    assert os.listdir(tmp_path / "data") == []                       # no temporary folder left either
    with pytest.raises(FileNotFoundError, match=r"no prepared dataset .* python -m rcot_jax.prepare "
                                                r"--dataset=rain100l"):
        sources.tfds_source("rain100l", "train", str(tmp_path / "data"))
    open(bad + ".jpg", "wb").write(b"")
    with pytest.raises(sources.ImageError, match=r"rain-0002.jpg: empty file .*--bad_files=skip skips them"):
        builders.prepare("rain100l", manual, str(tmp_path / "data"))
    path = builders.prepare("rain100l", manual, str(tmp_path / "data"), bad_files="skip")
    assert len(sources.tfds_source("rain100l", "test", str(tmp_path / "data"))) == 1 and os.path.isdir(path)
    with pytest.raises(ValueError, match="unknown dataset 'gopr'"):
        builders.prepare("gopr", manual, str(tmp_path / "data"))


def _pairs(root, names, hw=(8, 8)):
    """Writes each (degraded, target) relative path pair under `root` as a tiny image (targets once)."""
    for degraded, target in names:
        _save(root / degraded, hw=hw, seed=1)
        if not (root / target).exists():
            _save(root / target, hw=hw, seed=2)


@pytest.mark.parametrize("name,split,names", [
    # RESIDE OTS as distributed, and the README's folders with the part subfolders kept
    ("reside_ots", "train", [(f"synthetic/part{i % 4 + 1}/{i:04d}_0.8_0.04.jpg", f"original/{i:04d}.jpg")
                             for i in range(1, 4)] + [("synthetic/part1/0001_0.6_0.2.jpg", "original/0001.jpg")]),
    ("reside_ots", "train", [(f"hazy/part{i}/{i:04d}_0.8_0.04.jpg", f"clear/{i:04d}.jpg") for i in range(1, 5)]),
    # Rain100L as the official code reads it
    ("rain100l", "train", [(f"train/rainy/rain-{i}.png", f"train/gt/norain-{i}.png") for i in range(1, 5)]
     + [(f"test/input/{i}.png", f"test/target/{i}.png") for i in range(1, 3)]),
    # SOTS as PromptIR ships it
    ("sots_outdoor", "test", [(f"input/{i:04d}_0.8_0.2.jpg", f"target/{i:04d}.png") for i in range(1, 5)]),
])
def test_prepare_takes_each_layout_a_dataset_is_distributed_in(name, split, names, tmp_path):
    _pairs(tmp_path / "manual", names)
    builders.prepare(name, str(tmp_path / "manual"), str(tmp_path / "data"))
    src = sources.tfds_source(name, split, str(tmp_path / "data"))
    assert len(src) == len([d for d in names if d[0].split("/")[0] != "test" or split == "test"]) == 4
    assert src.kind == "paired" and src[0]["degraded"].shape == src[0]["target"].shape


def test_prepare_keeps_the_pairs_of_a_file_list_and_names_a_layout_it_does_not_know(tmp_path):
    """As the official hazy_outside.txt: 300 pairs listed, 335 present; an unknown layout lists the accepted ones."""
    names = [(f"synthetic/part{i % 4 + 1}/{i:04d}_0.8_0.04.jpg", f"original/{i:04d}.jpg") for i in range(1, 336)]
    _pairs(tmp_path / "manual", names, hw=(4, 4))
    listing = tmp_path / "hazy_outside.txt"
    listing.write_text("".join(f"{d.split('/', 1)[1]}\n" for d, _ in names[:300]))
    builders.prepare("reside_ots", str(tmp_path / "manual"), str(tmp_path / "data"), file_list=str(listing))
    src = sources.tfds_source("reside_ots", "train", str(tmp_path / "data"))
    assert len(src) == 300 and "0301_0.8_0.04" not in " ".join(src.names)

    _pairs(tmp_path / "odd", [("foggy/1.png", "sharp/1.png")])
    with pytest.raises(sources.ImageError, match=r"--manual_dir=.*odd: no train pairs in the layouts this dataset "
                                                 r"comes in: hazy/0025.*synthetic/partN/.*the folder holds "
                                                 r"\['foggy', 'sharp'\]"):
        builders.prepare("reside_ots", str(tmp_path / "odd"), str(tmp_path / "data2"))


@pytest.mark.slow
def test_the_readme_prepare_command_with_a_literal_tilde(tmp_path, monkeypatch):
    """`--manual_dir=~/Rain100L --data_dir=~/rcot_data` as the README writes it: the shell leaves `~` alone after
    `=`; the command expands it, and a config's `data.data_dir=~/rcot_data` then finds the dataset."""
    fabricate("rain100l", str(tmp_path / "Rain100L"))
    (cwd := tmp_path / "cwd").mkdir()
    env = {**os.environ, "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "rcot_jax.prepare", "--dataset=rain100l", "--manual_dir=~/Rain100L",
                          "--data_dir=~/rcot_data"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert os.listdir(cwd) == [] and (tmp_path / "rcot_data" / builders.BUILDER / "rain100l").is_dir()
    monkeypatch.setenv("HOME", str(tmp_path))
    config = _tiny(derain, source="tfds", name="rain100l", data_dir="~/rcot_data")
    assert len(pipeline.eval_components(config.data)[0][0]) == 2


def _tiny(module, **data):
    c = module.get_config("tiny")
    c.num_train_steps, c.eval_every_steps, c.checkpoint_every_steps = 2, 2, 2
    c.data.update(eval_batch_size=4, **data)
    return c


def test_training_and_evaluation_from_every_prepared_dataset(prepared, tmp_path):
    """One tiny run mixes every paired training set and evaluates on their test splits; one denoises with the
    clean sets (BSD400 + WED for training, CBSD68 and Kodak24 for testing) and is evaluated on the test-only sets."""
    paired = [n for n, l in builders.LAYOUTS.items() if l.degradation and "train" in l.splits]
    c = _tiny(allinone, mix=tuple(f"tfds:{n}" for n in paired), data_dir=prepared, batch_size=16)
    ids = next(iter(pipeline.train_dataset(c)))["de_id"]
    assert set(ids) == {int(pipeline.DEGRADATION_IDS[builders.LAYOUTS[n].degradation]) for n in paired}
    assert int(train.train_and_evaluate(c, str(tmp_path / "paired")).step) == 2
    line = json.loads(open(tmp_path / "paired" / "eval.jsonl").readline())
    assert {"psnr/blur", "psnr/rain", "psnr/lowlight", "psnr/sr_x4"} <= set(line)     # OTS has no test split
    assert line.pop("profile") == "rgb" and all(np.isfinite(v) for v in line.values())
    for eval_name in ("cbsd68", "kodak24"):
        c = _tiny(denoise, source="tfds", name="bsd400_wed", eval_name=eval_name, data_dir=prepared)
        assert [s.names for s, _ in pipeline.eval_components(c.data)] == \
            [sources.tfds_source(eval_name, "test", prepared).names]
    train.train_and_evaluate(c, str(tmp_path / "clean"))
    line = json.loads(open(tmp_path / "clean" / "eval.jsonl").readline())
    assert line["input_psnr"] < 25 and np.isfinite(line["psnr"])                  # sigma 25 on whole images
    for eval_name in ("cbsd68", "sots_outdoor"):      # the test-only sets, evaluated from the trained run
        c.data.eval_name = eval_name
        result = evaluate.evaluate_checkpoint(c, str(tmp_path / "clean"))
        assert np.isfinite(result["psnr"]) and os.path.isdir(tmp_path / "clean" / "eval" / "test_2_rgb")


def test_training_from_folders_and_a_mix(prepared, tmp_path):
    deg, tgt = _rain_folders(tmp_path / "rain")
    c = _tiny(derain, source="paired_folders", degraded_dir=deg, target_dir=tgt, match="rain-{id} -> norain-{id}",
              eval_degraded_dir=deg, eval_target_dir=tgt)
    train.train_and_evaluate(c, str(tmp_path / "paired"))
    e = pipeline.EvalSet(c)
    assert e.shapes == [HW] * 4 and e.degradations == ["rain"] * 4            # whole images, not crops
    c = _tiny(allinone, mix=("tfds:rain100l", "noise25"), mix_weights=(2.0, 1.0), data_dir=prepared)
    batches = list(itertools.islice(pipeline.train_dataset(c), 3))
    ids = np.concatenate([b["de_id"] for b in batches])
    assert set(ids) == {3, 1} and (ids == 3).mean() > 0.5
    train.train_and_evaluate(c, str(tmp_path / "mix"))
    line = json.loads(open(tmp_path / "mix" / "eval.jsonl").readline())
    assert {"psnr/rain", "psnr/noise25"} <= set(line)


def test_eval_command_writes_per_image_rows_a_summary_and_images(tmp_path):
    deg, tgt = _rain_folders(tmp_path / "rain", n=3)
    os.rename(os.path.join(deg, "rain-2.png"), os.path.join(deg, "rain-2.jpg"))      # other sizes and formats
    c = _tiny(derain, source="paired_folders", degraded_dir=deg, target_dir=tgt, match="rain-{id} -> norain-{id}",
              eval_degraded_dir=deg, eval_target_dir=tgt)
    c.model.backbone = "mprnet"
    train.train_and_evaluate(c, str(tmp_path / "run"))
    c.eval.metric_profile, c.eval.step = "y", 1
    with pytest.raises(FileNotFoundError, match=r"config.eval.step=1: no checkpoint 1 .* \[2\]"):
        evaluate.evaluate_checkpoint(c, str(tmp_path / "run"))
    c.eval.step = 2
    result = evaluate.evaluate_checkpoint(c, str(tmp_path / "run"))
    c.eval.metric_profile = "nafnet"
    other = evaluate.evaluate_checkpoint(c, str(tmp_path / "run"))      # a second profile of the same step
    assert sorted(os.listdir(tmp_path / "run" / "eval")) == ["test_2_nafnet", "test_2_y"]
    lines = [json.loads(line) for line in open(tmp_path / "run" / "eval.jsonl")]
    assert [(line["step"], line["profile"], line.get("mode")) for line in lines] == [
        (2, "rgb", None), (2, "y", "eval"), (2, "nafnet", "eval")]
    assert lines[1]["ssim"] == round(result["ssim"], 4) and lines[2]["ssim"] == round(other["ssim"], 4)
    out = tmp_path / "run" / "eval" / "test_2_y"
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    summary = json.load(open(out / "summary.json"))
    assert [r["name"] for r in rows] == ["rain-1", "rain-2", "rain-3"] and summary["profile"] == "y"
    for k in ("psnr", "ssim", "input_psnr", "input_ssim"):
        assert summary["means"][k] == pytest.approx(np.mean([float(r[k]) for r in rows]), abs=1e-5)
        assert result[k] == summary["means"][k]
    assert sorted(os.listdir(out / "images")) == ["rain-1.png", "rain-2.png", "rain-3.png"]
    assert Image.open(out / "images" / "rain-2.png").size == (HW[1], HW[0])
    assert not os.path.exists(str(out) + ".partial")


def test_small_images_are_reported_with_their_own_size(tmp_path, caplog):
    _save(tmp_path / "small.png", hw=(20, 20))
    _save(tmp_path / "big.png", hw=(40, 40))
    c = denoise.get_config("tiny")
    c.data.update(source="clean_folder", train_dir=str(tmp_path))
    next(iter(pipeline.train_dataset(c)))
    assert "skipping 1 of 2 images smaller than config.data.patch_size=32: small.png (20x20)" in caplog.text
