"""The evaluate command: how close a generator's faces are to the real ones, with its floor.

    python main.py evaluate --netg-path=checkpoints/netg_15.pth --data-path=data-toy --num=2048

Draws ``num`` faces (seeds ``seed`` .. ``seed+num-1``), takes ``num`` real images and another,
disjoint ``num`` for the floor (two real samples also differ by chance: a generator cannot
do better than the floor), and prints and saves each metric next to its floor.
"""
import csv
import itertools
import json
import re
from pathlib import Path

import numpy as np
import torch

import checkpoint
from config import UNSET_MEANS, resolve_device
from data import build_cache, decode_in_order, list_images, say_folders
import generate
from generate import Faces, say_source, say_widths
from errors import UserError, counted, from_here, shown
from metrics import (attribute_classifier, classifier_path, frechet_distance, inception_path,
                     kernel_inception_distance, load_extractor, modes, predict, swd)


FEW = 256  # faces a side below which evaluate says its figures are rough
# The memory a face a side takes at the peak, beyond the base (torch, G, the classifier, the
# Inception network: taken before the memory left is read): the three uint8 sets of 96x96
# images (real, the floor's, generated); with SWD, its neighbourhoods of two sets (128 of
# 7x7x3 floats an image) and their projections, 16 directions at a time (a float each, copied
# and sorted); with FID or KID, the three sets' 2048 features (float64). Measured on the CPU,
# peaks grew by about 0.21 MB a face with SWD (--num 1024 to 4096 on the toy set) and 0.14 MB
# with FID (64 to 2048); beyond the faces, SWD took some 140 MB at --num=64 (its pyramid of 64
# images, the passes' buffers) and FID 0.9 GB (the Inception network's passes): ROOM, and
# ROOM + FID_ROOM.
IMAGE_BYTES, SWD_BYTES, FEATURE_BYTES = 3 * 96 * 96, 2 * 128 * 147 * 4 + 6 * 128 * 16 * 4, 2048 * 8
ROOM, FID_ROOM = 2**28, 2**30


def memory_need(wanted):
    """The bytes a face a side takes with the metrics ``wanted``, and those it takes
    whatever the count."""
    fid = bool({"fid", "kid"} & set(wanted))
    return (3 * IMAGE_BYTES + SWD_BYTES * ("swd" in wanted) + 3 * FEATURE_BYTES * fid,
            ROOM + FID_ROOM * fid)


