"""--ema: the averaged generator that draws the samples, saved beside G."""
import json

import pytest
import torch
from PIL import Image

from ema import EMA

from conftest import assert_clean_error, cli, tiny_nets


def _fill(net, value):
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)


def test_average_weighs_recent_steps_more_and_forgets_the_start():
    netg, _ = tiny_nets()
    decay = 0.9
    ema = EMA(netg, decay)
    values = [5.0, 1.0, 2.0, 3.0]
    for v in values:
        _fill(netg, v)
        ema.update(netg)
    # the bias-corrected average: weight decay**(age) on each step's weights
    weights = [decay ** (len(values) - 1 - k) for k in range(len(values))]
    expected = sum(w * v for w, v in zip(weights, values)) / sum(weights)
    for p in ema.netg.parameters():
        torch.testing.assert_close(p, torch.full_like(p, expected))
    assert expected != values[-1]  # it is an average, not a copy of the last step


def test_sampler_measures_its_own_batchnorm_statistics_without_touching_the_rng():
    netg, _ = tiny_nets()
    ema = EMA(netg, 0.99)
    with torch.no_grad():  # G's own statistics, far from what the average's layers produce
        for m in netg.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(50.0)
    ema.update(netg)
    rng = torch.get_rng_state()
    sampler = ema.sampler()
    assert torch.equal(torch.get_rng_state(), rng)
    bn = next(m for m in sampler.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn.running_mean.abs().max() < 5  # measured, not G's 50
    measured = bn.running_mean.clone()
    z = torch.randn(256, netg.nz, 1, 1)
    with torch.no_grad():
        drawn = sampler(z)  # eval mode, with the measured statistics
        batch = sampler.train()(z)  # the statistics of this very batch
    sampler.eval()
    torch.testing.assert_close(drawn.std(), batch.std(), rtol=0.1, atol=0)
    # the same weights give the same statistics: a second average, measured on its own
    # (after training had moved the RNG on), and this one re-measured after a reload
    torch.randn(1000)
    twin = EMA(netg, 0.99)
    twin.update(netg)
    assert twin.sampler() is not sampler
    assert torch.equal(twin.sampler().state_dict()["main.1.running_mean"], measured)
    # the batch above moved the statistics in training mode; a reload measures them again
    assert not torch.equal(bn.running_mean, measured)
    ema.load_state_dict(ema.state_dict())
    assert torch.equal(ema.sampler().state_dict()["main.1.running_mean"], measured)


def test_a_last_pth_draws_its_average_with_statistics_measured_for_it(tmp_path):
    """generate, evaluate and Faces.load given a last.pth of a run with --ema draw its
    average, as its netg_ema_N.pth would, also when a stop saved it between two measurings
    (the statistics in the file then belong to older weights); a last.pth without an
    average draws G."""
    from generate import Faces
    netg, _ = tiny_nets(nz=100)
    ema = EMA(netg, 0.9)
    for value in (0.02, -0.01, 0.03):  # G moves away from the average
        with torch.no_grad():
            for p in netg.parameters():
                p.add_(value)
        ema.update(netg)
        ema.sampler()  # a save point measures the average's statistics
    ema.update(netg)  # and a stop comes one step later
    stale = ema.state_dict()
    assert not stale["measured"]
    stale["netg"] = {k: v.clone() for k, v in stale["netg"].items()}
    torch.save(ema.sampler().state_dict(), tmp_path / "netg_ema_3.pth")
    state = {"format": 1, "netg": netg.state_dict(), "ema": stale}
    torch.save(state, tmp_path / "last.pth")
    del state["ema"]
    torch.save(state, tmp_path / "last-without.pth")
    torch.save(netg.state_dict(), tmp_path / "netg_3.pth")
    seeds = [1, 2, 3]
    average = Faces.load(tmp_path / "netg_ema_3.pth", device="cpu")
    last = Faces.load(tmp_path / "last.pth", device="cpu")
    assert last.averaged and not average.averaged
    assert torch.equal(last.tensors(seeds), average.tensors(seeds))
    without = Faces.load(tmp_path / "last-without.pth", device="cpu")
    g = Faces.load(tmp_path / "netg_3.pth", device="cpu")
    assert not without.averaged and torch.equal(without.tensors(seeds), g.tensors(seeds))
    assert not torch.equal(g.tensors(seeds), average.tensors(seeds))
    r = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'last.pth'}", "--seeds=1,2",
            f"--gen-img={tmp_path / 'a.png'}")
    assert r.returncode == 0, r.stderr
    assert "moving average" in r.stdout
    from explore import Explorer
    assert "(its moving average of G)" in Explorer(tmp_path / "last.pth").source()
    r = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'last-without.pth'}",
            "--seeds=1,2", f"--gen-img={tmp_path / 'b.png'}")
    assert r.returncode == 0, r.stderr
    assert "moving average" not in r.stdout


