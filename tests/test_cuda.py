"""The GPU path (`train --gpu`): run whenever CUDA is there, reported as skipped otherwise.

Never run on this project's CPU machines; scripts/gpu-check.sh runs them on a GPU host.
"""
import numpy as np
import pytest
import torch
from PIL import Image

from config import use_bf16
from data import CachedBatches, build_cache

from conftest import cli, run_cli, same_weights, train_small

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs CUDA: run on a GPU host (scripts/gpu-check.sh)")


def _train(toy_dir, ckpt, gpu=True, **flags):
    train_small(toy_dir, ckpt, gpu=gpu, **flags)


def test_a_short_training_takes_the_gpu_path(toy_dir, tmp_path, capsys):
    _train(toy_dir, tmp_path, max_epoch=2)
    out = capsys.readouterr().out
    bf16 = use_bf16(None, torch.device("cuda"))
    assert f"training on cuda{' with bf16 autocast' if bf16 else ''}, seed 0" in out
    state = torch.load(tmp_path / "last.pth", weights_only=True)
    assert all(group["fused"] for key in ("optimizer_g", "optimizer_d")
               for group in state[key]["param_groups"])  # fused Adam on the GPU
    assert Image.open(tmp_path / "imgs" / "1.png").size == (786, 786)
    array, _ = build_cache(toy_dir, 96)
    held = CachedBatches(array, 16, torch.device("cuda"))
    assert held.on_device is not None and held.on_device.is_cuda  # the decoded set on the GPU


def test_resume_on_the_gpu_is_exact(toy_dir, tmp_path):
    _train(toy_dir, tmp_path / "straight", max_epoch=3)
    _train(toy_dir, tmp_path / "split", max_epoch=1)
    _train(toy_dir, tmp_path / "split", max_epoch=3, resume=True)
    for name in ("netg_2.pth", "netd_2.pth"):
        assert same_weights(tmp_path / "straight" / name, tmp_path / "split" / name), name


def test_generate_and_evaluate_on_the_gpu_draw_what_the_cpu_draws(toy_dir, tmp_path):
    _train(toy_dir, tmp_path, max_epoch=1)
    faces = {}
    for device in ("--gpu", "--nogpu"):
        out = tmp_path / device
        r = cli("generate", device, f"--netg-path={tmp_path / 'netg_0.pth'}",
                "--seeds=1,2,3,4", f"--out-dir={out}", f"--gen-img={out}.png")
        assert r.returncode == 0, r.stderr
        faces[device] = np.stack([np.asarray(Image.open(p)).astype(int)
                                  for p in sorted(out.glob("face_*.png"))])
    # the same noise, the same G; the GPU's convolutions (TF32 by default) round otherwise
    diff = np.abs(faces["--gpu"] - faces["--nogpu"])
    assert diff.mean() < 1.5 and diff.max() <= 16
    r = run_cli("evaluate", "--gpu", f"--netg-path={tmp_path / 'netg_0.pth'}",
                f"--data-path={toy_dir}", "--num=32", "--metrics=swd",
                f"--out={tmp_path / 'm.json'}")
    assert r.returncode == 0 and "SWD x1e3, mean" in r.stdout, r.stderr


def test_checkpoints_cross_between_gpu_and_cpu(toy_dir, tmp_path):
    gpu, cpu = tmp_path / "gpu", tmp_path / "cpu"
    _train(toy_dir, gpu, max_epoch=1)
    _train(toy_dir, gpu, gpu=False, max_epoch=2, resume=True)  # a GPU state on the CPU
    state = torch.load(gpu / "last.pth", weights_only=True)
    assert state["epoch"] == 2 and not any(
        g["fused"] for k in ("optimizer_g", "optimizer_d") for g in state[k]["param_groups"])
    _train(toy_dir, cpu, gpu=False, max_epoch=1)
    _train(toy_dir, cpu, gpu=True, max_epoch=2, resume=True)  # and the reverse
    state = torch.load(cpu / "last.pth", weights_only=True)
    assert state["epoch"] == 2 and all(
        g["fused"] for k in ("optimizer_g", "optimizer_d") for g in state[k]["param_groups"])
    r = cli("generate", "--nogpu", f"--netg-path={cpu / 'netg_1.pth'}",
            f"--netd-path={cpu / 'netd_1.pth'}", f"--gen-img={tmp_path / 'r.png'}",
            "--gen-num=8", "--gen-search-num=16")
    assert r.returncode == 0, r.stderr
