"""Drawing faces from a trained generator: the generate and interpolate commands, and a
small Python API for notebooks.

    python main.py generate --netg-path=checkpoints/netg_199.pth --netd-path=checkpoints/netd_199.pth
    python main.py generate --netg-path=G --netd-path=D --out-dir=faces/ --scale=4
    python main.py generate --netg-path=G --seeds=17,42 --out-dir=again/
    python main.py interpolate --netg-path=G --seeds=17,42,7 --steps=8 --gif=morph.gif

    from generate import Faces
    faces = Faces.load("checkpoints/netg_199.pth")   # or checkpoints/last.pth
    faces.images([17, 42])                             # PIL images

Every face has a seed: face ``seed`` is G applied to noise drawn from a generator seeded with
``seed`` (drawn on the CPU, so a seed means the same noise on any device). ``generate`` tries
the seeds ``seed, seed+1, ..., seed+gen_search_num-1``, keeps the ``gen_num`` D scores best
(batched, only the best so far kept, so memory stays bounded), and can write each face with
its seed to a manifest; ``--seeds`` draws chosen faces again.
"""
import contextlib
import csv
import errno
import io
import math
import operator
import os
import random
import re
import resource
from pathlib import Path

import torch
from PIL import Image

import checkpoint
from checkpoint import grid_size, to_uint8
from config import (MAX_BATCH, MAX_FACES, MAX_NOISE, MAX_SCALE, MAX_STEPS, SEEDS, UNSET_MEANS,
                    Config, refuse_earlier_faces, resolve_device)
from errors import (DiskFull, Terminated, UserError, command_line, counted, listed,
                    progress_bar, quoted, refusal, sized)

SEARCH_BAR = 4096  # generate shows a progress bar when D ranks more faces than this
# interpolate shows one while it encodes a GIF of more pixels than this, all frames together
# (124 frames of 384x384, 18 million, take about 5 s on a 2-core Zen 4; 1,020 of 3072x3072
# ran for many minutes without a word)
GIF_BAR = 20_000_000
PAD = 16  # on the CPU, G and D take passes of a multiple of this many inputs (Faces._passes)
# On the CPU, G and D take at most this many faces a pass, whatever --batch-size asks (the GPU
# takes --batch-size). A pass holds about 14 KB a face per unit of ngf (D: 9 per ndf), so
# --batch-size=8192 at the book's widths asked for some 8 GB and ended in the OOM killer; and
# larger passes were no faster: G at ngf=64 drew 655, 544 and 504 faces a second at 64, 256
# and 1024 a pass (2-core Xeon computing as AVX2-only; 892, 678 and 260 with AVX512/AMX).
CPU_PASS = 64
# The largest pictures PIL 12 saves, found by saving ever larger ones there: beyond them the
# save fails, after all the drawing. Pixels a side (PCX takes 65535 tall, but no grid is that
# tall), and 4 GiB for BMP's file, DIB's and TIFF's pixels: sizes they keep in 32 bits. The
# other formats (PNG, PPM, QOI, JPEG 2000, ...) took every size tried.
MAX_SIDE = {"WEBP": 16383, "JPEG": 65500, "MPO": 65500, "PDF": 65500, "GIF": 65535,
            "TGA": 65535, "SGI": 65535, "PCX": 65534, "AVIF": 65536}
MAX_BYTES = 2**32 - 1
# The memory --gif takes, per byte of its frames in RGB: PIL 12 keeps every frame, turned to
# a palette (1 byte a pixel), until it has the last, and the encoded GIF is held twice. Peak
# RSS over a 2-frame run's (850 MB), the frames upscaled as PIL asks for them, on a 2-core
# CPU with AVX512-BF16 and AMX: 0.42 (126 frames of 1536x1536), 0.45 (254 of 1536x1536),
# 0.41 (126 of 2304x2304), 0.43 (510 of 3072x3072: --steps=256 --scale=32, 6.9 GB in all);
# rounded up. Upscaling them all before encoding, as it was done first, took 1.71 to 1.77.
GIF_MEMORY = 0.5
# The memory generate and interpolate take for the faces they draw, at its peak: every face
# as floats (4 bytes a value) and as bytes (1), then the grid's pixels three times (laid out,
# in the order PIL reads, and PIL's own image). Peak RSS over the run's start, without D and
# with it, on a 2-core CPU with AVX512-BF16 and AMX: 201 and 208 KB a face (4,000 to 16,000
# faces), where this counts 224. Before the faces were rounded to bytes a thousand at a time
# and D's ranking held them once, 427 and 321.
FACE_BYTES, GRID_COPIES = 5 * 3 * 96 * 96, 3
MEMINFO = "/proc/meminfo"
PROC_STATUS = "/proc/self/status"
PROC_CGROUP, CGROUP = "/proc/self/cgroup", "/sys/fs/cgroup"


