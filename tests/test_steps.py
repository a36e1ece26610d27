"""The update steps: the book's BCE by default, the hinge loss, and the R1 penalty."""
import torch
from torch import nn

import steps
from conftest import tiny_nets


def test_default_steps_are_the_articles_two_pass_bce_bit_for_bit():
    """No new option: D's two passes and G's step are exactly the article's BCE updates."""
    ours_g, ours_d = tiny_nets()
    ref_g, ref_d = tiny_nets()
    opts = [torch.optim.Adam(n.parameters(), lr=2e-4, betas=(0.5, 0.999))
            for n in (ours_g, ours_d, ref_g, ref_d)]
    real = torch.rand(6, 3, 96, 96) * 2 - 1
    bce = nn.BCEWithLogitsLoss()

    torch.manual_seed(3)
    said_d = steps.d_step(ours_g, ours_d.logits, opts[1], steps.Objective(), real, 16)
    said_g = steps.g_step(ours_g, ours_d, opts[0], steps.Objective(), 6, 16, "cpu")

    torch.manual_seed(3)
    opts[3].zero_grad()
    out_real = ref_d.logits(real)
    error_real = bce(out_real, torch.ones_like(out_real))
    error_real.backward()  # (1) real -> 1
    fake = ref_g(torch.randn(6, 16, 1, 1)).detach()
    out_fake = ref_d.logits(fake)
    error_fake = bce(out_fake, torch.zeros_like(out_fake))
    error_fake.backward()  # fake -> 0, a second backward
    opts[3].step()
    opts[2].zero_grad()
    out = ref_d.logits(ref_g(torch.randn(6, 16, 1, 1)))
    error_g = bce(out, torch.ones_like(out))
    error_g.backward()  # (2) G: D(G(z)) -> 1
    opts[2].step()

    for ours, ref in ((ours_g, ref_g), (ours_d, ref_d)):
        for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
            assert torch.equal(a, b), name
    # and what the bar, losses.csv and visdom show: the losses, D(x) and D(G(z))
    loss_d, d_real, d_fake = said_d
    assert torch.equal(loss_d, (error_real + error_fake).detach())
    assert torch.equal(d_real, torch.sigmoid(out_real).mean().detach())
    assert torch.equal(d_fake, torch.sigmoid(out_fake).mean().detach())
    assert torch.equal(said_g, error_g.detach())


def test_hinge_values_on_known_logits():
    hinge = steps.Objective("hinge")
    real = torch.tensor([2.0, 0.5, -1.0])  # margins: 0, 0.5, 2
    fake = torch.tensor([-2.0, 0.0, 1.0])  # margins: 0, 1, 2
    assert hinge.d_real(real).item() == torch.tensor(2.5 / 3).item()
    assert hinge.d_fake(fake).item() == 1.0
    assert hinge.g(fake).item() == torch.tensor(1 / 3).item()  # -mean(-2, 0, 1)
    # D is pushed only inside the margin: a face already past it gets no gradient
    logits = real.clone().requires_grad_(True)
    hinge.d_real(logits).backward()
    assert torch.allclose(logits.grad, torch.tensor([0.0, -1 / 3, -1 / 3]))


def test_bce_with_smoothing_is_the_formula():
    bce = steps.Objective("bce", real_label=0.9)
    logits = torch.tensor([1.5, -0.3])
    p = torch.sigmoid(logits)
    expected = -(0.9 * p.log() + 0.1 * (1 - p).log()).mean()
    assert torch.allclose(bce.d_real(logits), expected)
    assert torch.allclose(bce.d_fake(logits), -(1 - p).log().mean())
    assert torch.allclose(bce.g(logits), -p.log().mean())


