"""The grain input pipeline: task degradations, pairing, determinism, resumption, process split, eval set."""
import itertools

import numpy as np
import pytest

from fakes import save_image
from rcot_jax.configs import allinone, deblur, denoise
from rcot_jax import metrics
from rcot_jax.data import pipeline, sources
from rcot_jax.ids import DEGRADATION_IDS


def _config(module=denoise, **data):
    c = module.get_config("tiny")
    c.data.update(data)
    return c


def _batches(config, n, process_index=0, process_count=1):
    return list(itertools.islice(pipeline.train_dataset(config, None, process_index, process_count), n))


def test_task_degradations():
    assert pipeline.degradation_names(_config().data) == ("noise25",)
    assert pipeline.degradation_names(_config(noise_sigma=50).data) == ("noise50",)
    assert pipeline.degradation_names(allinone.get_config("tiny").data) == \
        ("haze", "rain", "noise15", "noise25", "noise50")
    with pytest.raises(ValueError, match="config.data.noise_sigma=30"):
        pipeline.degradation_names(_config(noise_sigma=30).data)
    with pytest.raises(ValueError, match="config.data.task='deblurr'"):
        pipeline.degradation_names(_config(task="deblurr").data)
    with pytest.raises(ValueError, match="config.data.mix"):
        pipeline.degradation_names(_config(allinone, mix=("rain", "snow")).data)


def test_dihedral_gives_eight_distinct_transforms():
    img = np.arange(2 * 2 * 1).reshape(2, 2, 1)
    outs = {pipeline.dihedral(img, k).tobytes() for k in range(8)}
    assert len(outs) == 8 and np.array_equal(pipeline.dihedral(img, 0), img)


def test_batches_follow_the_contract():
    c = _config(allinone)
    (b,) = _batches(c, 1)
    p = c.data.patch_size
    assert b["degraded"].shape == b["target"].shape == (c.data.batch_size, p, p, 3)
    assert b["degraded"].dtype == b["target"].dtype == np.float32
    assert 0 <= b["degraded"].min() and b["degraded"].max() <= 1
    assert b["paired"].dtype == bool and b["de_id"].dtype == np.int32
    assert set(b["de_id"]) <= {int(DEGRADATION_IDS[n]) for n in c.data.mix}


def _residual_std(batches):
    return float(np.std(np.concatenate([b["degraded"] - b["target"] for b in batches])))


def test_paired_stream_shows_each_degraded_crop_with_its_own_target():
    batches = _batches(_config(paired_fraction=1.0), 4)
    for b in batches:
        assert b["paired"].all() and (b["source"] == b["target_source"]).all()
    # sigma 25 on the 0-255 scale, truncated to uint8: the residual is the noise alone.
    assert abs(_residual_std(batches) - 25 / 255) < 0.01


def test_unpaired_stream_never_pairs_a_degraded_image_with_its_own_target():
    batches = _batches(_config(paired_fraction=0.0), 25)
    for b in batches:
        assert not b["paired"].any()
        assert (b["source"] != b["target_source"]).all()
    assert _residual_std(batches) > 2 * 25 / 255           # targets are other images, not denoised crops
    # The targets form a real stream over the other images, not one fixed image.
    assert len(set(np.concatenate([b["target_source"] for b in batches]))) >= 8


def test_partly_paired_stream_pairs_a_fixed_subset_of_images():
    c = _config(paired_fraction=0.5)
    subset = pipeline.paired_images(len(sources.EmbeddedSource("train")), 0.5, c.seed)
    assert len(subset) == 6
    batches = _batches(c, 20)
    for b in batches:
        np.testing.assert_array_equal(b["paired"], np.isin(b["source"], subset))
        assert (b["source"][~b["paired"]] != b["target_source"][~b["paired"]]).all()
        assert (b["source"][b["paired"]] == b["target_source"][b["paired"]]).all()
    paired = np.concatenate([b["paired"] for b in batches])
    assert 0 < paired.mean() < 1
    with pytest.raises(ValueError, match="paired_fraction=1.5"):
        _batches(_config(paired_fraction=1.5), 1)