def whole(value, what, low, high, high_text=None):
    """``value`` as an int (numpy's and torch's integers too), or a ValueError that says
    ``what`` takes a whole number from ``low`` to ``high`` (written ``high_text``)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or not low <= number <= high:
        raise ValueError(f"{what} is a whole number from {low} to {high_text or high}, not "
                         f"{value!r}")
    return number


def spread(value, what, positive=False):
    """The noise's ``mean`` or ``std`` (``positive``) as a float, or a ValueError in the words
    of the command line's --gen-mean and --gen-std: the API took std=0 (every seed one face),
    a NaN (every face NaN) and std="1" (an error deep in torch)."""
    try:
        if isinstance(value, (bool, str, bytes)):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of many values
        number = math.nan
    span = (f"above 0 and at most {MAX_NOISE:g}" if positive else
            f"from {-MAX_NOISE:g} to {MAX_NOISE:g}")
    if not (math.isfinite(number) and abs(number) <= MAX_NOISE and (number > 0 or not positive)):
        raise ValueError(f"{what} is a number {span} (the book draws N(0, 1)), not {value!r}")
    return number


def _listed_seeds(seeds):
    """``seeds`` (any iterable of seeds) as a list; one seed alone is a mistake said so."""
    if isinstance(seeds, (str, bytes)):  # read a character at a time, "17" was seeds 1 and 7
        raise ValueError(f"seeds is a list of seeds, e.g. [17, 42], not {seeds!r}")
    try:
        return list(seeds)
    except TypeError:
        raise ValueError(f"seeds is a list of seeds, e.g. [17, 42], not {seeds!r}") from None


def noise(seeds, nz, mean=0.0, std=1.0):
    """One latent (nz, 1, 1) per seed, from N(mean, std), on the CPU. A seed is a whole
    number from 0 to 2**32-1, as --seeds takes: torch took -1 as another seed's, 2**64 as an
    overflow deep inside it, and reads only a seed's low 32 bits (seeds 17 and 2**32 + 17
    drew one face)."""
    seeds = [whole(s, "a seed", 0, SEEDS - 1, "2**32-1") for s in seeds]
    if not seeds:
        raise ValueError("no seeds: name at least one")
    return torch.stack([torch.randn(nz, 1, 1, generator=torch.Generator().manual_seed(s))
                        for s in seeds]) * std + mean


def slerp(a, b, t):
    """Spherical interpolation between latents a and b; t=0 gives a, t=1 gives b exactly."""
    if t <= 0:
        return a.clone()
    if t >= 1 or torch.equal(a, b):  # one seed twice: its own face, not one a bit off
        return b.clone()
    omega = torch.arccos(torch.clamp(
        (a.flatten() / a.norm()) @ (b.flatten() / b.norm()), -1.0, 1.0))
    if omega.abs() < 1e-3:  # float32's arccos next to 1 moves in steps of 3e-4
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def slerp_path(z, steps, closed=False):
    """Latents walking from each of ``z`` to the next, ``steps`` a leg with both ends: one
    leg fewer than ``z`` has. ``closed``: back to the first too, each leg without its end (the
    next leg starts there), for a loop without repeated frames: a leg from a latent to the
    same one (a seed twice in a row, or the last seed the first) is left out, where it was
    a pause that GIF writers merge into one frame, and a loop of one seed is its one face."""
    ts = [i / (steps - 1) for i in range(steps - 1 if closed else steps)]
    if not closed:
        return torch.cat([torch.stack([slerp(a, b, t) for t in ts])
                          for a, b in zip(z[:-1], z[1:])])
    legs = [(a, b) for a, b in zip(z, torch.cat([z[1:], z[:1]])) if not torch.equal(a, b)]
    if not legs:
        return z[:1].clone()
    return torch.cat([torch.stack([slerp(a, b, t) for t in ts]) for a, b in legs])


class Faces:
    """A trained generator (and optionally its discriminator), ready to draw faces."""

    averaged = False  # set by load: G is the moving average a last.pth carries (--ema)

    def __init__(self, netg, netd=None, device="cpu", mean=0.0, std=1.0, batch_size=256):
        self.device = torch.device(device)
        self.netg = netg.to(self.device).eval()
        self.netd = netd.to(self.device).eval() if netd is not None else None
        self.mean, self.std = spread(mean, "mean"), spread(std, "std", positive=True)
        self.batch_size = whole(batch_size, "batch_size", 1, MAX_BATCH)

    @property
    def pass_size(self):
        """The faces of one pass of G or D (see CPU_PASS); the same pixels at any size."""
        return self.batch_size if self.device.type != "cpu" else min(self.batch_size, CPU_PASS)

    @classmethod
    def load(cls, netg_path, netd_path=None, device=None, **kwargs):
        """From book-format files (netg_N.pth) or a full training state (last.pth). From a
        last.pth of a run with --ema, G is its moving average (``averaged`` says so), as
        netg_ema_N.pth would give: the copy that drew the run's sample grids."""
        try:
            device = torch.device(device) if device else resolve_device(None)
        except RuntimeError:  # "gpu", "CPU": torch's list of every device type it knows
            raise UserError(f"device={device!r}: Faces draws on 'cpu' or 'cuda'") from None
        if device.type == "cpu":
            device = torch.device("cpu")  # "cpu:0" is the CPU too (torch.load refused it)
        # said of the machine, not blamed on the file (torch's error on loading)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device={str(device)!r}: no CUDA device is available here; use "
                            f"device='cpu'")
        if device.type not in ("cpu", "cuda"):
            raise UserError(f"device={str(device)!r}: Faces draws on 'cpu' or 'cuda'")
        netg, averaged = checkpoint.load_drawing_netg(netg_path, device)
        netd = checkpoint.load_net(netd_path, "netd", device)[0] if netd_path else None
        faces = cls(netg, netd, device, **kwargs)
        faces.averaged = averaged
        return faces

    def source(self, path):
        """A line naming which G of ``path`` draws, or '' when there is only one."""
        return (f"{path}: drawing its moving average of G (--ema), as the run's sample grids "
                f"do" if self.averaged else "")

    @torch.no_grad()
    def _passes(self, net, inputs, convert=None):
        """``net`` on ``inputs`` (latents for G, faces for D), ``pass_size`` at a time;
        its outputs as float32 on the CPU, each pass's passed through ``convert`` where given,
        so that only the converted outputs are held whole.

        On the CPU each pass is padded to a multiple of PAD inputs: its convolutions take
        another path for some batch sizes (odd ones, here), which moves a few pixels by one
        level, and a seed must draw the same face in a grid, alone, or in a morph."""
        # filled pass by pass: a list of passes joined at the end held each output twice
        out = None
        for i in range(0, len(inputs), self.pass_size):
            chunk = inputs[i:i + self.pass_size]
            extra = -len(chunk) % PAD if self.device.type == "cpu" else 0
            padded = torch.cat([chunk, chunk[-1:].expand(extra, *chunk.shape[1:])])
            # float64 (numpy's default) or half: the nets' own float32 (torch refused them)
            result = net(padded.to(self.device, torch.float32))[:len(chunk)].float().cpu()
            if convert is not None:
                result = convert(result)
            if out is None:
                out = result.new_empty(len(inputs), *result.shape[1:])
            out[i:i + len(chunk)] = result
        return out

    def _draw(self, z, convert=None):
        """G on latents (see _passes); images in [-1, 1] on the CPU."""
        if not len(z):
            raise ValueError("no latents to draw")
        return self._passes(self.netg, z, convert)

    def tensors(self, seeds):
        """The faces of ``seeds`` (a list of seeds): a tensor (N, 3, 96, 96) in [-1, 1]."""
        return self._draw(noise(_listed_seeds(seeds), self.netg.nz, self.mean, self.std))

    def pixels(self, seeds):
        """The faces of ``seeds`` as uint8 pixels (N, 3, 96, 96), rounded batch by batch: the
        floats of all of them took five times the memory of the pixels kept."""
        return self._draw(noise(_listed_seeds(seeds), self.netg.nz, self.mean, self.std),
                          to_uint8)

    def morph(self, seeds, steps):
        """Faces morphing from each seed to the next: a tensor (len(seeds) - 1, steps, 3, 96,
        96), both ends of each row included, the ends the seeds' own faces."""
        steps, seeds = whole(steps, "steps", 2, MAX_STEPS), _listed_seeds(seeds)
        if len(seeds) < 2:
            raise ValueError(f"a morph goes from seed to seed: name at least two, not {seeds!r}")
        z = noise(seeds, self.netg.nz, self.mean, self.std)
        faces = self._draw(slerp_path(z, steps))
        return faces.view(len(z) - 1, steps, *faces.shape[1:])

    @torch.no_grad()
    def scores(self, faces):
        """D's scores of ``faces`` (N, 3, 96, 96) on the CPU; NaN without a D."""
        if not (isinstance(faces, torch.Tensor) and faces.dim() == 4
                and tuple(faces.shape[1:]) == (3, 96, 96)):
            given = tuple(faces.shape) if isinstance(faces, torch.Tensor) else type(faces)
            raise ValueError(f"faces is a tensor (N, 3, 96, 96), as tensors() gives, not "
                             f"{given!r}")
        if not faces.is_floating_point():  # uint8 pixels, say: D would score 0..255 as -1..1
            raise ValueError(f"faces holds values in [-1, 1] as floats, as tensors() gives, "
                             f"not {faces.dtype}")
        if self.netd is None:
            return torch.full((len(faces),), float("nan"))
        if not len(faces):
            return torch.empty(0)
        # a pass at a time: all of them at once took some 0.8 MB a face at the book's ndf
        # (10,000 --seeds, 8 GB), past what the check on the faces' own memory counts
        return self._passes(self.netd, faces)

    def images(self, seeds, scale=1, resample="nearest"):
        """The faces of ``seeds`` as PIL images, ``scale`` times 96 pixels wide."""
        scale = whole(scale, "scale", 1, MAX_SCALE)
        if resample not in ("nearest", "lanczos"):
            raise ValueError(f"resample is 'nearest' or 'lanczos', not {resample!r}")
        return [to_pil(face, scale, resample) for face in self.tensors(seeds)]

    @torch.no_grad()
    def best(self, num, search_num, first_seed=0, progress=None):
        """The ``num`` faces D scores highest among seeds first_seed.. first_seed+search_num-1.

        Returns (faces, scores, seeds), best first. Without a D, the first ``num`` seeds.
        ``progress`` wraps the batches' iterator, called as ``progress(batches, total=count)``:
        tqdm itself, say.
        """
        num, search_num = (whole(num, "num", 1, MAX_FACES),
                           whole(search_num, "search_num", 1, MAX_FACES))
        first_seed = whole(first_seed, "first_seed", 0, SEEDS - max(num, search_num),
                           f"2**32 less the faces drawn, {SEEDS - max(num, search_num)}")
        if self.netd is not None and num > search_num:  # (it returned fewer)
            raise ValueError(f"best keeps num of search_num faces D ranks: 1 <= num <= "
                             f"search_num, not num={num} and search_num={search_num}")
        if self.netd is None:
            seeds = list(range(first_seed, first_seed + num))
            return self.tensors(seeds), torch.full((num,), float("nan")), seeds
        # the best so far in pool[:kept], each batch after them; the batch's winners take the
        # places of the faces they beat, so the faces are held once and a batch more (joining
        # the best and the batch, then picking, held them three times)
        pool = scores = seeds = None
        kept = 0
        starts = range(first_seed, first_seed + search_num, self.pass_size)
        # total by name: tqdm's second place is its description, where a count failed in it
        with progress_bar(progress, starts, total=len(starts)) as bar:  # closed before a stop
            for start in starts if bar is None else bar:
                batch = torch.arange(start, min(start + self.pass_size,
                                                first_seed + search_num))
                fake = self._draw(noise(batch.tolist(), self.netg.nz, self.mean, self.std))
                if pool is None:
                    room = min(num, search_num) + len(batch)
                    pool = fake.new_empty(room, *fake.shape[1:])
                    scores, seeds = torch.empty(room), torch.empty(room, dtype=torch.long)
                end = kept + len(batch)
                pool[kept:end], seeds[kept:end] = fake, batch
                scores[kept:end] = self._passes(self.netd, fake)
                if end <= num:
                    kept = end
                    continue
                winners = torch.zeros(end, dtype=torch.bool)
                winners[scores[:end].topk(num).indices] = True
                beaten = (~winners[:num]).nonzero().squeeze(1)
                new = winners[num:].nonzero().squeeze(1) + num
                pool[beaten], scores[beaten], seeds[beaten] = pool[new], scores[new], seeds[new]
                kept = num
        order = scores[:kept].topk(kept).indices  # best first
        return pool[order], scores[order], seeds[order].tolist()


