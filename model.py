"""The two networks of the article: NetG draws 3x96x96 faces from noise, NetD scores them.

Only modules live here: no I/O, no devices, no prints. Each network keeps its layers in one
``nn.Sequential`` attribute named ``main`` with the book's layer indices, so the state_dict
keys and shapes are exactly the book's (``main.0.weight``, ``main.1.running_mean``, ...) and
checkpoints move freely between the book's code and ours; only ``--sle`` adds layers to G
beside ``main``, which the book's NetG does not load.
"""
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm


class NetG(nn.Module):
    """Generator: noise (N, nz, 1, 1) -> images (N, 3, 96, 96) in [-1, 1].

    ``sle`` (``--sle``) adds skip-layer excitation, as in FastGAN (Liu et al., 2021): the
    4x4 map sets a gain from 0 to 1 for each channel of the 16x16 map, and the 8x8 map one
    for each channel of the 32x32 map, so the coarse layout steers which features the finer
    layers draw. Those layers live beside ``main`` (keys ``excite4.*``, ``excite8.*``), so
    ``main`` keeps the book's keys, but the book's NetG cannot load such a file.
    ``sle_gates=3`` (``--sle-gates=3``) adds a third gate (keys ``excite4b.*``): the 4x4 map
    also sets a gain for each channel of the 32x32 map, multiplied with the 8x8 map's.
    """

    def __init__(self, nz=100, ngf=64, sle=False, sle_gates=2):
        super().__init__()
        if sle_gates not in (2, 3) or (sle_gates == 3 and not sle):
            raise ValueError(f"sle_gates={sle_gates}: 2, or 3 with sle")
        self.nz = nz
        self.ngf = ngf
        self.sle = sle
        self.sle_gates = sle_gates
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),  # 0: (ngf*8) x 4 x 4
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),  # 3: (ngf*4) x 8 x 8
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),  # 6: (ngf*2) x 16 x 16
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),  # 9: ngf x 32 x 32
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, 3, 5, 3, 1, bias=False),  # 12: 3 x 96 x 96
            nn.Tanh(),
        )
        if sle:
            self.excite4 = _excitation(ngf * 8, ngf * 2)  # 4x4 gates 16x16
            self.excite8 = _excitation(ngf * 4, ngf)  # 8x8 gates 32x32
        if sle_gates == 3:
            self.excite4b = _excitation(ngf * 8, ngf)  # 4x4 gates 32x32 as well

    def forward(self, z):
        if not self.sle:
            return self.main(z)
        main = self.main
        f4 = main[0:3](z)
        f8 = main[3:6](f4)
        f16 = main[6:9](f8) * self.excite4(f4)
        gain32 = self.excite8(f8)
        if self.sle_gates == 3:
            gain32 = gain32 * self.excite4b(f4)
        return main[12:](main[9:12](f16) * gain32)


def _excitation(cin, cout):
    """Skip-layer excitation: a map of ``cin`` channels -> a gain in (0, 1) for each of
    ``cout`` channels of a larger map, shape (N, cout, 1, 1)."""
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(4),
        nn.Conv2d(cin, cout, 4, 1, 0, bias=False),  # 1: cout x 1 x 1
        nn.LeakyReLU(0.1),
        nn.Conv2d(cout, cout, 1, 1, 0, bias=False),  # 3
        nn.Sigmoid(),
    )


class NetD(nn.Module):
    """Discriminator: images (N, 3, 96, 96) -> probability of being real, shape (N,).

    ``logits`` gives the same score before the sigmoid; training uses it with
    BCEWithLogitsLoss, which is the article's BCE objective computed stably.
    """

    def __init__(self, ndf=64):
        super().__init__()
        self.ndf = ndf
        self.main = nn.Sequential(
            nn.Conv2d(3, ndf, 5, 3, 1, bias=False),  # 0: ndf x 32 x 32, no BN here
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),  # 2: (ndf*2) x 16 x 16
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),  # 5: (ndf*4) x 8 x 8
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),  # 8: (ndf*8) x 4 x 4
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),  # 11: 1 x 1 x 1
            nn.Sigmoid(),
        )

    def logits(self, x):
        """Scores before the final sigmoid, shape (N,)."""
        return self.main[:-1](x).view(-1)

    def forward(self, x):
        return torch.sigmoid(self.logits(x))


