"""ddl.vision.transforms: Compose, ToTensor, Normalize, RandomCrop, RandomHorizontalFlip,
CenterCrop, Pad, Lambda -- torchvision's (v1) names and arguments.

Inputs may be PIL images, NumPy arrays (H, W) or (H, W, C), or ddl tensors (..., H, W) (what
ToTensor returns); the geometric transforms return the kind they were given. Random choices
come from ddl's generator (ddl.manual_seed), so a seeded run is reproducible.
"""
import numbers

import numpy as np

from .. import _C
from .._tensor import Tensor


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self):
        body = "".join(f"\n    {t}" for t in self.transforms)
        return f"Compose({body}\n)"


class Lambda:
    def __init__(self, lambd):
        if not callable(lambd):
            raise TypeError(f"Lambda: argument should be callable, got {type(lambd).__name__}")
        self.lambd = lambd

    def __call__(self, img):
        return self.lambd(img)

    def __repr__(self):
        return "Lambda()"


def _is_pil(img):
    return hasattr(img, "getbands") and hasattr(img, "mode")


def _as_hwc(img):
    """A NumPy (H, W, C) view of a PIL image or array, and how to turn a result back."""
    if _is_pil(img):
        from PIL import Image

        a = np.asarray(img)
        mode = img.mode
        return (a[:, :, None] if a.ndim == 2 else a), (
            lambda r: Image.fromarray(r[:, :, 0] if r.shape[2] == 1 and a.ndim == 2 else r,
                                      mode=mode))
    if isinstance(img, np.ndarray):
        if img.ndim == 2:
            return img[:, :, None], lambda r: r[:, :, 0]
        if img.ndim == 3:
            return img, lambda r: r
    raise TypeError(f"expected a PIL image, a NumPy array (H, W[, C]) or a ddl tensor, got "
                    f"{type(img).__name__}")


class ToTensor:
    """PIL image or uint8 array (H, W[, C]) -> float32 tensor (C, H, W) in [0, 1]; float
    arrays keep their values."""

    def __call__(self, pic):
        if isinstance(pic, Tensor):
            raise TypeError("ToTensor: the input is already a tensor")
        a, _ = _as_hwc(pic)
        out = np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)
        if a.dtype == np.uint8:
            out /= 255.0
        return _C.from_buffer(out)

    def __repr__(self):
        return "ToTensor()"


class PILToTensor:
    def __call__(self, pic):
        a, _ = _as_hwc(pic)
        return _C.from_buffer(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.int64))


class Normalize:
    """(x - mean) / std per channel of a float tensor (C, H, W) or (N, C, H, W)."""

    def __init__(self, mean, std, inplace=False):
        self.mean, self.std, self.inplace = list(mean), list(std), inplace
        if any(s == 0 for s in self.std):
            raise ValueError(f"Normalize: std evaluated to zero: {self.std}")

    def __call__(self, t):
        if not isinstance(t, Tensor) or not t.dtype.is_floating_point:
            raise TypeError("Normalize: input must be a float tensor (apply ToTensor first)")
        if t.ndim < 3:
            raise ValueError(f"Normalize: expected a (..., C, H, W) tensor, got shape {t.shape}")
        c = t.shape[-3]
        m, s = self.mean, self.std
        if len(m) == 1:
            m = m * c
        if len(s) == 1:
            s = s * c
        if len(m) != c or len(s) != c:
            raise ValueError(f"Normalize: {len(m)} means / {len(s)} stds for {c} channels")
        mean = _C.from_buffer(np.asarray(m, dtype=t.dtype.numpy).reshape(c, 1, 1))
        std = _C.from_buffer(np.asarray(s, dtype=t.dtype.numpy).reshape(c, 1, 1))
        out = (t - mean) / std
        return t.copy_(out) if self.inplace else out

    def __repr__(self):
        return f"Normalize(mean={self.mean}, std={self.std})"


def _randint(n):
    return int(_C.random("i", (), _C.INT64, 0, n).item())


def _rand():
    return float(_C.random("u", (), _C.FLOAT64).item())