def to_pil(face, scale=1, resample="nearest"):
    """One face in [-1, 1] -> an RGB PIL image, optionally upscaled for display."""
    array = to_uint8(face).permute(1, 2, 0).numpy()
    img = Image.fromarray(array, "RGB")
    if scale != 1:
        method = Image.NEAREST if resample == "nearest" else Image.LANCZOS
        img = img.resize((img.width * scale, img.height * scale), method)
    return img


def too_large(path, width, height):
    """The limit of the image format of ``path`` that a picture of ``width`` x ``height``
    pixels exceeds, in words; None when the format takes it."""
    fmt = checkpoint.image_format(path)
    suffix = Path(path).suffix.lower() or ".png"
    if max(width, height) > MAX_SIDE.get(fmt, max(width, height)):
        return f"a {suffix} image takes at most {MAX_SIDE[fmt]} pixels a side"
    row = (3 * width + 3) // 4 * 4  # BMP and DIB pad each row of pixels to 4 bytes
    size = {"BMP": 54 + height * row, "DIB": height * row, "TIFF": 3 * width * height}
    if size.get(fmt, 0) > MAX_BYTES:
        return f"a {suffix} image takes at most 4 GiB"
    return None


def _most(fits, below):
    """The largest n below ``below`` for which fits(n), where fits holds up to some n and
    not after; 0 when it holds for none."""
    low, high = 0, below
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _refuse_large_grid(opt):
    """Before any work: a grid larger than the format of --gen-img takes failed only as it
    was saved, after all the drawing and ranking."""
    count = len(opt.seeds) if opt.seeds else opt.gen_num
    limit = too_large(opt.gen_img, *grid_size(count))
    if limit:
        most = _most(lambda n: not too_large(opt.gen_img, *grid_size(n)), count)
        width, height = grid_size(count)
        raise UserError(f"--gen-img: a grid of {count} faces is {width}x{height} pixels, and "
                        f"{limit}: draw at most {most} faces "
                        f"({'fewer --seeds' if opt.seeds else 'a lower --gen-num'}), or name "
                        f"a format without that limit, such as .png")


