"""How far the `rgb` profile's SSIM (BasicSR's 2-D SSIM) is from NAFNet's 3-D SSIM (profile `nafnet`), on full-size
colour photographs with the project's degradations: the gap a reader of NAFNet's GoPro / SIDD tables must not
ignore. `python experiments/nafnet_ssim.py` prints one line per pair and the summary (docs/evaluation.md, metric profiles)."""
import numpy as np
from skimage import data

from rcot_jax import metrics
from rcot_jax.data import degradations

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
DEGRADE = {"noise sigma 15": lambda x, r: degradations.gaussian_noise(x, r, 15.0),
           "noise sigma 50": lambda x, r: degradations.gaussian_noise(x, r, 50.0),
           "motion blur": degradations.motion_blur}


def main():
    gaps = []
    for name in PHOTOS:
        clean = getattr(data, name)() / 255.0
        for what, degrade in DEGRADE.items():
            degraded = degrade(clean.astype(np.float32), np.random.default_rng(0))
            rgb, nafnet = metrics.ssim(degraded, clean, "rgb"), metrics.ssim(degraded, clean, "nafnet")
            gaps.append(nafnet - rgb)
            print(f"{name:10s} {clean.shape[0]}x{clean.shape[1]} {what:15s} rgb {rgb:.4f}  nafnet {nafnet:.4f}  "
                  f"nafnet - rgb {nafnet - rgb:+.4f}")
    print(f"{len(gaps)} pairs: nafnet - rgb from {min(gaps):+.4f} to {max(gaps):+.4f}, mean {np.mean(gaps):+.4f}")


if __name__ == "__main__":
    main()
