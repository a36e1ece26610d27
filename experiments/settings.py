"""The article's open question, and the tools beyond it, measured: which settings give the
best faces for a budget.

    .venv/bin/python experiments/settings.py                  # every setting, seeds 0, 1 and 2
    .venv/bin/python experiments/settings.py --only=book,base --seeds=2
    .venv/bin/python experiments/settings.py --time --amp=False     # speed pass, idle machine
    .venv/bin/python experiments/settings.py --minutes=3.5 --amp=False --only=base,snda_r1_b32
    .venv/bin/python experiments/settings.py --report         # table + grids from what is done

Every setting trains the demo's nets (ngf=ndf=32, batch 64 unless the setting says otherwise)
on the toy set, with ``--ema=0.995`` on so that each run gives both the last step's G and its
moving average (the average does not change training). The budget is ``--epochs`` passes over
the data, or with ``--minutes`` the same time for every setting: each trains the whole number
of epochs nearest to what its measured speed fits in (rounded, so up to half an epoch over or
under), so a setting that is slower per image pays for it. Each G is
evaluated with SWD and, on the toy set, attribute modes, KL and the share of clear faces at
``--num``. Runs that are already finished are skipped, so the script can be stopped and
started again, and several copies may run side by side on different ``--only`` lists
(``OMP_NUM_THREADS=1`` each). The thread count changes the speed and, a little, the runs
themselves (sums are added in another order, and a GAN amplifies the difference): compare
runs trained with the same count.
On a GPU: ``--gpu --width=64 --batch-size=256 --data=data/faces`` for the book's size (pick
``--ema`` for that batch size, see the README).

``--time`` trains each setting for one epoch and records images per second: run it alone,
as on two cores any other busy process distorts the figure. The report turns that speed into
minutes for the budget.
"""
import argparse
import functools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOY = str(ROOT / "data-toy")  # the default --data, made if it is missing
sys.path.insert(0, str(ROOT))
from errors import (OneLineParser, Terminated, UserError, counted,  # noqa: E402
                    no_space_at_an_end, outlive_reader, refusal, require, stop_signals)

AUG = "color,translation,cutout"
MODERN = dict(g_every=1, lr1=2e-4, lr2=2e-4, loss="hinge", sn=True, diffaug=AUG, beta1=0.0,
              beta2=0.9)