def grid_memory(count, nrow=8):
    """The bytes that drawing ``count`` faces and saving them as a grid ``nrow`` faces wide
    take at the peak (see FACE_BYTES)."""
    width, height = grid_size(count, nrow)
    return count * FACE_BYTES + width * height * 3 * GRID_COPIES


def _refuse_short_memory(count, nrow, what, fewer):
    """Before any drawing: faces too many for the memory left ended in the OOM killer (a
    bare 'Killed', or a machine swapping to a standstill) after minutes of drawing. ``fewer``
    says how to draw at most the given count."""
    free, need = _available_memory(), grid_memory(count, nrow)
    if free is None or need <= free:
        return
    most = _most(lambda n: grid_memory(n, nrow) <= free, count)
    raise short_memory(what, counted(count, "face"), need, free, fewer(most) if most else "")


def short_memory(what, faces, need, free, fewer):
    """The error for ``faces`` (in words: "300 faces") that need ``need`` bytes where ``free``
    are available, ``what`` the flags that asked for them: ``fewer`` says how to ask for
    fewer, or is "" where not even one fits (then: what gives more memory). generate's and
    evaluate's refusals, in one wording."""
    holder, more = memory_holder()
    return UserError(f"{what}: {faces} need about {sized(need, free)} of memory, and {holder} "
                     f"{sized(free, need)} available: {fewer or more}")


def _refuse_large_sheet(opt, out, rows):
    """interpolate's _refuse_large_grid, for ``rows`` rows of --steps faces."""
    def fits(rows, steps):
        return not too_large(out, *grid_size(rows * steps, steps))
    if fits(rows, opt.steps):
        return
    width, height = grid_size(rows * opt.steps, opt.steps)
    steps = _most(lambda n: fits(rows, n), opt.steps)
    seeds = _most(lambda n: fits(n, opt.steps), rows) + 1
    fewer = " or ".join(([f"lower --steps (to {steps} at most)"] if steps >= 2 else [])
                        + ([f"give fewer --seeds ({seeds} at most)"] if seeds >= 2 else []))
    if not fewer:  # too wide and too tall
        steps = _most(lambda n: fits(1, n), opt.steps)
        seeds = _most(lambda n: fits(n, steps), rows) + 1
        fewer = f"lower --steps to {steps} and give {seeds} --seeds at most"
    raise UserError(f"--out: a grid of {counted(rows, 'row')} of {opt.steps} faces is "
                    f"{width}x{height} pixels, and {too_large(out, width, height)}: {fewer}, "
                    f"or name a format without that limit, such as .png")


