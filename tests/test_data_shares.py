"""Per-host data shares: with 2 processes x 4 CPU devices (`jax.distributed.initialize` on localhost), the two
training shares are disjoint and together are the one-process stream, and the test split is scored exactly once
over the two processes with the same result as one process."""
import json
import os
import subprocess
import sys

import numpy as np
import portpicker
import pytest
from PIL import Image

from fakes import tiny_t_params, xla_flags
from rcot_jax import evaluate, parallel
from rcot_jax.configs import derain
from rcot_jax.data import pipeline

ROOT = os.path.join(os.path.dirname(__file__), "..")
SIZES = [(48, 64), (64, 48), (40, 40), (48, 64), (33, 70), (64, 64), (48, 64)]   # 7 images, 4 size buckets

SCRIPT = r'''
import itertools, json, sys
import jax
pid, address, folder, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
jax.distributed.initialize(coordinator_address=address, num_processes=2, process_id=pid)
sys.path.insert(0, sys.argv[5])
import test_data_shares as t
from rcot_jax.data import pipeline
c = t.config(folder)
batches = list(itertools.islice(pipeline.train_dataset(c, None, jax.process_index(), jax.process_count()), 3))
seen = []
class Recording(pipeline.EvalSet):     # which items this process decodes and scores
    def __getitem__(self, i):
        seen.append(i)
        return super().__getitem__(i)
result = t.evaluate_once(c, Recording(c))
json.dump({"train": [{k: b[k].tolist() for k in ("source", "target_source", "de_id")} for b in batches],
           "scored": seen, "result": result}, open(out, "w"))
'''


def config(folder):
    c = derain.get_config("tiny")
    c.model.backbone = "mprnet"
    c.data.update(source="paired_folders", degraded_dir=f"{folder}/rainy", target_dir=f"{folder}/gt",
                  eval_degraded_dir=f"{folder}/rainy", eval_target_dir=f"{folder}/gt", eval_bucket=32,
                  eval_batch_size=8, patch_size=32)
    return c


def evaluate_once(c, eval_set):
    t_params = tiny_t_params(c.model.backbone)      # T alone: the tiny config's map, as `c`'s
    result, _ = evaluate.evaluate(evaluate.make_evaluator(c, parallel.make_mesh()), t_params, eval_set)
    return result


def _fabricate(folder):
    rng = np.random.default_rng(0)
    for i, hw in enumerate(SIZES):
        for sub in ("rainy", "gt"):
            os.makedirs(folder / sub, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(folder / sub / f"{i}.png")


@pytest.mark.slow
def test_two_processes_split_training_and_cover_the_test_split_once(tmp_path):
    _fabricate(tmp_path)
    (tmp_path / "run.py").write_text(SCRIPT)
    address = f"127.0.0.1:{portpicker.pick_unused_port()}"
    env = dict(os.environ, XLA_FLAGS=xla_flags(4), JAX_ENABLE_COMPILATION_CACHE="false")
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "run.py"), str(i), address, str(tmp_path),
                               str(tmp_path / f"{i}.json"), os.path.dirname(__file__)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=600)[0].decode()[-3000:])
        finally:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(outs)
    shares = [json.load(open(tmp_path / f"{i}.json")) for i in range(2)]

    c = config(str(tmp_path))
    whole = [next(it) for it in [iter(pipeline.train_dataset(c))] for _ in range(3)]
    for step, batch in enumerate(whole):
        parts = [s["train"][step] for s in shares]     # each process its own half of the global batch, in order
        for k in ("source", "target_source", "de_id"):
            assert parts[0][k] + parts[1][k] == batch[k].tolist(), k
    scored = [s["scored"] for s in shares]
    assert sorted(scored[0] + scored[1]) == list(range(len(SIZES))) and not set(scored[0]) & set(scored[1])
    one = evaluate_once(c, pipeline.EvalSet(c))
    for i in range(2):
        assert shares[i]["result"].keys() == one.keys()
        np.testing.assert_allclose([shares[i]["result"][k] for k in one], list(one.values()), rtol=1e-6)