# name -> (what it is, flags); "base" was the demo's setting, the next ones change one thing
SETTINGS = {
    "book": ("the book: g_every 5, lr 2e-4/2e-4, no smoothing",
             dict(g_every=5, lr1=2e-4, lr2=2e-4, label_smooth=0)),
    "base": ("g_every 1, lr 2e-4/2e-4, smoothing 0.1 (the demo before the modern recipe)",
             dict(g_every=1, lr1=2e-4, lr2=2e-4, label_smooth=0.1)),
    "g2": ("base with g_every 2", dict(g_every=2, lr1=2e-4, lr2=2e-4, label_smooth=0.1)),
    "g5": ("base with g_every 5", dict(g_every=5, lr1=2e-4, lr2=2e-4, label_smooth=0.1)),
    "nosmooth": ("base without smoothing", dict(g_every=1, lr1=2e-4, lr2=2e-4, label_smooth=0)),
    "ttur": ("base with lr G 1e-4, D 4e-4 (D learns faster)",
             dict(g_every=1, lr1=1e-4, lr2=4e-4, label_smooth=0.1)),
    "gfast": ("base with lr G 4e-4, D 2e-4 (G learns faster)",
              dict(g_every=1, lr1=4e-4, lr2=2e-4, label_smooth=0.1)),
    # beyond the article: the tools that rein in a D that wins, and collapse
    "da": ("base with DiffAugment color,translation,cutout",
           dict(g_every=1, lr1=2e-4, lr2=2e-4, label_smooth=0.1, diffaug=AUG)),
    "hinge": ("hinge loss, g_every 1", dict(g_every=1, lr1=2e-4, lr2=2e-4, loss="hinge")),
    "sn": ("hinge + spectral norm in D", dict(g_every=1, lr1=2e-4, lr2=2e-4, loss="hinge",
                                              sn=True)),
    "snda": ("hinge + spectral norm + DiffAugment", dict(MODERN, beta1=0.5, beta2=0.999)),
    "snda_b0": ("snda with Adam betas 0, 0.9", dict(MODERN)),
    "snda_r1": ("snda_b0 with R1 0.1: the modern recipe", dict(MODERN, r1=0.1)),
    "snr1_b32": ("hinge + spectral norm + R1 0.1, Adam 0/0.9, batch 32, no augmentation",
                 dict(MODERN, diffaug="", r1=0.1, batch_size=32)),
    "snr1tc_b32": ("snr1_b32 with DiffAugment translation,cutout (no color)",
                   dict(MODERN, diffaug="translation,cutout", r1=0.1, batch_size=32)),
    "snda_r1_b32": ("snda_r1 at batch 32", dict(MODERN, r1=0.1, batch_size=32)),
    "nobn": ("snda_r1 without BatchNorm in D", dict(MODERN, r1=0.1, d_bn=False)),
    "nobn_b32": ("nobn at batch 32", dict(MODERN, r1=0.1, d_bn=False, batch_size=32)),
    "snda_r1_b16": ("snda_r1 at batch 16", dict(MODERN, r1=0.1, batch_size=16)),
    "snda_r1_b32_lr": ("snda_r1_b32 with lr 4e-4 for both",
                       dict(MODERN, r1=0.1, batch_size=32, lr1=4e-4, lr2=4e-4)),
    "snda_r1_b16_lr": ("snda_r1_b16 with lr 4e-4 for both",
                       dict(MODERN, r1=0.1, batch_size=16, lr1=4e-4, lr2=4e-4)),
    # the demos (README, "Batch 16, at the demo's settings"): --epochs=5, seeds 0, 1, 2
    "demo_b32": ("snda_r1_b32_lr with DiffAugment color,translation (the previous demo)",
                 dict(MODERN, r1=0.1, batch_size=32, lr1=4e-4, lr2=4e-4,
                      diffaug="color,translation")),
    "demo": ("demo_b32 at batch 16 (make demo until it took --sle --d-low=12)",
             dict(MODERN, r1=0.1, batch_size=16, lr1=4e-4, lr2=4e-4,
                  diffaug="color,translation")),
}
# the second sweep around the demo (docs/EXPERIMENTS.md): --epochs=5 --amp=False,
# OMP_NUM_THREADS=1; the width settings fit the demo's minutes with their own epochs (--minutes)
DEMO = SETTINGS["demo"][1]
SETTINGS.update({
    "demo_lr6": ("demo with lr 6e-4 for both", dict(DEMO, lr1=6e-4, lr2=6e-4)),
    "demo_lrd8": ("demo with D's lr 8e-4", dict(DEMO, lr2=8e-4)),
    "demo_beta1": ("demo with Adam beta1 0.5", dict(DEMO, beta1=0.5)),
    "demo_beta2": ("demo with Adam beta2 0.99", dict(DEMO, beta2=0.99)),
    "demo_nor1": ("demo without R1", dict(DEMO, r1=0.0)),
    "demo_ema99": ("demo with a moving average of 0.99", dict(DEMO, ema=0.99)),
    "demo_bce": ("demo with the BCE loss", dict(DEMO, loss="bce")),
    "demo_color": ("demo with DiffAugment color only", dict(DEMO, diffaug="color")),
    "demo_nobn": ("demo without BatchNorm in D", dict(DEMO, d_bn=False)),
    "demo_ndf24": ("demo with ndf=24", dict(DEMO, ndf=24)),
    "demo_ndf16": ("demo with ndf=16", dict(DEMO, ndf=16)),
    "demo_g24d40": ("demo with ngf=24, ndf=40", dict(DEMO, ngf=24, ndf=40)),
    "demo_ndf48": ("demo with ndf=48", dict(DEMO, ndf=48)),
    "demo_devery2": ("demo with D trained every 2nd batch", dict(DEMO, d_every=2)),
    # the third sweep (docs/EXPERIMENTS.md): 5 epochs, demo_gevery2 6
    "demo_nosn": ("demo without spectral norm", dict(DEMO, sn=False)),
    "demo_nz64": ("demo with 64 noise values, not 100", dict(DEMO, nz=64)),
    "demo_lrd2": ("demo with D's lr 2e-4", dict(DEMO, lr2=2e-4)),
    "demo_lrg8": ("demo with G's lr 8e-4", dict(DEMO, lr1=8e-4)),
    "demo_gevery2": ("demo with G trained every 2nd batch", dict(DEMO, g_every=2)),
    # the fourth sweep (docs/EXPERIMENTS.md): 4 epochs
    "demo_ngf40": ("demo with a wider G, ngf=40", dict(DEMO, ngf=40)),
    "demo_ngf48": ("demo with a wider G, ngf=48", dict(DEMO, ngf=48)),
    # the fifth sweep (docs/EXPERIMENTS.md): 5 epochs
    "demo_d48de2": ("demo with ndf=48, D trained every 2nd batch", dict(DEMO, ndf=48, d_every=2)),
    # the seventh sweep (docs/EXPERIMENTS.md): 5 epochs
    "demo_dlow12": ("demo with a second judge of the faces pooled to 12x12", dict(DEMO, d_low=12)),
    # what the backgrounds lack (docs/EXPERIMENTS.md): 5 epochs
    "demo_dlow12_tr": ("demo with the 12x12 judge and DiffAugment translation only (no colour)",
                       dict(DEMO, d_low=12, diffaug="translation")),
    # the same, a cheaper step (docs/EXPERIMENTS.md): 6-7 epochs in the demo's minutes
    "demo_dlow12_tr_de2": ("demo_dlow12_tr with D and the judge trained every 2nd batch",
                           dict(DEMO, d_low=12, diffaug="translation", d_every=2)),
    # skip-layer excitation in G (docs/EXPERIMENTS.md): 5 epochs, and 4 at the demo's minutes
    "demo_sle": ("demo with skip-layer excitation in G (--sle)", dict(DEMO, sle=True)),
    "demo_sle_dlow12": ("demo with --sle and the 12x12 judge (make demo)",
                        dict(DEMO, sle=True, d_low=12)),
})
# the tries around make demo's flags (docs/EXPERIMENTS.md), each a change of them
PAIR = SETTINGS["demo_sle_dlow12"][1]
SETTINGS.update({
    # the pair with make demo-long's settings: 7 epochs, and 16
    "demo_sle_dlow12_tr_de2": ("demo_sle_dlow12 with make demo-long's translation only and "
                               "D every second batch",
                               dict(PAIR, diffaug="translation", d_every=2)),
    # 5 epochs
    "demo_sle_dlow16": ("demo_sle_dlow12 with the judge pooled to 16x16", dict(PAIR, d_low=16)),
    "demo_sle_dlow8": ("demo_sle_dlow12 with the judge pooled to 8x8", dict(PAIR, d_low=8)),
    "demo_sle_dlow12_r1x5": ("demo_sle_dlow12 with R1 five times as strong (0.5)",
                             dict(PAIR, r1=0.5)),
    "demo_sle_dlow12_cut": ("demo_sle_dlow12 with DiffAugment's cutout added",
                            dict(PAIR, diffaug="color,translation,cutout")),
    "demo_sle_dlow12_lrg2": ("demo_sle_dlow12 with G's lr 2e-4 (D's stays 4e-4)",
                             dict(PAIR, lr1=2e-4)),
    "demo_sle3_dlow12": ("demo_sle_dlow12 with a third gate in G, the 4x4 map also gating "
                         "the 32x32 one (--sle-gates=3)", dict(PAIR, sle_gates=3)),
})
GATE3 = SETTINGS["demo_sle3_dlow12"][1]
SETTINGS.update({  # changes of make demo's flags since it took the third gate, 5 epochs
    "demo_sle3_dlow12_lrd8": ("demo_sle3_dlow12 with D's lr 8e-4 (G's stays 4e-4)",
                              dict(GATE3, lr2=8e-4)),
    "demo_sle3_dlow12_beta1": ("demo_sle3_dlow12 with Adam beta1 0.5 for both",
                               dict(GATE3, beta1=0.5)),
    "demo_sle3_dlow12_r1w": ("demo_sle3_dlow12 with R1 a fifth as strong (0.02)",
                             dict(GATE3, r1=0.02)),
})


