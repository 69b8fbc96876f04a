"""ddl.vision: the part of torchvision training scripts use -- datasets.MNIST, FashionMNIST,
CIFAR10 and the common transforms. `import torchvision` becomes `import ddl.vision as
torchvision` (or `from ddl.vision import datasets, transforms`)."""
from . import datasets as datasets
from . import transforms as transforms

__all__ = ["datasets", "transforms"]