class LowJudge(nn.Module):
    """``--d-low=SIZE``: a second judge beside D that sees each image average-pooled to
    SIZE x SIZE: the layout of its colours (hair, skin, background), not its small parts.

    It has no BatchNorm, so it judges every image on its own: a shift all the fakes of a
    batch share (paler backgrounds, say) hardly shows to D, whose BatchNorm normalises each
    batch by its own statistics, but it shows to this judge. Its layers are spectrally
    normalised. It trains with D and is not part of D's file (``netd_{epoch}.pth`` stays
    the book's NetD); ``last.pth`` keeps it for an exact resume.
    """

    def __init__(self, size=12, width=32):
        super().__init__()
        self.size = size
        self.main = nn.Sequential(
            spectral_norm(nn.Conv2d(3, width, 3, 1, 1)),  # width x size x size
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width, width * 2, 4, 2, 1)),  # size / 2
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width * 2, width * 4, 4, 2, 1)),  # size / 4
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            spectral_norm(nn.Linear(width * 4 * (size // 4) ** 2, 1)),
        )

    def forward(self, x):
        """Scores (logits) of images (N, 3, 96, 96), shape (N,)."""
        return self.main(nn.functional.adaptive_avg_pool2d(x, self.size)).view(-1)


def weights_init(module):
    """DCGAN initialisation: conv weights N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def add_spectral_norm(netd):
    """``--sn``: divide each of D's convolution weights by its largest singular value.

    The estimate is torch's: one power iteration per training forward pass, reused in eval
    mode. Apply after the weights are initialised or loaded (the normalisation wraps them).
    """
    for module in netd.main:
        if isinstance(module, nn.Conv2d):
            spectral_norm(module)
    return netd


D_BATCHNORM = (3, 6, 9)  # the BatchNorm layers of NetD.main


def remove_batchnorm(netd):
    """``--d-bn=False``: D without BatchNorm (as SNGAN's), so every image is judged on its
    own and not against its batch's statistics; the layers become identities."""
    for i in D_BATCHNORM:
        netd.main[i] = nn.Identity()
    return netd


def batchnorm_is_identity(netd):
    """Whether D's BatchNorm layers are the identities ``book_state_dict`` writes for a D
    trained without them (``--d-bn=False``), as a D file loaded into NetD has them."""
    for i in D_BATCHNORM:
        bn = netd.main[i]
        if isinstance(bn, nn.Identity):
            continue
        if bn.num_batches_tracked.item() != 0 or not (
                torch.equal(bn.weight, torch.ones_like(bn.weight))
                and torch.equal(bn.bias, torch.zeros_like(bn.bias))
                and torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
                and torch.equal(bn.running_var, torch.full_like(bn.running_var, 1 - bn.eps))):
            return False
    return True


def book_state_dict(net):
    """The book's state_dict of ``net``: spectrally normalised weights folded into plain ones,
    and removed BatchNorm layers written as identities (weight 1, bias 0, mean 0, variance
    1 - eps, so that eval mode divides by exactly 1).

    The book's NetD loaded with it computes exactly what ``net`` computes in eval mode.
    """
    state = {}
    for name, tensor in net.state_dict().items():
        if ".parametrizations." not in name:
            state[name] = tensor
    for name, module in net.named_modules():
        if parametrize.is_parametrized(module):
            was_training = module.training
            module.eval()  # the current estimate, without a power iteration that would
            with torch.no_grad():  # change training (and exact resume)
                state[f"{name}.weight"] = module.weight.detach().clone()
            module.train(was_training)
    if isinstance(net, NetD):
        like = state["main.11.weight"]  # the dtype and device of D's weights
        eps = nn.BatchNorm2d(1).eps
        for i in D_BATCHNORM:
            if isinstance(net.main[i], nn.Identity):
                width = net.main[i - 1].out_channels
                state.update({
                    f"main.{i}.weight": torch.ones(width).to(like),
                    f"main.{i}.bias": torch.zeros(width).to(like),
                    f"main.{i}.running_mean": torch.zeros(width).to(like),
                    f"main.{i}.running_var": torch.full((width,), 1 - eps).to(like),
                    f"main.{i}.num_batches_tracked": torch.tensor(0)})
    return {k: state[k] for k in sorted(state, key=_book_order)}


def _book_order(key):
    """main.N.field in the book's order: by layer index, then weight/bias/statistics."""
    parts = key.split(".")
    fields = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    return int(parts[1]), fields.index(parts[2]) if parts[2] in fields else len(fields)
