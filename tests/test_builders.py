"""rcot_jax.data.builders: the paper's dataset layouts (catalog.LAYOUTS) prepared with the TFDS builder, read back
through the catalog, and fed to the pipeline."""
import os
import subprocess
import sys

import numpy as np
import pytest

from fakes import HW, fabricate, save_image, tiny
from rcot_jax.configs import allinone, denoise, derain
from rcot_jax.data import builders, catalog, pipeline, sources
from rcot_jax.data.catalog import LAYOUTS
from rcot_jax.ids import DEGRADATION_IDS


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Every dataset fabricated and prepared into one data_dir."""
    root = tmp_path_factory.mktemp("datasets")
    for name in LAYOUTS:
        builders.prepare(name, fabricate(name, str(root / "manual" / name)), str(root / "data"))
    return str(root / "data")


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_layout_prepares(name, prepared):
    layout = LAYOUTS[name]
    for split, spec in layout.splits.items():
        src = catalog.prepared_source(name, split, prepared)
        assert len(src) == (4 if len(spec) == 3 and "beta" in spec[1] else 2)
        assert src.kind == ("paired" if layout.degradation else "clean") and src.degradation == layout.degradation
        for i in range(len(src)):
            r = src[i]
            assert r["target"].shape == (*HW, 3) and tuple(src.sizes[i]) == HW and r["name"] == src.names[i]
            if layout.degradation:
                assert r["degraded"].shape == r["target"].shape
    with pytest.raises(ValueError, match="has no split 'valid'"):
        catalog.prepared_source(name, "valid", prepared)


def test_div2k_inputs_are_upsampled_to_the_target_size(prepared):
    r = catalog.prepared_source("div2k_x4", "test", prepared)[0]
    assert r["degraded"].shape == r["target"].shape
    assert np.abs(r["degraded"].astype(int) - r["target"]).mean() < np.abs(
        r["degraded"].astype(int) - np.roll(r["target"], 7, axis=1)).mean()


def test_a_failed_preparation_leaves_nothing_that_loads(tmp_path):
    manual = fabricate("rain100l", str(tmp_path / "manual"))
    bad = os.path.join(manual, "test", "rainy", "rain-0002")
    os.remove(bad + ".png")
    data = (tmp_path / "x.jpg", save_image(tmp_path / "x.jpg", quality=95))[0].read_bytes()
    open(bad + ".jpg", "wb").write(data[:len(data) // 2])           # the header reads, the pixels are cut off
    with pytest.raises(sources.ImageError, match="rain-0002.jpg: cannot decode image"):
        builders.prepare("rain100l", manual, str(tmp_path / "data"))
    assert os.listdir(tmp_path / "data") == []                       # no temporary folder left either
    with pytest.raises(FileNotFoundError, match=r"no prepared dataset .* python -m rcot_jax.prepare "
                                                r"--dataset=rain100l"):
        catalog.prepared_source("rain100l", "train", str(tmp_path / "data"))
    open(bad + ".jpg", "wb").write(b"")
    with pytest.raises(sources.ImageError, match=r"rain-0002.jpg: empty file .*--bad_files=skip skips them"):
        builders.prepare("rain100l", manual, str(tmp_path / "data"))
    path = builders.prepare("rain100l", manual, str(tmp_path / "data"), bad_files="skip")
    assert len(catalog.prepared_source("rain100l", "test", str(tmp_path / "data"))) == 1 and os.path.isdir(path)
    with pytest.raises(ValueError, match="unknown dataset 'gopr'"):
        builders.prepare("gopr", manual, str(tmp_path / "data"))


def _pairs(root, names, hw=(8, 8)):
    """Writes each (degraded, target) relative path pair under `root` as a tiny image (targets once)."""
    for degraded, target in names:
        save_image(root / degraded, hw=hw, seed=1)
        if not (root / target).exists():
            save_image(root / target, hw=hw, seed=2)


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
    src = catalog.prepared_source(name, split, str(tmp_path / "data"))
    assert len(src) == len([d for d in names if d[0].split("/")[0] != "test" or split == "test"]) == 4
    assert src.kind == "paired" and src[0]["degraded"].shape == src[0]["target"].shape


def test_prepare_keeps_the_pairs_of_a_file_list_and_names_a_layout_it_does_not_know(tmp_path):
    """As the official hazy_outside.txt: 300 pairs listed, 335 present; an unknown layout lists the accepted ones."""
    names = [(f"synthetic/part{i % 4 + 1}/{i:04d}_0.8_0.04.jpg", f"original/{i:04d}.jpg") for i in range(1, 336)]
    _pairs(tmp_path / "manual", names, hw=(4, 4))
    listing = tmp_path / "hazy_outside.txt"
    listing.write_text("".join(f"{d.split('/', 1)[1]}\n" for d, _ in names[:300]))
    builders.prepare("reside_ots", str(tmp_path / "manual"), str(tmp_path / "data"), file_list=str(listing))
    src = catalog.prepared_source("reside_ots", "train", str(tmp_path / "data"))
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
    assert os.listdir(cwd) == [] and (tmp_path / "rcot_data" / catalog.BUILDER / "rain100l").is_dir()
    monkeypatch.setenv("HOME", str(tmp_path))
    config = tiny(derain, source="tfds", name="rain100l", data_dir="~/rcot_data")
    assert len(pipeline.eval_components(config.data)[0][0]) == 2


def test_every_prepared_dataset_feeds_the_pipeline(prepared):
    """The paired training sets mixed (allinone) and held out on their test splits; the clean sets denoised: BSD400 +
    WED for training, CBSD68, Kodak24 or SOTS for testing."""
    paired = [n for n, l in LAYOUTS.items() if l.degradation and "train" in l.splits]
    c = tiny(allinone, mix=tuple(f"tfds:{n}" for n in paired), data_dir=prepared, batch_size=16)
    batch = next(iter(pipeline.train_dataset(c)))
    assert set(batch["de_id"]) == {int(DEGRADATION_IDS[LAYOUTS[n].degradation]) for n in paired}
    assert batch["degraded"].shape == batch["target"].shape == (16, 32, 32, 3) and batch["paired"].all()
    held_out = pipeline.EvalSet(c)
    assert set(held_out.degradations) == {"blur", "rain", "lowlight", "sr_x4"}      # OTS has no test split
    assert set(held_out.shapes) == {HW}                                   # whole images, not crops
    for eval_name in ("cbsd68", "kodak24", "sots_outdoor"):
        c = tiny(denoise, source="tfds", name="bsd400_wed", eval_name=eval_name, data_dir=prepared)
        assert [s.names for s, _ in pipeline.eval_components(c.data)] == \
            [catalog.prepared_source(eval_name, "test", prepared).names]
    batch = next(iter(pipeline.train_dataset(c)))
    assert set(batch["de_id"]) == {int(DEGRADATION_IDS["noise25"])} and batch["paired"].all()
    mix = tiny(allinone, mix=("tfds:rain100l", "noise25"), mix_weights=(2.0, 1.0), data_dir=prepared)
    ids = np.concatenate([b["de_id"] for b, _ in zip(pipeline.train_dataset(mix), range(3))])
    assert set(ids) == {3, 1} and (ids == 3).mean() > 0.5
    assert set(pipeline.EvalSet(mix).degradations) == {"rain", "noise25"}
