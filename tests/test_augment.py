"""--diffaug: what each transform does to a face, and that D sees real and fake through it
while G's gradient flows back through it."""
import pytest
import torch
from torch import nn

import augment
import steps


def _faces(n=4, size=16):
    torch.manual_seed(0)
    return torch.rand(n, 3, size, size) * 1.8 - 0.9  # no exact zeros


def _shift(x, dy, dx):
    """x moved down by dy and right by dx, zeros coming in."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_translation_shifts_each_face_by_at_most_an_eighth():
    x = _faces(n=64)
    out = augment.translation(x)
    shifts = []
    for a, b in zip(x, out):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(_shift(a, dy, dx), b)]
        assert len(found) == 1  # a pure shift within 16 / 8 = 2 pixels
        shifts += found
    # every shift up to the eighth, both ways on both axes (a range one short never moved a
    # face by +2, and leaned one way)
    assert {dy for dy, _ in shifts} == {dx for _, dx in shifts} == {-2, -1, 0, 1, 2}
    torch.manual_seed(1)
    many = {augment.translation(x[:1]).sum().item() for _ in range(30)}
    assert len(many) > 5  # the shift is random


def test_cutout_blanks_one_square_of_half_the_side_and_keeps_the_rest():
    x = _faces(n=64, size=16)
    out = augment.cutout(x)
    whole = 0
    for a, b in zip(x, out):
        cut = (b == 0).all(0)  # (H, W): blanked in every channel
        rows, cols = cut.any(1).nonzero().flatten(), cut.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8
        box = torch.zeros_like(cut)
        box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        assert torch.equal(cut, box)  # one rectangle (a square clipped at the border)
        assert torch.equal(b[:, ~cut], a[:, ~cut])
        if 0 < rows.min() and rows.max() < 15 and 0 < cols.min() and cols.max() < 15:
            assert len(rows) == len(cols) == 8  # away from the border: half the side
            whole += 1
    assert whole >= 3  # (a square of a quarter of the side passed the bounds above)


def test_color_changes_brightness_saturation_and_contrast_per_face():
    grey = _faces(n=6).mean(1, keepdim=True).expand(-1, 3, -1, -1)  # saturation has no effect
    out = augment.color(grey)
    for a, b in zip(grey, out):
        slope = ((b - b.mean()) / (a - a.mean())).flatten()
        assert torch.allclose(slope, slope[0].expand_as(slope), atol=1e-4)  # one contrast
        assert 0.5 <= slope[0] <= 1.5
    brightness = out.mean((1, 2, 3)) - grey.mean((1, 2, 3))
    assert brightness.abs().max() <= 0.5 + 1e-5 and brightness.std() > 0.01
    # on colourful faces: each face's contrast c scales its grey level about the mean, and
    # its saturation s times c scales its colour away from grey; s spans 0 (grey) to 2
    colourful = _faces(n=400, size=8)
    out = augment.color(colourful)
    level, level_out = colourful.mean(1, keepdim=True), out.mean(1, keepdim=True)
    tint, tint_out = (colourful - level).flatten(1), (out - level_out).flatten(1)
    centred = (level - level.mean((2, 3), keepdim=True)).flatten(1)
    c = ((level_out - level_out.mean((2, 3), keepdim=True)).flatten(1) * centred).sum(1) \
        / (centred * centred).sum(1)
    s = (tint_out * tint).sum(1) / (tint * tint).sum(1) / c
    assert torch.allclose(tint_out, (s * c)[:, None] * tint, atol=1e-4)  # one factor a face
    assert 0.5 - 1e-4 <= c.min() and c.max() <= 1.5 + 1e-4
    assert -1e-4 <= s.min() < 0.1 and 1.9 < s.max() <= 2 + 1e-4, (s.min(), s.max())


def test_parse_and_no_augmentation_by_default():
    assert augment.parse("cutout,color") == ("cutout", "color")
    assert augment.parse("") == ()
    with pytest.raises(ValueError, match="flip"):
        augment.parse("color,flip")
    # our own docs write colour: refused as "unknown colour" without a word of color
    assert augment.parse("colour, Translation") == ("color", "translation")
    from config import parse
    assert parse("train", {"data_path": "data", "diffaug": "Colour,cutout"}).diffaug == \
        "color,cutout"  # as train reads it, in options.json too
    with pytest.raises(ValueError, match=r"unknown cutot \(did you mean cutout\?\)"):
        augment.parse("cutot")
    x = _faces()
    assert augment.DiffAugment(()) (x) is x
    assert augment.DiffAugment(("cutout", "color")).kinds == ("color", "cutout")


def test_diffaug_in_another_order_or_twice_is_read_as_d_applies_it():
    """translation,color and cutout,cutout augment exactly as color,translation and cutout
    (the fixed order, each kind once): kept as typed, a resumed run given the same kinds in
    another order said "the run trained with --diffaug=color,translation until step 4; from
    here with --diffaug=translation,color", a change that was none."""
    from config import parse
    for typed, read in (("translation,COLOUR", "color,translation"),
                        ("cutout,cutout", "cutout"), (" color , translation", "color,translation"),
                        ("cutout,color,translation", "color,translation,cutout"), ("", "")):
        assert parse("train", {"data_path": "data", "diffaug": typed}).diffaug == read, typed


