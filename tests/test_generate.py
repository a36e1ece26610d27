"""generate and interpolate: the best faces by D, seeds that draw a face again, morphs, API."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image

from generate import Faces, noise

from conftest import assert_clean_error, cli, drawing_nets


@torch.no_grad()
def test_batched_search_keeps_the_top_scores():
    netg, netd = drawing_nets()
    faces, scores, seeds = Faces(netg, netd, batch_size=16).best(10, 70, first_seed=100)
    every = netd(netg(noise(range(100, 170), 100)))  # all 70 at once
    top = every.topk(10)
    assert faces.shape == (10, 3, 96, 96)
    assert torch.allclose(scores, top.values, atol=1e-5)
    # each kept seed's own score is one of the top ten (equal scores may swap places)
    assert torch.allclose(every[[s - 100 for s in seeds]], top.values, atol=1e-5)
    assert len(set(seeds)) == 10
    assert torch.allclose(netd(faces), scores, atol=1e-5)


@torch.no_grad()
def test_without_d_the_first_seeds_are_kept():
    netg, _ = drawing_nets()
    faces, _, seeds = Faces(netg, None, batch_size=4).best(5, 50, first_seed=3)
    assert seeds == [3, 4, 5, 6, 7]
    assert torch.allclose(faces, netg(noise(seeds, 100)), atol=1e-6)


def _save_nets(tmp_path):
    netg, netd = drawing_nets()
    torch.save(netg.state_dict(), tmp_path / "g.pth")
    torch.save(netd.state_dict(), tmp_path / "d.pth")
    return tmp_path / "g.pth", tmp_path / "d.pth"


def test_seed_repeats_the_grid(tmp_path):
    g, d = _save_nets(tmp_path)
    outs = []
    for name in ("a.png", "b.png"):
        r = cli("generate", "--nogpu", "--seed=7", f"--netg-path={g}", f"--netd-path={d}",
                f"--gen-img={tmp_path / name}", "--gen-num=8", "--gen-search-num=40",
                "--batch-size=16")
        assert r.returncode == 0, r.stderr
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]


def test_widths_come_from_the_files_and_a_differing_flag_is_named(tmp_path):
    g, d = _save_nets(tmp_path)  # width 8: neither the book's 64 nor anything given
    common = ("generate", "--nogpu", f"--netg-path={g}", f"--netd-path={d}", "--gen-num=4",
              "--gen-search-num=8", f"--gen-img={tmp_path / 'grid.png'}", "--seed=1")
    quiet = cli(*common)
    assert quiet.returncode == 0, quiet.stderr
    assert "using the file" not in quiet.stdout  # nothing was asked that the file overrides
    told = cli(*common, "--ngf=64", "--ndf=8")  # the book's command line, one width wrong
    assert told.returncode == 0, told.stderr
    assert f"{g}: using the file's ngf=8, not --ngf=64" in told.stdout
    assert "ndf" not in told.stdout and "nz" not in told.stdout
    assert _pixels(tmp_path / "grid.png").shape[:2] == (98 + 2, 4 * 98 + 2)  # 4 faces drawn
    # --help lists them with the book's flags it takes but does not read
    page = cli("generate", "--help").stdout
    assert not [line for line in page.splitlines() if line.startswith("  --ngf")]
    assert "--ngf" in page.split("unused here:")[1]


def test_a_rerun_stopped_half_way_leaves_no_manifest_of_replaced_faces(tmp_path, monkeypatch):
    """The same --out-dir command again replaces the faces one by one: stopped half way, the
    old manifest named faces of which some were already the new run's."""
    import checkpoint
    import generate
    g, _ = _save_nets(tmp_path)
    args = ("generate", "--nogpu", f"--netg-path={g}", "--seeds=3,4,5",
            f"--out-dir={tmp_path / 'out'}", f"--gen-img={tmp_path / 'grid.png'}")
    assert cli(*args).returncode == 0
    assert (tmp_path / "out" / "manifest.csv").is_file()
    netg, _ = drawing_nets()
    faces = netg(noise([3, 4, 5], 100)).detach()
    real_save, written = checkpoint.save_bytes, []

    def stopped_after_one(data, path):
        if written:
            raise KeyboardInterrupt
        written.append(path)
        real_save(data, path)
    monkeypatch.setattr(checkpoint, "save_bytes", stopped_after_one)
    with pytest.raises(KeyboardInterrupt):
        generate._write_faces(tmp_path / "out", faces, torch.zeros(3), [3, 4, 5], 2, "nearest")
    assert len(written) == 1 and not (tmp_path / "out" / "manifest.csv").exists()
    monkeypatch.undo()
    assert cli(*args).returncode == 0  # the same command again repairs the folder
    assert (tmp_path / "out" / "manifest.csv").is_file()
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "manifest.csv", "face_000_seed3.png", "face_001_seed4.png", "face_002_seed5.png"}


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_manifest_seeds_draw_the_same_faces_again(tmp_path):
    g, d = _save_nets(tmp_path)
    first = tmp_path / "first"
    r = cli("generate", "--nogpu", f"--netg-path={g}", f"--netd-path={d}", "--gen-num=6",
            "--gen-search-num=50", "--batch-size=16", f"--out-dir={first}",
            f"--gen-img={tmp_path / 'grid.png'}", "--seed=1000")
    assert r.returncode == 0, r.stderr
    with open(first / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["rank"]) for row in rows] == list(range(6))
    # D's best six of seeds 1000..1049, best first, scored here on their own, one by one
    netg, netd = drawing_nets()
    with torch.no_grad():
        own = {s: float(netd(netg(noise([s], 100)))) for s in range(1000, 1050)}
    best = sorted(own, key=own.get, reverse=True)[:6]
    assert [int(row["seed"]) for row in rows] == best
    assert [float(row["d_score"]) for row in rows] == \
        pytest.approx([own[s] for s in best], abs=1e-5)
    assert all(_pixels(first / row["file"]).shape == (96, 96, 3) for row in rows)

    again = tmp_path / "again"
    seeds = ",".join(row["seed"] for row in rows)
    r = cli("generate", "--nogpu", f"--netg-path={g}", f"--seeds={seeds}", "--scale=3",
            f"--out-dir={again}", f"--gen-img={tmp_path / 'again.png'}")
    assert r.returncode == 0, r.stderr
    with open(again / "manifest.csv") as f:
        redrawn = list(csv.DictReader(f))
    for old, new in zip(rows, redrawn):
        assert old["seed"] == new["seed"]
        big = _pixels(again / new["file"])
        assert big.shape == (288, 288, 3)
        assert np.array_equal(big[::3, ::3], _pixels(first / old["file"]))  # same face, 3x

    # the same command again replaces its own files: the folder holds one set, as before
    before = {p.name: p.read_bytes() for p in again.iterdir()}
    (again / rows[0]["file"].replace(".png", ".tmp")).write_bytes(b"")  # not a face: stays
    r = cli("generate", "--nogpu", f"--netg-path={g}", f"--seeds={seeds}", "--scale=3",
            f"--out-dir={again}", f"--gen-img={tmp_path / 'again.png'}")
    assert r.returncode == 0, r.stderr
    (again / rows[0]["file"].replace(".png", ".tmp")).unlink()
    assert {p.name: p.read_bytes() for p in again.iterdir()} == before

    # other faces would mix with the earlier ones, out of step with the manifest (an
    # interrupted rerun left both sets): refused, with other seeds after drawing them but
    # before writing anything, with fresh random seeds before any work
    for other in (["--seeds=7,8"], ["--gen-num=4", "--gen-search-num=8"]):
        assert_clean_error(cli("generate", "--nogpu", f"--netg-path={g}", *other,
                               f"--out-dir={again}",
                               f"--gen-img={tmp_path / 'more.png'}"),
                           "--out-dir", "earlier", "would not replace", "e.g. face_",
                           "face_*.png", "manifest.csv")
        assert {p.name: p.read_bytes() for p in again.iterdir()} == before
        assert not (tmp_path / "more.png").exists()


