"""Parity of rcot_jax with the official RCOT code (xl-tang3/RCOT), which is run beside the project, never copied
into it. Needs torch, einops and a checkout of the official repository (its `Net.py`, `Net_Restormer.py`).

  # the small fixture the tests use (tests/data/official_fixture.npz.xz):
  PYTHONPATH=/path/to/einops python experiments/official_fixture.py --official=/path/to/RCOT
  # full-size parity and conversion time (nothing written to the repository):
  PYTHONPATH=/path/to/einops python experiments/official_fixture.py --official=/path/to/RCOT --full

The fixture holds, per network, the official state dict (official keys and layouts) of a small official model
with seeded random weights, a fixed input and the official outputs (T(x) and the first pass for the maps).
Weights are sparse random ternary codes times a per-tensor scale plus an offset, so that ~26 M official
parameters (the official Restormer and critic fix most widths) compress to a few MB; the tests decode them
with `decode`.
"""
import argparse
import io
import json
import lzma
import os
import subprocess
import sys
import tempfile
import time
import types

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURE = os.path.join(ROOT, "tests", "data", "official_fixture.npz.xz")

# Small official models: the Restormer T_net's widths are fixed by its hard-coded channel counts (dim 48).
SMALL = {
    "restormer": dict(num_blocks=[1, 2, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8],
                      ffn_expansion_factor=2.66, decoder=True),
    "mprnet": dict(n_feat=16, scale_unetfeats=8, reduction=4),
    "critic": dict(patch_size=32),
}
INPUTS = {"restormer": (2, 3, 16, 16), "mprnet": (2, 3, 16, 24), "critic": (2, 3, 32, 32)}
DENSITY = {"restormer": 0.2, "mprnet": 0.5, "critic": 0.05}
GAIN = {"restormer": 0.5, "mprnet": 0.5, "critic": 1.6}        # keeps the outputs of order 1


def import_official(directory):
    """The official modules, with torchvision's `save_image` (called inside the Restormer forward) a no-op."""
    tv, tvu = types.ModuleType("torchvision"), types.ModuleType("torchvision.utils")
    tvu.save_image = lambda *a, **k: None
    tv.utils = tvu
    sys.modules.setdefault("torchvision", tv)
    sys.modules.setdefault("torchvision.utils", tvu)
    sys.path.insert(0, directory)
    import Net
    import Net_Restormer
    return Net, Net_Restormer


def decode(codes, affine):
    """float32 weights from int8 codes and (offset, scale): the exact values the official model was given."""
    return np.float32(affine[0]) + np.float32(affine[1]) * codes.astype(np.float32)


def _affine(name, shape, density, gain):
    if name.endswith("temperature"):
        return 1.0, 0.25
    if name.endswith("body.1.weight") and len(shape) == 1:       # MPRNet's PReLU
        return 0.25, 0.05
    if len(shape) == 1:
        return (1.0, 0.1) if ".body.weight" in name else (0.0, 0.05)   # LayerNorm weight; biases
    return 0.0, gain / np.sqrt(int(np.prod(shape[1:])) * density)


def seed_weights(model, rng, density, gain):
    """Gives every parameter of the official `model` random codes; returns {state-dict key: (codes, affine)}."""
    import torch
    by_param = {}
    for name, p in model.named_parameters():      # a shared parameter is listed once
        codes = rng.choice(np.array([-1, 0, 1], np.int8), size=tuple(p.shape),
                           p=[density / 2, 1 - density, density / 2])
        affine = np.array(_affine(name, tuple(p.shape), density, gain), np.float32)
        with torch.no_grad():
            p.copy_(torch.from_numpy(decode(codes, affine)))
        by_param[id(p)] = (codes, affine)
    return {k: by_param[id(v)] for k, v in model.state_dict(keep_vars=True).items()}


def run_map(model, x, first_pass_module):
    """(T(x), first pass) of an official map; the first pass is read from the first call of the module that
    produces the image (Restormer: `output`, before the global residual; MPRNet: `sam12`)."""
    import torch
    calls = []
    handle = first_pass_module.register_forward_hook(lambda m, i, o: calls.append(o))
    with torch.no_grad():
        out = model(x)
    handle.remove()
    first = calls[0][1] if isinstance(calls[0], tuple) else calls[0] + x
    return out.numpy(), first.numpy()


def build_fixture(official_dir, path=FIXTURE):
    import torch
    net, net_restormer = import_official(official_dir)
    rng = np.random.default_rng(0)
    models = {"restormer": net_restormer.T_net(**SMALL["restormer"]), "mprnet": net.T_net(**SMALL["mprnet"]),
              "critic": net_restormer.F_net(**SMALL["critic"])}
    arrays = {}
    for name, model in models.items():
        model.eval()
        for key, (codes, affine) in seed_weights(model, rng, DENSITY[name], GAIN[name]).items():
            arrays[f"{name}/codes/{key}"], arrays[f"{name}/affine/{key}"] = codes, affine
        x = rng.random(INPUTS[name], dtype=np.float32)
        arrays[f"{name}/input"] = x
        if name == "critic":
            with torch.no_grad():
                arrays[f"{name}/output"] = model(torch.from_numpy(x)).numpy()
        else:
            hook = model.output if name == "restormer" else model.sam12
            arrays[f"{name}/output"], arrays[f"{name}/first_pass"] = run_map(model, torch.from_numpy(x), hook)
        arrays[f"{name}/config"] = np.array(json.dumps(SMALL[name]))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with lzma.open(path, "wb", preset=9) as f:
        f.write(buf.getvalue())
    print(f"wrote {path}: {os.path.getsize(path) / 1e6:.2f} MB")
    for name in models:
        print(name, "max |output|, |first pass|:", [float(np.abs(arrays[f"{name}/{k}"]).max())
                                                    for k in ("output", "first_pass") if f"{name}/{k}" in arrays])


