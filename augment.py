"""``--diffaug``: differentiable augmentation of every image D sees (Zhao et al. 2020).

    python main.py train --loss=hinge --sn --diffaug=color,translation,cutout ...

D judges real and fake faces only through the same random augmentation, so it cannot learn
the training set by heart, and G never learns to draw the augmentation: the transforms are
plain tensor arithmetic, gradients flow through them to G, and the real images never change.
Each image gets its own random parameters, from torch's generator on the images' device
(saved in ``last.pth``, so a resumed run augments exactly as an uninterrupted one).

- ``color``: brightness (add -0.5..0.5), saturation (scale the distance from the grey of
  each pixel by 0..2), contrast (scale the distance from the image's mean by 0.5..1.5).
- ``translation``: shift by up to 1/8 of the side each way, filling with 0 (mid-grey).
- ``cutout``: set a random square of half the side to 0.

Images are (N, 3, H, W) in [-1, 1].
"""
import torch

KINDS = ("color", "translation", "cutout")


SPELLINGS = {"colour": "color"}  # the paper's names are the flag's; our docs write colour


def parse(text):
    """'color,cutout' -> ('color', 'cutout') in the order given; '' -> (). Upper case and
    'colour' are read as the kinds they name. ValueError names an unknown kind, and the kind
    it is closest to."""
    import difflib
    kinds = tuple(SPELLINGS.get(k.strip().lower(), k.strip().lower())
                  for k in str(text or "").split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], KINDS, n=1, cutoff=0.6)
        raise ValueError(f"unknown {', '.join(unknown)}"
                         + (f" (did you mean {close[0]}?)" if close else ""))
    return kinds


def _uniform(x, low, high):
    """One random number per image, shaped to broadcast over (N, C, H, W)."""
    return torch.rand(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype) * (high - low) + low


def color(x):
    x = x + _uniform(x, -0.5, 0.5)
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * _uniform(x, 0.0, 2.0) + grey
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5) + mean


def translation(x, ratio=0.125):
    """Shift each image by its own (dy, dx) in -ratio*side..ratio*side, zeros coming in."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device)
    # output pixel (i, j) comes from input (i - dy, j - dx): from the padded image at + s
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy + sy
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx + sx
    padded = torch.nn.functional.pad(x, (sx, sx, sy, sy))
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x, ratio=0.5):
    """Zero one square of ratio*side per image, its centre anywhere in the image (the
    square is clipped at the border)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (n, 1, 1), device=x.device) - ch // 2
    left = torch.randint(0, w, (n, 1, 1), device=x.device) - cw // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)  # (N, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


class DiffAugment:
    """Callable on a batch: the chosen transforms in the fixed order color, translation,
    cutout; with none chosen it returns the batch itself (the book: no augmentation)."""

    def __init__(self, kinds=()):
        self.kinds = tuple(k for k in KINDS if k in kinds)

    def __call__(self, x):
        for kind in self.kinds:
            x = _TRANSFORMS[kind](x)
        return x
