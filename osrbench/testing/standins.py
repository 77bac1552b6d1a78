"""Stand-ins for tests: datasets that cannot be downloaded (a few small images written in the official
archive's exact layout, so a reader, the file feed and a whole run can be exercised) and a method that
records the batches it is given."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np


def picture(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth gradients plus noise: JPEG-like (h, w, 3) uint8 content with every augmentation op
    visibly acting on it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), (xx + yy) * 127 // (w + h)], -1)
    return np.clip(a + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)


def write_cub(root: Path) -> Path:
    """CUB_200_2011's layout under ``root``: 200 classes, one training and one test JPEG of a few
    pixels each (of varied sizes), as the official archive unpacks. Returns the archive folder."""
    from PIL import Image

    base = Path(root) / "CUB_200_2011"
    rows = [(2 * c + t + 1, c + 1, 1 - t) for c in range(200) for t in (0, 1)]  # (image id, class, is_training_img)
    rel = {i: f"{c:03d}.Bird_{c}/Bird_{c}_{i:04d}.jpg" for i, c, _ in rows}
    for i, c, _ in rows:
        (base / "images" / rel[i]).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture(12 + i % 7, 17 - i % 5, i)).save(base / "images" / rel[i], quality=85)
    (base / "images.txt").write_text("".join(f"{i} {rel[i]}\n" for i, _, _ in rows))
    (base / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, c, _ in rows))
    (base / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, t in rows))
    (base / "classes.txt").write_text("".join(f"{c} {c:03d}.Bird_{c}\n" for c in range(1, 201)))
    return base


def recording_method(reg: Any, name: str, inner: str, log: list) -> None:
    """Register in ``reg`` a copy ``name`` of method ``inner`` that appends ``(phase, digest)`` of every
    batch it is given to ``log`` (the batches methods see, compared without keeping them)."""
    from osrbench.method import MethodSpec

    spec = reg.method(inner)

    def factory():
        method = spec.factory()
        step = method.train_step

        def train_step(phase, x, y):
            log.append((phase, hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()))
            return step(phase, x, y)

        method.train_step = train_step
        return method

    reg.methods[name] = MethodSpec(name=name, factory=factory, defaults=spec.defaults, recipes=spec.recipes,
                                   default_recipe=spec.default_recipe)
    reg.origin[f"method:{name}"] = "osrbench"
