"""Networks shared by the built-in methods: the ``classifier32`` backbone, the pretrained backbones
(:mod:`osrbench.models.backbones`: ResNet-50, ViT-B/16) and the DCGAN pair."""

from osrbench.models.backbones import BACKBONES, BackboneNet, make_backbone, make_network
from osrbench.models.batchnorm import UncountedBatchNorm2d, count_batches
from osrbench.models.classifier32 import Classifier32, MultiBatchNorm2d, init_classifier32_
from osrbench.models.dcgan import (
    GAN_MODES,
    Discriminator,
    Generator,
    Resize2d,
    init_dcgan_,
    make_gan,
    native_sizes_ok,
    resolve_gan_mode,
    sample_noise,
)

__all__ = [
    "BACKBONES",
    "BackboneNet",
    "make_backbone",
    "make_network",
    "GAN_MODES",
    "Classifier32",
    "Discriminator",
    "Generator",
    "MultiBatchNorm2d",
    "Resize2d",
    "UncountedBatchNorm2d",
    "count_batches",
    "init_classifier32_",
    "init_dcgan_",
    "make_gan",
    "native_sizes_ok",
    "resolve_gan_mode",
    "sample_noise",
]