def most_faces(free, need):
    """The most faces a side that ``free`` bytes hold, with ``need`` as memory_need gives it."""
    per_face, room = need
    return max((free - room) // per_face, 0)


def _real_images(opt, seed, free, need):
    """Two disjoint sets of ``num`` real images (uint8), drawn by ``seed``, ``num`` (fewer
    where the folder is small) and the number of images in the folder. With the cache, from
    the decoded folder; with --cache=False, only the images drawn are decoded, and nothing is
    written (the same images as with the cache on a folder without broken files; with broken
    ones the draws differ)."""
    files = list_images(opt.data_path)
    say_folders(opt.data_path, files)
    _refuse_short_memory(opt, min(opt.num, len(files) // 2), free, need)
    num, notes = opt.num, []  # the notes once the images are known to be enough
    if opt.cache:
        array, skipped = build_cache(opt.data_path, opt.image_size, files=files)
        if skipped:  # in train's words (it was said with --cache=False only)
            names = ", ".join(shown(Path(p).name) for p in sorted(skipped)[:3])
            notes.append(f"note: skipped {counted(len(skipped), 'unreadable image file')} of "
                         f"{len(files)} (e.g. {names})")
    total = len(array) if opt.cache else len(files)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed)).numpy()
    floor = "(the floor needs two disjoint real sets)"
    few = None  # the note on a folder too small for --num, said once it is known
    if total < 2 * num:
        num = total // 2
        few = f"note: {opt.data_path} has {counted(total, 'image')}; comparing {num} {floor}"
    if not opt.cache:
        from tqdm import tqdm
        rows, picked = decode_in_order(
            files, opt.image_size, order, 2 * num, progress=lambda total: tqdm(
                total=total, desc="decoding the images compared", unit="image",
                dynamic_ncols=True, leave=False))
        if len(rows) < 2 * num:  # every file was tried: the ones not read are all unreadable
            num = len(rows) // 2
            unread = sorted(Path(files[i]).name for i in set(range(total)) - set(picked))
            names = ", ".join(shown(name) for name in unread[:3])
            # in place of the note above, which counted the unreadable files as images
            few = (f"note: only {len(rows)} of the {total} image files in {opt.data_path} "
                   f"could be read (e.g. {names}); comparing {num} {floor}")
        array, order = dict(zip(picked, rows)), np.array(picked, dtype=np.int64)
    if num < 1:
        raise UserError(f"{opt.data_path} has fewer than two readable images: evaluate compares "
                        f"two disjoint real sets, so it needs at least two (ideally 2 x --num)")
    for note in notes + [few] * (few is not None):
        print(note)
    real = torch.from_numpy(np.stack([array[i] for i in np.sort(order[:num])]))
    other = torch.from_numpy(np.stack([array[i] for i in np.sort(order[num:2 * num])]))
    return real, other, num, total


def _refuse_short_memory(opt, num, free, need):
    """Before the images are decoded and the faces drawn: a --num too large for the memory
    left ended in the OOM killer's bare 'Killed' (or a machine swapping to a standstill) after
    minutes of work. ``num``: the faces a side the folder gives at most; ``free``: the bytes
    available (generate._available_memory), None where unknown; ``need``: memory_need's."""
    taken = num * need[0] + need[1]
    if free is None or taken <= free:
        return
    most = most_faces(free, need)
    given = f" (what {opt.data_path}'s images give)" if num < opt.num else ""
    raise generate.short_memory("--num", f"{counted(num, 'face')} a side{given}", taken, free,
                                f"lower --num (to {most} at most)" if most >= 1 else "")


def full_count(full, total, data_path, free, need):
    """The end of the line on the modes: the --num that counts the modes in full, or what
    stops it (the folder's images, each side at most half of them, or the memory)."""
    if full > total // 2:
        return f"a full count needs about {full:,} faces a side, more than {data_path}'s " \
            f"{total:,} images give"
    most = None if free is None else most_faces(free, need)
    if most is not None and full > most:  # a --num refused as it started
        return f"a full count needs about {full:,} faces a side, and this machine's memory " \
            f"holds about {most:,}"
    return f"use --num near {full} for a full count"


def _refuse_other_json(out):
    """An existing --out that evaluate did not write (a run's options.json, say) is kept:
    the figures replaced it."""
    try:
        text = Path(out).read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    if not text.strip():  # an empty file (touch metrics.json, mktemp) holds nothing to keep
        return
    try:
        earlier = json.loads(text)
    except ValueError:
        earlier = None
    figures = ("swd", "modes", "fid", "kid")  # a run's options.json has netg_path too
    if not (isinstance(earlier, dict) and "netg_path" in earlier
            and any(name in earlier for name in figures)):
        out = Path(out)  # the name with the first free number, beside it: options-2.json
        names = (out.with_name(f"{out.stem}-{n}{out.suffix}") for n in itertools.count(2))
        free = next(name for name in names if not name.exists())
        raise UserError(f"--out {str(out)!r} holds something other than evaluate's figures: "
                        f"name another file, e.g. --out={from_here(free)}")


def _toy_columns(path):
    """Whether the CSV at ``path`` has the toy set's columns (its first line)."""
    from toyfaces import ATTRIBUTES
    try:
        with open(path, newline="", encoding="utf-8") as f:
            first = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return [c.strip() for c in first] == ["file", *ATTRIBUTES]


def evaluate(opt):
    out = opt.out or UNSET_MEANS["evaluate", "out"]
    _refuse_other_json(out)
    device = resolve_device(opt.gpu)
    seed = opt.seed if opt.seed is not None else UNSET_MEANS["evaluate", "seed"]
    # each once, in the order asked: "modes,modes" skipped one of the two where it had to
    # skip both, and the report listed each as often as it was typed
    wanted = list(dict.fromkeys(m.strip() for m in opt.metrics.split(",") if m.strip()))
    # a toy set: the toy set's attributes.csv beside faces/, in --data-path or above it
    # (data-toy/faces); a file of that name with other columns is some other set's
    found = [folder / "attributes.csv" for folder in (Path(opt.data_path),
                                                      Path(opt.data_path).parent)
             if (folder / "attributes.csv").is_file()]
    toy = any(_toy_columns(path) for path in found)
    no_modes = "modes" in wanted and not toy
    lacks = f"{found[0]} is not the toy set's (its columns differ)" if found else \
        f"{opt.data_path} has no attributes.csv"
    if no_modes:
        wanted.remove("modes")
        if not wanted:
            raise UserError(f"--metrics=modes counts the toy set's attributes, and {lacks}: "
                            f"point --data-path at a toy set, or ask for swd")
    if "modes" in wanted:  # where its classifier is kept, or one line why not, before any work
        classifier_path()
    inception = extract = None
    if "fid" in wanted or "kid" in wanted:  # found and loaded before any work, or one line why
        inception = inception_path(opt.inception_weights)  # not (a file that is no network
        extract = load_extractor(inception, device)  # was refused after minutes of SWD)
    faces = Faces.load(opt.netg_path, None, device, mean=opt.gen_mean, std=opt.gen_std,
                       batch_size=opt.batch_size)
    free = generate._available_memory()  # before this run's images take their share
    need = memory_need(wanted)
    real, other, num, total = _real_images(opt, seed, free, need)
    # the notes once G and the images are known to be good: none above a refusal of them
    if no_modes:
        print(f"note: modes are counted on the toy set only, and {lacks}: skipping them")
    if opt.inception_weights and not inception:  # passed over in silence: FID was not measured
        print(f"note: --inception-weights is for FID and KID, and --metrics={opt.metrics} "
              f"asks for neither: add fid to --metrics to measure it")
    say_source(faces, opt.netg_path)
    say_widths(opt, faces)
    if inception and num < 2:
        raise UserError(f"FID and KID need at least two images a side, and {opt.data_path} "
                        f"gives {num}: use a larger folder or ask for swd")
    if num < FEW:
        print(f"note: {counted(num, 'face')} a side is a small sample, and the figures below "
              f"move by chance at that size (the README's figures use --num=2048)")
    fake = faces.pixels(range(seed, seed + num))

    # the moving average of G: a last.pth's (Faces.load found it there), or a file train
    # saved it in (netg_ema_N.pth, plain weights that cannot say so themselves)
    averaged = faces.averaged or re.fullmatch(r"netg_ema_\d+\.pth", Path(opt.netg_path).name) \
        is not None
    report = {"netg_path": str(opt.netg_path), "averaged": averaged,
              "data_path": str(opt.data_path), "num": num, "num_asked": opt.num, "seed": seed,
              # what else moves the figures: the noise's spread, and the metrics asked for
              "gen_mean": opt.gen_mean, "gen_std": opt.gen_std, "metrics": wanted}
    if "swd" in wanted:
        report["swd"] = swd(real, fake, seed, progress=lambda levels: _bar(
            levels, "SWD of the generated faces", "level"))
        report["swd_floor"] = swd(real, other, seed, progress=lambda levels: _bar(
            levels, "SWD of the floor's real images", "level"))
    if "modes" in wanted:
        net, accuracy = attribute_classifier(bar=_bar)
        weak = {a: acc for a, acc in accuracy.items() if acc < 0.99}
        if weak:
            raise UserError(f"the toy-attribute classifier is below 99% on "
                            f"{', '.join(f'{a} ({acc:.1%})' for a, acc in weak.items())}: "
                            f"delete {classifier_path()} to retrain it")
        read = predict(net, real, with_confidence=True)  # the real images, read once
        report["modes"] = modes(net, fake, read[0])
        # the floor: the other real sample against the first, as for SWD (the first against
        # itself gave a KL of 0.000 however few the faces, where chance alone gives more)
        report["modes_real"] = modes(net, other, read[0])
        k = report["modes"]["of"]
        report["modes_uniform_expected"] = k * (1 - (1 - 1 / k) ** num)
        report["classifier_accuracy"] = accuracy
    if inception:
        feats = {name: extract(images, progress=lambda chunks, what=what: _bar(
                     chunks, f"Inception features of the {what}", "batch"))
                 for name, what, images in (("fake", "generated faces", fake),
                                            ("real", "real images", real),
                                            ("other", "floor's real images", other))}
        report["inception_weights"] = str(inception)
        if "fid" in wanted:
            report["fid"] = frechet_distance(feats["real"], feats["fake"])
            report["fid_floor"] = frechet_distance(feats["real"], feats["other"])
        if "kid" in wanted:
            report["kid"] = kernel_inception_distance(feats["real"], feats["fake"], seed=seed)
            report["kid_floor"] = kernel_inception_distance(feats["real"], feats["other"],
                                                            seed=seed)
    print(f"{num} generated vs {num} real images ({opt.data_path}):")
    print(f"| metric | {opt.netg_path} | real images (the floor) |")
    print("| --- | --- | --- |")
    if "swd" in report:
        for i, size in enumerate(report["swd"]["sizes"]):
            print(f"| SWD x1e3, {size} px | {report['swd']['levels'][i]:.2f} | "
                  f"{report['swd_floor']['levels'][i]:.2f} |")
        print(f"| SWD x1e3, mean | {report['swd']['mean']:.2f} | "
              f"{report['swd_floor']['mean']:.2f} |")
    if "fid" in report:
        print(f"| FID | {report['fid']:.2f} | {report['fid_floor']:.2f} |")
    if "kid" in report:
        print(f"| KID x1e3 | {1e3 * report['kid']['mean']:.2f} | "
              f"{1e3 * report['kid_floor']['mean']:.2f} |")
    if "modes" in report:
        m, r = report["modes"], report["modes_real"]
        print(f"| attribute modes covered (of {m['of']}) | {m['modes']} | {r['modes']} |")
        print(f"| KL to the real attribute distribution | {m['kl']:.3f} | {r['kl']:.3f} |")
        print(f"| confidently classified faces | {m['confident_share']:.1%} | "
              f"{r['confident_share']:.1%} |")
        print(f"| attribute values shown by confident faces (of {m['values_of']}) | "
              f"{m['values_covered']} | {r['values_covered']} |")
        sure = m["confident_per_attribute"]
        least = min(sure, key=sure.get)
        print(f"| attribute read with certainty least often: {least} | {sure[least]:.1%} | "
              f"{r['confident_per_attribute'][least]:.1%} |")
        worst = max(m["kl_per_attribute"], key=m["kl_per_attribute"].get)
        value = max(m["value_shares"][worst], key=m["value_shares"][worst].get)
        print(f"| attribute furthest from the real mix (KL {m['kl_per_attribute'][worst]:.3f}): "
              f"faces with {worst} {value} | {m['value_shares'][worst][value]:.1%} | "
              f"{r['value_shares'][worst][value]:.1%} |")
        covers, full = round(report["modes_uniform_expected"]), 10 * m["of"]
        more = full_count(full, total, opt.data_path, free, need)
        print(f"(a perfect generator covers about {counted(covers, 'mode')} with "
              f"{counted(num, 'face')}; {more})")
    # the figures shown first: a disk that filled meanwhile lost minutes of measuring with
    # the file, where the table still had them to give
    checkpoint.drop_stale(out)
    checkpoint.save_text(json.dumps(report, indent=2), out)
    print(f"wrote {out}")
    return report


def _bar(iterable, what, unit):
    from tqdm import tqdm
    return tqdm(iterable, desc=what, unit=unit, dynamic_ncols=True, leave=False)
