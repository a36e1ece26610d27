"""SWD on cases with known answers, and the evaluate command end to end."""
import json

import numpy as np
import pytest
import torch

from metrics import laplacian_pyramid, swd
from toyfaces import face

from conftest import run_cli


def _faces(seed, count, keep=None):
    """``count`` toy faces (uint8 batch), optionally only those whose attributes pass ``keep``."""
    out, i = [], 0
    while len(out) < count:
        attrs, img = face(seed, i)
        i += 1
        if keep is None or keep(attrs):
            out.append(np.asarray(img).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))


@pytest.fixture(scope="module")
def sets():
    return {"a": _faces(0, 160), "b": _faces(1, 160),
            "dark_hair_only": _faces(1, 160, lambda a: a["hair_color"] in ("black", "brown"))}


def test_pyramid_levels_for_our_size():
    levels = laplacian_pyramid(torch.rand(2, 3, 96, 96))
    assert [level.shape[-1] for level in levels] == [96, 48, 24]
    flat = laplacian_pyramid(torch.full((1, 3, 96, 96), 0.7))
    assert all(level.abs().max() < 1e-5 for level in flat[:-1])  # no detail in a flat image
    assert torch.allclose(flat[-1], torch.full_like(flat[-1], 0.7))


def test_identical_sets_score_zero(sets):
    result = swd(sets["a"], sets["a"].clone())
    assert result["levels"] == [0.0, 0.0, 0.0] and result["sizes"] == [96, 48, 24]


def test_distortions_rank_as_expected(sets):
    a, b = sets["a"], sets["b"]
    g = torch.Generator().manual_seed(0)

    def noisy(x, amount):
        return (x.float() + torch.randn(x.shape, generator=g) * amount).clamp(0, 255).byte()

    def blurred(x):
        k = torch.ones(3, 1, 3, 3) / 9
        return torch.nn.functional.conv2d(x.float(), k, padding=1, groups=3).round().byte()

    floor = swd(a, b)["mean"]
    light, heavy = swd(a, noisy(b, 8))["mean"], swd(a, noisy(b, 40))["mean"]
    blur = swd(a, blurred(b))["mean"]
    dropped = swd(a, sets["dark_hair_only"])["mean"]
    assert 0 < floor < light < heavy
    assert blur > 2 * floor
    assert dropped > 2 * floor


def test_evaluate_untrained_generator_is_far_above_the_floor(toy_dir, tmp_path):
    from model import NetG, weights_init
    torch.manual_seed(0)
    netg = NetG(100, 8)
    netg.apply(weights_init)
    torch.save(netg.state_dict(), tmp_path / "g.pth")
    out = tmp_path / "m.json"
    r = run_cli("evaluate", "--nogpu", f"--netg-path={tmp_path / 'g.pth'}",
                f"--data-path={toy_dir}", "--num=32", f"--out={out}")
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["num"] == 32 and "SWD x1e3, mean" in r.stdout
    assert report["swd"]["mean"] > 5 * report["swd_floor"]["mean"]
