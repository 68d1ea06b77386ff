"""Official weights in and out: parity with outputs of the official code (tests/data/official_fixture.npz.xz,
written by experiments/official_fixture.py), file formats, the restricted unpickler, bad files, and the convert
command end to end."""
import io
import json
import lzma
import os
import pickle
import re
import subprocess
import sys
import types
import zipfile

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rcot_jax import models, weights  # noqa: E402
from rcot_jax.weights import checkpoints  # noqa: E402
from rcot_jax.state import init_state  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
FIXTURE = np.load(io.BytesIO(lzma.open(os.path.join(os.path.dirname(__file__), "data",
                                                    "official_fixture.npz.xz")).read()))
NETS = ("restormer", "mprnet", "critic")


def official_state_dict(net):
    """The official state dict of the fixture's small `net`, exactly as the official model was given it."""
    prefix = f"{net}/codes/"
    return {k[len(prefix):]: np.float32(FIXTURE[f"{net}/affine/{k[len(prefix):]}"][0])
            + np.float32(FIXTURE[f"{net}/affine/{k[len(prefix):]}"][1]) * FIXTURE[k].astype(np.float32)
            for k in FIXTURE.files if k.startswith(prefix)}


def model_of(net):
    c = json.loads(str(FIXTURE[f"{net}/config"]))
    if net == "restormer":
        return models.RestormerRCOT(num_blocks=tuple(c["num_blocks"]), heads=tuple(c["heads"]),
                                    num_refinement_blocks=c["num_refinement_blocks"],
                                    ffn_expansion_factor=c["ffn_expansion_factor"])
    return models.MPRNetRCOT(**c) if net == "mprnet" else models.Critic(**c)


def abstract(net):
    return weights.abstract_params(model_of(net), 32 if net == "critic" else None)


def nhwc(x):
    return np.asarray(x).transpose(0, 2, 3, 1)


def save_as(path, state_dict, layout):
    tensors = {k: torch.from_numpy(v.copy()) for k, v in state_dict.items()}
    if layout == "torch_state_dict":
        torch.save(tensors, path)
    elif layout == "wrapped_dataparallel":
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in tensors.items()}}, path)
    elif layout == "safetensors":
        weights.write(path, state_dict)


@pytest.mark.parametrize("net,layout", [("restormer", "torch_state_dict"), ("mprnet", "wrapped_dataparallel"),
                                        ("critic", "safetensors")])