FACE_NAME = re.compile(r"face_\d+_seed\d+\.png")  # --out-dir's faces (_face_names)


def _face_names(seeds):
    """The files of --out-dir: the place of the face (best first by D; with --seeds, the
    order typed) and the seed that draws it."""
    return [f"face_{rank:03d}_seed{seed}.png" for rank, seed in enumerate(seeds)]


def _write_faces(out_dir, faces, scores, seeds, scale, resample, mean=0.0, std=1.0,
                 ranks=None, netg=""):
    """Each face as its own PNG, and manifest.csv: file, rank (``ranks``, or the faces' order,
    best first), D score, seed, the noise's mean and std (--gen-mean, --gen-std), and the
    generator's file (``netg``, absolute), without which a seed draws another face. Stopped
    half way (Ctrl-C, SIGTERM, a full disk), it leaves the faces written so far and their
    manifest (the same command again writes them all)."""
    out = Path(out_dir)
    names, rows = _face_names(seeds), []
    earlier = (out / "manifest.csv").is_file()
    # the temporary files of writes a kill -9 cut short, which no rerun removed (no run is
    # writing there now: generate holds the folder while it writes, see _alone_in)
    for pattern in (".face_*.png.*.tmp", ".manifest.csv.*.tmp"):
        for stale in out.glob(pattern):
            stale.unlink(missing_ok=True)
    try:
        # a rerun replaces an earlier set: its manifest goes first, so that none names faces
        # this run has replaced
        (out / "manifest.csv").unlink(missing_ok=True)
        ranks = range(len(seeds)) if ranks is None else ranks
        for rank, face, score, seed, name in zip(ranks, faces, scores.tolist(), seeds, names):
            buf = io.BytesIO()
            to_pil(face, scale, resample).save(buf, format="PNG")
            row = (name, rank, "" if score != score else f"{score:.6f}", seed, float(mean),
                   float(std), netg)
            with checkpoint.stops_put_off():  # a face in place is in the manifest's rows
                checkpoint.save_bytes(buf.getvalue(), out / name)
                rows.append(row)
        _write_manifest(out, rows)
    except BaseException as stop:
        # stopped: the face being written (not yet in place) and the earlier set's faces not
        # yet replaced go too, so that the manifest lists every face beside it; what cannot go
        # stays (a folder where a face was to be written: its clean-up failed on it, and the
        # faces written before it were left without a manifest)
        for name in names[len(rows):]:
            with contextlib.suppress(OSError):
                (out / name).unlink(missing_ok=True)
        # the system refused a face (a folder in its place, a write-protected file): said
        # as a full disk is, with the faces written
        refused = refusal(stop) if isinstance(stop, OSError) else None
        in_manifest = False  # (not `listed`: errors.listed is this module's too)
        if rows:
            try:
                _write_manifest(out, rows)
                in_manifest = True
            except (DiskFull, OSError):  # the disk filled at the manifest itself (said below)
                if not (isinstance(stop, DiskFull) or refused):
                    raise
        if not in_manifest:
            with contextlib.suppress(OSError):  # (a folder of that name is no manifest)
                (out / "manifest.csv").unlink(missing_ok=True)
        faces = counted(len(seeds), "face")
        written = (f"none of the {faces} is written in {out}" if not rows else
                   f"{len(rows)} of the {faces} {'is' if len(rows) == 1 else 'are'} "
                   f"written in {out}, "
                   + ("listed in its manifest.csv" if in_manifest else
                      "but not their manifest.csv"))
        gone = (", and the earlier set there is gone (its faces not yet replaced and its "
                "manifest)" if earlier and len(rows) < len(seeds) else "")
        if isinstance(stop, DiskFull):  # its line said the files before it were intact,
            # where the earlier set's were removed
            raise UserError(f"disk full while writing {stop.path}: {written}{gone}; free some "
                            f"space, then run the command again to write them all") from None
        if refused:
            cause, said, fix = refused.rpartition("; ")
            if not said:  # a path no file can have (a loop of links, a name too long)
                cause, fix = refused, "choose another --out-dir"
            if stop.errno == errno.EISDIR:
                fix = "move that folder away"
            raise UserError(f"{cause}: {written}{gone}; {fix}, then run the command again to "
                            f"write them all") from None
        if isinstance(stop, (KeyboardInterrupt, Terminated)):  # for main's stop line, which
            # said only "interrupted"
            stop.kept = f"{written}{gone}; the same command again writes them all"
        raise


def _write_manifest(out, rows):
    text = io.StringIO()
    writer = csv.writer(text)
    # the columns added later come last: readers of the first four read them as before
    writer.writerow(("file", "rank", "d_score", "seed", "gen_mean", "gen_std", "netg"))
    writer.writerows(rows)
    checkpoint.save_text(text.getvalue(), out / "manifest.csv")


def _first_seed(opt):
    if opt.seed is not None:
        return opt.seed
    seed = random.SystemRandom().randrange(2**31)
    print(f"seeds from {seed} (pass --seed={seed}{_noise_flags(opt)} to draw the same faces "
          f"again)")
    return seed


def _noise_flags(opt):
    """--gen-mean and --gen-std as given, where they are not the defaults: with other noise a
    seed draws another face."""
    return "".join(f" --{name.replace('_', '-')}={getattr(opt, name)}"
                   for name in ("gen_mean", "gen_std")
                   if getattr(opt, name) != getattr(Config, name))


