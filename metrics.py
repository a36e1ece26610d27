"""Measuring faces: the sliced Wasserstein distance (SWD) between two sets of images.

Weight-free, so it needs nothing downloaded: the multi-scale SWD of Karras et al. 2018
(Progressive GAN), written for this project. Each image is split into a Laplacian pyramid
(5x5 binomial filter; 96, 48 and 24 px for our faces), 128 random 7x7x3 neighbourhoods are
taken from every image at every level, each colour channel is normalised over the set, and
the distance between the two sets of neighbourhoods is the mean, over 512 random unit
directions (4 x 128), of the 1-D Wasserstein distance of their projections. Reported x1e3 per
level and averaged over the levels. Lower is better; two samples of the same distribution
do not score 0, so always compare with the real-vs-real floor at the same count.

Every function takes uint8 image batches (N, 3, H, W).
"""
import numpy as np
import torch
import torch.nn.functional as F

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
_KERNEL = (_BINOMIAL[:, None] * _BINOMIAL[None, :]) / 256.0  # 5x5, sums to 1


def _filter(x, gain=1.0):
    k = (_KERNEL * gain).to(x).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=x.shape[1])


def _down(x):
    return _filter(x)[:, :, ::2, ::2]


def _up(x):
    """Double the size: insert zeros, then the same filter with gain 4."""
    n, c, h, w = x.shape
    out = torch.zeros(n, c, h * 2, w * 2, dtype=x.dtype, device=x.device)
    out[:, :, ::2, ::2] = x
    return _filter(out, 4.0)


def laplacian_pyramid(images, min_size=16):
    """Float images -> [band-pass levels..., low-pass rest], while the next level >= min_size."""
    levels, g = [], images
    while g.shape[-1] // 2 >= min_size:
        smaller = _down(g)
        levels.append(g - _up(smaller))
        g = smaller
    levels.append(g)
    return levels


def _descriptors(level, per_image, generator, size=7):
    """``per_image`` random size x size neighbourhoods of every image: (N * per_image, 3*7*7)."""
    n, c, h, w = level.shape
    ys = torch.randint(0, h - size + 1, (n, per_image), generator=generator)
    xs = torch.randint(0, w - size + 1, (n, per_image), generator=generator)
    offsets = torch.arange(size)
    rows = (ys[..., None] + offsets)[..., :, None].expand(n, per_image, size, size)
    cols = (xs[..., None] + offsets)[..., None, :].expand(n, per_image, size, size)
    batch = torch.arange(n)[:, None, None, None].expand(n, per_image, size, size)
    patches = level.permute(0, 2, 3, 1)[batch, rows, cols]  # (n, per_image, 7, 7, c)
    return patches.permute(0, 1, 4, 2, 3).reshape(n * per_image, c, size, size)


def _normalise(desc):
    """Each colour channel to zero mean and unit deviation over the whole descriptor set."""
    mean = desc.mean(dim=(0, 2, 3), keepdim=True)
    std = desc.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return ((desc - mean) / std).flatten(1)


def sliced_wasserstein(a, b, generator, repeats=4, directions=128):
    """Mean 1-D Wasserstein distance of a and b (same row count) over random directions."""
    results = []
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], directions, generator=generator)
        dirs /= dirs.norm(dim=0, keepdim=True)
        # one row per direction; numpy sorts rows about 3x faster than torch here
        pa = np.sort((a @ dirs).T.contiguous().numpy(), axis=1)
        pb = np.sort((b @ dirs).T.contiguous().numpy(), axis=1)
        results.append(float(np.abs(pa - pb).mean()))
    return float(np.mean(results))


def swd(images_a, images_b, seed=0, per_image=128):
    """Multi-scale SWD x1e3 between two uint8 sets of equal size: {'levels': [...], 'mean': x}.

    The same seed picks the same neighbourhood positions in both sets and the same
    directions, so identical sets score exactly 0.
    """
    if len(images_a) != len(images_b):
        raise ValueError(f"SWD compares sets of equal size, not {len(images_a)} and "
                         f"{len(images_b)}")
    pyramids = [laplacian_pyramid(x.float()) for x in (images_a, images_b)]
    levels = []
    for level, (la, lb) in enumerate(zip(*pyramids)):
        descs = [_normalise(_descriptors(x, per_image, torch.Generator().manual_seed(seed + level)))
                 for x in (la, lb)]
        levels.append(1e3 * sliced_wasserstein(*descs, torch.Generator().manual_seed(seed + 99)))
    return {"levels": levels, "mean": sum(levels) / len(levels),
            "sizes": [p.shape[-1] for p in pyramids[0]]}