def _pad_hwc(a, padding, fill, mode):
    left, top, right, bottom = _pad4(padding)
    width = ((top, bottom), (left, right), (0, 0))
    if mode == "constant":
        return np.pad(a, width, mode="constant", constant_values=fill)
    if mode in ("edge", "reflect", "symmetric"):
        return np.pad(a, width, mode=mode)
    raise ValueError(f"padding_mode must be constant, edge, reflect or symmetric, got {mode!r}")


def _pad4(padding):
    if isinstance(padding, numbers.Integral):
        return (padding,) * 4
    p = tuple(padding)
    if len(p) == 2:
        return (p[0], p[1], p[0], p[1])
    if len(p) == 4:
        return p
    raise ValueError(f"padding must be an int or a sequence of 2 or 4 ints, got {padding!r}")


def _size2(size):
    if isinstance(size, numbers.Integral):
        return int(size), int(size)
    h, w = tuple(size) if len(size) == 2 else (size[0], size[0])
    return int(h), int(w)


def _apply_hw(img, fn):
    """Run fn on a (H, W, C) NumPy array view of img; return img's kind."""
    if isinstance(img, Tensor):
        a = img.detach().numpy()
        lead = a.shape[:-2]
        hwc = np.moveaxis(a.reshape((-1,) + a.shape[-2:]), 0, -1)
        r = fn(hwc)
        r = np.ascontiguousarray(np.moveaxis(r, -1, 0).reshape(lead + r.shape[:2]))
        return _C.from_buffer(r)
    a, back = _as_hwc(img)
    return back(np.ascontiguousarray(fn(a)))


class Pad:
    def __init__(self, padding, fill=0, padding_mode="constant"):
        self.padding, self.fill, self.padding_mode = padding, fill, padding_mode

    def __call__(self, img):
        return _apply_hw(img, lambda a: _pad_hwc(a, self.padding, self.fill, self.padding_mode))


class RandomCrop:
    """A random (h, w) crop, after optional padding (torchvision's arguments)."""

    def __init__(self, size, padding=None, pad_if_needed=False, fill=0,
                 padding_mode="constant"):
        self.size = _size2(size)
        self.padding, self.pad_if_needed = padding, pad_if_needed
        self.fill, self.padding_mode = fill, padding_mode

    def _crop(self, a):
        if self.padding is not None:
            a = _pad_hwc(a, self.padding, self.fill, self.padding_mode)
        th, tw = self.size
        h, w = a.shape[:2]
        if self.pad_if_needed and (h < th or w < tw):
            a = _pad_hwc(a, (max(0, tw - w), max(0, th - h)), self.fill, self.padding_mode)
            h, w = a.shape[:2]
        if h < th or w < tw:
            raise ValueError(f"RandomCrop: crop size {(th, tw)} is larger than the image "
                             f"{(h, w)}")
        i, j = _randint(h - th + 1), _randint(w - tw + 1)
        return a[i:i + th, j:j + tw]

    def __call__(self, img):
        return _apply_hw(img, self._crop)

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class CenterCrop:
    def __init__(self, size):
        self.size = _size2(size)

    def __call__(self, img):
        th, tw = self.size

        def crop(a):
            h, w = a.shape[:2]
            if h < th or w < tw:
                raise ValueError(f"CenterCrop: crop size {(th, tw)} exceeds the image {(h, w)}")
            i, j = (h - th) // 2, (w - tw) // 2
            return a[i:i + th, j:j + tw]

        return _apply_hw(img, crop)


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img):
        if _rand() < self.p:
            return _apply_hw(img, lambda a: a[:, ::-1])
        return img

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class RandomVerticalFlip(RandomHorizontalFlip):
    def __call__(self, img):
        if _rand() < self.p:
            return _apply_hw(img, lambda a: a[::-1])
        return img


__all__ = ["CenterCrop", "Compose", "Lambda", "Normalize", "PILToTensor", "Pad", "RandomCrop",
           "RandomHorizontalFlip", "RandomVerticalFlip", "ToTensor"]
