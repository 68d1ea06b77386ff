"""Wall time and peak memory of restoring one 2048x2048 photo with `rcot_jax.inference.Restorer`, tiled and
untiled, for the quick deblur map and the official-size Restormer map (random weights: speed does not depend on
them). Each case runs in its own process, so its peak RSS is its own. One JSON line per case:

  python experiments/restore_benchmark.py >> experiments/restore_benchmark_results.jsonl
"""
import json
import resource
import subprocess
import sys
import time

CASES = [("quick", 512), ("quick", 0), ("", 512), ("", 0)]     # (deblur.py variant, tile)


def run_case(variant, tile):
    import jax
    import numpy as np
    import skimage.data
    from rcot_jax import inference, steps
    from rcot_jax.configs import deblur
    from rcot_jax.data import degradations
    config = deblur.get_config(variant)
    t_model, _ = steps.build_models(config)
    params = jax.jit(lambda: t_model.init(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32)))()
    photo = degradations.bicubic_resize(skimage.data.astronaut().astype(np.float32) / 255, (2048, 2048)).clip(0, 1)
    restorer = inference.Restorer(t_model, params, tile=tile, overlap=32 if tile else 0)
    times = []
    for _ in range(2):     # the first call compiles
        t0 = time.perf_counter()
        restorer(photo)
        times.append(time.perf_counter() - t0)
    return {"config": f"deblur.py:{variant}", "tile": tile, "image": "2048x2048", "first_call_s": round(times[0], 1),
            "second_call_s": round(times[1], 1), "tiles": restorer.num_tiles((2048, 2048)),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 2),
            "backend": jax.default_backend(), "devices": len(jax.local_devices())}


if __name__ == "__main__":
    if len(sys.argv) == 3:
        print(json.dumps(run_case(sys.argv[1], int(sys.argv[2]))), flush=True)
    else:
        for variant, tile in CASES:
            proc = subprocess.run([sys.executable, __file__, variant, str(tile)], capture_output=True, text=True)
            print(proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 else json.dumps(
                {"config": f"deblur.py:{variant}", "tile": tile, "returncode": proc.returncode,
                 "error": (proc.stderr.strip().splitlines() or [""])[-1][:300]}), flush=True)
