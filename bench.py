"""The speed benchmark: the article's training pipeline against ours, in one run.

    python bench.py --data-path=data-toy --batch-size=64
    python bench.py --data-path=data/ --batch-size=256 --json=bench-256.json

(a) "article": torchvision ImageFolder + DataLoader workers decoding every JPEG every epoch,
    fp32, Sigmoid + BCELoss, the fake batch detached after a full forward, a host sync
    (``.item()``) on every step: the book's loop as it is written.
(b) "ours": what ``python main.py train`` does by default: the decoded cache, bf16 autocast
    where the hardware has it, channels-last, BCE from logits, G under no_grad in the D step
    and D frozen in the G step, losses read back only every ``plot_every`` batches.

Both use the same NetG/NetD, the same schedule (D every batch, G every ``g_every``) and the
same images. Each measurement runs in its own process (so peak memory is per variant), the
variants alternate, and every one warms up before it is timed. This is a measurement, not a
test: run it with nothing else busy on the machine.
"""
import argparse
import glob
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from errors import (OneLineParser, Terminated, UserError, counted, no_space_at_an_end,
                    outlive_reader, refusal, require, sized, stop_signals)


def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_article(args, device):
    import torch
    import torchvision as tv
    from torch import nn

    from model import NetD, NetG, weights_init

    started = time.perf_counter()
    transform = tv.transforms.Compose([
        tv.transforms.Resize(96), tv.transforms.CenterCrop(96), tv.transforms.ToTensor(),
        tv.transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    dataset = tv.datasets.ImageFolder(args.data_path, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.num_workers, drop_last=True,
                                         persistent_workers=args.num_workers > 0)
    netg, netd = NetG(100, 64).to(device), NetD(64).to(device)
    netg.apply(weights_init)
    netd.apply(weights_init)
    optimizer_g = torch.optim.Adam(netg.parameters(), 2e-4, betas=(0.5, 0.999))
    optimizer_d = torch.optim.Adam(netd.parameters(), 2e-4, betas=(0.5, 0.999))
    criterion = nn.BCELoss()
    true_labels = torch.ones(args.batch_size, device=device)
    fake_labels = torch.zeros(args.batch_size, device=device)
    noises = torch.randn(args.batch_size, 100, 1, 1, device=device)

    def batches():
        while True:
            for img, _ in loader:
                yield img

    def step(ii, img):
        real = img.to(device)
        optimizer_d.zero_grad()
        error_d_real = criterion(netd(real), true_labels)
        error_d_real.backward()
        noises.copy_(torch.randn(args.batch_size, 100, 1, 1))
        fake = netg(noises).detach()
        error_d_fake = criterion(netd(fake), fake_labels)
        error_d_fake.backward()
        optimizer_d.step()
        (error_d_fake + error_d_real).item()
        if ii % args.g_every == 0:
            optimizer_g.zero_grad()
            noises.copy_(torch.randn(args.batch_size, 100, 1, 1))
            error_g = criterion(netd(netg(noises)), true_labels)
            error_g.backward()
            optimizer_g.step()
            error_g.item()

    return _time(args, device, batches(), step, started)


def run_ours(args, device, cold):
    import data
    # what Adam's constructor imports on first use (torch's compiler, about 1.7 s): the
    # article's process has it before its clock starts, with torchvision
    import torch._dynamo  # noqa: F401

    if cold:  # (the name escaped: faces[12]'s pattern also matched faces1's cache)
        for folder, prefix in data.cache_places(args.data_path, 96):
            for old in folder.glob(f"{glob.escape(prefix)}*"):
                old.unlink()
    started = time.perf_counter()
    array, skipped = data.build_cache(args.data_path, 96)
    result = _ours(args, device, data.CachedBatches(array, args.batch_size, device), started)
    result["unreadable"] = len(skipped)  # the article's pipeline stops at the first of them
    result["an_unreadable"] = str(skipped[0]) if skipped else None
    return result


def run_cache_size(args, device, size):
    """Our loop on a synthetic decoded cache of ``size`` images (a sparse file on disk)."""
    import tempfile

    import numpy as np

    import data

    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        path = Path(tmp) / "cache.npy"
        data._create_npy(path, (size, 3, 96, 96))
        started = time.perf_counter()
        array = np.load(path, mmap_mode="r")
        result = _ours(args, device, data.CachedBatches(array, args.batch_size, device), started)
    result["images"] = size
    result["cache_gb"] = size * 3 * 96 * 96 / 1e9
    return result


def _ours(args, device, source, started):
    """Our training loop, as train runs it, on batches from ``source``."""
    import torch
    from functools import partial

    from config import use_bf16
    from model import NetD, NetG, weights_init
    from steps import Objective, d_step, g_step

    bf16 = use_bf16(None, device)
    autocast = partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=bf16)
    netg, netd = NetG(100, 64), NetD(64)
    netg.apply(weights_init)
    netd.apply(weights_init)
    netg.to(device, memory_format=torch.channels_last)
    netd.to(device, memory_format=torch.channels_last)
    fused = device.type == "cuda"
    optimizer_g = torch.optim.Adam(netg.parameters(), 2e-4, betas=(0.5, 0.999), fused=fused)
    optimizer_d = torch.optim.Adam(netd.parameters(), 2e-4, betas=(0.5, 0.999), fused=fused)
    criterion = Objective()
    pending = []
    generator = torch.Generator().manual_seed(0)

    def batches():
        while True:
            yield from source.batches(torch.randperm(source.count, generator=generator))

    def step(ii, real):
        real = real.contiguous(memory_format=torch.channels_last)
        pending.append(d_step(netg, netd.logits, optimizer_d, criterion, real, 100, autocast)[0])
        if ii % args.g_every == 0:
            pending.append(g_step(netg, netd, optimizer_g, criterion, real.size(0), 100, device,
                                  autocast))
        if (ii + 1) % args.plot_every == 0:  # as train's: after every plot_every-th batch
            read_back(pending)

    result = _time(args, device, batches(), step, started)
    result["bf16"] = bf16
    return result


def read_back(pending):
    """The losses since the last read-back to the host (a sync on a GPU), as train's meters
    take them, and the list emptied."""
    import torch
    torch.stack(pending).cpu()
    pending.clear()


def _time(args, device, batches, step, started):
    """Seconds to the first batch, then images/s over ``measure`` batches after ``warmup``."""
    import torch
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    first = next(batches)
    first_batch_s = time.perf_counter() - started
    step(0, first)
    for ii in range(1, args.warmup):
        step(ii, next(batches))
    _sync(device)
    tic = time.perf_counter()
    for ii in range(args.warmup, args.warmup + args.measure):
        step(ii, next(batches))
    _sync(device)
    seconds = time.perf_counter() - tic
    result = {"images_per_s": args.measure * args.batch_size / seconds,
              "first_batch_s": first_batch_s,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def one(args):
    """A single measurement in this process; prints one JSON line."""
    import torch
    from config import resolve_device
    device = resolve_device(args.gpu)
    torch.manual_seed(0)
    if args.one == "article":
        result = run_article(args, device)
    elif args.one == "cache-size":
        result = run_cache_size(args, device, args.size)
    else:
        result = run_ours(args, device, cold=args.one == "ours-cold")
    print(json.dumps(result))


def command():
    """main() as the command line runs it: a mistake in the flags or the data is one line
    and exit status 2, as argparse's, settings.py's and main.py's refusals are (a run that
    failed is 1)."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a file the system refused (a full disk, ulimit -f, no permission)
        line = refusal(e)
        if line is None:
            raise  # a bug keeps its traceback
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)


def main():
    parser = OneLineParser(description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-path", default="data-toy",
                        help="the faces, DIR/faces/*.jpg (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="images a batch (default: %(default)s)")
    parser.add_argument("--num-workers", type=int, default=4,
                        help="the article's DataLoader's workers (default: %(default)s)")
    parser.add_argument("--g-every", type=int, default=5,
                        help="G learns every this many batches (default: %(default)s)")
    parser.add_argument("--plot-every", type=int, default=20,
                        help="losses read back every this many batches (default: "
                             "%(default)s)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="batches before timing; the first batch always goes untimed, "
                             "as the start-up's (default: %(default)s)")
    parser.add_argument("--measure", type=int, default=20,
                        help="batches timed (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternating runs per variant (default: %(default)s)")
    parser.add_switch("gpu", None, "true: CUDA, false: CPU; unset: CUDA when available")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--cache-sizes", default=None,
                        help="instead: our loop on synthetic caches of these many images, e.g. "
                             "10000,1000000 (sparse files, so no disk space is used), to show "
                             "that memory does not grow with the data set")
    parser.add_argument("--scratch", default=None,
                        help="folder for --cache-sizes files (default: the system's temporary "
                             "folder)")
    parser.add_argument("--one", choices=["article", "ours", "ours-cold", "cache-size"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args)
    for name in ("data_path", "json", "scratch", "cache_sizes"):  # --json= wrote nothing, and
        if getattr(args, name) is not None and not getattr(args, name).strip():  # --cache-sizes=
            raise UserError(f"--{name.replace('_', '-')}= names nothing: give it a value, or "
                            f"leave the flag out")  # ran the whole benchmark on data-toy instead
        if name != "cache_sizes" and getattr(args, name) is not None:  # as main.py's path flags
            no_space_at_an_end(getattr(args, name), f"--{name.replace('_', '-')}")
    if args.json and args.json.endswith(("/", os.sep)):  # abspath would drop the slash
        raise UserError(f"--json: {args.json!r} is a folder: name a file in it, e.g. "
                        f"{os.path.join(args.json, 'bench.json')!r}")
    # a flag the chosen measurement does not read: said, not passed over (the user may
    # think the figures used it)
    unused = [f"--{name.replace('_', '-')}" for name in (
        ("data_path", "repeats", "num_workers") if args.cache_sizes else ("scratch",))
        if getattr(args, name) != parser.get_default(name)]
    if unused:
        why = ("with --cache-sizes (synthetic caches, one run each)" if args.cache_sizes else
               "without --cache-sizes (it is where their files go)")
        print(f"note: {', '.join(unused)} {'is' if len(unused) == 1 else 'are'} not used {why}",
              flush=True)
    # the runs start in the project's folder: paths as the user meant them, from here
    for name in ("data_path", "json", "scratch"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(os.path.expanduser(getattr(args, name))))
    for name in ("batch_size", "measure", "repeats", "g_every", "plot_every"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, not "
                            f"{getattr(args, name)}")
    if args.warmup < 0 or args.num_workers < 0:
        raise UserError("--warmup and --num-workers must be 0 or more")
    if args.json:
        from config import writable
        # a .json name, as evaluate's --out: --json=checkpoints/netg_199.pth was written over
        writable(args.json, "json", folder=False, example="bench.json", suffix=".json")
    if args.cache_sizes:  # synthetic caches: no data folder read
        try:
            args.cache_sizes = [int(s) for s in args.cache_sizes.split(",")]
        except ValueError:
            raise UserError(f"--cache-sizes takes image counts separated by commas, e.g. "
                            f"10000,1000000, not {args.cache_sizes!r}") from None
        if min(args.cache_sizes) < args.batch_size:
            raise UserError(f"--cache-sizes: each cache must hold at least one batch "
                            f"({args.batch_size} images), not {min(args.cache_sizes)}")
        if args.scratch:
            from config import writable
            try:
                writable(args.scratch, "scratch", folder=True)
                Path(args.scratch).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"--scratch: cannot use {args.scratch} ({e.strerror})") \
                    from None
        return cache_sizes(args)
    if Path(args.data_path).exists() and not Path(args.data_path).is_dir():
        raise UserError(f"--data-path: {args.data_path} is a file, not a folder: pass the "
                        f"folder that holds the images")
    if not Path(args.data_path).is_dir():
        from config import toy_hint
        raise UserError(f"no folder {args.data_path}: pass --data-path ({toy_hint()})")
    from data import is_image_name, list_images
    count = len(list_images(args.data_path))
    if count < args.batch_size:
        raise UserError(f"{args.data_path} has {count} images, fewer than one batch of "
                        f"{args.batch_size}: lower --batch-size to {count} or less")
    # the article's ImageFolder: a class a folder, hidden ones (.ipynb_checkpoints) too, and
    # only the images inside them
    classes = {p: sum(is_image_name(name) for _, _, names in os.walk(p, followlinks=True)
                      for name in names)
               for p in Path(args.data_path).iterdir() if p.is_dir()}
    if not classes:
        raise UserError(f"{args.data_path} needs the ImageFolder layout (DIR/faces/*.jpg) for "
                        f"the article's pipeline")
    empty = [p for p, images in classes.items() if not images]
    if empty:  # ImageFolder refuses the whole folder (FileNotFoundError) for one of them
        raise UserError(f"{empty[0]} holds no images, and the article's ImageFolder refuses "
                        f"{args.data_path} for it (each folder in it must hold images): move "
                        f"it out")
    if sum(classes.values()) < args.batch_size:  # its loader then gave no batch: a busy loop
        raise UserError(f"the article's ImageFolder reads only the images in "
                        f"{args.data_path}'s folders, {sum(classes.values())} of them, fewer "
                        f"than one batch of {args.batch_size}: move the others into "
                        f"DIR/faces/ or lower --batch-size")

    import torch
    from config import isa_cap, resolve_device
    device = resolve_device(args.gpu)
    base = [sys.executable, __file__, f"--data-path={args.data_path}",
            f"--batch-size={args.batch_size}", f"--num-workers={args.num_workers}",
            f"--g-every={args.g_every}", f"--plot-every={args.plot_every}",
            f"--warmup={args.warmup}", f"--measure={args.measure}"]
    if args.gpu is not None:
        base.append(f"--gpu={args.gpu}")

    def measure(variant):
        return _run_one(base + [f"--one={variant}"], f"the {variant} run")

    device_name = _device_name(device)
    kind = measured_kind(device) if device.type == "cpu" else device_name
    print(f"device {device} ({device_name}), kind {kind}"
          f"{' (capped by ONEDNN_MAX_CPU_ISA/ATEN_CPU_CAPABILITY)' if isa_cap() else ''}, "
          f"torch {torch.__version__}, batch {args.batch_size}, g_every {args.g_every}, "
          f"{counted(args.measure, 'batch', 'batches')} timed after {args.warmup}, "
          f"{counted(args.repeats, 'alternating repeat')}", flush=True)
    print(f"the decoded cache of {args.data_path}, which train builds on its first run and "
          f"reuses, is removed and built again: its build is timed", flush=True)
    cold = measure("ours-cold")  # builds the cache
    unreadable = cold["unreadable"]
    if unreadable:  # the article's ImageFolder stops at the first with a traceback
        raise UserError(f"{counted(unreadable, 'image file')} in {args.data_path} cannot be "
                        f"read (e.g. {cold['an_unreadable']}), and the article's pipeline "
                        f"stops at the first: move {'it' if unreadable == 1 else 'them'} out "
                        f"to compare the two (train skips them)")
    runs = {"article": [], "ours": []}
    for r in range(args.repeats):
        for variant in ("article", "ours") if r % 2 == 0 else ("ours", "article"):
            runs[variant].append(measure(variant))
            print(f"  {variant:8s} {runs[variant][-1]['images_per_s']:8.1f} images/s", flush=True)

    def summary(results):
        speeds = [x["images_per_s"] for x in results]
        out = {"images_per_s": statistics.median(speeds), "all_images_per_s": speeds,
               "first_batch_s": statistics.median(x["first_batch_s"] for x in results),
               "peak_rss_mb": max(x["peak_rss_mb"] for x in results)}
        if "peak_gpu_mb" in results[0]:
            out["peak_gpu_mb"] = max(x["peak_gpu_mb"] for x in results)
        return out

    article, ours = summary(runs["article"]), summary(runs["ours"])
    bf16 = runs["ours"][0].get("bf16")
    flops = train_flops_per_image(args.g_every)
    for r, half in ((article, False), (ours, bf16)):
        r["gflop_per_s"] = r["images_per_s"] * flops / 1e9
        peak = (peak_gflops(kind, half) if device.type == "cpu"
                else gpu_peak_gflops(device_name, half))
        r["peak_gflop_per_s"] = peak
        r["fraction_of_peak"] = r["gflop_per_s"] / peak if peak else None
    report = {"device": str(device), "device_name": device_name, "cpu_kind": kind,
              "isa_cap": isa_cap(), "torch": torch.__version__, "batch_size": args.batch_size,
              "g_every": args.g_every, "bf16": bf16, "flop_per_image": flops,
              "article": article, "ours": ours,
              "ours_cache_build_first_batch_s": cold["first_batch_s"],
              "speedup": ours["images_per_s"] / article["images_per_s"]}
    print(f"\n| pipeline | images/s (median) | GFLOP/s | of peak | first batch | peak RSS |"
          f"{' peak GPU |' if 'peak_gpu_mb' in article else ''}")
    print(f"| --- | --- | --- | --- | --- | --- |{' --- |' if 'peak_gpu_mb' in article else ''}")
    for name, r in (("article", article), ("ours", ours)):
        gpu = f" {r['peak_gpu_mb']:.0f} MB |" if "peak_gpu_mb" in r else ""
        first = f"{r['first_batch_s']:.1f} s" + (
            f" (cache build: {cold['first_batch_s']:.1f} s)" if name == "ours" else "")
        share = (f"{r['fraction_of_peak']:.1%} of {r['peak_gflop_per_s']:.0f} GFLOP/s"
                 if r["fraction_of_peak"] else "n/a")
        print(f"| {name} | {r['images_per_s']:.1f} | {r['gflop_per_s']:.0f} | {share} | "
              f"{first} | {r['peak_rss_mb']:.0f} MB |{gpu}")
    print(f"\nspeed-up ours/article: {report['speedup']:.2f}x ({flops / 1e9:.2f} GFLOP per "
          f"image; peak: nominal, the CPU kind's FLOPs a cycle x reported clock x cores, "
          f"exceeded when the CPU boosts; or the GPU's data-sheet tensor-core figure)")
    if args.json:
        from checkpoint import save_text  # atomic, and makes the folder
        save_text(json.dumps(report, indent=2), args.json)
        print(f"wrote {args.json}")


def cache_sizes(args):
    """Peak RSS and images/s of our loop on caches of several sizes, one process each."""
    import torch
    from config import resolve_device
    device = resolve_device(args.gpu)
    results = []
    print(f"device {device} ({_device_name(device)}), torch {torch.__version__}, batch "
          f"{args.batch_size}, {counted(args.measure, 'batch', 'batches')} timed after "
          f"{args.warmup}")
    print("\n| images in the cache | cache file | images/s | peak RSS |\n| --- | --- | --- | --- |")
    for size in args.cache_sizes:
        cmd = [sys.executable, __file__, "--one=cache-size", f"--size={size}",
               f"--batch-size={args.batch_size}", f"--warmup={args.warmup}",
               f"--measure={args.measure}", f"--g-every={args.g_every}",
               f"--plot-every={args.plot_every}"]
        if args.scratch:
            cmd.append(f"--scratch={args.scratch}")
        if args.gpu is not None:
            cmd.append(f"--gpu={args.gpu}")
        r = _run_one(cmd, f"the run with {size} images")
        results.append(r)
        print(f"| {size:,} | {sized(r['cache_gb'] * 1e9)} | {r['images_per_s']:.1f} | "
              f"{r['peak_rss_mb']:.0f} MB |", flush=True)
    if args.json:
        from checkpoint import save_text  # atomic, and makes the folder
        save_text(json.dumps(results, indent=2), args.json)
        print(f"wrote {args.json}")


def cpuinfo_lines():
    """/proc/cpuinfo's lines; none where the system has no such file."""
    if not os.path.exists("/proc/cpuinfo"):
        return []
    with open("/proc/cpuinfo") as f:
        return f.read().splitlines()


def cpuinfo_field(lines, name):
    """The first value of the field ``name`` in /proc/cpuinfo's lines; '' without one."""
    return next((x.split(":", 1)[1].strip() for x in lines
                 if ":" in x and x.split(":", 1)[0].strip() == name), "")


def cpu_kind(flags=None):
    """The CPU's kind for speed figures: amx, avx512_bf16, avx512, avx2 or other, read from
    /proc/cpuinfo's flags (which ONEDNN_MAX_CPU_ISA does not change: see config.isa_cap)."""
    if flags is None:
        flags = set(cpuinfo_field(cpuinfo_lines(), "flags").split())
    for kind, flag in (("amx", "amx_bf16"), ("avx512_bf16", "avx512_bf16"),
                       ("avx512", "avx512f"), ("avx2", "avx2")):
        if flag in flags:
            return kind
    return "other"


def measured_kind(device):
    """What the figures hold for: the CPU's kind, or the older kind it is capped at."""
    from config import CPU_KINDS, isa_cap
    kind, cap = cpu_kind(), isa_cap()
    return min(kind, cap, key=CPU_KINDS.index) if cap else kind


# nominal peak per core and cycle: two FMA units of the widest vectors (fp32), doubled for
# bf16 dot products (AVX512-BF16); AMX tiles are counted as AVX512-BF16, a lower bound. AMD's
# Zen 4 (CPU family 25) runs AVX-512 on 256-bit units: no more per cycle than AVX2 there;
# Zen 5 (family 26) has full 512-bit units in its desktop and server parts and in Ryzen AI
# Max, but 256-bit ones in the other Ryzen AI laptop parts, counted as Zen 4
PEAK_FLOPS_PER_CYCLE = {"avx2": {"fp32": 32}, "avx512": {"fp32": 64},
                        "avx512_bf16": {"fp32": 64, "bf16": 128},
                        "amx": {"fp32": 64, "bf16": 128}}
AMD_PEAK_FLOPS_PER_CYCLE = {"avx2": {"fp32": 32}, "avx512": {"fp32": 32},
                            "avx512_bf16": {"fp32": 32, "bf16": 64}}


# nominal dense tensor-core peaks in GFLOP/s (bf16; fp32 convolutions run as TF32), from
# the makers' data sheets (SXM parts); other GPUs report no fraction of peak
GPU_PEAK_GFLOPS = {"H100": {"bf16": 989_000, "fp32": 494_000},
                   "H200": {"bf16": 989_000, "fp32": 494_000},
                   "A100": {"bf16": 312_000, "fp32": 156_000}}


def gpu_peak_gflops(name, bf16):
    for model, peak in GPU_PEAK_GFLOPS.items():
        if model in name:
            return peak["bf16" if bf16 else "fp32"]
    return None


def flops_per_cycle(lines, kind):
    """{"fp32": n, "bf16": m} FLOPs a core does a cycle for CPU ``kind``, by the vendor,
    family and model name in /proc/cpuinfo's lines; None for an unknown kind."""
    amd = cpuinfo_field(lines, "vendor_id") == "AuthenticAMD"
    family = cpuinfo_field(lines, "cpu family")
    model = cpuinfo_field(lines, "model name").lower()
    half_width = amd and (family == "25" or family == "26" and "ryzen ai" in model
                          and "ryzen ai max" not in model)
    return (AMD_PEAK_FLOPS_PER_CYCLE if half_width else PEAK_FLOPS_PER_CYCLE).get(kind)


def peak_gflops(kind, bf16):
    """This machine's nominal peak in GFLOP/s (usable cores x the clock /proc/cpuinfo
    reports x FLOPs a cycle). A CPU that boosts above that clock can exceed it."""
    lines = cpuinfo_lines()
    per_cycle = flops_per_cycle(lines, kind)
    if not per_cycle:
        return None
    mhz = [float(x.split(":")[1]) for x in lines if x.startswith("cpu MHz")]
    if not mhz:
        return None
    flops = per_cycle["bf16"] if bf16 and "bf16" in per_cycle else per_cycle["fp32"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else len(mhz)
    return cores * max(mhz) / 1e3 * flops


def train_flops_per_image(g_every, ngf=64, ndf=64):
    """FLOPs of one training step per image, both networks, counted from their layers.

    D step: G forward; D forward and backward on the real and on the fake batch. G step
    (every ``g_every``): G forward and backward, D forward and backward to its input. A
    backward costs two forwards (input and weight gradients), one where only the input's
    gradient is needed."""
    import torch
    from model import NetD, NetG

    def forward_flops(net, x):
        total = []

        def count(module, inputs, output):
            w = module.weight
            if isinstance(module, torch.nn.ConvTranspose2d):  # each input pixel, scattered
                total.append(2 * inputs[0].numel() * w.shape[1] * w.shape[2] * w.shape[3])
            else:
                total.append(2 * output.numel() * w.shape[1] * w.shape[2] * w.shape[3])
        hooks = [m.register_forward_hook(count) for m in net.modules()
                 if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
        with torch.no_grad():
            out = net(x)
        for h in hooks:
            h.remove()
        return sum(total), out

    g, face = forward_flops(NetG(100, ngf), torch.randn(1, 100, 1, 1))
    d, _ = forward_flops(NetD(ndf), face)
    d_step = g + 2 * 3 * d
    g_step = 3 * g + 2 * d
    return d_step + g_step / g_every


def _run_one(cmd, what):
    """One measuring run in a process of its own: the result it printed last (JSON). A stop
    (Ctrl-C, SIGTERM, a hang-up) ends it with this process; one that comes while it starts
    waits until it has started, as it would be left running otherwise."""
    global _held
    _held = []
    try:
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 cwd=Path(__file__).parent)
    finally:
        held, _held = _held, None
    try:
        if held:
            _stop(held[0], None)
        stdout, stderr = child.communicate()
    except BaseException:
        child.kill()
        child.wait()
        raise
    if child.returncode == 130:  # it got the Ctrl-C (and this process lost its own)
        raise KeyboardInterrupt
    said = [line for line in stderr.splitlines() if line.strip()]
    if child.returncode != 0 and said and said[-1].startswith("error: ") and \
            "Traceback" not in stderr:  # its one line (a file it could not write) is ours
        sys.exit(f"error: {what} failed: {said[-1][len('error: '):]}")
    if child.returncode != 0:
        sys.exit(f"error: {what} failed:\n{stderr[-2000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def _device_name(device):
    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = cpuinfo_field(cpuinfo_lines(), "model name") or platform.processor()
    return f"{model}, {os.cpu_count()} cores"


_held = None  # while a measuring process starts: the stops that came meanwhile


def _stop(signum, frame):
    """Ctrl-C, SIGTERM or a hang-up: raised where this process is (errors.Terminated for the
    last two), so that the measuring process is ended with it instead of measuring on alone
    and slowing whatever runs next."""
    if _held is not None:
        _held.append(signum)
    else:
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated


if __name__ == "__main__":
    require(__file__, "torch", "torchvision", "numpy", "PIL")
    outlive_reader()  # a closed terminal or pipe silences the lines, not the measuring
    for sig in stop_signals():
        signal.signal(sig, _stop)
    try:
        command()
    except (KeyboardInterrupt, Terminated) as stop:
        what = "terminated" if isinstance(stop, Terminated) else "interrupted"
        print(f"\n{what}: nothing measured was written", file=sys.stderr)
        sys.exit(143 if isinstance(stop, Terminated) else 130)
