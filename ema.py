"""``--ema=DECAY``: an exponential moving average of G's weights, the copy that draws samples.

After every G step the copy moves towards G: it weighs the newest weights ``1 - decay``, the
step before ``(1 - decay) * decay``, and so on, normalised by the total weight given so far
(Adam's bias correction), so the random initial weights do not linger. The decay counts G
steps: at batch 64 with g_every=1, 0.995 is a half-life of about 9,000 images, near
StyleGAN's 10,000; lightweight-gan samples from such an average too.

G's BatchNorm statistics belong to G's own weights, not to their average, so before the copy
draws, ``sampler`` measures its own: it runs the copy in training mode over a few batches of
noise from a private seeded generator (the training's random numbers, and with them exact
resume, are untouched; the same weights always get the same statistics).
"""
import copy

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

REFRESH_BATCHES = 4  # x 64 noises: the BatchNorm statistics of the averaged weights
REFRESH_SEED = 20240  # the same noise every time, so a refresh is a pure function of weights


def _plain_batchnorm(module):
    """SyncBatchNorm layers (``--sync-bn``) back to BatchNorm2d, in place: the average is
    measured and drawn on rank 0 alone, where a SyncBatchNorm would wait for the other
    processes, which never join."""
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            plain = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain.to(next(child.buffers()).device))
        else:
            _plain_batchnorm(child)
    return module


@torch.no_grad()
def measure_batchnorm(netg):
    """Give averaged weights ``netg`` BatchNorm statistics of their own, in place, and return
    it in eval mode: torch's own re-measuring (reset, then a plain average) over fixed noise,
    so the same weights always get the same statistics."""
    noise = torch.Generator().manual_seed(REFRESH_SEED)
    batches = (torch.randn(64, netg.nz, 1, 1, generator=noise) for _ in range(REFRESH_BATCHES))
    update_bn(batches, netg, device=next(netg.parameters()).device)
    return netg.eval()


class EMA:
    def __init__(self, netg, decay):
        self.decay = decay
        self.netg = _plain_batchnorm(copy.deepcopy(netg)).eval().requires_grad_(False)
        self.updates = 0
        self.fresh = False  # BatchNorm statistics measured for the current weights

    @torch.no_grad()
    def update(self, netg):
        self.updates += 1
        step = (1 - self.decay) / (1 - self.decay ** self.updates)  # 1 at the first update
        for mine, theirs in zip(self.netg.parameters(), netg.parameters()):
            mine.lerp_(theirs, step)
        self.fresh = False

    @torch.no_grad()
    def sampler(self):
        """The averaged G in eval mode, with BatchNorm statistics of its own weights."""
        if not self.fresh:
            measure_batchnorm(self.netg)
            self.fresh = True
        return self.netg

    def state_dict(self):
        # "measured": whether the statistics in "netg" belong to its weights (a stop between
        # two save points saves them as last measured); generate measures them where not
        return {"decay": self.decay, "updates": self.updates, "netg": self.netg.state_dict(),
                "measured": self.fresh}

    def load_state_dict(self, state):
        self.updates = state["updates"]
        self.netg.load_state_dict(state["netg"])
        self.fresh = False