class Quadratic(nn.Module):
    """logit(x) = a * sum(x^2): its gradient 2 a x is known by hand."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.7))

    def forward(self, x):
        return self.a * x.pow(2).flatten(1).sum(1)


def test_r1_equals_the_hand_computed_gradient_norm_and_reaches_the_weights():
    torch.manual_seed(0)
    d = Quadratic()
    x = torch.randn(5, 3, 4, 4).requires_grad_(True)
    penalty = steps.r1_penalty(d(x), x)
    norms = x.detach().pow(2).flatten(1).sum(1)  # ||x||^2 per image
    # ||2 a x||^2 / 2, averaged over the batch
    assert torch.allclose(penalty, (4 * 0.7 ** 2 * norms / 2).mean())
    penalty.backward()
    assert torch.allclose(d.a.grad, (4 * 0.7 * norms).mean())  # d/da of 2 a^2 mean||x||^2


def test_d_step_adds_r1_only_when_asked():
    """With r1 the D update changes by r1 times the penalty's gradient (twice the weight,
    twice the change: a penalty added unweighted trained every --r1 alike); the reported
    loss does not change."""
    results = []
    for r1 in (0.0, 10.0, 20.0):
        netg, netd = tiny_nets()
        opt = torch.optim.SGD(netd.parameters(), lr=1.0)
        torch.manual_seed(1)
        real = torch.rand(4, 3, 96, 96) * 2 - 1
        loss, _, _ = steps.d_step(netg, netd.logits, opt, steps.Objective("hinge"), real, 16,
                                  r1=r1)
        results.append((loss, [p.detach().clone() for p in netd.parameters()]))
    (loss0, w0), (loss1, w1), (loss2, w2) = results
    assert torch.equal(loss0, loss1) and torch.equal(loss0, loss2)
    assert any(not torch.equal(a, b) for a, b in zip(w0, w1))
    for a, b, c in zip(w0, w1, w2):  # SGD at lr 1: the change is the gradient itself
        assert torch.allclose(c - a, 2 * (b - a), atol=1e-5, rtol=1e-3)


class Drawn(nn.Module):
    """A G that draws the same images whatever the noise (one parameter, so it can learn)."""

    def __init__(self, images):
        super().__init__()
        self.images, self.shift = images, nn.Parameter(torch.zeros(()))

    def forward(self, z):
        return self.images[:z.size(0)] + self.shift


def test_the_low_judge_adds_its_loss_on_the_images_as_drawn_and_keeps_out_of_r1():
    """--d-low: D's step adds the low judge's loss on the real and fake images as they are,
    not as D sees them augmented, and R1 stays D's own."""
    from augment import DiffAugment, parse
    from model import LowJudge
    hinge = steps.Objective("hinge")
    torch.manual_seed(5)
    low = LowJudge(12, 4).eval()  # eval: no power iteration, the same scores in each pass
    _, netd = tiny_nets()
    netd.eval()
    real, fake = torch.rand(2, 4, 3, 96, 96) * 2 - 1
    netg = Drawn(fake)
    shift = DiffAugment(parse("translation"))
    params = [*netd.parameters(), *low.parameters()]
    losses = []
    for judge in (low, None):
        torch.manual_seed(1)  # the same shifts for D in both
        loss, _, _ = steps.d_step(netg, netd.logits, torch.optim.SGD(params, lr=0.0), hinge,
                                  real, 16, augment=shift, low=judge)
        losses.append(loss)
    with torch.no_grad():
        by_hand = hinge.d_real(low(real)) + hinge.d_fake(low(fake))
        assert abs(by_hand - hinge.d_real(low(shift(real))) - hinge.d_fake(low(shift(fake)))) > 1e-4
    assert torch.allclose(losses[0] - losses[1], by_hand, atol=1e-6)

    updated = []
    for r1 in (0.0, 10.0):
        _, netd = tiny_nets()
        torch.manual_seed(5)
        low = LowJudge(12, 4)
        opt = torch.optim.SGD([*netd.parameters(), *low.parameters()], lr=1.0)
        steps.d_step(netg, netd.logits, opt, hinge, real, 16, r1=r1, low=low)
        updated.append([p.detach().clone() for p in (*netd.parameters(), *low.parameters())])
    n = len(list(netd.parameters()))
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(updated[0][:n], updated[1][:n]))
    # R1 does not reach the low judge (up to the rounding of the double backward's sums)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(updated[0][n:], updated[1][n:]))


def test_the_low_judge_teaches_g_as_well_as_d():
    """G's gradient with --d-low is D's plus the low judge's on the faces as drawn."""
    from model import LowJudge
    hinge = steps.Objective("hinge")
    torch.manual_seed(5)
    low = LowJudge(12, 4).eval()
    netg, netd = tiny_nets()
    netg.eval(), netd.eval()  # BatchNorm on its statistics: the same faces in each pass
    grads = []
    for judge in (low, None):
        netg.zero_grad()
        torch.manual_seed(2)
        steps.g_step(netg, netd, torch.optim.SGD(netg.parameters(), lr=0.0), hinge, 4, 16,
                     "cpu", low=judge)
        grads.append([p.grad.clone() for p in netg.parameters()])
    netg.zero_grad()
    torch.manual_seed(2)
    hinge.g(low(netg(torch.randn(4, 16, 1, 1)))).backward()  # the low judge's part by hand
    by_hand = [p.grad for p in netg.parameters()]
    assert any(g.abs().sum() > 0 for g in by_hand)
    for both, d_only, low_only in zip(*grads, by_hand):
        assert torch.allclose(both - d_only, low_only, atol=1e-6)
    assert all(p.requires_grad for p in (*netd.parameters(), *low.parameters()))  # unfrozen