EPOCHS = 6  # --epochs unset: the article's question's budget, 60,000 images of the toy set


def _flags(d):
    return [f"--{k.replace('_', '-')}={v}" for k, v in d.items()]


def _options(name, args):
    """The train flags of setting ``name``: this script's nets, batch and average, then the
    setting's own (which may change the batch)."""
    options = dict(ngf=args.width, ndf=args.width, batch_size=args.batch_size, ema=args.ema)
    options.update(SETTINGS[name][1])
    if args.amp is not None:
        options["amp"] = args.amp
    return options


def _epochs(name, args):
    """Epochs for the budget: --epochs, or with --minutes the epochs that setting's measured
    speed fits into that many minutes, rounded to the nearest whole epoch (at least one)."""
    if args.minutes is None:
        return args.epochs
    speeds = read_speeds(Path(args.out) / "speed.json")
    return max(1, round(args.minutes * 60 * speeds[name]["images_per_s"]
                        / _image_count(args.data)))


@functools.lru_cache
def _image_count(folder):
    """The images in ``folder``: listed once, not for every setting and seed."""
    from data import list_images
    return len(list_images(folder))


SPEED_FLAGS = ("ngf", "ndf", "batch_size", "amp", "gpu")  # train's options that set the pace


def _speed_flags(name, args):
    """The options of setting ``name`` that its speed depends on, as its run records them."""
    return {**{k: v for k, v in _options(name, args).items() if k in SPEED_FLAGS},
            "amp": args.amp, "gpu": bool(args.gpu)}


def read_speeds(path):
    """The speeds of the settings' speed pass by name, {} before the first: each entry's
    images a second and the options it was measured with (``with``; None in a file of an
    earlier version, which kept the speeds alone). A file cut short or edited by hand is
    refused in one line, not a JSONDecodeError."""
    if not path.is_file():
        return {}
    try:
        speeds = json.loads(path.read_text())
        speeds = {name: entry if isinstance(entry, dict) else
                  {"images_per_s": entry, "with": None} for name, entry in speeds.items()}
        if all(isinstance(e.get("images_per_s"), (int, float)) and e["images_per_s"] > 0
               and isinstance(e.get("with"), (dict, type(None))) for e in speeds.values()):
            return speeds
    except (ValueError, OSError, AttributeError):
        pass
    raise UserError(f"{path} is not a file of the speed pass's speeds (damaged or edited): "
                    f"delete it and measure again with --time")


def _device(args):
    return "--gpu" if args.gpu else "--nogpu"


