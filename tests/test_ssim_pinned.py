"""Our SSIM (attacks/quality.py, one batched conv) agrees with scikit-image's reference
`structural_similarity` on real CIFAR-10 image pairs, so the stored `ssim` of every AE and the
validation suite's SSIM checks mean what the literature means. A pin, not a swap: replacing our
implementation would change the bytes of data/adversarial and everything after it."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from advhybrid.attacks.quality import image_quality

structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity


def real_images(archive, n: int) -> np.ndarray:
    """The first `n` JPEGs of the image-folder archive, decoded (streamed: only they are read)."""
    out = []
    with tarfile.open(archive) as tar:
        for m in tar:
            if m.isfile() and m.name.endswith(".jpg"):
                out.append(np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")))
                if len(out) == n:
                    break
    return np.stack(out)


def test_ssim_matches_scikit_image_on_real_image_pairs(shared_cifar_archive):
    clean = real_images(shared_cifar_archive, 24)
    g = np.random.default_rng(0)
    noisy = np.clip(clean.astype(np.int16) + g.integers(-8, 9, clean.shape), 0, 255).astype(np.uint8)  # an 8/255 AE's size
    heavy = np.clip(clean.astype(np.int16) + g.integers(-64, 65, clean.shape), 0, 255).astype(np.uint8)
    other = clean[::-1].copy()  # unrelated pictures: SSIM near 0
    for adv in (noisy, heavy, other, clean):
        ours = image_quality(adv, clean, "cpu")["ssim"]
        ref = np.array([structural_similarity(a.astype(np.float64) / 255, c.astype(np.float64) / 255,
                                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                              data_range=1.0, channel_axis=-1) for a, c in zip(adv, clean)])
        np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert torch.from_numpy(image_quality(clean, clean, "cpu")["ssim"]).eq(1).all()