def _max_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def full_size(official_dir):
    """Full-size parity of both maps and both critics, export -> official `load_state_dict(strict=True)`, and
    how long converting an official-size trainer checkpoint takes."""
    import torch
    import jax
    sys.path.insert(0, ROOT)
    from rcot_jax import models as jmodels
    from rcot_jax import weights
    net, net_restormer = import_official(official_dir)
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    report = {}
    cases = [
        ("restormer", net_restormer.T_net(decoder=True), jmodels.RestormerRCOT(), (1, 3, 64, 64), "output"),
        ("mprnet", net.T_net(), jmodels.MPRNetRCOT(), (1, 3, 64, 64), "sam12"),
    ]
    for name, official, model, shape, hook in cases:
        official.eval()
        x = rng.random(shape, dtype=np.float32)
        out, first = run_map(official, torch.from_numpy(x), getattr(official, hook))
        sd = {k: v.numpy() for k, v in official.state_dict().items()}
        params = weights.to_params(sd, model, weights.abstract_params(model), name)
        got, got_first = jax.jit(lambda p, v: model.apply({"params": p}, v, return_first_pass=True))(
            params, x.transpose(0, 2, 3, 1))
        exported = weights.from_params(params, model)
        fresh = type(official)(**({"decoder": True} if name == "restormer" else {}))
        fresh.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in exported.items()}, strict=True)
        same = all(np.array_equal(exported[k], v) for k, v in sd.items()
                   if k in {kk for ks in weights.official_keys(model, params).values() for kk in ks})
        report[name] = {"T_max_abs": _max_err(got, out.transpose(0, 2, 3, 1)),
                        "first_pass_max_abs": _max_err(got_first, first.transpose(0, 2, 3, 1)),
                        "output_max_abs_value": float(np.abs(out).max()), "input": list(shape),
                        "export_loads_strict": True, "export_used_keys_bit_exact": same}
        print(name, report[name], flush=True)
    critics = [("critic_restormer_p128", net_restormer.F_net(patch_size=128), jmodels.Critic(patch_size=128), 128),
               ("critic_mprnet_p256", net.F_net(), jmodels.Critic(patch_size=256, fc_features=2048), 256)]
    for name, official, model, p in critics:
        x = rng.random((2, 3, p, p), dtype=np.float32)
        with torch.no_grad():
            out = official(torch.from_numpy(x)).numpy()
        sd = {k: v.numpy() for k, v in official.state_dict().items()}
        params = weights.to_params(sd, model, weights.abstract_params(model, p), name)
        got = jax.jit(lambda prm, v: model.apply({"params": prm}, v))(params, x.transpose(0, 2, 3, 1))
        type(official)(**({"patch_size": p} if p == 128 else {})).load_state_dict(
            {k: torch.from_numpy(np.array(v)) for k, v in weights.from_params(params, model).items()}, strict=True)
        report[name] = {"F_max_abs": _max_err(got, out), "output_max_abs_value": float(np.abs(out).max())}
        print(name, report[name], flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "model_Deraining_51_1.0.pth")
        torch.save({"epoch": 51, "Tnet": cases[0][1], "Fnet": critics[0][1]}, ckpt)   # as the trainer saves
        start = time.perf_counter()
        t_sd, f_sd, _ = weights.networks([ckpt])
        read_s = time.perf_counter() - start
        cmd = [sys.executable, "-m", "rcot_jax.convert", f"--checkpoint={ckpt}", "--config=configs/derain.py",
               f"--workdir={tmp}/w"]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        report["convert"] = {"checkpoint_MB": os.path.getsize(ckpt) / 1e6, "read_and_unpickle_s": read_s,
                             "convert_command_s": time.perf_counter() - start,
                             "map_params": sum(v.size for v in t_sd.values()),
                             "critic_params": sum(v.size for v in f_sd.values())}
        print("convert", report["convert"], flush=True)
    print(json.dumps(report, indent=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", default=os.environ.get("RCOT_OFFICIAL", os.path.join(ROOT, "..", "RCOT")),
                        help="directory holding the official Net.py and Net_Restormer.py")
    parser.add_argument("--full", action="store_true", help="full-size parity and conversion time instead")
    args = parser.parse_args()
    if args.full:
        full_size(os.path.abspath(args.official))
    else:
        build_fixture(os.path.abspath(args.official))


if __name__ == "__main__":
    main()
