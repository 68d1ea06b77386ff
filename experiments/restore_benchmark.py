"""Wall time and peak memory of restoring one 2048x2048 photo with `rcot_jax.inference.Restorer` (random weights:
speed does not depend on them). Each case runs in its own process, so its peak RSS is its own. One JSON line per
case:

  python experiments/restore_benchmark.py >> experiments/restore_benchmark_results.jsonl

- the quick deblur map, tiled (512, overlap 32) and untiled: the whole restore, timed twice (the first call
  compiles);
- the official-size Restormer map: one 512x512 tile timed (the 25 tiles of a 2048x2048 image take about 18
  minutes on a 2-core CPU, so the tiled time is that tile's time x 25), and, untiled, XLA's memory analysis of
  the compiled 2048x2048 forward pass (it does not fit in 24 GB, so it is not run).
"""
import json
import resource
import subprocess
import sys
import time

CASES = [("quick", 512), ("quick", 0), ("", 512)]     # (deblur.py variant, tile)


def _map(variant):
    import jax
    import numpy as np
    from rcot_jax import models
    from rcot_jax.configs import deblur
    t_model, _ = models.build_models(deblur.get_config(variant))
    return t_model, jax.jit(lambda: t_model.init(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32)))()


def _rss_gb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 2)


def quick_case(tile):
    import numpy as np
    import skimage.data
    from rcot_jax import inference
    from rcot_jax.data import degradations
    photo = degradations.bicubic_resize(skimage.data.astronaut().astype(np.float32) / 255, (2048, 2048)).clip(0, 1)
    restorer = inference.Restorer(*_map("quick"), tile=tile, overlap=32 if tile else 0)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        restorer(photo)
        times.append(time.perf_counter() - t0)
    return {"config": "deblur.py:quick", "tile": tile, "image": "2048x2048", "first_call_s": round(times[0], 1),
            "second_call_s": round(times[1], 1), "tiles": restorer.num_tiles((2048, 2048)), "peak_rss_gb": _rss_gb()}


def official_case(tile):
    import jax
    import numpy as np
    from rcot_jax import inference
    t_model, params = _map("")
    restorer = inference.Restorer(t_model, params, tile=tile, overlap=32, batch_size=1)
    x = np.random.default_rng(0).random((1, tile, tile, 3), dtype=np.float32)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        restorer._run(x)
        times.append(time.perf_counter() - t0)
    tiles = restorer.num_tiles((2048, 2048))
    whole = jax.jit(t_model.apply).lower(params, jax.ShapeDtypeStruct((1, 2048, 2048, 3), np.float32)).compile()
    return {"config": "deblur.py: (official-size Restormer)", "tile": tile, "image": "2048x2048",
            "first_tile_s": round(times[0], 1), "per_tile_s": round(times[1], 1), "tiles": tiles,
            "tiled_estimate_s": round(times[1] * tiles), "peak_rss_gb_tiled": _rss_gb(),
            "untiled_xla_temp_gb": round(whole.memory_analysis().temp_size_in_bytes / 1e9, 1)}


if __name__ == "__main__":
    if len(sys.argv) == 3:
        case = quick_case if sys.argv[1] == "quick" else official_case
        print(json.dumps(case(int(sys.argv[2]))), flush=True)
    else:
        for variant, tile in CASES:
            proc = subprocess.run([sys.executable, __file__, variant, str(tile)], capture_output=True, text=True)
            print(proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 else json.dumps(
                {"config": f"deblur.py:{variant}", "tile": tile, "returncode": proc.returncode,
                 "error": (proc.stderr.strip().splitlines() or [""])[-1][:300]}), flush=True)