def test_converted_official_weights_reproduce_the_official_outputs(net, layout, tmp_path):
    path = str(tmp_path / ("w.safetensors" if layout == "safetensors" else "w.pth"))
    save_as(path, official_state_dict(net), layout)
    (name, sd), = weights.read(path).items()
    model = model_of(net)
    params = weights.to_params(sd, model, abstract(net), path)
    x = nhwc(FIXTURE[f"{net}/input"])
    if net == "critic":
        out = jax.jit(lambda p, v: model.apply({"params": p}, v))(params, x)
        np.testing.assert_allclose(out, FIXTURE["critic/output"], rtol=0, atol=1e-5)
        return
    out, first = jax.jit(lambda p, v: model.apply({"params": p}, v, return_first_pass=True))(params, x)
    np.testing.assert_allclose(out, nhwc(FIXTURE[f"{net}/output"]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(first, nhwc(FIXTURE[f"{net}/first_pass"]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_export_writes_the_official_keys_and_round_trips_bit_exactly(net, suffix, tmp_path):
    model, official = model_of(net), official_state_dict(net)
    params = weights.to_params(official, model, abstract(net), net)
    exported = weights.from_params(params, model)
    # Same keys and shapes as the official module's state dict: what load_state_dict(strict=True) checks.
    assert {k: v.shape for k, v in exported.items()} == {k: v.shape for k, v in official.items()}
    used = {k for keys in weights.official_keys(model, params).values() for k in keys}
    assert all(np.array_equal(exported[k], official[k]) for k in used)
    path = str(tmp_path / f"export{suffix}")
    weights.write(path, exported)
    if suffix == ".pth":
        loaded = torch.load(path, weights_only=True)
        assert all(np.array_equal(loaded[k].numpy(), v) for k, v in exported.items())
    (_, sd), = weights.read(path).items()
    back = weights.to_params(sd, model, abstract(net), path)
    for (path_a, a), (path_b, b) in zip(jax.tree_util.tree_leaves_with_path(params),
                                        jax.tree_util.tree_leaves_with_path(back)):
        assert path_a == path_b and a.dtype == b.dtype and np.array_equal(a, b)


def test_mprnet_shared_prelu_is_one_scalar_from_22_agreeing_keys():
    model, official = model_of("mprnet"), official_state_dict("mprnet")
    prelu_keys = weights.official_keys(model, abstract("mprnet"))[("prelu",)]
    assert len(prelu_keys) == 22 and all(k.endswith(".body.1.weight") for k in prelu_keys)
    params = weights.to_params(official, model, abstract("mprnet"), "f")
    assert params["prelu"].shape == () and params["prelu"] == official[prelu_keys[0]][0]
    official[prelu_keys[5]] = official[prelu_keys[5]] + 1
    with pytest.raises(weights.WeightsError, match=rf"f: {prelu_keys[5]} differs from {prelu_keys[0]}"):
        weights.to_params(official, model, abstract("mprnet"), "f")


def _stand_in_modules(state_dicts):
    """Fake official module files `Net_Restormer` and `Net` whose classes rebuild the fixture's module trees;
    MPRNet's CABs share one PReLU module, as the official T_net does."""
    trees = {}
    for file, net, cls in (("Net_Restormer", "restormer", "T_net"), ("Net_Restormer", "critic", "F_net"),
                           ("Net", "mprnet", "T_net")):
        module = sys.modules.setdefault(file, types.ModuleType(file))
        node = type(cls, (torch.nn.Module,), {"__module__": file})
        child = getattr(module, "Node", None) or type("Node", (torch.nn.Module,), {"__module__": file})
        setattr(module, cls, node)
        module.Node = child
        root, shared = node(), torch.nn.PReLU()
        for key, value in state_dicts[net].items():
            *path, leaf = key.split(".")
            owner = root
            for name in path[:-1]:
                if name not in owner._modules:
                    owner.add_module(name, child())
                owner = owner._modules[name]
            if net == "mprnet" and key.endswith(".body.1.weight"):
                shared.weight.data = torch.from_numpy(value.copy())
                owner.add_module(path[-1], shared)
                continue
            if path[-1] not in owner._modules:
                owner.add_module(path[-1], child())
            owner._modules[path[-1]].register_parameter(leaf, torch.nn.Parameter(torch.from_numpy(value.copy())))
        trees[net] = root
    return trees


def test_a_whole_pickled_trainer_checkpoint_loads_without_its_classes(tmp_path):
    state_dicts = {net: official_state_dict(net) for net in NETS}
    trees = _stand_in_modules(state_dicts)
    path = str(tmp_path / "model_Deraining_51_1.0.pth")
    try:
        torch.save({"epoch": 51, "Tnet": trees["restormer"], "Fnet": trees["critic"]}, path)
        torch.save({"epoch": 7, "Tnet": trees["mprnet"]}, tmp_path / "mpr.pth")
    finally:
        del sys.modules["Net_Restormer"], sys.modules["Net"]
    with pytest.raises(Exception, match="Net_Restormer"):
        torch.load(path, weights_only=False)          # the classes are not importable here
    t_sd, f_sd, sources = weights.networks([path])
    assert sources == {"map": f"{path}[Tnet]", "critic": f"{path}[Fnet]"}
    for sd, net in ((t_sd, "restormer"), (f_sd, "critic")):
        assert list(sd) == list(state_dicts[net])
        assert all(np.array_equal(sd[k], v) for k, v in state_dicts[net].items())
    (name, sd), = weights.read(tmp_path / "mpr.pth").items()
    assert name == "Tnet" and sd.keys() == state_dicts["mprnet"].keys()
    assert all(np.array_equal(sd[k], v) for k, v in state_dicts["mprnet"].items())


def _zip_checkpoint(path, pickled, records=()):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickled)
        for key, data in records:
            z.writestr(f"archive/data/{key}", data)


class _Shell:
    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("how", ["reduce", "global_name"])
def test_the_unpickler_refuses_a_pickle_that_calls_os_system(how, tmp_path):
    path, marker = str(tmp_path / "evil.pth"), tmp_path / "pwned"
    if how == "reduce":
        shell = _Shell()
        shell.marker = marker
        pickled = pickle.dumps({"Tnet": shell}, protocol=2)
    else:   # spelled as `os.system`, not as the `posix.system` that pickle.dumps writes on Linux
        pickled = b"\x80\x02cos\nsystem\nq\x00X\x05\x00\x00\x00touch" + b"\x85R."
    _zip_checkpoint(path, pickled)
    refusal = rf"{re.escape(path)}: refusing the unexpected global (os|posix)\.system"
    with pytest.raises(weights.WeightsError, match=refusal):
        weights.read(path)
    assert not marker.exists()


def test_a_pickled_class_is_never_called(tmp_path):
    path = str(tmp_path / "call.pth")
    _zip_checkpoint(path, b"\x80\x02cNet_Restormer\nT_net\n)R.")
    with pytest.raises(weights.WeightsError, match=rf"{re.escape(path)}: refusing to call Net_Restormer.T_net"):
        weights.read(path)


def test_each_bad_file_gets_its_named_error(tmp_path):
    model, official = model_of("mprnet"), official_state_dict("mprnet")
    good = str(tmp_path / "good.pth")
    torch.save({k: torch.from_numpy(v.copy()) for k, v in official.items()}, good)

    def check(name, state_dict, pattern):
        path = str(tmp_path / name)
        weights.write(path, state_dict)
        with pytest.raises(weights.WeightsError, match=pattern.format(path=re.escape(path))):
            (_, sd), = weights.read(path).items()
            weights.to_params(sd, model, abstract("mprnet"), path)

    weights.write(tmp_path / "good.safetensors", official)
    for name in ("good.pth", "good.safetensors"):
        data = (tmp_path / name).read_bytes()
        path = tmp_path / f"truncated_{name}"
        path.write_bytes(data[:len(data) // 2])
        with pytest.raises(weights.WeightsError, match=rf"{re.escape(str(path))}: not a complete"):
            weights.read(path)
    key = "stage1_decoder.up21.up.1.weight"
    check("missing.pth", {k: v for k, v in official.items() if k != key}, rf"{{path}}: .* missing {key}")
    check("extra.safetensors", {**official, "extra.weight": np.zeros(2, np.float32)},
          r"{path}: .*unexpected extra.weight")
    check("shape.pth", {**official, key: official[key][:, :-1]},
          rf"{{path}}: {key} has shape \(16, 23, 1, 1\), expected \(16, 24, 1, 1\)")
    # A storage record shorter than its tensor, e.g. a file damaged inside the archive.
    path = str(tmp_path / "short.pth")
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            blob = src.read(item)
            dst.writestr(item, blob[:-4] if item.filename.endswith("/data/0") else blob)
    with pytest.raises(weights.WeightsError, match=rf"{re.escape(path)}: storage record .*/data/0 has"):
        weights.read(path)


def _run(*args):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


@pytest.mark.slow
def test_convert_then_eval_export_and_init_from(tmp_path):
    map_file, critic_file = str(tmp_path / "mpr.pth"), str(tmp_path / "critic.safetensors")
    torch.save({"epoch": 1, "Tnet": {k: torch.from_numpy(v.copy()) for k, v in
                                     official_state_dict("mprnet").items()}}, map_file)
    weights.write(critic_file, official_state_dict("critic"))
    c = {**json.loads(str(FIXTURE["mprnet/config"])), "cabs_per_scale": 2}      # the official map's two, not tiny's
    config = ["--config=configs/deblur.py:tiny", "--config.model.backbone=mprnet", "--config.model.critic_width=64",
              *(f"--config.model.mprnet.{k}={v}" for k, v in c.items())]
    workdir = str(tmp_path / "w")
    _run("rcot_jax.convert", f"--checkpoint={map_file}", f"--checkpoint={critic_file}", f"--workdir={workdir}",
         *config)
    assert os.path.exists(os.path.join(workdir, "config.json"))      # a complete run: no --config needed again
    log = _run("rcot_jax.main", "--mode=eval", f"--workdir={workdir}")
    assert "Eval of step 0" in log

    _run("rcot_jax.convert", f"--export={tmp_path / 'out.pth'}", f"--workdir={workdir}", *config)
    for file, net in (("out.pth", "mprnet"), ("out_Fnet.pth", "critic")):
        exported, official = torch.load(tmp_path / file, weights_only=True), official_state_dict(net)
        assert exported.keys() == official.keys()
        used = weights.official_keys(model_of(net), weights.to_params(official, model_of(net), abstract(net), net))
        assert all(np.array_equal(exported[k].numpy(), official[k]) for ks in used.values() for k in ks)

    from rcot_jax.configs import deblur
    cfg = deblur.get_config("tiny")
    cfg.model.backbone, cfg.model.critic_width = "mprnet", 64
    cfg.model.mprnet.update(c)
    state = init_state(cfg, jax.random.key(5))
    started = checkpoints.init_from(workdir, state)
    expected = weights.to_params(official_state_dict("mprnet"), model_of("mprnet"), abstract("mprnet"), "m")
    jax.tree.map(np.testing.assert_array_equal, started.t_params["params"], expected)
    assert int(started.step) == 0
    from_file = checkpoints.init_from(str(tmp_path / "out.pth"), state, cfg)      # the export, F beside it
    jax.tree.map(np.testing.assert_array_equal, from_file.t_params["params"], expected)
    jax.tree.map(np.testing.assert_array_equal, from_file.f_params, started.f_params)

    # restore reads the converted run, a checkpoint directory without config.json (given --config), and the
    # export's .pth; each gives parameters the map applies.
    from rcot_jax.restore import load_map
    os.makedirs(bare := str(tmp_path / "bare"))
    os.symlink(os.path.join(workdir, "checkpoints"), os.path.join(bare, "checkpoints"))
    x = np.random.default_rng(0).random((1, 16, 16, 3), np.float32)
    for kwargs in ({"workdir": workdir}, {"workdir": bare, "config": cfg},
                   {"checkpoint": str(tmp_path / "out.pth"), "config": cfg}):
        model, params = load_map(**kwargs)
        jax.tree.map(np.testing.assert_array_equal, params["params"], expected)
        assert model.apply(params, x).shape == x.shape
    with pytest.raises(FileNotFoundError, match=r"no config\.json \(not a training run\); give --config"):
        load_map(workdir=bare)
