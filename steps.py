"""The article's two update steps, (1) for D and (2) for G, used by train and bench.

BCE is computed from D's logits (``BCEWithLogitsLoss``): the article's objective, stable
under bf16 autocast. Step values come back detached and on the device, so the caller decides
when to wait for them.
"""
from contextlib import nullcontext

import torch


def d_step(netg, d_logits, optimizer_d, criterion, real, nz, autocast=nullcontext,
           real_label=1.0):
    """(1) maximise log D(x) + log(1 - D(G(z))). Returns detached (loss_d, D(x), D(G(z))).

    ``d_logits`` is ``netd.logits`` (or its DDP wrapper). ``real_label`` below 1 is one-sided
    label smoothing: D aims for it on real images.
    """
    optimizer_d.zero_grad()
    with autocast():
        logits_real = d_logits(real).float()
        loss_real = criterion(logits_real, torch.full_like(logits_real, real_label))
    loss_real.backward()
    with torch.no_grad(), autocast():  # the book's detach(), without building G's graph
        fake = netg(torch.randn(real.size(0), nz, 1, 1, device=real.device))
    with autocast():
        logits_fake = d_logits(fake).float()
        loss_fake = criterion(logits_fake, torch.zeros_like(logits_fake))
    loss_fake.backward()
    optimizer_d.step()
    return ((loss_real + loss_fake).detach(), torch.sigmoid(logits_real).mean().detach(),
            torch.sigmoid(logits_fake).mean().detach())


def g_step(netg, netd, optimizer_g, criterion, batch_size, nz, device, autocast=nullcontext):
    """(2) maximise log D(G(z)) on fresh noise. Returns the detached loss_g.

    ``netg`` may be G's DDP wrapper; ``netd`` is the plain NetD, frozen for the step.
    """
    optimizer_g.zero_grad()
    netd.requires_grad_(False)  # D is only a judge here: no gradients for its weights
    with autocast():
        fake = netg(torch.randn(batch_size, nz, 1, 1, device=device))
        logits = netd.logits(fake).float()
        loss_g = criterion(logits, torch.ones_like(logits))
    loss_g.backward()
    netd.requires_grad_(True)
    optimizer_g.step()
    return loss_g.detach()
