"""One epoch on the real Fashion-MNIST (Debian's dataset-fashion-mnist), end to end."""

import pytest

from osrbench import engine
from osrbench.data import mnist


@pytest.mark.skipif(not mnist.FASHION_MNIST_SYSTEM_DIR.exists(),
                    reason=f"Fashion-MNIST not installed ({mnist.FASHION_MNIST_SYSTEM_DIR}): "
                           "apt-get install dataset-fashion-mnist")
def test_softmax_trains_one_epoch_on_real_fashion_mnist(tmp_path):
    # 8 px and batch 256 keep one CPU epoch over the 36,000 known training images to seconds;
    # the data, the split and the protocol are the real ones (the reference is 32 px, batch 64).
    rec = engine.run(engine.RunRequest(
        method="softmax", dataset="fashion-mnist", protocol="auroc", split=0, epochs=1, device="cpu",
        out=tmp_path, data_root=tmp_path / "empty-root", progress=False,
        overrides={"image_size": 8, "batch_size": 256})).record
    assert rec.counts == {"train": 36000, "known": 6000, "unknown": 4000}
    assert rec.known_classes == (0, 1, 2, 4, 5, 9)
    assert rec.image_shape == (3, 8, 8)
    assert rec.metrics["acc"] > 0.6
    assert rec.metrics["auroc"] > 0.55
