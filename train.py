"""Training: the article's adversarial loop, read top to bottom.

    python main.py train --gpu                      # the book's command
    python main.py train --data-path=data/toy --nogpu --max-epoch=5

Each batch: (1) every ``d_every`` batches, D learns real -> 1 then fake -> 0 with two backward
passes (the article found this better than one mixed batch), the fakes made without a graph
so no gradient reaches G; (2) every ``g_every`` batches, G learns D(G(z)) -> 1 on fresh noise.
BCE is computed from D's logits (the same objective, numerically stable).
"""
import json
import math
import random
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torchnet.meter import AverageValueMeter
from tqdm import tqdm

import checkpoint
from config import resolve_device, use_bf16
from data import cached_batches, folder_loader
from errors import UserError
from model import NetD, NetG, weights_init

GRID = 64  # faces in the fixed-noise sample grid, 8 per row


def d_step(netg, netd, optimizer_d, criterion, real, nz, autocast=nullcontext):
    """(1) maximise log D(x) + log(1 - D(G(z))). Returns detached (loss_d, D(x), D(G(z)))."""
    optimizer_d.zero_grad()
    with autocast():
        logits_real = netd.logits(real).float()
        loss_real = criterion(logits_real, torch.ones_like(logits_real))
    loss_real.backward()
    with torch.no_grad(), autocast():  # the book's detach(), without building G's graph
        fake = netg(torch.randn(real.size(0), nz, 1, 1, device=real.device))
    with autocast():
        logits_fake = netd.logits(fake).float()
        loss_fake = criterion(logits_fake, torch.zeros_like(logits_fake))
    loss_fake.backward()
    optimizer_d.step()
    return ((loss_real + loss_fake).detach(), torch.sigmoid(logits_real).mean().detach(),
            torch.sigmoid(logits_fake).mean().detach())


def g_step(netg, netd, optimizer_g, criterion, batch_size, nz, device, autocast=nullcontext):
    """(2) maximise log D(G(z)) on fresh noise. Returns the detached loss_g."""
    optimizer_g.zero_grad()
    netd.requires_grad_(False)  # D is only a judge here: no gradients for its weights
    with autocast():
        fake = netg(torch.randn(batch_size, nz, 1, 1, device=device))
        logits = netd.logits(fake).float()
        loss_g = criterion(logits, torch.ones_like(logits))
    loss_g.backward()
    netd.requires_grad_(True)
    optimizer_g.step()
    return loss_g.detach()


class Meters:
    """Running means (torchnet AverageValueMeter) of the losses and D's outputs.

    Step values stay on the device and are read in one go at ``flush``, so the loop does not
    wait for the GPU on every batch.
    """

    NAMES = ("loss_d", "loss_g", "d_real", "d_fake")

    def __init__(self):
        self.meters = {name: AverageValueMeter() for name in self.NAMES}
        self.pending = {name: [] for name in self.NAMES}

    def add(self, name, value):
        self.pending[name].append(value)

    def flush(self):
        """Move pending values into the meters; return the names that saw NaN or inf."""
        diverged = []
        for name, values in self.pending.items():
            if values:
                for v in torch.stack(values).float().cpu().tolist():
                    if not math.isfinite(v):
                        diverged.append(name)
                        break
                    self.meters[name].add(v)
            values.clear()
        return diverged

    def means(self):
        return {name: m.value()[0] for name, m in self.meters.items()}

    def reset(self):
        for m in self.meters.values():
            m.reset()


def save_point(epoch, netg, netd, fixed_noise, opt):
    """The book's outputs for ``epoch``: imgs/{epoch}.png, netg_{epoch}.pth, netd_{epoch}.pth."""
    netg.eval()
    with torch.no_grad():
        grid = netg(fixed_noise).float().cpu()
    netg.train()
    checkpoint.save_grid(grid, Path(opt.save_path) / f"{epoch}.png")
    checkpoint.save(netd.state_dict(), Path(opt.checkpoint_dir) / f"netd_{epoch}.pth")
    checkpoint.save(netg.state_dict(), Path(opt.checkpoint_dir) / f"netg_{epoch}.pth")


def _format(means):
    return {"loss_d": f"{means['loss_d']:.3f}", "loss_g": f"{means['loss_g']:.3f}",
            "D(x)": f"{means['d_real']:.2f}", "D(G(z))": f"{means['d_fake']:.2f}"}