def _say_scale_unused(opt, outputs):
    """--scale upscales single faces only; the grid stays 96 pixels a face. --resample is
    the filter of that upscaling: nothing without it."""
    if opt.scale != 1 and not any(getattr(opt, name) for name, _ in outputs):
        print(f"note: --scale applies to {' and '.join(what for _, what in outputs)}, not the "
              f"grid: it is drawn 96 pixels a face")
    elif opt.scale == 1 and "resample" in getattr(opt, "given", ()):
        flags = " or ".join("--" + name.replace("_", "-") for name, _ in outputs)
        print(f"note: --resample is the filter of --scale's upscaling, and --scale is 1: it "
              f"changes nothing (e.g. --scale=4 with {flags})")


def _say_unused_with_seeds(opt, does=None):
    """--seeds names the faces: the flags that choose them otherwise play no part.
    ``does``: what the command does with the seeds (generate's: draws their faces)."""
    unused = [name for name in ("gen_num", "gen_search_num", "seed")
              if opt.seeds and name in getattr(opt, "given", ())]
    if unused:
        flags = listed("--" + name.replace("_", "-") for name in unused)
        does = does or (f"draws the {counted(len(opt.seeds), 'face')} of the seeds it names, "
                        f"in that order")
        print(f"note: {flags} {'is' if len(unused) == 1 else 'are'} not used with --seeds: "
              f"it {does}")


def generate(opt):
    _refuse_large_grid(opt)
    if opt.seeds:
        _refuse_short_memory(len(opt.seeds), 8, "--seeds",
                             lambda most: f"give fewer --seeds ({most} at most)")
    else:
        _refuse_short_memory(opt.gen_num, 8, "--gen-num",
                             lambda most: f"lower --gen-num (to {most} at most)")
    _refuse_training_images(opt, ("--gen-img", opt.gen_img))
    grid = Path(opt.gen_img).resolve()
    if opt.out_dir and grid.parent == Path(opt.out_dir).resolve() and \
            FACE_NAME.fullmatch(grid.name):  # a face would be written over the grid
        raise UserError(f"--gen-img {opt.gen_img!r} is named as --out-dir's faces are: name "
                        f"the grid otherwise, e.g. {str(Path(opt.out_dir) / 'grid.png')!r}")
    device = resolve_device(opt.gpu)
    faces = Faces.load(opt.netg_path, opt.netd_path, device, mean=opt.gen_mean,
                       std=opt.gen_std, batch_size=opt.batch_size)
    # the notes once the files are known to be good: none above a refusal of them
    _say_scale_unused(opt, [("out_dir", "--out-dir's faces")])
    _say_unused_with_seeds(opt)
    if faces.netd is None and not opt.seeds and "gen_search_num" in getattr(opt, "given", ()):
        print(f"note: --gen-search-num is how many faces D ranks, and no --netd-path is given: "
              f"the first {opt.gen_num} seeds are drawn")
    say_source(faces, opt.netg_path)
    say_widths(opt, faces)
    if opt.seeds:
        seeds = list(opt.seeds)
        images = faces.tensors(seeds)
        scores = faces.scores(images)
        picked = f" for seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}"
        # in the order typed; the manifest's rank is D's among them (0: its favourite)
        ranks = (None if faces.netd is None else
                 torch.argsort(torch.argsort(scores, descending=True, stable=True)).tolist())
    else:
        progress = _ranking_bar if faces.netd is not None and \
            opt.gen_search_num > SEARCH_BAR else None
        images, scores, seeds = faces.best(opt.gen_num, opt.gen_search_num, _first_seed(opt),
                                           progress)
        picked = f", the best of {opt.gen_search_num} by D" if faces.netd is not None else ""
        ranks = None  # best first
    with _alone_in(opt.out_dir):
        if opt.out_dir:  # before anything is written
            refuse_earlier_faces(opt.out_dir, _face_names(seeds))
        checkpoint.drop_stale(opt.gen_img)
        checkpoint.save_grid(images, opt.gen_img)
        print(f"wrote {opt.gen_img}{_png_note(opt.gen_img)}: {counted(len(images), 'face')}"
              f"{picked}")
        if opt.out_dir:
            _write_faces(opt.out_dir, images, scores, seeds, opt.scale, opt.resample,
                         opt.gen_mean, opt.gen_std, ranks, str(Path(opt.netg_path).resolve()))
            print(f"wrote {counted(len(images), 'face')} and manifest.csv to {opt.out_dir}")
    _say_if_training_data(opt, opt.gen_img, opt.out_dir)
    return images, scores, seeds


@contextlib.contextmanager
def _alone_in(out_dir):
    """Hold --out-dir (a lock on the folder itself, which the system drops however the
    process ends) while this run checks it and writes its faces there. A second generate into
    it, the same command in another terminal, removed the temporary file of the face this
    one was writing, as if a kill -9 had left it, and this one ended in a traceback; with
    other seeds, both sets stayed under a manifest that listed one of them."""
    if not out_dir:
        yield
        return

    def busy(_, holder):
        who = f" (process {holder[0]}: `{holder[1]}`)" if holder else ""
        raise UserError(f"--out-dir: another run is writing into {out_dir}{who}: wait for it "
                        f"to end, or pick another folder")
    # (the folders made for it go again where the run fails: a grid refused, a full disk or
    # a Ctrl-C, left an empty --out-dir, where before no trace of the run stayed)
    with checkpoint.held_folder(out_dir, busy,
                                command_line(f"generate --out-dir={quoted(out_dir)}")):
        yield


