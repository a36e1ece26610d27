"""NetG/NetD: shapes, the book's state_dict layout, and weights moving both ways."""
import torch
from torch import nn

from model import (LowJudge, NetD, NetG, add_spectral_norm, book_state_dict,
                   remove_batchnorm, weights_init)


class BookNetG(nn.Module):
    """The generator as the book writes it: one Sequential `main`, bias-free convs."""

    def __init__(self, nz, ngf):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, 3, 5, 3, 1, bias=False), nn.Tanh())

    def forward(self, x):
        return self.main(x)


class BookNetD(nn.Module):
    def __init__(self, ndf):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(3, ndf, 5, 3, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x):
        return self.main(x).view(-1)


def _randomise(net):
    """Random weights and running stats, so a mis-wired load cannot pass by accident."""
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if t.dtype.is_floating_point:
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in name
                        else torch.randn_like(t) * 0.05)
    return net


def test_shapes_and_ranges():
    torch.manual_seed(0)
    netg, netd = NetG(nz=100, ngf=8), NetD(ndf=8)
    fake = netg(torch.randn(5, 100, 1, 1))
    assert fake.shape == (5, 3, 96, 96)
    assert fake.min() >= -1 and fake.max() <= 1
    p = netd(fake)
    assert p.shape == (5,)
    assert ((p > 0) & (p < 1)).all()
    assert torch.allclose(torch.sigmoid(netd.logits(fake)), p)


def test_book_key_and_shape_layout():
    g = {k: tuple(v.shape) for k, v in NetG(100, 64).state_dict().items()}
    d = {k: tuple(v.shape) for k, v in NetD(64).state_dict().items()}
    assert {k.split(".")[1] for k in g} == {"0", "1", "3", "4", "6", "7", "9", "10", "12"}
    assert {k.split(".")[1] for k in d} == {"0", "2", "3", "5", "6", "8", "9", "11"}
    assert g["main.0.weight"] == (100, 512, 4, 4)
    assert g["main.3.weight"] == (512, 256, 4, 4)
    assert g["main.12.weight"] == (64, 3, 5, 5)
    assert g["main.10.running_var"] == (64,)
    assert d["main.0.weight"] == (64, 3, 5, 5)
    assert d["main.11.weight"] == (1, 512, 4, 4)
    assert d["main.3.num_batches_tracked"] == ()
    assert not any(k.endswith(".bias") and k.split(".")[1] in {"0", "3", "6", "9", "12"} for k in g)
    assert not any(k.endswith(".bias") and k.split(".")[1] in {"0", "2", "5", "8", "11"} for k in d)
    assert g == {k: tuple(v.shape) for k, v in BookNetG(100, 64).state_dict().items()}
    assert d == {k: tuple(v.shape) for k, v in BookNetD(64).state_dict().items()}


def test_book_weights_load_into_ours_and_ours_into_books(tmp_path):
    torch.manual_seed(1)
    z = torch.randn(4, 100, 1, 1)
    x = torch.rand(4, 3, 96, 96) * 2 - 1
    book_g, book_d = _randomise(BookNetG(100, 64)).eval(), _randomise(BookNetD(64)).eval()
    torch.save(book_g.state_dict(), tmp_path / "netg_199.pth")
    torch.save(book_d.state_dict(), tmp_path / "netd_199.pth")

    netg, netd = NetG(100, 64), NetD(64)
    netg.load_state_dict(torch.load(tmp_path / "netg_199.pth", weights_only=True))
    netd.load_state_dict(torch.load(tmp_path / "netd_199.pth", weights_only=True))
    netg.eval(), netd.eval()
    with torch.no_grad():
        assert torch.allclose(netg(z), book_g(z), atol=1e-6)
        assert torch.allclose(netd(x), book_d(x), atol=1e-6)

    ours_g, ours_d = _randomise(NetG(100, 64)).eval(), _randomise(NetD(64)).eval()
    back_g, back_d = BookNetG(100, 64).eval(), BookNetD(64).eval()
    back_g.load_state_dict(ours_g.state_dict())
    back_d.load_state_dict(ours_d.state_dict())
    with torch.no_grad():
        assert torch.allclose(back_g(z), ours_g(z), atol=1e-6)
        assert torch.allclose(back_d(x), ours_d(x), atol=1e-6)


def test_saved_state_dict_round_trips_to_identical_outputs(tmp_path):
    torch.manual_seed(2)
    netg = NetG(100, 16)
    netg.apply(weights_init)
    netg.train()
    netg(torch.randn(8, 100, 1, 1))  # move the BN running stats off their defaults
    netg.eval()
    torch.save(netg.state_dict(), tmp_path / "g.pth")
    fresh = NetG(100, 16).eval()
    fresh.load_state_dict(torch.load(tmp_path / "g.pth", weights_only=True))
    z = torch.randn(3, 100, 1, 1)
    with torch.no_grad():
        assert torch.equal(fresh(z), netg(z))


