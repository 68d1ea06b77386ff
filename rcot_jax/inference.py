"""The restore path shared by evaluation, `rcot_jax.restore` and notebooks: images of any size go through a map
that needs sizes divisible by its downsampling factor, so they are reflect-padded up and cropped back."""
import numpy as np


def padded_shape(hw, multiple):
    """(H, W) rounded up to multiples of `multiple`."""
    return tuple(-(-int(n) // multiple) * multiple for n in hw)


def pad_to(img, hw):
    """img [H, W, C] reflect-padded at the bottom and right to `hw` (repeated reflection where the padding is
    larger than the image)."""
    h, w = img.shape[:2]
    return np.pad(img, ((0, hw[0] - h), (0, hw[1] - w), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")


def crop_to(img, hw):
    return img[:hw[0], :hw[1]]
