"""generate: batched search keeps exactly the best faces, and a seed repeats the grid."""
import torch

from generate import best_faces
from model import NetD, NetG, weights_init

from conftest import run_cli


def _nets():
    torch.manual_seed(0)
    netg, netd = NetG(100, 8), NetD(8)
    netg.apply(weights_init)
    netd.apply(weights_init)
    return netg.eval(), netd.eval()


def _same_draws(netg, count, batch_size, seed):
    """The faces best_faces draws for a seed, in the same batches."""
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([netg(torch.randn(min(batch_size, count - start), 100, 1, 1, generator=gen))
                      for start in range(0, count, batch_size)])


@torch.no_grad()
def test_batched_search_keeps_the_top_scores():
    netg, netd = _nets()
    faces, scores = best_faces(netg, netd, num=10, search_num=70, batch_size=16,
                               generator=torch.Generator().manual_seed(1))
    # score every face the same draws give, all at once
    every = netd(_same_draws(netg, 70, 16, seed=1))
    assert faces.shape == (10, 3, 96, 96)
    assert torch.allclose(scores, every.topk(10).values)
    assert torch.allclose(netd(faces), scores, atol=1e-6)


@torch.no_grad()
def test_without_d_the_first_faces_are_kept():
    netg, _ = _nets()
    faces, _ = best_faces(netg, None, num=5, search_num=50, batch_size=4,
                          generator=torch.Generator().manual_seed(2))
    assert torch.equal(faces, _same_draws(netg, 5, 4, seed=2))


def test_seed_repeats_the_grid(tmp_path):
    netg, netd = _nets()
    torch.save(netg.state_dict(), tmp_path / "g.pth")
    torch.save(netd.state_dict(), tmp_path / "d.pth")
    outs = []
    for name in ("a.png", "b.png"):
        r = run_cli("generate", "--nogpu", "--seed=7", f"--netg-path={tmp_path / 'g.pth'}",
                    f"--netd-path={tmp_path / 'd.pth'}", f"--gen-img={tmp_path / name}",
                    "--gen-num=8", "--gen-search-num=40", "--batch-size=16")
        assert r.returncode == 0, r.stderr
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
