"""Generation: draw many faces, let D pick the best, save them as one grid.

    python main.py generate --netg-path=checkpoints/netg_199.pth --netd-path=checkpoints/netd_199.pth

``gen_search_num`` noises are drawn from N(gen_mean, gen_std) in batches of ``batch_size``;
only the ``gen_num`` best-scored faces are kept between batches, so memory stays bounded for
any count. Without ``--netd-path`` the first ``gen_num`` faces are kept.
"""
import torch

import checkpoint
from config import resolve_device


@torch.no_grad()
def best_faces(netg, netd, num, search_num, batch_size, mean=0.0, std=1.0, generator=None,
               device="cpu"):
    """The ``num`` faces D scores highest among ``search_num`` drawn, best first, on the CPU."""
    if netd is None:
        search_num = num
    best, best_scores = None, None
    for start in range(0, search_num, batch_size):
        n = min(batch_size, search_num - start)
        z = torch.randn(n, netg.nz, 1, 1, generator=generator, device=device) * std + mean
        fake = netg(z).float()
        scores = netd(fake).float() if netd is not None else -torch.arange(start, start + n,
                                                                           device=device).float()
        if best is not None:
            fake, scores = torch.cat([best, fake]), torch.cat([best_scores, scores])
        keep = scores.topk(min(num, scores.numel())).indices
        best, best_scores = fake[keep], scores[keep]
    return best.cpu(), best_scores.cpu()


def generate(opt):
    device = resolve_device(opt.gpu)
    netg, widths = checkpoint.load_net(opt.netg_path, "netg", device)
    if (widths["nz"], widths["ngf"]) != (opt.nz, opt.ngf):
        print(f"{opt.netg_path}: using the file's nz={widths['nz']}, ngf={widths['ngf']}")
    netd = None
    if opt.netd_path:
        netd, found = checkpoint.load_net(opt.netd_path, "netd", device)
        if found["ndf"] != opt.ndf:
            print(f"{opt.netd_path}: using the file's ndf={found['ndf']}")
        netd.eval()
    netg.eval()
    generator = None
    if opt.seed is not None:
        generator = torch.Generator(device).manual_seed(opt.seed)
    faces, scores = best_faces(netg, netd, opt.gen_num, opt.gen_search_num, opt.batch_size,
                               opt.gen_mean, opt.gen_std, generator, device)
    checkpoint.save_grid(faces, opt.gen_img)
    picked = f", the best of {opt.gen_search_num} by D" if netd is not None else ""
    print(f"wrote {opt.gen_img}: {len(faces)} faces{picked}")
    return faces, scores
