"""The device-resident seeded stream: determinism, batching, augmentation as tensor ops."""

import pytest
import torch
import torch.nn.functional as F

from osrbench.data.stream import PAD, TrainStream, crop_flip, derive_seed, to_input


def _images(n=50, c=3, h=8, w=8):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8), torch.arange(n) % 5


def _all(stream, epoch, phase=0):
    return [(x.clone(), y.clone()) for x, y in stream.batches(epoch, phase)]


def test_same_seed_gives_bit_identical_batches():
    x, y = _images()
    a = _all(TrainStream(x, y, 16, seed=3, augment="crop_flip"), 2, 1)
    b = _all(TrainStream(x, y, 16, seed=3, augment="crop_flip"), 2, 1)
    assert len(a) == len(b) == 4
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_each_pass_draws_its_own_order():
    x, y = _images()
    s = TrainStream(x, y, 50, seed=3)
    orders = {tuple(next(s.batches(e, p))[1].tolist()) for e in range(3) for p in range(2)}
    assert len(orders) == 6
    other = TrainStream(x, y, 50, seed=4)
    assert not torch.equal(next(s.batches(0))[1], next(other.batches(0))[1])
    assert derive_seed(0, 1, 2) != derive_seed(0, 2, 1)


def test_every_image_once_per_pass_and_partial_last_batch_kept():
    x, y = _images(n=50)
    s = TrainStream(x, torch.arange(50), 16, seed=0)
    sizes = [len(b[1]) for b in s.batches(0)]
    assert sizes == [16, 16, 16, 2] and len(s) == 4
    seen = torch.cat([b[1] for b in s.batches(0)])
    assert sorted(seen.tolist()) == list(range(50))


def test_without_augmentation_images_are_the_stored_ones_scaled():
    x, y = _images(n=20, c=1)
    s = TrainStream(x, torch.arange(20), 20, seed=0)
    xb, yb = next(s.batches(0))
    assert xb.shape == (20, 3, 8, 8) and xb.dtype == torch.float32  # grey replicated to RGB
    want = x[yb].float() / 255
    assert torch.equal(xb, want.expand(-1, 3, -1, -1))
    assert float(xb.min()) >= 0.0 and float(xb.max()) <= 1.0


def test_crop_flip_equals_pad_slice_flip_per_sample():
    x, _ = _images(n=12, h=6, w=7)
    g = torch.Generator().manual_seed(1)
    offsets = torch.randint(0, 2 * PAD + 1, (12, 2), generator=g)
    flips = torch.rand(12, generator=g) < 0.5
    out = crop_flip(x, offsets, flips)
    padded = F.pad(x, (PAD,) * 4)
    for i in range(12):
        dy, dx = offsets[i].tolist()
        want = padded[i, :, dy:dy + 6, dx:dx + 7]
        if flips[i]:
            want = want.flip(-1)
        assert torch.equal(out[i], want)
    assert flips.any() and (~flips).any()


def test_stream_augments_with_zero_padding_when_asked():
    x = torch.full((64, 3, 8, 8), 200, dtype=torch.uint8)
    s = TrainStream(x, torch.zeros(64, dtype=torch.long), 64, seed=0, augment="crop_flip")
    xb, _ = next(s.batches(0))
    zero_rows = (xb == 0).all(dim=1)  # padding shows as black pixels
    assert zero_rows.any() and (xb > 0).any()
    assert set(torch.unique(xb).tolist()) <= {0.0, torch.tensor(200 / 255).item()}


def test_cifar_normalisation():
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = to_input(x, "cifar")
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([(1 - 0.4914) / 0.2023, (1 - 0.4822) / 0.1994, (1 - 0.4465) / 0.2010]))


def test_host_fallback_gives_the_same_batches():
    x, y = _images(n=40)
    a = _all(TrainStream(x, y, 16, seed=5, augment="crop_flip", on_host=False), 1)
    b = _all(TrainStream(x, y, 16, seed=5, augment="crop_flip", on_host=True), 1)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# --- issue 20: a pass is prepared in chunks (one gather and augmentation per chunk, one kernel per
