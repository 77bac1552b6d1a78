"""Tests of osrbench.models: classifier32 (METHODS.md §2) and the DCGAN pair (§3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from osrbench.models import (
    Classifier32,
    Discriminator,
    Generator,
    MultiBatchNorm2d,
    UncountedBatchNorm2d,
    make_gan,
    resolve_gan_mode,
    sample_noise,
)

K = 6


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _bns(model: Classifier32) -> list[MultiBatchNorm2d]:
    return [getattr(model, f"bn{i}") for i in range(1, 10)]


def _running(model: Classifier32, branch: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    out = []
    for m in _bns(model):
        b = m.bns[branch]
        out.append((b.running_mean.clone(), b.running_var.clone(), b.num_batches_tracked.clone()))
    return out


def _stats_equal(a, b) -> list[bool]:
    return [all(torch.equal(x, y) for x, y in zip(ra, rb)) for ra, rb in zip(a, b)]


# ---------------------------------------------------------------------------------------------
# classifier32: structure and parameters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("branches", [1, 2])
@pytest.mark.parametrize("num_classes", [4, 6, 20])
def test_classifier32_parameter_counts(branches, num_classes):
    model = Classifier32(num_classes, bn_branches=branches)
    conv = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    bn_affine = sum(
        m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    )
    assert conv == 997_056 == 1_728 + 36_864 + 73_728 + 6 * 147_456
    assert bn_affine == branches * 2 * 1_024
    assert model.fc.weight.shape == (num_classes, 128)
    assert model.fc.bias is None
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    total = sum(p.numel() for p in model.parameters())
    assert total == 997_056 + branches * 2_048 + 128 * num_classes
    # no unused tenth BN, nine BN layers of `branches` branches each
    assert not hasattr(model, "bn10")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 9 * branches


def test_classifier32_layer_table():
    model = Classifier32(K)
    expected = [  # (in, out, stride)
        (3, 64, 1), (64, 64, 1), (64, 128, 2),
        (128, 128, 1), (128, 128, 1), (128, 128, 2),
        (128, 128, 1), (128, 128, 1), (128, 128, 2),
    ]
    for i, (cin, cout, s) in enumerate(expected, start=1):
        conv = getattr(model, f"conv{i}")
        assert (conv.in_channels, conv.out_channels, conv.stride, conv.kernel_size, conv.padding) == (
            cin, cout, (s, s), (3, 3), (1, 1)
        )
        bn = getattr(model, f"bn{i}").bns[0]
        assert bn.num_features == cout and bn.eps == 1e-5 and bn.momentum == 0.1
    for name in ("dr1", "dr2", "dr3"):
        d = getattr(model, name)
        assert isinstance(d, nn.Dropout2d) and d.p == 0.2


def test_classifier32_state_dict_keys_follow_release_names():
    keys = set(Classifier32(K, bn_branches=2).state_dict())
    assert "conv1.weight" in keys and "fc.weight" in keys
    assert "bn1.bns.0.weight" in keys and "bn9.bns.1.running_var" in keys
    assert not any(k.startswith("bn10") for k in keys)


def test_classifier32_feat_dim_and_in_channels():
    model = Classifier32(5, in_channels=1, feat_dim=64).eval()
    assert model.conv1.in_channels == 1
    assert model.conv9.out_channels == 64 and model.bn9.bns[0].num_features == 64
    assert model.fc.in_features == 64
    x = torch.rand(2, 1, 28, 28)
    x1, x2, f, z = model.features(x)
    assert f.shape == (2, 64) and z.shape == (2, 5)
    assert model.pooled(x).shape == (2, 64)


def test_classifier32_init_statistics():
    model = Classifier32(K, bn_branches=2)
    w = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, nn.Conv2d)])
    assert abs(w.mean().item()) < 1e-3
    assert 0.049 < w.std().item() < 0.051
    bnw = torch.cat([m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bnw.mean().item() - 1.0) < 0.005
    assert 0.017 < bnw.std().item() < 0.023
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.count_nonzero(m.bias) == 0
            assert torch.count_nonzero(m.running_mean) == 0
            assert torch.equal(m.running_var, torch.ones_like(m.running_var))
    # the two branches are independent draws with the same distribution
    assert not torch.equal(model.bn1.bns[0].weight, model.bn1.bns[1].weight)
    # Linear head keeps PyTorch's default: U(-1/sqrt(128), 1/sqrt(128))
    bound = 1 / math.sqrt(128)
    fw = Classifier32(200).fc.weight
    assert fw.abs().max().item() <= bound
    assert abs(fw.std().item() - bound / math.sqrt(3)) < 0.1 * bound / math.sqrt(3)


# ---------------------------------------------------------------------------------------------
# classifier32: shapes and the injection interface
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 28, 32, 64])
def test_classifier32_shapes(size):
    model = Classifier32(K, bn_branches=2).eval()
    b = 2
    x = torch.rand(b, 3, size, size)
    x1, x2, f, z = model.features(x)
    h1, h2 = _cdiv(size, 2), _cdiv(size, 4)
    assert x1.shape == (b, 128, h1, h1)
    assert x2.shape == (b, 128, h2, h2)
    assert f.shape == (b, 128)
    assert z.shape == (b, K)
    assert model(x).shape == (b, K)
    assert model.logits(x, bn=1).shape == (b, K)
    assert model.pooled(x).shape == (b, 128)
    assert model.from_layer2(x1).shape == (b, K)
    assert model.from_layer3(x2).shape == (b, K)
    assert model.head(f).shape == (b, K)
    # the last feature map is ceil(H/8)
    seen = []
    handle = model.conv9.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    model(x)
    handle.remove()
    assert seen == [_cdiv(size, 8)]


@pytest.mark.parametrize("bn", [0, 1])
def test_injection_points_are_the_internal_cut_points_eval(bn):
    model = Classifier32(K, bn_branches=2)
    # make branch statistics non-trivial first
    model.train()
    with torch.no_grad():
        for br in (0, 1):
            model(torch.rand(8, 3, 32, 32) * (1 + br), bn=br)
    model.eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        x1, x2, f, z = model.features(x, bn=bn)
        zf = model(x, bn=bn)
        torch.testing.assert_close(zf, z, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(model.from_layer2(x1, bn=bn), z, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.from_layer3(x2, bn=bn), z, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.head(f), z, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(model.pooled(x, bn=bn), f, rtol=1e-6, atol=1e-6)
        # an injected map that is not the true cut point gives different logits
        assert not torch.allclose(model.from_layer2(x1 * 1.5, bn=bn), z, atol=1e-4)
        assert not torch.allclose(model.from_layer3(x2 * 1.5, bn=bn), z, atol=1e-4)


def test_injection_points_are_the_internal_cut_points_train_without_dropout():
    model = Classifier32(K).train()
    for d in (model.dr1, model.dr2, model.dr3):
        d.p = 0.0
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        x1, x2, f, z = model.features(x)
        # train-mode BN uses batch statistics: same input maps -> same statistics -> same logits
        torch.testing.assert_close(model.from_layer2(x1), z, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.from_layer3(x2), z, rtol=1e-5, atol=1e-5)


def test_x1_x2_are_taken_before_the_next_blocks_dropout():
    model = Classifier32(K).train()
    model.dr2.p = 0.99
    model.dr3.p = 0.99
    with torch.no_grad():
        x1, x2, _, _ = model.features(torch.rand(8, 3, 32, 32))
    # a dropped channel would be all zeros; an activated BN output is not
    assert (x1.abs().amax(dim=(2, 3)) > 0).all()
    assert (x2.abs().amax(dim=(2, 3)) > 0).all()


def test_injected_paths_apply_their_leading_dropout_in_train_mode():
    model = Classifier32(K).train()
    x1 = torch.randn(8, 128, 16, 16)
    x2 = torch.randn(8, 128, 8, 8)

    def twice(fn, arg):
        with torch.no_grad():
            torch.manual_seed(1)
            a = fn(arg)
            torch.manual_seed(2)
            b = fn(arg)
        return torch.allclose(a, b, atol=1e-6)

    # from_layer3: only dr3 is on its path
    model.dr2.p, model.dr3.p = 0.2, 0.0
    assert twice(model.from_layer3, x2)
    model.dr2.p, model.dr3.p = 0.0, 0.2
    assert not twice(model.from_layer3, x2)
    # from_layer2: dr2 is on its path (dr3 off here)
    model.dr2.p, model.dr3.p = 0.2, 0.0
    assert not twice(model.from_layer2, x1)
    model.dr2.p, model.dr3.p = 0.0, 0.0
    assert twice(model.from_layer2, x1)
    # eval mode: deterministic with all dropouts at p = 0.2
    model.dr2.p, model.dr3.p = 0.2, 0.2
    model.eval()
    assert twice(model.from_layer2, x1)
    assert twice(model.from_layer3, x2)


def test_input_dropout_only_in_train_mode():
    model = Classifier32(K)
    model.dr2.p = model.dr3.p = 0.0  # isolate the input dropout
    x = torch.rand(64, 3, 8, 8) + 0.1
    seen = []
    handle = model.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        model.eval()
        e1, e2 = model(x), model(x)
        assert torch.equal(e1, e2)
        torch.testing.assert_close(seen[-1], x, rtol=0, atol=0)
        model.train()
        torch.manual_seed(1)
        t1 = model(x)
        torch.manual_seed(2)
        t2 = model(x)
    handle.remove()
    assert not torch.allclose(t1, t2, atol=1e-5)
    # whole colour channels are dropped, survivors are scaled by 1/(1-0.2) = 1.25
    inp = seen[-1]
    zero = inp.abs().amax(dim=(2, 3)) == 0
    assert 0 < zero.sum() < zero.numel()
    torch.testing.assert_close(inp[~zero], (x * 1.25)[~zero])


# ---------------------------------------------------------------------------------------------
# classifier32: the two-branch BN variant
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("branch", [0, 1])
def test_two_branch_bn_updates_only_the_chosen_branch(branch):
    model = Classifier32(K, bn_branches=2).train()
    other = 1 - branch
    before_this, before_other = _running(model, branch), _running(model, other)
    with torch.no_grad():
        model(torch.rand(8, 3, 32, 32), bn=branch)
    assert not any(_stats_equal(before_this, _running(model, branch)))  # all nine changed
    assert all(_stats_equal(before_other, _running(model, other)))  # none changed
    for m in _bns(model):
        assert int(m.bns[branch].num_batches_tracked) == 1
        assert int(m.bns[other].num_batches_tracked) == 0


@pytest.mark.parametrize("entry, first", [("forward", 0), ("pooled", 0), ("features", 0), ("from_layer2", 3),
                                          ("from_layer3", 6)])
def test_each_entry_point_counts_the_batches_of_the_bns_it_ran_as_batchnorm_does(entry, first):
    """The network counts its BNs' batches itself (one kernel per forward); the counts are torch's."""
    model = Classifier32(K, bn_branches=2).train()
    x = {"from_layer2": torch.rand(4, 128, 16, 16), "from_layer3": torch.rand(4, 128, 8, 8)}.get(
        entry, torch.rand(4, 3, 32, 32))
    getattr(model, entry)(x, 1)
    getattr(model, entry)(x, 1)
    assert [int(m.bns[1].num_batches_tracked) for m in _bns(model)] == [0] * first + [2] * (9 - first)
    assert [int(m.bns[0].num_batches_tracked) for m in _bns(model)] == [0] * 9
    model.eval()
    getattr(model, entry)(x, 1)
    assert [int(m.bns[1].num_batches_tracked) for m in _bns(model)] == [0] * first + [2] * (9 - first)


@pytest.mark.parametrize("train", [True, False])
def test_uncounted_batchnorm_normalises_exactly_as_batchnorm(train):
    plain, ours = torch.nn.BatchNorm2d(4), UncountedBatchNorm2d(4)
    with torch.no_grad():
        plain.weight.normal_()
        plain.bias.normal_()
    ours.load_state_dict(plain.state_dict())
    plain.train(train)
    ours.train(train)
    x = torch.randn(8, 4, 5, 5) * 2 + 3
    assert torch.equal(plain(x), ours(x))
    assert torch.equal(plain.running_mean, ours.running_mean) and torch.equal(plain.running_var, ours.running_var)
    assert int(plain.num_batches_tracked) == int(train) and int(ours.num_batches_tracked) == 0


def test_two_branch_bn_gradients_reach_only_the_chosen_branch():
    model = Classifier32(K, bn_branches=2).train()
    model(torch.rand(4, 3, 32, 32), bn=1).sum().backward()
    for m in _bns(model):
        assert m.bns[0].weight.grad is None
        assert m.bns[1].weight.grad is not None
    assert model.conv1.weight.grad is not None and model.fc.weight.grad is not None


def test_two_branch_bn_eval_outputs_differ_by_branch():
    model = Classifier32(K, bn_branches=2).train()
    with torch.no_grad():
        model(torch.rand(8, 3, 16, 16), bn=0)
        model(torch.rand(8, 3, 16, 16) * 3 + 1, bn=1)
    model.eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(model(x, bn=0), model(x, bn=1))
    with pytest.raises(ValueError):
        model(x, bn=2)
    with pytest.raises(ValueError):
        Classifier32(K)(x, bn=1)


def test_injected_paths_update_only_later_bns():
    """DIAS quirk (§6.6): from_layer2 updates bn4–bn9, from_layer3 bn7–bn9 (branch 0)."""
    model = Classifier32(K, bn_branches=2).train()
    before = _running(model, 0)
    with torch.no_grad():
        model.from_layer2(torch.randn(4, 128, 16, 16))
    changed = [not e for e in _stats_equal(before, _running(model, 0))]
    assert changed == [False] * 3 + [True] * 6
    before = _running(model, 0)
    with torch.no_grad():
        model.from_layer3(torch.randn(4, 128, 8, 8))
    changed = [not e for e in _stats_equal(before, _running(model, 0))]
    assert changed == [False] * 6 + [True] * 3
    assert all(_stats_equal(_running(Classifier32(K, bn_branches=2), 1), _running(model, 1)))


def test_multibatchnorm_standalone():
    m = MultiBatchNorm2d(4, branches=3)
    assert len(m.bns) == 3 and m.branches == 3
    x = torch.randn(8, 4, 5, 5) * 2 + 3
    m.train()
    y = m(x, 2)
    torch.testing.assert_close(y, m.bns[2](x))
    # MultiBatchNorm2d counts the batch; its branches alone do not (Classifier32 counts for them)
    assert int(m.bns[2].num_batches_tracked) == 1
    m(x, 2, count=False)
    assert int(m.bns[2].num_batches_tracked) == 1
    assert int(m.bns[0].num_batches_tracked) == 0 and int(m.bns[1].num_batches_tracked) == 0
    with pytest.raises(ValueError):
        MultiBatchNorm2d(4, branches=0)


def test_classifier32_channels_last_and_autocast():
    model = Classifier32(K).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x1, x2, f, z = model.features(x)
            zi = model.from_layer2(x1)
        assert z.shape == zi.shape == (2, K)
        assert torch.isfinite(z.float()).all()


# ---------------------------------------------------------------------------------------------
# DCGAN
# ---------------------------------------------------------------------------------------------


def _conv_specs(seq: nn.Module, cls):
    return [
        (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0])
        for m in seq.modules()
        if isinstance(m, cls)
    ]


def test_g32_g64_layers_match_the_table():
    g32 = Generator(image_size=32)
    assert _conv_specs(g32, nn.ConvTranspose2d) == [
        (100, 512, 4, 1, 0), (512, 256, 4, 2, 1), (256, 128, 4, 2, 1), (128, 3, 4, 2, 1)
    ]
    g64 = Generator(image_size=64)
    assert _conv_specs(g64, nn.ConvTranspose2d) == [
        (100, 512, 4, 1, 0), (512, 256, 4, 2, 1), (256, 128, 4, 2, 1), (128, 64, 4, 2, 1), (64, 3, 4, 2, 1)
    ]
    for g, n_bn in ((g32, 3), (g64, 4)):
        kinds = [type(m) for m in g.main]
        assert kinds[-2:] == [nn.ConvTranspose2d, nn.Sigmoid]
        assert kinds.count(UncountedBatchNorm2d) == n_bn and kinds.count(nn.ReLU) == n_bn
        assert all(m.bias is None for m in g.modules() if isinstance(m, nn.ConvTranspose2d))


@pytest.mark.parametrize("size", [32, 64])
def test_discriminator_layers_and_spatial_sizes(size):
    d = Discriminator(image_size=size).eval()
    assert _conv_specs(d, nn.Conv2d) == [
        (3, 128, 4, 2, 1), (128, 256, 4, 2, 1), (256, 512, 4, 2, 1), (512, 1024, 4, 1, 0)
    ]
    kinds = [type(m) for m in d.main]
    assert kinds == [
        nn.Conv2d, nn.LeakyReLU,
        nn.Conv2d, UncountedBatchNorm2d, nn.LeakyReLU,
        nn.Conv2d, UncountedBatchNorm2d, nn.LeakyReLU,
        nn.Conv2d, nn.Sigmoid,
    ]
    assert all(m.negative_slope == 0.2 for m in d.main if isinstance(m, nn.LeakyReLU))
    # two sigmoids in series: end of main and end of the classifier
    assert sum(isinstance(m, nn.Sigmoid) for m in d.modules()) == 2
    assert isinstance(d.classifier[0], nn.Linear) and d.classifier[0].bias is not None
    assert d.classifier[0].in_features == 1024 and isinstance(d.classifier[-1], nn.Sigmoid)
    sizes = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:])))
        for m in d.main
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        out = d(torch.rand(2, 3, size, size))
    for h in hooks:
        h.remove()
    expected = {32: [16, 8, 4, 1], 64: [32, 16, 8, 5]}[size]
    assert sizes == [(s, s) for s in expected]
    assert out.shape == (2,)


GAN_CASES = [
    ("reference", 32, 3),
    ("reference", 64, 3),
    ("wrap", 8, 1),
    ("wrap", 8, 3),
    ("wrap", 28, 1),
    ("wrap", 28, 3),
    ("native", 8, 1),
    ("native", 8, 3),
    ("native", 16, 1),
    ("native", 16, 3),
]


@pytest.mark.parametrize("mode,size,nc", GAN_CASES)
def test_gan_output_shapes_and_ranges(mode, size, nc):
    g, d, resolved = make_gan(size, nc, mode=mode)
    assert resolved == mode == g.mode == d.mode
    gen = torch.Generator().manual_seed(0)
    b = 2
    z = sample_noise(b, 100, gen, "cpu")
    for train in (True, False):
        g.train(train)
        d.train(train)
        with torch.no_grad():
            x = g(z)
            p = d(x)
            p_real = d(torch.rand(b, nc, size, size))
        assert x.shape == (b, nc, size, size)
        assert x.dtype == torch.float32
        assert (x > 0).all() and (x < 1).all()
        for q in (p, p_real):
            assert q.shape == (b,)
            assert (q > 0).all() and (q < 1).all()


def test_gan_is_trainable_end_to_end():
    g, d, _ = make_gan(8, 1, mode="wrap")
    z = sample_noise(2, 100, torch.Generator().manual_seed(0), "cpu")
    loss = F.binary_cross_entropy(d(g(z)), torch.ones(2))
    loss.backward()
    assert all(p.grad is not None for p in g.parameters())
    assert all(p.grad is not None for p in d.parameters())


@pytest.mark.parametrize("size,nc", [(8, 1), (28, 3)])
def test_wrap_mode_uses_g32_and_d32_with_fixed_resize(size, nc):
    g = Generator(nc=nc, image_size=size, mode="wrap").eval()
    d = Discriminator(nc=nc, image_size=size, mode="wrap").eval()
    # G32 with nc = C, D with nc = C (METHODS.md §3 table), plus a parameter-free resize
    assert _conv_specs(g, nn.ConvTranspose2d) == [
        (100, 512, 4, 1, 0), (512, 256, 4, 2, 1), (256, 128, 4, 2, 1), (128, nc, 4, 2, 1)
    ]
    assert _conv_specs(d, nn.Conv2d) == [
        (nc, 128, 4, 2, 1), (128, 256, 4, 2, 1), (256, 512, 4, 2, 1), (512, 1024, 4, 1, 0)
    ]
    assert not list(g.resize.parameters()) and not list(d.resize.parameters())
    z = torch.randn(3, 100, 1, 1)
    with torch.no_grad():
        raw = g.main(z)
        assert raw.shape == (3, nc, 32, 32)
        expect = F.interpolate(raw, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        torch.testing.assert_close(g(z), expect)
        seen = []
        h = d.main[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
        d(torch.rand(3, nc, size, size))
        h.remove()
    assert seen == [(3, nc, 32, 32)]


def test_native_8px_chain_matches_the_spec():
    g = Generator(nc=1, image_size=8, mode="native")
    assert _conv_specs(g, nn.ConvTranspose2d) == [(100, 256, 4, 1, 0), (256, 1, 4, 2, 1)]
    assert [type(m) for m in g.main] == [nn.ConvTranspose2d, UncountedBatchNorm2d, nn.ReLU, nn.ConvTranspose2d, nn.Sigmoid]
    d = Discriminator(nc=1, image_size=8, mode="native")
    assert _conv_specs(d, nn.Conv2d) == [(1, 128, 4, 2, 1), (128, 256, 4, 1, 0)]
    assert [type(m) for m in d.main] == [nn.Conv2d, nn.LeakyReLU, nn.Conv2d, nn.Sigmoid]
    assert d.classifier[0].in_features == 256


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_native_chains_have_sensible_spatial_sizes(size):
    g = Generator(nc=3, image_size=size, mode="native")
    d = Discriminator(nc=3, image_size=size, mode="native")
    g_sizes, d_sizes = [], []
    hooks = [m.register_forward_hook(lambda m, i, o: g_sizes.append(o.shape[-1]))
             for m in g.main if isinstance(m, nn.ConvTranspose2d)]
    hooks += [m.register_forward_hook(lambda m, i, o: d_sizes.append(o.shape[-1]))
              for m in d.main if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        d(g(torch.randn(2, 100, 1, 1)))
    for h in hooks:
        h.remove()
    n = int(math.log2(size // 4))
    assert g_sizes == [4 * 2**i for i in range(n + 1)]
    assert d_sizes == [size // 2**i for i in range(1, n + 1)] + [1]
    if size == 32:  # the re-derived chain reproduces G32 / D
        assert _conv_specs(g, nn.ConvTranspose2d) == _conv_specs(Generator(image_size=32), nn.ConvTranspose2d)
        assert _conv_specs(d, nn.Conv2d) == _conv_specs(Discriminator(image_size=32), nn.Conv2d)
    if size == 64:
        assert _conv_specs(g, nn.ConvTranspose2d) == _conv_specs(Generator(image_size=64), nn.ConvTranspose2d)


def test_gan_init_statistics():
    g, d, _ = make_gan(32, 3)
    w = torch.cat([m.weight.flatten() for net in (g, d) for m in net.modules()
                   if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(w.mean().item()) < 1e-3
    assert 0.0195 < w.std().item() < 0.0205
    bn = [m for net in (g, d) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    bnw = torch.cat([m.weight for m in bn])
    assert abs(bnw.mean().item() - 1.0) < 0.005 and 0.015 < bnw.std().item() < 0.025
    assert all(torch.count_nonzero(m.bias) == 0 for m in bn)
    lin = d.classifier[0]
    bound = 1 / math.sqrt(1024)
    assert lin.weight.abs().max().item() <= bound and lin.bias.abs().max().item() <= bound
    assert all(m.bias is None for net in (g, d) for m in net.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


@pytest.mark.parametrize(
    "size,mode,expected",
    [
        (32, "auto", "reference"),
        (64, "auto", "reference"),
        (8, "auto", "native"),
        (16, "auto", "native"),
        (128, "auto", "native"),
        (28, "auto", "wrap"),
        (20, "auto", "wrap"),
        (32, "reference", "reference"),
        (64, "reference", "reference"),
        (8, "wrap", "wrap"),
        (28, "wrap", "wrap"),
        (32, "wrap", "wrap"),
        (8, "native", "native"),
        (32, "native", "native"),
        (64, "native", "native"),
    ],
)
def test_resolve_gan_mode_table(size, mode, expected):
    assert resolve_gan_mode(size, mode) == expected


@pytest.mark.parametrize("size", [8, 16, 20, 28, 48, 128])
def test_reference_mode_rejects_other_sizes(size):
    with pytest.raises(ValueError, match="--image-size 32") as err:
        resolve_gan_mode(size, "reference")
    assert "wrap" in str(err.value) and "native" in str(err.value)
    with pytest.raises(ValueError):
        Generator(image_size=size, mode="reference")
    with pytest.raises(ValueError):
        Discriminator(image_size=size, mode="reference")


@pytest.mark.parametrize("size", [4, 12, 20, 28, 48, (16, 8)])
def test_native_mode_rejects_unsupported_sizes(size):
    with pytest.raises(ValueError, match="native") as err:
        resolve_gan_mode(size, "native")
    assert "4·2^n" in str(err.value)
    with pytest.raises(ValueError):
        Generator(image_size=size, mode="native")
    with pytest.raises(ValueError):
        Discriminator(image_size=size, mode="native")
    with pytest.raises(ValueError):
        make_gan(size, 3, mode="native")


def test_unknown_mode_and_bad_size_raise():
    with pytest.raises(ValueError, match="unknown gan_mode"):
        resolve_gan_mode(32, "resize")
    with pytest.raises(ValueError):
        resolve_gan_mode(0, "wrap")


def test_make_gan_auto():
    g, d, mode = make_gan(28, 1)
    assert mode == "wrap" and g.nc == d.nc == 1
    g, d, mode = make_gan(64, 3)
    assert mode == "reference" and len(_conv_specs(g, nn.ConvTranspose2d)) == 5
    g, d, mode = make_gan(8, 1, nz=16)
    assert mode == "native" and g.main[0].in_channels == 16
    assert g(torch.randn(2, 16, 1, 1)).shape == (2, 1, 8, 8)


def test_sample_noise_reproducible():
    a = sample_noise(5, 100, torch.Generator().manual_seed(7), torch.device("cpu"))
    b = sample_noise(5, 100, torch.Generator().manual_seed(7), "cpu")
    c = sample_noise(5, 100, torch.Generator().manual_seed(8), "cpu")
    assert a.shape == (5, 100, 1, 1) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # successive draws from one generator differ and follow the generator's stream
    gen = torch.Generator().manual_seed(7)
    first, second = sample_noise(5, 100, gen, "cpu"), sample_noise(5, 100, gen, "cpu")
    assert torch.equal(first, a) and not torch.equal(first, second)
    big = sample_noise(4096, 100, torch.Generator().manual_seed(0), "cpu")
    assert abs(big.mean().item()) < 0.01 and abs(big.std().item() - 1) < 0.01
    assert sample_noise(3, 10, None, "cpu").shape == (3, 10, 1, 1)


def test_the_gan_counts_its_bns_batches_as_batchnorm_does():
    g, d, _ = make_gan(32, 3, "reference")
    g.train()
    d.train()
    d(g(sample_noise(4, 100, None)))
    d(g(sample_noise(4, 100, None)).detach())
    bns = [m for net in (g, d) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 5 and [int(m.num_batches_tracked) for m in bns] == [2] * 5
    g.eval()
    d.eval()
    d(g(sample_noise(4, 100, None)))
    assert [int(m.num_batches_tracked) for m in bns] == [2] * 5