def test_interpolation_ends_on_the_seeds_faces_and_the_gif_loops(tmp_path):
    g, _ = _save_nets(tmp_path)
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=5,9,13", "--steps=6",
            f"--out={tmp_path / 'interp.png'}", f"--gif={tmp_path / 'interp.gif'}")
    assert r.returncode == 0, r.stderr
    grid = _pixels(tmp_path / "interp.png")
    assert grid.shape == (2 * 98 + 2, 6 * 98 + 2, 3)  # a row per pair, 6 faces a row

    def cell(row, col):
        return grid[2 + row * 98:2 + row * 98 + 96, 2 + col * 98:2 + col * 98 + 96]

    r = cli("generate", "--nogpu", f"--netg-path={g}", "--seeds=5,9,13",
            f"--out-dir={tmp_path / 'ends'}", f"--gen-img={tmp_path / 'ends.png'}")
    assert r.returncode == 0, r.stderr
    ends = sorted((tmp_path / "ends").glob("face_*.png"))
    assert np.array_equal(cell(0, 0), _pixels(ends[0]))   # seed 5
    assert np.array_equal(cell(0, 5), _pixels(ends[1]))   # seed 9
    assert np.array_equal(cell(1, 0), _pixels(ends[1]))
    assert np.array_equal(cell(1, 5), _pixels(ends[2]))   # seed 13
    assert not np.array_equal(cell(0, 2), cell(0, 0))     # the middle is something else

    gif = Image.open(tmp_path / "interp.gif")
    assert gif.n_frames == 3 * 5  # 5 new frames per leg, 3 legs: 5 -> 9 -> 13 -> 5
    assert gif.info.get("loop") == 0