# batch); the batches must be those of the per-batch stream before it, bit for bit.

#: sha256 of every batch (bytes, dtype, shape, strides) of two epochs x two phases, written by the
#: per-batch stream before the chunked one (see _pass_hash).
PER_BATCH_HASHES = {
    "none": "6e2a87a92fe6df2dce259ad6f24e37ec2e91ab07c100958390b5c5a5b0b7eb2a",
    "crop_flip": "6a05a6c355a189ae175db1fc799ed0c9f1411192ed782524cb9d098e641e5586",
    "grey_crop_flip": "885ec33d0d732f2f0edf6f84c96129c2332e0fe45263a98ae9093811757feee2",
    "cifar_norm": "2dacc368e5e2171e52313ecb3c98745c87f970d193e3c87aab340bb78adcf939",
}
STREAM_KWARGS = {
    "none": {}, "crop_flip": {"augment": "crop_flip"}, "grey_crop_flip": {"augment": "crop_flip", "c": 1},
    "cifar_norm": {"augment": "crop_flip", "normalize": "cifar"},
}


def _pass_hash(c=3, **kwargs):
    import hashlib

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (200, c, 12, 12), generator=g, dtype=torch.uint8)
    s = TrainStream(x, torch.arange(200) % 7, 32, seed=5, **kwargs)
    h = hashlib.sha256()
    for epoch in range(2):
        for phase in range(2):
            for xb, yb in s.batches(epoch, phase):
                h.update(xb.contiguous().numpy().tobytes())
                h.update(yb.numpy().tobytes())
                h.update(str((xb.dtype, tuple(xb.shape), xb.stride())).encode())
    return h.hexdigest()


@pytest.mark.parametrize("kind", sorted(PER_BATCH_HASHES))
def test_batches_equal_the_per_batch_streams_bit_for_bit(kind):
    assert _pass_hash(**STREAM_KWARGS[kind]) == PER_BATCH_HASHES[kind]


@pytest.mark.parametrize("kwargs", [{"augment": "crop_flip"}, {"augment": "crop_flip", "randaugment": 9},
                                    {"randaugment": 5, "randaugment_ops": "digits"}], ids=["crop_flip", "ra", "ra_digits"])
@pytest.mark.parametrize("channels", [1, 3])
def test_chunk_size_changes_no_batch(monkeypatch, kwargs, channels):
    from osrbench.data import stream

    x, y = _images(n=70, c=channels)
    whole = TrainStream(x, y, 16, seed=2, **kwargs)
    assert whole.chunk_images() >= 70  # the whole pass at once
    a = _all(whole, 1, 1)
    monkeypatch.setattr(stream, "CHUNK_BYTES", 1)  # one batch per chunk, as before chunks
    small = TrainStream(x, y, 16, seed=2, **kwargs)
    assert small.chunk_images() == 16
    b = _all(small, 1, 1)
    assert [len(yb) for _, yb in a] == [len(yb) for _, yb in b] == [16, 16, 16, 16, 6]
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and xa.is_contiguous()


def test_chunks_are_whole_batches_within_the_byte_budget():
    from osrbench.data.stream import CHUNK_BYTES

    x = torch.zeros(10, 1, 64, 64, dtype=torch.uint8)
    s = TrainStream(x, torch.zeros(10, dtype=torch.long), 64, seed=0)
    assert s.chunk_images() % 64 == 0 and s.chunk_images() * 3 * 64 * 64 <= CHUNK_BYTES
    assert TrainStream(x, torch.zeros(10, dtype=torch.long), 64, seed=0, randaugment=9).chunk_images() * 8 * 3 * 64 * 64 <= CHUNK_BYTES
    assert TrainStream(x, torch.zeros(10, dtype=torch.long), 64, seed=0, on_host=True).chunk_images() == 64


def test_to_input_is_the_float32_division_whatever_the_default_dtype():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    want = (x.float() / 255).expand(-1, 3, -1, -1)
    dtype = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        got = to_input(x)
    finally:
        torch.set_default_dtype(dtype)
    assert got.dtype == torch.float32 and got.is_contiguous() and torch.equal(got, want)