class CommandFailed(Exception):
    """A command of the sweep ended with an error: its log says which."""


def _stopped_with_this_script():
    """Popen's ``preexec_fn`` on Linux (None elsewhere): the command gets SIGTERM if this
    script dies without passing a stop on (a SIGKILL, the out-of-memory killer), so that
    train saves and stops rather than training on alone in its own session, unseen."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = (ctypes.c_int, ctypes.c_ulong)  # PR_SET_PDEATHSIG's one argument
    parent = os.getpid()

    def preexec():  # in the new process, before main.py starts
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # this script's handler: not here
        # the signal comes when the thread that started the command ends: this script's main
        # thread, the one that handles its stops too (refused, by a sandbox say: no signal)
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the script died before that: nothing to train for
            os._exit(143)
    return preexec


def _cli(*args, log):
    """Run ``main.py *args`` with its output in ``log``. The command runs in a session of its
    own, so Ctrl-C, SIGTERM and a hang-up reach it only through this script, which passes each
    on (a hang-up as SIGTERM) and waits for it to stop: train saves first, and a second Ctrl-C
    stops it at once, as in a terminal. A stop sent to this script alone stops the command
    too, and none reaches it twice; if this script is killed outright, the command gets a
    SIGTERM (on Linux)."""
    child, got, pending = None, [], []

    def send(signum):
        if child.poll() is None:
            child.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    def forward(signum, frame):
        got.append(signum)
        if child is None:  # the command is starting: passed on once it has
            pending.append(signum)
        else:
            send(signum)

    previous = {sig: signal.signal(sig, forward) for sig in stop_signals()}  # nohup: no SIGHUP
    try:
        with open(log, "a") as f:
            before = f.tell()  # where this command's output starts: an earlier one's error
            # line (a run that failed before, in the same log) is not its own
            child = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args], stdout=f,
                                     stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                                     preexec_fn=_stopped_with_this_script())
        for signum in pending:
            send(signum)
        child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if got or child.returncode in (130, 143):
        stop = got[0] if got else (signal.SIGINT if child.returncode == 130 else signal.SIGTERM)
        raise KeyboardInterrupt if stop == signal.SIGINT else Terminated
    status = child.returncode
    if status:
        how = f"was killed by signal {-status}" if status < 0 else f"failed (exit status {status})"
        said = _error_line(log, before)
        raise CommandFailed(f"`main.py {args[0]}` {how}{': ' + said if said else ''}; its "
                            f"output is at the end of {log}")


def _error_line(log, start=0):
    """The last ``error:`` line of ``log`` from byte ``start`` on, without its word (a
    command's own refusal), or None."""
    try:
        with open(log, "rb") as f:
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    return next((line[len("error: "):] for line in reversed(lines)
                 if line.startswith("error: ")), None)


def _difference(trained, name, args, epochs):
    """The first of this script's flags that the options ``trained`` (a run's) differ in,
    as words ("--width=8, not 16"); None where they agree."""
    wanted = {**_options(name, args), "max_epoch": epochs, "data_path": args.data,
              "amp": args.amp}
    key = next((k for k in OURS if trained.get(k) != wanted[k]), None)
    if key is None:
        return None
    if key == "max_epoch" and args.minutes is not None:  # the epochs were not typed
        return (f"{counted(trained.get(key), 'epoch')}, not the {epochs} that "
                f"--minutes={args.minutes:g} gives it")
    return f"{_as_flag(key, trained.get(key))}, not {_as_flag(key, wanted[key], bare=True)}"


def _trained_options(run):
    """The options a run wrote at its start, or None where options.json is missing,
    damaged or edited so that it lacks one of this script's options (read as its flags,
    such a file named the run as made with --width=None)."""
    try:
        trained = json.loads((run / "options.json").read_text())
    except (OSError, ValueError):
        return None
    return trained if isinstance(trained, dict) and all(k in trained for k in OURS) else None


def _as_flag(key, value, bare=False):
    """A recorded option as the flag that gives it: --amp left unset for amp None (no
    --amp=None can be typed); with ``bare``, the value alone."""
    if key == "amp" and value is None:
        return "--amp left unset"
    return f"{value}" if bare else f"{OURS.get(key, '--' + key)}={value}"


# this script's flags for the options they set, the epochs last: a difference in the flags
# typed is named before the epochs that --minutes works out from them
OURS = {"ngf": "--width", "ndf": "--width", "batch_size": "--batch-size", "ema": "--ema",
        "data_path": "--data", "amp": "--amp", "max_epoch": "--epochs"}


def _train(name, seed, epochs, run, args, log, go_on=True):
    """``epochs`` of setting ``name`` with this script's nets and average, into ``run``. A
    training the sweep's Ctrl-C stopped goes on from its last.pth (the same weights as one
    not stopped; it was trained again from the start), and one that finished before its
    evaluation was stopped is done ("nothing to do"); with other flags, or ``go_on=False``
    (a timing, which measures this run's speed), it starts afresh."""
    saved = _trained_options(run)  # (no torch to load for last.pth)
    if go_on and (run / "last.pth").is_file() and saved and \
            _difference(saved, name, args, epochs) is None:
        # its folders named: a sweep's --out moved or copied held a last.pth that named the
        # old ones, and train refused it, asking for flags this script does not have
        _cli("train", f"--resume={run / 'last.pth'}", f"--checkpoint-dir={run}",
             f"--save-path={run}", _device(args), "--vis=False", log=log)
        return
    # --fresh: train would refuse a new run over a stopped one's last.pth
    _cli("train", f"--data-path={args.data}", _device(args), "--vis=False", f"--seed={seed}",
         f"--max-epoch={epochs}", f"--save-every={epochs}", f"--checkpoint-dir={run}",
         f"--save-path={run}", "--fresh", *_flags(_options(name, args)), log=log)


def train_and_evaluate(name, seed, args):
    run = Path(args.out) / f"{name}_seed{seed}"
    epochs = _epochs(name, args)
    last = epochs - 1
    if _evaluated_at(run / "metrics_ema.json") == args.num:
        return  # (at another --num its figures are measured again: SWD moves with it)
    run.mkdir(parents=True, exist_ok=True)
    log = run / "log.txt"
    _train(name, seed, epochs, run, args, log)
    for g, out in ((f"netg_{last}.pth", "metrics.json"), (f"netg_ema_{last}.pth",
                                                          "metrics_ema.json")):
        _cli("evaluate", _device(args), f"--netg-path={run / g}", f"--data-path={args.data}",
             f"--num={args.num}", f"--out={run / out}", log=log)
    print(f"{run}: done", flush=True)


def _evaluated_at(path):
    """The --num a run's metrics file was measured at (before evaluate kept it: the faces it
    compared, the same where the folder holds twice as many), or None without the file."""
    try:
        report = json.loads(path.read_text())
        return report.get("num_asked", report["num"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def time_settings(args):
    """Images per second for each setting, one epoch each, written as each is measured (a
    stop kept none of the ones before it)."""
    Path(args.out).mkdir(parents=True, exist_ok=True)
    speed_file = Path(args.out) / "speed.json"
    names = args.only.split(",")
    global AFTER_STOP  # a rerun measures every setting it names again: --only the rest
    for i, name in enumerate(names):
        run = Path(args.out) / "timing" / name
        # afresh each time: a rerun (on another device, say) read the speed of the last one
        _train(name, 0, 1, run, args, Path(args.out) / "timing.log", go_on=False)
        from curves import read_rows  # torch with it: not loaded for a plain sweep's start
        # the last row: the whole epoch's images per second, start-up excluded
        speed = read_rows(run / "losses.csv")[-1]["images_per_s"]
        speeds = {**read_speeds(speed_file),
                  name: {"images_per_s": speed, "with": _speed_flags(name, args)}}
        from checkpoint import save_text
        save_text(json.dumps(speeds, indent=2), speed_file)
        # as soon as it is saved (a stop between this setting and the next said to rerun all)
        AFTER_STOP = (f"the speeds measured so far are kept in {speed_file}; measure the "
                      f"others with the same command and --only={','.join(names[i + 1:])}"
                      if names[i + 1:] else None)
        print(f"{name}: {speed:.0f} images/s", flush=True)


def _mean_sd(values, unit="", whole=False):
    """The mean and spread of one column's figures; "-" where they are not measured (the
    toy set's modes on another folder); a count of one run (``whole``) as a whole number."""
    if any(math.isnan(v) for v in values):
        return "-"
    if len(values) == 1:
        return f"{values[0]:.0f}{unit}" if whole else f"{values[0]:.1f}{unit}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}{unit}"


def _run_epochs(run):
    return json.loads((run / "options.json").read_text())["max_epoch"]


def _results(run):
    """A finished run's evaluate reports (G's and its average's) and the options it was
    trained with; a file damaged or edited by hand is refused in one line naming it, not a
    JSONDecodeError or KeyError."""
    found = []
    for name in ("metrics.json", "metrics_ema.json", "options.json"):
        try:
            found.append(json.loads((run / name).read_text()))
            if name == "options.json":
                int(found[-1]["max_epoch"]), str(found[-1]["data_path"])
                continue
            found[-1].setdefault("modes", dict.fromkeys(  # not the toy set
                ("modes", "kl", "confident_share", "values_covered"), float("nan")))
            for figure in (found[-1]["swd"], found[-1]["swd_floor"]):
                float(figure["mean"])
            for key in ("kl", "confident_share", "modes"):
                float(found[-1]["modes"][key])
            float(found[-1]["modes"].get("values_covered", float("nan")))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            # a report is measured again from the run's last.pth (its training is kept); the
            # options say what was trained, so without them the run is made again
            fix = (f"delete {run} and run the sweep again to make it again"
                   if name == "options.json" else
                   f"delete {run / 'metrics.json'} and {run / 'metrics_ema.json'} and run the "
                   f"sweep again to measure them again (the training is kept)")
            raise UserError(f"{run / name} is damaged or not this script's: {fix}") from None
    return found


def report(args):
    """The table of the runs done in --out (of the --only settings), each as it was trained:
    the flags of this command take no part in it."""
    out = Path(args.out)
    speed_file = out / "speed.json"
    speeds = read_speeds(speed_file)
    floors = {}  # SWD's floor at each number of faces the runs compared
    print("| setting | seeds | epochs | minutes | SWD x1e3, G | SWD x1e3, average | KL, average "
          "| clear faces, average | attribute values, average | modes, average |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, (what, _) in SETTINGS.items():
        if name not in args.only.split(","):
            continue
        runs = sorted(p for p in out.glob(f"{name}_seed*") if (p / "metrics_ema.json").is_file())
        if not runs:
            continue
        g, e, trained = zip(*map(_results, runs))
        for run, m in zip(runs, g):  # the faces compared: --num, or half a smaller folder
            floors[m.get("num", _evaluated_at(run / "metrics.json"))] = m["swd_floor"]["mean"]
        trained = trained[0]
        epochs = trained["max_epoch"]
        speed = speeds.get(name)  # measured with this run's options (or not said: older)
        minutes = "-" if speed is None or speed["with"] is not None and speed["with"] != {
            k: trained.get(k) for k in speed["with"]} else \
            _minutes(epochs, trained["data_path"], speed["images_per_s"])  # (None: an older
        # file's speed, which kept no flags)
        print(f"| {name}: {what} | {len(runs)} | {epochs} | {minutes} "
              f"| {_mean_sd([m['swd']['mean'] for m in g])} "
              f"| {_mean_sd([m['swd']['mean'] for m in e])} "
              f"| {_mean_sd([m['modes']['kl'] for m in e])} "
              f"| {_mean_sd([100 * m['modes']['confident_share'] for m in e], '%')} "
              f"| {_mean_sd([m['modes'].get('values_covered', math.nan) for m in e], '', True)} "
              f"| {_mean_sd([m['modes']['modes'] for m in e], whole=True)} |")
    for num, floor in sorted(floors.items(), key=lambda item: item[0] or 0):
        print(f"\nSWD floor (real vs real, {num} faces compared): {floor:.1f}")
    grids(args)


def _minutes(epochs, folder, images_per_s):
    """A run's training minutes at its measured speed, "-" where its image folder is gone
    (the table stopped there, asking for a --data-path this script does not have)."""
    try:
        return f"{epochs * _image_count(folder) / images_per_s / 60:.1f}"
    except UserError:
        return "-"


def grids(args, faces=8):
    """One row per setting (seed 0): the same 8 seeds drawn by G, then by its average."""
    import torch
    from PIL import Image, ImageDraw

    import checkpoint
    from generate import Faces, to_pil
    out = Path(args.out)
    rows = [(n, out / f"{n}_seed0") for n in SETTINGS  # the table's: --only's, done
            if n in args.only.split(",") and (out / f"{n}_seed0" / "metrics_ema.json").is_file()]
    if not rows:
        return
    gap = 8
    label = 8 + max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(name))
                    for name, _ in rows)  # the longest name was cut by the faces
    sheet = Image.new("RGB", (label + 2 * faces * 96 + gap, 20 + 96 * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((label, 4), "G (last step)", fill="black")
    draw.text((label + faces * 96 + gap, 4), "G's moving average", fill="black")  # (a
    # setting may have its own decay)
    for i, (name, run) in enumerate(rows):
        y = 20 + 96 * i
        draw.text((4, y + 40), name, fill="black")
        last = _run_epochs(run) - 1
        for j, g in enumerate((f"netg_{last}.pth", f"netg_ema_{last}.pth")):
            drawn = Faces.load(run / g, device=torch.device("cpu")).tensors(range(faces))
            for k, face in enumerate(drawn):
                sheet.paste(to_pil(face), (label + j * (faces * 96 + gap) + 96 * k, y))
    path = out / "grids.jpg"  # written whole or not at all: a full disk keeps the one before
    checkpoint.save_bytes(checkpoint.encoded(sheet, "JPEG", quality=88), path)
    print(f"wrote {path}")


def _parser():
    parser = OneLineParser(description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"passes over the data for each setting (default: {EPOCHS})")
    parser.add_argument("--minutes", type=float, default=None,
                        help="equal time instead of equal images: each setting trains the "
                        "epochs its speed (--time) fits into this many minutes, rounded to "
                        "the nearest (default: unset, --epochs)")
    parser.add_switch("amp", None, "bf16 autocast on or off (False: the fp32 path of AVX2 "
                      "CPUs; default: unset, train's own choice)")
    parser.add_argument("--seeds", default="0,1,2",
                        help="seeds to train each setting with (default: %(default)s)")
    parser.add_argument("--only", default=",".join(SETTINGS), metavar="NAMES",
                        help="settings to train, separated by commas (default: all of them: "
                        f"{', '.join(SETTINGS)})")
    parser.add_argument("--num", type=int, default=1024,
                        help="images generated and real ones compared by evaluate (default: "
                        "%(default)s)")
    parser.add_argument("--data", default=TOY,
                        help="image folder, DIR/faces/*.jpg (default: %(default)s, the toy "
                        "set, made if it is missing)")
    parser.add_switch("gpu", False, "train and evaluate on CUDA (default: the CPU)")
    parser.add_argument("--width", type=int, default=32,
                        help="ngf and ndf (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="batch size, where the setting has none of its own (default: "
                        "%(default)s)")
    parser.add_argument("--ema", type=float, default=0.995,
                        help="moving average of G, evaluated beside the last G (default: "
                        "%(default)s)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "settings"),
                        help="folder for the runs, the speeds and the grids (default: "
                        "%(default)s)")
    parser.add_argument("--time", action="store_true",
                        help="only the speed pass (default: train, evaluate and report)")
    parser.add_argument("--report", action="store_true",
                        help="only the table and the grids (default: train, evaluate and "
                        "report)")
    return parser


def _check(args):
    """Refuse what cannot work before any run starts (a mistake found later cost the runs
    before it), and make the paths absolute: the commands run in the project's folder, while
    the user meant them from the folder they ran this script in."""
    for flag, value in (("--data", args.data), ("--out", args.out)):  # "" was the folder the
        if not value.strip():  # sweep was run in: its runs and grids.jpg went there
            raise UserError(f"{flag}= names no folder: give one, or leave the flag out")
        no_space_at_an_end(value, flag)  # as main.py's path flags
    args.data, args.out = (os.path.abspath(os.path.expanduser(p)) for p in (args.data, args.out))
    typed_epochs = args.epochs is not None
    args.epochs = EPOCHS if args.epochs is None else args.epochs
    # each setting once, in the order named (--only=book,book trained and tabled it twice)
    args.only = ",".join(dict.fromkeys(args.only.split(",")))
    unknown = [name for name in args.only.split(",") if name not in SETTINGS]
    if unknown:
        raise UserError(f"--only: no setting named {', '.join(map(repr, unknown))}; the "
                        f"settings are {', '.join(SETTINGS)}")
    seeds = [s.strip() for s in args.seeds.split(",")]
    if not all(s.isdecimal() for s in seeds):
        raise UserError(f"--seeds takes whole numbers from 0 separated by commas, e.g. 0,1,2, "
                        f"not {args.seeds!r}")
    from config import MAX_SEED  # train's bound: a seed past it was refused by train only
    wrong = next((s for s in seeds if int(s) > MAX_SEED), None)  # after the seeds before it
    if wrong is not None:  # had trained every setting
        raise UserError(f"--seeds takes seeds from 0 to 2**31, not {wrong}")
    for name in ("epochs", "num", "width", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, not "
                            f"{getattr(args, name)}")
    if not 0 < args.ema < 1:  # the sweep evaluates the average beside the last G
        raise UserError(f"--ema is the decay of G's moving average, more than 0 and less than "
                        f"1, e.g. 0.995, not {args.ema}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out: {args.out} is a file, not a folder: name a folder")
    above = next(p for p in Path(args.out).parents if p.exists())
    if not above.is_dir():
        raise UserError(f"--out: {above} is a file, so no folder can be made inside it: name "
                        f"another --out")
    if args.gpu:  # (train refused it only after the run's folder was made)
        import torch
        if not torch.cuda.is_available():
            raise UserError("--gpu asks for CUDA, but no CUDA device is available here: leave "
                            "it out (the CPU is the default)")
    if args.time and args.report:
        raise UserError("--time measures the speeds and --report tables what is done: pass "
                        "one of them")
    speeds = read_speeds(Path(args.out) / "speed.json")  # damaged: refused before any run
    if not Path(args.data).is_dir() and args.data != TOY:
        raise UserError(f"--data: no folder {args.data}: pass the folder of the images "
                        f"(DIR/faces/*.jpg)")
    # with --time or --report too, which do not read it: --time --minutes=nan began the
    # speed pass (nan and inf: a ValueError traceback later, without them)
    if args.minutes is not None and not 0 < args.minutes < math.inf:
        raise UserError(f"--minutes must be a number more than 0, not {args.minutes}")
    if args.minutes is not None and not (args.time or args.report):
        speed_file = Path(args.out) / "speed.json"
        if not speed_file.is_file():
            raise UserError(f"--minutes needs the settings' speeds, and there is no {speed_file}: "
                            f"measure them first with the same command, --time in place of "
                            f"--minutes")
        missing = [name for name in args.only.split(",") if name not in speeds]
        if missing:
            raise UserError(f"--minutes needs each setting's speed, and {speed_file} has none "
                            f"for {', '.join(missing)}: measure it first, the same command "
                            f"with --time in place of --minutes and --only={','.join(missing)}")
        if typed_epochs:  # it was passed over without a word
            raise UserError("--epochs and --minutes were both given: --minutes trains each "
                            "setting the epochs its speed fits into them; pass one of them")
        if Path(args.data).is_dir():  # runs of other flags first: their line names the flag
            _refuse_runs_of_other_flags(args, [int(s) for s in seeds])  # typed, and a new
            # speed pass (as the speed's line below asks) would not have let them be
        for name in args.only.split(","):  # the epochs of another width, batch or precision
            measured, now = speeds[name]["with"], _speed_flags(name, args)
            differ = next((k for k in now if measured and measured.get(k) != now[k]), None)
            if differ:  # (--gpu is the one not among OURS)
                raise UserError(f"--minutes: {speed_file} has the speed of {name} with "
                                f"{_as_flag(differ, measured.get(differ))}, not "
                                f"{now[differ]}: measure it again, the same command with "
                                f"--time in place of --minutes")
    return [int(s) for s in seeds]


def _refuse_runs_of_other_flags(args, seeds):
    """A run already done is kept, not trained again; one made with another --width,
    --batch-size, --epochs, --ema, --data or --amp was kept too, and its figures reported as this
    sweep's, and one stopped halfway with other flags was deleted and trained afresh. Both
    refused before any run, naming the first difference. (--num is not compared: a run
    measured at another --num is measured again, by train_and_evaluate.)"""
    for seed in seeds:
        for name in args.only.split(","):
            run = Path(args.out) / f"{name}_seed{seed}"
            done = (run / "metrics_ema.json").is_file()
            if not (done or (run / "last.pth").is_file()):
                continue  # not begun: it is trained as asked
            trained = _trained_options(run)
            if trained is None and done and (run / "options.json").exists():
                raise UserError(f"{run / 'options.json'} is damaged or not this script's: "
                                f"delete {run} and run the sweep again to make it again")
            if trained is None:
                continue  # a stopped run without its options is trained afresh
            differ = _difference(trained, name, args, _epochs(name, args))
            if differ and done:
                raise UserError(f"{run} was made with {differ}: its figures are not this "
                                f"sweep's; pass another --out for these flags, or delete "
                                f"{run} to make it again")
            if differ:  # it was deleted with a note in its log.txt alone (--fresh)
                raise UserError(f"{run} holds a run stopped halfway, begun with {differ}: "
                                f"these flags would train it again from the start; pass "
                                f"another --out for them, the run's own flags to go on with "
                                f"it, or delete {run}")
    # the finished runs of the other seeds: the table averages every seed in --out (a
    # --seeds=1 --epochs=2 sweep beside a seed 0 of 1 epoch said "2 seeds, 1 epoch")
    for name in args.only.split(","):
        asked = {f"{name}_seed{seed}" for seed in seeds}
        for run in sorted(Path(args.out).glob(f"{name}_seed*")):
            trained = _trained_options(run)
            if run.name in asked or not (run / "metrics_ema.json").is_file() or not trained:
                continue
            differ = _difference(trained, name, args, _epochs(name, args))
            if differ:
                raise UserError(f"{run} was made with {differ}: the table would average its "
                                f"figures with this sweep's; pass another --out for these "
                                f"flags, or delete {run}")


def main():
    args = _parser().parse_args()
    seeds = _check(args)
    only = args.only.split(",")
    if args.report and not any(any(Path(args.out).glob(f"{name}_seed*/metrics_ema.json"))
                               for name in only):
        of = "" if only == list(SETTINGS) else f" of {', '.join(only)}"  # an empty table
        raise UserError(f"--report: nothing{of} is measured in {args.out} yet: run the sweep "
                        f"first (the same command without --report)")
    if args.data == TOY and not (Path(TOY) / "attributes.csv").is_file() and not args.report:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        _cli("toyfaces", f"--out-dir={args.data}", "--num=10000", "--seed=0",
             log=Path(args.out) / "toyfaces.log")
    if not (args.time or args.report):  # (--minutes counts the toy set's images, made above)
        _refuse_runs_of_other_flags(args, seeds)
    if args.time:
        return time_settings(args)
    if not args.report:
        for seed in seeds:
            for name in args.only.split(","):
                train_and_evaluate(name, seed, args)
    report(args)


AFTER_STOP = None  # what to do after a stop, where it is not the same command again


def _terminate(signum, frame):
    raise Terminated


if __name__ == "__main__":
    require(__file__, "torch", "numpy", "PIL")  # its runs' Python is this one
    outlive_reader()  # a closed terminal or pipe silences the sweep's lines, not the sweep
    # between commands too: the one line; a hang-up unless ignored (nohup: the sweep goes on)
    for sig in stop_signals(ctrl_c=False):
        signal.signal(sig, _terminate)
    try:
        main()
    except (KeyboardInterrupt, Terminated) as stop:  # a run stopped halfway goes on from its
        what = "terminated" if isinstance(stop, Terminated) else "interrupted"  # save next time
        print(f"\n{what}: "
              + (AFTER_STOP or "run the same command again to go on with the settings not yet "
                 "done"), file=sys.stderr)
        sys.exit(143 if isinstance(stop, Terminated) else 130)
    except UserError as e:  # a mistake in the flags: nothing was run
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except CommandFailed as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:  # --out a folder it cannot write in, a disk full, ...
        line = refusal(e)
        if line is None:
            raise  # a bug keeps its traceback
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