def _assert_same(a, b):
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_stream_is_deterministic_and_resumes_from_its_state():
    c = _config(allinone)
    it = iter(pipeline.train_dataset(c))
    first = [next(it) for _ in range(2)]
    state = it.get_state()
    rest = [next(it) for _ in range(2)]

    again = iter(pipeline.train_dataset(c))
    for a, b in zip(first, [next(again) for _ in range(2)]):
        _assert_same(a, b)
    resumed = iter(pipeline.train_dataset(c))
    resumed.set_state(state)
    for a, b in zip(rest, [next(resumed) for _ in range(2)]):
        _assert_same(a, b)

    c.seed = 1
    other = next(iter(pipeline.train_dataset(c)))
    assert not np.array_equal(other["degraded"], first[0]["degraded"])


def test_processes_split_the_global_batch():
    c = _config(allinone)
    (whole,) = _batches(c, 1)
    parts = [_batches(c, 1, process_index=i, process_count=2)[0] for i in range(2)]
    for i, part in enumerate(parts):
        assert part["degraded"].shape[0] == c.data.batch_size // 2
    # The shares, concatenated in process order (as the global array is built), are the one-process batch.
    for k in whole:
        np.testing.assert_array_equal(np.concatenate([part[k] for part in parts]), whole[k], err_msg=k)
    with pytest.raises(ValueError, match="batch_size=8 is not divisible by the 3 processes"):
        _batches(c, 1, process_index=0, process_count=3)


def _stack(eval_set, key):
    return np.stack([eval_set[i][key] for i in range(len(eval_set))])


def test_eval_set_is_fixed_and_covers_every_degradation():
    c = _config(allinone, eval_crops=2)
    a, b = pipeline.EvalSet(c), pipeline.EvalSet(c)
    n = len(sources.EmbeddedSource("heldout")) * 2 * len(c.data.mix)
    assert _stack(a, "degraded").shape == (n, c.data.eval_size, c.data.eval_size, 3) and len(a.degradations) == n
    assert a.shapes == [(c.data.eval_size,) * 2] * n
    assert sorted(set(a.degradations)) == sorted(c.data.mix)
    np.testing.assert_array_equal(_stack(a, "degraded"), _stack(b, "degraded"))
    c.seed = 7                                           # the held-out set does not depend on the run's seed
    np.testing.assert_array_equal(_stack(pipeline.EvalSet(c), "degraded"), _stack(a, "degraded"))
    c.data.eval_limit = 5
    assert len(pipeline.EvalSet(c)) == 5


def test_whole_image_eval_keeps_every_size():
    c = _config(denoise, eval_crops=0)
    e = pipeline.EvalSet(c)
    held = sources.EmbeddedSource("heldout")
    assert e.shapes == [tuple(hw) for hw in held.sizes]
    item = e[1]
    assert item["degraded"].shape == item["target"].shape == (*held.sizes[1], 3)
    np.testing.assert_array_equal(item["target"], held[1]["target"] / np.float32(255))


def test_images_smaller_than_a_crop_are_skipped_by_name(caplog):
    (b,) = _batches(_config(patch_size=256), 1)
    assert b["degraded"].shape[1] == 256
    assert "page.png (176x384)" in caplog.text and "config.data.patch_size=256" in caplog.text
    with pytest.raises(ValueError, match=r"every image is smaller than config.data.patch_size=4096"):
        _batches(_config(patch_size=4096), 1)


def test_blur_kernel_size_sets_the_blur_strength():
    psnr = {}
    for size in (5, 21):
        data = pipeline.EvalSet(_config(deblur, blur_kernel_size=size, eval_size=64))
        psnr[size] = metrics.psnr(_stack(data, "degraded"), _stack(data, "target")).mean()
    assert psnr[21] < psnr[5] - 3


def test_small_images_are_reported_with_their_own_size(tmp_path, caplog):
    save_image(tmp_path / "small.png", hw=(20, 20))
    save_image(tmp_path / "big.png", hw=(40, 40))
    c = denoise.get_config("tiny")
    c.data.update(source="clean_folder", train_dir=str(tmp_path))
    next(iter(pipeline.train_dataset(c)))
    assert "skipping 1 of 2 images smaller than config.data.patch_size=32: small.png (20x20)" in caplog.text