def _in_training_data(opt, path):
    """Whether train would read ``path`` (a folder, or a file of an image's name) as one of
    the training images of --data-path (data/ by default), which takes every subfolder's."""
    from data import is_image_name  # what train reads (not a .gif, not a hidden file)
    data = Path(opt.data_path).resolve()
    read = path and (Path(path).is_dir() or is_image_name(Path(path).name))
    return bool(read and data.is_dir() and Path(path).resolve().is_relative_to(data))


def _refuse_training_images(opt, *files):
    """Before any work: an output file that exists among the training images is one of
    them (or an earlier output the note below asked to move out); writing replaced it."""
    for flag, path in files:
        if path and Path(path).is_file() and _in_training_data(opt, path):
            raise UserError(f"{flag} {path!r} already lies among the training images in "
                            f"{opt.data_path} (--data-path), which train reads as one of them: "
                            f"name a path outside it")


def _png_note(path):
    """Said after a grid's name that has no suffix: it holds a PNG, which the name does not
    tell (an image viewer or a web page may not open it)."""
    return "" if Path(path).suffix else " (a PNG: the name has no suffix)"


def _say_if_training_data(opt, *paths):
    """A note for each output that lies in the training images' folder."""
    for path in paths:
        if _in_training_data(opt, path):  # (the folder itself: "X lies inside X" was said)
            where = "is" if Path(path).resolve() == Path(opt.data_path).resolve() else \
                f"lies inside {opt.data_path},"
            print(f"note: {path} {where} the training images' folder (--data-path): train "
                  f"would read these faces as training images; move them out before training "
                  f"there")


def _gif_bar(frames, total):
    from tqdm import tqdm
    return tqdm(frames, total=total, desc="drawing the GIF", unit="frame", dynamic_ncols=True)


def _ranking_bar(batches, total):
    from tqdm import tqdm
    return tqdm(batches, total=total, desc="ranking faces by D", unit="batch",
                dynamic_ncols=True)


def say_source(faces, path):
    """Print which G of ``path`` draws, where the file holds more than one."""
    line = faces.source(path)
    if line:
        print(line)


def say_widths(opt, faces, g_file=None, d_file=None):
    """The book's generate takes --nz/--ngf/--ndf; here the files say, and where a value given
    differs from a file's, a line says which is used; and one where the CPU draws fewer faces
    a pass than --batch-size asks (CPU_PASS). The files are named as given unless ``g_file``
    and ``d_file`` name the ones a folder resolved to (explore)."""
    given = getattr(opt, "given", frozenset())
    g_file, d_file = g_file or opt.netg_path, d_file or opt.netd_path
    nets = [(g_file, name, getattr(faces.netg, name)) for name in ("nz", "ngf")]
    if faces.netd is not None:
        nets.append((d_file, "ndf", faces.netd.ndf))
    for path, name, value in nets:
        if name in given and getattr(opt, name) != value:
            print(f"note: {path}: using the file's {name}={value}, not --{name}="
                  f"{getattr(opt, name)}")
    if "batch_size" in given and faces.pass_size < faces.batch_size:
        print(f"note: --batch-size={faces.batch_size}: on the CPU faces are drawn "
              f"{faces.pass_size} at a time, as fast, and larger passes take about 1 MB a "
              f"face more memory (the same faces either way)")


def interpolate(opt):
    """Rows of faces morphing from each seed to the next; optionally an animated GIF."""
    out = opt.out or UNSET_MEANS["interpolate", "out"]
    rows = len(opt.seeds) - 1 if opt.seeds else 1
    _refuse_large_sheet(opt, out, rows)
    if opt.gif:  # the larger of the two, where both are too large for the memory
        _refuse_large_gif(opt)
    _refuse_short_memory(rows * opt.steps, opt.steps, "--steps and --seeds",
                         lambda most: f"lower --steps or give fewer --seeds ({most} faces "
                                      f"at most)")
    _refuse_training_images(opt, ("--out", out))
    device = resolve_device(opt.gpu)
    faces = Faces.load(opt.netg_path, None, device, mean=opt.gen_mean, std=opt.gen_std,
                       batch_size=opt.batch_size)
    _say_scale_unused(opt, [("gif", "--gif's frames")])  # as generate's: once G loaded
    _say_unused_with_seeds(opt, "morphs between the seeds it names")
    same = [a for a, b in zip(opt.seeds or (), (opt.seeds or ())[1:]) if a == b]
    if same:  # a row of one face repeated: no morph at all
        print(f"note: --seeds names {same[0]} twice in a row: that row is {opt.steps} copies "
              f"of one face")
    say_source(faces, opt.netg_path)
    say_widths(opt, faces)
    if opt.seeds:
        seeds = list(opt.seeds)
    else:
        first = _first_seed(opt)
        seeds = [first, first + 1]
    rows = faces.morph(seeds, opt.steps)
    checkpoint.drop_stale(out)
    checkpoint.save_grid(rows.flatten(0, 1), out, nrow=opt.steps)
    print(f"wrote {out}{_png_note(out)}: {counted(len(rows), 'row')} of {opt.steps} faces, "
          f"seeds {' -> '.join(map(str, seeds))}")
    if opt.gif:
        # the path through every seed and back to the first, without repeated frames
        z = noise(seeds, faces.netg.nz, opt.gen_mean, opt.gen_std)
        loop = slerp_path(z, opt.steps, closed=True)
        # each frame upscaled as PIL takes it: all of them, upscaled, at once took 4 times the
        # memory (see GIF_MEMORY)
        frames = (to_pil(face, opt.scale, opt.resample) for face in faces._draw(loop))
        large = len(loop) * (96 * opt.scale) ** 2 > GIF_BAR
        with progress_bar(_gif_bar if large else None, frames, total=len(loop)) as bar:
            data = gif_bytes(frames if bar is None else bar)
        checkpoint.drop_stale(opt.gif)
        checkpoint.save_bytes(data, opt.gif)
        # PIL merges a frame the same as the one before into it (faces a hair apart, at a
        # tiny --gen-std): the count the file holds
        print(f"wrote {opt.gif}: {counted(Image.open(io.BytesIO(data)).n_frames, 'frame')}")
    _say_if_training_data(opt, out, opt.gif)
    return rows.flatten(0, 1)


