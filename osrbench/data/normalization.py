"""The input normalisations a config may name, as plain numbers (no torch: the config reads them)."""

#: CIFAR statistics the MLS-paper recipe normalises every dataset with (METHODS.md §4.2).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
#: ImageNet statistics (timm's IMAGENET_DEFAULT_MEAN / STD): the test transform of the MLS release's
#: ImageNet evaluation (``methods/tests/openset_test_imagenet.py``) and of torchvision's classifiers.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``normalize`` -> (mean, std) per channel, applied after the division by 255; ``none`` has none.
NORMALIZE_STATS = {"cifar": (CIFAR_MEAN, CIFAR_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}
NORMALIZE_CHOICES = ("none", *NORMALIZE_STATS)
