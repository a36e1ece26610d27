"""The evaluate command: how close a generator's faces are to the real ones, with its floor.

    python main.py evaluate --netg-path=checkpoints/netg_15.pth --data-path=data/toy --num=2048

Draws ``num`` faces (seeds ``seed`` .. ``seed+num-1``), takes ``num`` real images and another,
disjoint ``num`` for the floor (two real samples also differ by chance: a generator cannot
do better than the floor), and prints and saves each metric next to its floor.
"""
import json

import numpy as np
import torch

import checkpoint
from config import resolve_device
from data import build_cache, list_images
from generate import Faces
from metrics import swd


def _uint8(faces):
    return ((faces.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def evaluate(opt):
    device = resolve_device(opt.gpu)
    seed = opt.seed if opt.seed is not None else 0
    faces = Faces.load(opt.netg_path, None, device, mean=opt.gen_mean, std=opt.gen_std,
                       batch_size=opt.batch_size)
    files = list_images(opt.data_path)
    array, _ = build_cache(opt.data_path, opt.image_size, files=files)
    order = torch.randperm(len(array), generator=torch.Generator().manual_seed(seed)).numpy()
    num = opt.num
    if len(array) < 2 * num:
        num = len(array) // 2
        print(f"note: {opt.data_path} has {len(array)} images; comparing {num} (the floor needs "
              f"two disjoint real sets)")
    real = torch.from_numpy(np.stack([array[i] for i in np.sort(order[:num])]))
    other = torch.from_numpy(np.stack([array[i] for i in np.sort(order[num:2 * num])]))
    fake = _uint8(faces.tensors(range(seed, seed + num)))

    report = {"netg_path": str(opt.netg_path), "data_path": str(opt.data_path), "num": num,
              "seed": seed}
    if "swd" in opt.metrics.split(","):
        report["swd"] = swd(real, fake, seed)
        report["swd_floor"] = swd(real, other, seed)
    out = opt.out or "metrics.json"
    checkpoint.save_text(json.dumps(report, indent=2), out)

    print(f"{num} generated vs {num} real images ({opt.data_path}):")
    print(f"| metric | {opt.netg_path} | real vs real (floor) |")
    print("| --- | --- | --- |")
    if "swd" in report:
        for i, size in enumerate(report["swd"]["sizes"]):
            print(f"| SWD x1e3, {size} px | {report['swd']['levels'][i]:.2f} | "
                  f"{report['swd_floor']['levels'][i]:.2f} |")
        print(f"| SWD x1e3, mean | {report['swd']['mean']:.2f} | "
              f"{report['swd_floor']['mean']:.2f} |")
    print(f"wrote {out}")
    return report