@pytest.mark.slow
def test_train_with_ema_saves_the_average_beside_g_and_generate_draws_with_it(toy_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    result = cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--seed=0",
                 "--batch-size=16", "--ngf=8", "--ndf=8", "--max-epoch=2", "--ema=0.9",
                 f"--checkpoint-dir={ckpt}", f"--save-path={tmp_path / 'imgs'}")
    assert result.returncode == 0, result.stderr
    # the command train's last line gives to paste draws with the average, as the grids did
    assert (f"generate --netg-path={ckpt / 'netg_ema_1.pth'} --netd-path={ckpt / 'netd_1.pth'}`"
            in result.stdout.rstrip().splitlines()[-1]), result.stdout
    g = torch.load(ckpt / "netg_1.pth", weights_only=True)
    average = torch.load(ckpt / "netg_ema_1.pth", weights_only=True)
    assert g.keys() == average.keys()
    assert not torch.equal(g["main.0.weight"], average["main.0.weight"])
    # an average of every G step (the book's --g-every=5: the first of each epoch's 4
    # batches, 2 in all): one never updated is G's random start, which differs from G too
    assert torch.load(ckpt / "last.pth", weights_only=True)["ema"]["updates"] == 2
    pictures = []
    for name in ("netg_1.pth", "netg_ema_1.pth"):
        out = tmp_path / f"{name}.png"
        result = cli("generate", f"--netg-path={ckpt / name}", "--nogpu", "--vis=False",
                     "--gen-num=8", "--gen-search-num=8", "--seeds=1,2,3,4,5,6,7,8",
                     f"--gen-img={out}")
        assert result.returncode == 0, result.stderr
        pictures.append(Image.open(out).tobytes())
    assert pictures[0] != pictures[1]
    out = tmp_path / "last.png"  # the run's last.pth draws its average, and says so
    result = cli("generate", f"--netg-path={ckpt / 'last.pth'}", "--nogpu",
                 "--seeds=1,2,3,4,5,6,7,8", f"--gen-img={out}")
    assert result.returncode == 0, result.stderr
    assert "moving average of G" in result.stdout
    assert Image.open(out).tobytes() == pictures[1]


def test_ema_outside_its_range_is_one_line(toy_dir):
    assert_clean_error(cli("train", f"--data-path={toy_dir}", "--ema=1.5"), "--ema")


def test_average_of_a_sync_batchnorm_g_draws_alone():
    """Under --sync-bn G's BatchNorm layers are SyncBatchNorm; the average must not be, as
    only rank 0 measures and draws with it (a SyncBatchNorm there would wait for the rest)."""
    netg, _ = tiny_nets()
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(netg)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    ema = EMA(synced, 0.99)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in ema.netg.modules())
    ema.update(synced)
    faces = ema.sampler()(torch.randn(4, netg.nz, 1, 1))  # re-measures in training mode
    assert faces.shape == (4, 3, 96, 96)


def test_evaluate_says_a_netg_ema_file_is_the_average(toy_dir, tmp_path):
    """Its JSON said "averaged": false for netg_ema_4.pth, the very file of the average."""
    netg, _ = tiny_nets(nz=100)
    for name in ("netg_ema_4.pth", "netg_4.pth"):
        torch.save(netg.state_dict(), tmp_path / name)
        out = tmp_path / f"{name}.json"
        r = cli("evaluate", "--nogpu", f"--netg-path={tmp_path / name}", f"--data-path={toy_dir}",
                "--metrics=swd", "--num=8", f"--out={out}")
        assert r.returncode == 0, r.stderr
        assert json.loads(out.read_text())["averaged"] == (name == "netg_ema_4.pth")
