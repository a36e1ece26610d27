"""The article's two update steps, (1) for D and (2) for G, used by train and bench.

The loss is the article's BCE by default, computed from D's logits (``BCEWithLogitsLoss``:
the same objective, stable under bf16 autocast), or the hinge loss with ``--loss=hinge``.
Step values come back detached and on the device, so the caller decides when to wait for
them. ``augment`` (``--diffaug``) is applied to every batch D sees, real and fake, in both
steps; ``r1`` adds the R1 penalty on real images to D's loss in the steps it is due.
"""
from contextlib import nullcontext

import torch
from torch import nn

R1_EVERY = 16  # lazy R1 (StyleGAN2): the penalty every 16th D step, weighted 16 times


class Objective:
    """What D and G minimise, from D's logits.

    - ``bce`` (the book): D: -log D(x) - log(1 - D(G(z))) with D(x) = sigmoid(logit) and
      real target ``real_label`` (below 1: one-sided label smoothing); G: -log D(G(z)).
    - ``hinge`` (SNGAN, BigGAN): D: max(0, 1 - D(x)) + max(0, 1 + D(G(z))) on the logits,
      so D stops pushing a face once it is past the margin; G: -D(G(z)).
    """

    def __init__(self, loss="bce", real_label=1.0):
        self.loss, self.real_label = loss, real_label
        self.bce = nn.BCEWithLogitsLoss()

    def d_real(self, logits):
        if self.loss == "hinge":
            return torch.relu(1.0 - logits).mean()
        return self.bce(logits, torch.full_like(logits, self.real_label))

    def d_fake(self, logits):
        if self.loss == "hinge":
            return torch.relu(1.0 + logits).mean()
        return self.bce(logits, torch.zeros_like(logits))

    def g(self, logits):
        if self.loss == "hinge":
            return -logits.mean()
        return self.bce(logits, torch.ones_like(logits))


def r1_penalty(logits, images):
    """R1 (Mescheder et al. 2018): the mean over the batch of ||d logit / d image||^2 / 2,
    with a graph, so D's weights learn from it. ``images`` must require grad."""
    grad, = torch.autograd.grad(logits.sum(), images, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean() / 2


def _identity(x):
    return x


def d_step(netg, d_logits, optimizer_d, objective, real, nz, autocast=nullcontext,
           augment=_identity, r1=0.0, low=None):
    """(1) D learns real -> real, fake -> fake. Returns detached (loss_d, D(x), D(G(z))).

    ``d_logits`` is ``netd.logits`` (or its DDP wrapper); ``objective`` an ``Objective``.
    ``r1`` > 0 adds r1 * R1 on the (augmented) real batch; loss_d is reported without it.
    ``low`` (``--d-low``, or its DDP wrapper) is a second judge, of the images as they are
    (not augmented): its loss is added to D's and reported with it; R1, D(x) and D(G(z))
    stay D's own.
    """
    optimizer_d.zero_grad()
    with autocast():
        seen = augment(real)
        if r1:
            seen = seen.detach().requires_grad_(True)
        logits_real = d_logits(seen).float()
        loss_real = objective.d_real(logits_real)
        if low is not None:
            loss_real = loss_real + objective.d_real(low(real).float())
        total_real = loss_real + r1 * r1_penalty(logits_real, seen) if r1 else loss_real
    total_real.backward()
    with torch.no_grad(), autocast():  # the book's detach(), without building G's graph
        fake = netg(torch.randn(real.size(0), nz, 1, 1, device=real.device))
    with autocast():
        logits_fake = d_logits(augment(fake)).float()
        loss_fake = objective.d_fake(logits_fake)
        if low is not None:
            loss_fake = loss_fake + objective.d_fake(low(fake).float())
    loss_fake.backward()
    optimizer_d.step()
    return ((loss_real + loss_fake).detach(), torch.sigmoid(logits_real).mean().detach(),
            torch.sigmoid(logits_fake).mean().detach())


def g_step(netg, netd, optimizer_g, objective, batch_size, nz, device, autocast=nullcontext,
           augment=_identity, low=None):
    """(2) G learns to make D call its faces real, on fresh noise. Returns the detached loss_g.

    ``netg`` may be G's DDP wrapper; ``netd`` is the plain NetD, frozen for the step. With
    ``augment`` D sees the fakes augmented, and G's gradient flows back through it. ``low``
    (the plain low judge of ``--d-low``), frozen too, adds its loss on the faces as drawn.
    """
    optimizer_g.zero_grad()
    judges = (netd, low) if low is not None else (netd,)
    for judge in judges:  # only judges here: no gradients for their weights
        judge.requires_grad_(False)
    with autocast():
        fake = netg(torch.randn(batch_size, nz, 1, 1, device=device))
        logits = netd.logits(augment(fake)).float()
        loss_g = objective.g(logits)
        if low is not None:
            loss_g = loss_g + objective.g(low(fake).float())
    loss_g.backward()
    for judge in judges:
        judge.requires_grad_(True)
    optimizer_g.step()
    return loss_g.detach()