def test_interpolation_without_seeds_names_the_seed_that_draws_it_again(tmp_path):
    g, _ = _save_nets(tmp_path)
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--steps=3",
            f"--out={tmp_path / 'fresh.png'}")
    assert r.returncode == 0, r.stderr
    told = [line for line in r.stdout.splitlines() if "pass --seed=" in line]
    assert len(told) == 1, r.stdout  # one seed to note, not one per end of the morph
    seed = int(told[0].split("pass --seed=")[1].split()[0])
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--steps=3", f"--seed={seed}",
            f"--out={tmp_path / 'again.png'}")
    assert r.returncode == 0, r.stderr
    assert f"seeds {seed} -> {seed + 1}" in r.stdout
    assert np.array_equal(_pixels(tmp_path / "fresh.png"), _pixels(tmp_path / "again.png"))


def test_api_loads_both_checkpoint_formats(tmp_path, toy_dir):
    from config import parse
    from train import train
    train(parse("train", dict(data_path=str(toy_dir), gpu=False, vis=False, max_epoch=1,
                              batch_size=32, ngf=8, ndf=8, seed=0, save_path=str(tmp_path),
                              checkpoint_dir=str(tmp_path))))
    book = Faces.load(tmp_path / "netg_0.pth", tmp_path / "netd_0.pth", device="cpu")
    full = Faces.load(tmp_path / "last.pth", tmp_path / "last.pth", device="cpu")
    a, b = book.tensors([1, 2, 3]), full.tensors([1, 2, 3])
    assert a.shape == (3, 3, 96, 96) and torch.equal(a, b)
    images = full.images([4], scale=2, resample="lanczos")
    assert images[0].size == (192, 192) and images[0].mode == "RGB"
    faces, scores, seeds = book.best(2, 8, first_seed=0)
    assert len(seeds) == 2 and scores[0] >= scores[1]