def gif_bytes(frames, duration=80):
    """PIL images (a list, or an iterator that makes each as it is asked for) as an endlessly
    looping animated GIF, ``duration`` ms a frame."""
    frames = iter(frames)
    buf = io.BytesIO()
    next(frames).save(buf, format="GIF", save_all=True, append_images=frames,
                      duration=duration, loop=0)
    return buf.getvalue()


def _available_memory():
    """The bytes this process can still take: the least of what the machine and its cgroup
    leave (``_machine_room``) and what a shell's address-space limit leaves (``_address_room``);
    None where none can be read (not Linux)."""
    rooms = [room for room in (_machine_room(), _address_room()) if room is not None]
    return min(rooms) if rooms else None


def memory_holder():
    """Who holds this process to _available_memory's bytes, in the words before the size, and
    what gives it more."""
    room, machine = _address_room(), _machine_room()
    if room is not None and (machine is None or room < machine):
        return "this shell's limit on a program's memory (ulimit -v) leaves", "raise that limit"
    return "this machine has", "free some memory (other programs hold it)"


def _address_room():
    """What a shell's address-space limit (ulimit -v) leaves this process: the limit less what
    it has mapped (VmSize, torch's reservations too); None where there is no limit. The
    machine's free memory alone let a GIF start that the limit then broke off."""
    limit, mapped = resource.getrlimit(resource.RLIMIT_AS)[0], _mapped()
    if limit == resource.RLIM_INFINITY or mapped is None:
        return None
    return max(limit - mapped, 0)


def _mapped():
    """The address space this process has mapped, in bytes (VmSize); None where unknown."""
    try:
        with open(PROC_STATUS) as f:
            return next(int(line.split()[1]) * 1024 for line in f
                        if line.startswith("VmSize:"))  # in KiB
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def _machine_room():
    """The machine's MemAvailable, or less where its cgroup (a container, a batch job's --mem)
    holds this process to less; None where neither can be read."""
    free = None
    try:
        with open(MEMINFO) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024  # in KiB
    except (OSError, ValueError, IndexError):
        pass
    room = _cgroup_room()
    return room if free is None else free if room is None else min(free, room)


def _cgroup_room():
    """What this process's memory cgroup still allows, in bytes: its limit less its use
    (cgroup v2's memory.max and memory.current, v1's limit_in_bytes and usage_in_bytes), in
    its own folder or at the root a container mounts it as; None where there is no limit.
    The use counts the files the container has read, which the kernel frees as memory is
    asked for: the inactive ones (memory.stat) are left out of it, as `docker stats` does
    (counted, a container that had just read a data set had "0.4 GB" left of 8 free)."""
    try:
        lines = Path(PROC_CGROUP).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        # the limit, the use, and memory.stat's line of the use's inactive files (v1's
        # inactive_file is the group's own, without the groups below it that its use counts)
        if controllers == "":
            top, files = Path(CGROUP), ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            top, files = Path(CGROUP) / "memory", ("memory.limit_in_bytes",
                                                    "memory.usage_in_bytes",
                                                    "total_inactive_file")
        else:
            continue
        for folder in (top / path.lstrip("/"), top):
            try:
                limit, used = ((folder / name).read_text().strip() for name in files[:2])
                if limit != "max" and int(limit) < 2**60:  # v1 writes "none" as about 2**63
                    cache = _inactive_files(folder, files[2])
                    return max(int(limit) - int(used) + cache, 0)
            except (OSError, ValueError):
                continue
    return None


def _inactive_files(folder, key):
    """The bytes of files the cgroup in ``folder`` holds that the kernel would free first
    (``key`` in its memory.stat); 0 where that cannot be read."""
    try:
        for line in (Path(folder) / "memory.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _refuse_large_gif(opt):
    """Before any drawing: a GIF too large for the memory left ended in the OOM killer (or a
    machine swapping to a standstill), after all the drawing."""
    frames = len(opt.seeds or (0, 1)) * (opt.steps - 1)  # the loop, without repeated frames

    def need(scale):
        return frames * (96 * scale) ** 2 * 3 * GIF_MEMORY
    free = _available_memory()
    if free is None or need(opt.scale) <= free:
        return
    scale = _most(lambda n: need(n) <= free, opt.scale)
    side = 96 * opt.scale
    raise UserError(f"--gif: {counted(frames, 'frame')} of {side}x{side} pixels need about "
                    f"{sized(need(opt.scale), free)} of memory to encode, and "
                    f"{memory_holder()[0]} {sized(free, need(opt.scale))} available: lower "
                    + (f"--scale (to {scale} at most), " if scale else "")
                    + "--steps, or give fewer --seeds")