def test_dcgan_init():
    torch.manual_seed(3)
    netg, netd = NetG(100, 64), NetD(64)
    with torch.no_grad():
        netd.main[9].bias.fill_(0.5)  # (torch's own start is 0: the init must set it)
    netg.apply(weights_init)
    netd.apply(weights_init)
    for conv in [m.weight for net in (netg, netd) for m in net.main
                 if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]:  # G's and D's alike
        assert abs(conv.mean().item()) < 0.002 and abs(conv.std().item() - 0.02) < 0.002
    bn = netd.main[9]
    assert abs(bn.weight.mean().item() - 1) < 0.01 and abs(bn.weight.std().item() - 0.02) < 0.005
    assert torch.count_nonzero(bn.bias) == 0


def _largest_singular_values(netd):
    return [torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
            for m in netd.main if isinstance(m, nn.Conv2d)]


def test_spectral_norm_brings_every_conv_of_d_to_one():
    torch.manual_seed(4)
    netd = NetD(16)
    netd.apply(weights_init)
    with torch.no_grad():  # weights of a D that grew strong: largest singular values > 1
        for m in netd.main:
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(20)
    assert all(s > 1.5 for s in _largest_singular_values(netd))
    add_spectral_norm(netd).train()
    opt = torch.optim.Adam(netd.parameters(), lr=1e-2)
    for _ in range(5):  # the estimate follows the weights as they train
        opt.zero_grad()
        netd.logits(torch.randn(4, 3, 96, 96)).mean().backward()
        opt.step()
    netd(torch.randn(2, 3, 96, 96))  # one more power iteration for the latest weights
    assert all(abs(s - 1) < 0.05 for s in _largest_singular_values(netd))


def test_spectrally_normalised_d_folds_into_the_books_netd():
    """netd_{epoch}.pth of an --sn run is a plain book file that scores exactly like D."""
    torch.manual_seed(5)
    netd = NetD(16)
    netd.apply(weights_init)
    add_spectral_norm(netd).train()
    netd(torch.randn(8, 3, 96, 96))  # move the statistics and the estimate
    netd.eval()
    folded = book_state_dict(netd)
    assert list(folded) == list(BookNetD(16).state_dict())
    book = BookNetD(16).eval()
    book.load_state_dict(folded)
    x = torch.rand(4, 3, 96, 96) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(book(x), netd(x), atol=1e-6)
        original = netd.main[0].parametrizations.weight.original
        assert not torch.allclose(book.main[0].weight, original)


def test_d_without_batchnorm_judges_each_face_alone_and_saves_as_the_books_netd():
    torch.manual_seed(6)
    netd = remove_batchnorm(NetD(16))
    netd.apply(weights_init)
    x = torch.rand(4, 3, 96, 96) * 2 - 1
    with torch.no_grad():  # in training, a face's score does not depend on its batch
        alone = torch.cat([netd.logits(x[i:i + 1]) for i in range(4)])
        assert torch.allclose(netd.logits(x), alone, atol=1e-5)
    add_spectral_norm(netd).train()
    netd(x)
    netd.eval()
    folded = book_state_dict(netd)
    assert list(folded) == list(BookNetD(16).state_dict())
    book = BookNetD(16).eval()
    book.load_state_dict(folded)
    with torch.no_grad():
        assert torch.allclose(book(x), netd(x), atol=1e-6)


def test_low_judge_sees_only_the_pooled_image_each_face_alone_with_norms_of_one():
    """--d-low: its score is a function of the image pooled to SIZE x SIZE (detail that
    averages out within each block changes D's score, not this judge's), one face's score
    does not depend on its batch, and its layers are spectrally normalised."""
    torch.manual_seed(7)
    low, netd = LowJudge(12, 8).eval(), NetD(8).train()  # eval: no power iteration per call
    netd.apply(weights_init)
    x = torch.rand(4, 3, 96, 96) * 1.4 - 0.7
    checks = (torch.arange(96).view(-1, 1) + torch.arange(96)) % 2 * 0.6 - 0.3  # +-0.3
    with torch.no_grad():
        assert torch.allclose(low(x + checks), low(x), atol=1e-5)  # the same 12x12 average
        assert not torch.allclose(netd.logits(x + checks), netd.logits(x), atol=1e-3)
        assert not torch.allclose(low(x + 0.2), low(x), atol=1e-3)  # a colour shift shows
        alone = torch.cat([low(x[i:i + 1]) for i in range(4)])
        assert torch.allclose(low(x), alone, atol=1e-5)
    layers = [m for m in low.main if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():  # the weights of a judge that grew strong
        for m in layers:
            m.parametrizations.weight.original.mul_(20)
    opt = torch.optim.Adam(low.parameters(), lr=4e-4)  # the demo's
    low.train()
    for _ in range(20):  # the estimate follows the weights as they train
        opt.zero_grad()
        low(torch.randn(4, 3, 96, 96)).mean().backward()
        opt.step()
    low(x)  # a power iteration for the latest weights
    assert len(layers) == 4
    for m in layers:  # torch's estimate, one power iteration a step, lags a little behind
        s = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
        assert abs(s - 1) < 0.1
        assert torch.linalg.matrix_norm(m.parametrizations.weight.original.flatten(1), ord=2) > 5