def test_diffaug_with_an_empty_place_is_refused_before_any_work(toy_dir, tmp_path):
    """--diffaug=color,,cutout trained as color,cutout, and --diffaug=, without any
    augmentation, without a word: a kind left out. A comma after the last is taken, as
    --seeds takes one."""
    from conftest import assert_clean_error, cli
    for typed, said in (("color,,cutout", "has an empty place in its list: a kind left out? "
                                          "choose any of color,translation,cutout"),
                        (",color", "has an empty place"),
                        (",", "names no kind: choose any of color,translation,cutout, or "
                              "leave the flag out for none")):
        line = assert_clean_error(cli("train", "--nogpu", "--vis=False", "--ngf=8", "--ndf=8",
                                      "--batch-size=16", "--max-epoch=1",
                                      f"--data-path={toy_dir}", f"--diffaug={typed}",
                                      f"--checkpoint-dir={tmp_path}", f"--save-path={tmp_path}"),
                                  said)
        assert line.startswith(f"error: --diffaug={typed} "), line
    assert list(tmp_path.iterdir()) == []
    from config import parse
    assert parse("train", {"data_path": "data", "diffaug": "color,cutout,"}).diffaug == \
        "color,cutout"


class SumD(nn.Module):
    """logit = sum of the pixels D sees; records every batch it is shown."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.seen = []

    def logits(self, x):
        self.seen.append(x.detach().clone())
        return self.w * x.flatten(1).sum(1)


class ImageG(nn.Module):
    """G that draws the same learnable face for every noise."""

    def __init__(self):
        super().__init__()
        self.face = nn.Parameter(torch.full((1, 3, 16, 16), 0.5))

    def forward(self, z):
        return self.face.expand(z.size(0), -1, -1, -1) + 0 * z.view(z.size(0), -1, 1, 1)[:, :1]


def test_d_sees_real_and_fake_augmented_and_g_learns_through_the_augmentation():
    torch.manual_seed(0)
    netg, netd = ImageG(), SumD()
    cut = augment.DiffAugment(("cutout",))
    real = _faces(n=8)
    opt_d = torch.optim.SGD(netd.parameters(), lr=0.0)
    steps.d_step(netg, netd.logits, opt_d, steps.Objective("hinge"), real, 4, augment=cut)
    seen_real, seen_fake = netd.seen
    for batch in (seen_real, seen_fake):  # both passes of the D step: a square cut out of each
        assert ((batch == 0).all(1).flatten(1).sum(1) > 0).all()
    assert torch.equal(seen_real[seen_real != 0], real[seen_real != 0])  # the rest untouched

    netd.seen.clear()
    opt_g = torch.optim.SGD(netg.parameters(), lr=0.0)
    steps.g_step(netg, netd, opt_g, steps.Objective("hinge"), 8, 4, "cpu", augment=cut)
    mask = (netd.seen[0] != 0).float()  # what survived the cutout, per face
    # loss_g = -mean(sum of seen pixels): d/dface = -(mean over the batch of the masks)
    assert torch.allclose(netg.face.grad, -mask.mean(0, keepdim=True))
    assert netg.face.grad.abs().sum() > 0