def train(opt):
    # seed -> device -> data -> models -> optimisers -> loop -> save
    seed = opt.seed if opt.seed is not None else random.SystemRandom().randrange(2**31)
    opt.seed = seed
    random.seed(seed)
    torch.manual_seed(seed)
    device = resolve_device(opt.gpu)
    bf16 = use_bf16(opt.amp, device)
    autocast = partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=bf16)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    order = torch.Generator().manual_seed(seed)  # the data order, apart from the model's RNG
    if opt.cache:
        loader = cached_batches(opt, device, order, progress=lambda it, total: tqdm(
            it, total=total, desc="decoding images once", unit="image", dynamic_ncols=True))
    else:
        loader = folder_loader(opt, order)

    netg, netd = NetG(opt.nz, opt.ngf), NetD(opt.ndf)
    netg.apply(weights_init)
    netd.apply(weights_init)
    if opt.netg_path:
        netg = checkpoint.load_net(opt.netg_path, "netg", expect={"nz": opt.nz, "ngf": opt.ngf})[0]
    if opt.netd_path:
        netd = checkpoint.load_net(opt.netd_path, "netd", expect={"ndf": opt.ndf})[0]
    netg.to(device, memory_format=torch.channels_last).train()
    netd.to(device, memory_format=torch.channels_last).train()
    fused = device.type == "cuda"  # one kernel per step on the GPU; no gain on the CPU
    optimizer_g = torch.optim.Adam(netg.parameters(), lr=opt.lr1, betas=(opt.beta1, 0.999),
                                   fused=fused)
    optimizer_d = torch.optim.Adam(netd.parameters(), lr=opt.lr2, betas=(opt.beta1, 0.999),
                                   fused=fused)
    criterion = nn.BCEWithLogitsLoss()
    fixed_noise = torch.randn(GRID, opt.nz, 1, 1, device=device)
    meters = Meters()
    vis = None
    if opt.vis:
        from visualize import Visualizer
        vis = Visualizer(opt.env, opt.vis_server, opt.vis_port)

    Path(opt.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    Path(opt.save_path).mkdir(parents=True, exist_ok=True)
    (Path(opt.checkpoint_dir) / "options.json").write_text(json.dumps(opt.to_dict(), indent=2))
    print(f"training on {device}{' with bf16 autocast' if bf16 else ''}, seed {seed}: "
          f"{len(loader)} batches of {opt.batch_size} per epoch", flush=True)

    step = 0
    skipped = set(getattr(loader, "skipped", ()))
    reported = _report_skipped(skipped, 0, opt)
    for epoch in range(opt.max_epoch):
        bar = tqdm(loader, total=len(loader), desc=f"epoch {epoch + 1}/{opt.max_epoch}",
                   unit="batch", dynamic_ncols=True)
        tic, seen = time.perf_counter(), 0
        for ii, (real, bad) in enumerate(bar):
            skipped.update(bad)
            if real.size(0) == 0:
                continue
            real = real.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            seen += real.size(0)
            if ii % opt.d_every == 0:
                loss_d, d_real, d_fake = d_step(netg, netd, optimizer_d, criterion, real, opt.nz,
                                                autocast)
                meters.add("loss_d", loss_d)
                meters.add("d_real", d_real)
                meters.add("d_fake", d_fake)
            if ii % opt.g_every == 0:
                meters.add("loss_g", g_step(netg, netd, optimizer_g, criterion, real.size(0),
                                            opt.nz, device, autocast))
            step += 1
            if (ii + 1) % opt.plot_every == 0:
                _check_finite(meters.flush(), epoch, opt)
                means = meters.means()
                bar.set_postfix(_format(means))
                if vis is not None:
                    speed = seen / (time.perf_counter() - tic)
                    vis.step(step, epoch, means, speed, netg, fixed_noise, real)
        _check_finite(meters.flush(), epoch, opt)
        bar.set_postfix(_format(meters.means()))
        bar.close()
        reported = _report_skipped(skipped, reported, opt)
        if (epoch + 1) % opt.save_every == 0 or epoch + 1 == opt.max_epoch:
            save_point(epoch, netg, netd, fixed_noise, opt)
            meters.reset()
    print(f"done: weights in {opt.checkpoint_dir}, sample grids in {opt.save_path}", flush=True)
    return netg, netd


def _report_skipped(skipped, reported, opt):
    """One line about unreadable files when there are new ones; the full list on disk."""
    if len(skipped) > reported:
        log = Path(opt.checkpoint_dir) / "skipped_files.txt"
        log.write_text("".join(f"{p}\n" for p in sorted(skipped)))
        names = ", ".join(Path(p).name for p in sorted(skipped)[:3])
        print(f"skipped {len(skipped)} unreadable image files (e.g. {names}); "
              f"full list in {log}", flush=True)
    return len(skipped)


def _check_finite(diverged, epoch, opt):
    if diverged:
        raise UserError(f"{' and '.join(diverged)} became NaN or infinite in epoch {epoch}: "
                        f"training diverged; lower --lr1/--lr2 and start again from the last "
                        f"save in {opt.checkpoint_dir}")
