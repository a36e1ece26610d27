"""The command line: ``python main.py COMMAND [--flag=value ...]``.

    python main.py toyfaces                       # a synthetic face set in data-toy/
    python main.py train --gpu                    # the book's command: data/faces/*.jpg
    python main.py generate --netg-path=checkpoints/netg_199.pth --netd-path=checkpoints/netd_199.pth
    python main.py interpolate --netg-path=checkpoints/netg_199.pth --seeds=17,42 --gif=morph.gif
    python main.py explore --netg-path=checkpoints/   # the faces in the browser (make app)

``python main.py COMMAND --help`` lists a command's flags with their defaults. Every flag of
the book's Config works with its book name (``--batch-size`` or ``--batch_size``).
"""
import contextlib
import errno
import os
import re
import signal
import sys
import time
from pathlib import Path

from errors import (PATH_FAULTS, Interrupted, Terminated, UserError, counted, no_package,
                    outlive_reader, pasted, quoted, raise_if_stopped, refusal, sized,
                    stop_on_signals, stop_signals, stop_under_way)


# what an out-of-memory line tells each command to lower
LOWER = {"train": "--batch-size (or --nz, --ngf, --ndf)",
         "generate": "--gen-num (or the seeds, --scale) or --batch-size",
         "evaluate": "--num or --batch-size", "interpolate": "--steps, the seeds or --batch-size"}


def _stopped(stop, command):
    """The line and exit status for a KeyboardInterrupt or Terminated that ends ``command``."""
    what = "terminated" if isinstance(stop, Terminated) else "interrupted"
    if command == "train":  # a second Ctrl-C, or either before training (building the cache)
        run = _training()
        what += (" before training began: nothing was trained" if run is None else
                 f" at once: nothing saved since its last save; continue from it with "
                 f"{run.resume_command()}" if run.saved else
                 " at once: the run had finished no epoch, so none of it was saved")
    elif command == "toyfaces":  # what it drew stays, and is drawn again, not mixed
        what += ": the set is not finished; the same command again draws it whole"
    elif getattr(stop, "kept", None):  # generate --out-dir: the faces written so far
        what += f": {stop.kept}"
    return f"\n{what}", 143 if isinstance(stop, Terminated) else 130


def _training():
    """train's run under way (its Run: what it saved, its resume command), or None before
    training began or in another command."""
    return getattr(sys.modules.get("train"), "training", None)


def _finished():
    """Whether train's run had saved all it saves when a stop came (as the last samples went
    to visdom, or its done line was said): nothing is lost, so it ends as a finished run does,
    its done line said (where it was not yet). It said "nothing saved since its last save;
    continue from it with --resume", which found nothing to do, and exited 143."""
    line = getattr(_training(), "last_line", None)
    if line and is_main_process():
        print(line, flush=True)
    return line is not None


def _going_on(otherwise=""):
    """An error line's end on train's run: the command that continues from its last save, or
    ``otherwise`` where it saved none or had not begun."""
    run = _training()
    return f"; continue from its last save with {run.resume_command()}" \
        if run is not None and run.saved else otherwise


def _ignore_late_stops(but_sigterm=False):
    """The work is over (done, saved, or stopped with its line said): a SIGTERM or hang-up
    while Python shuts down (a second SIGTERM: a scheduler's and a sweep's; the terminal
    closed just then) changes nothing, so the process ends with the status it has said.
    Ignored rather than handled: Python puts the handlers it set back to the default as it
    ends, and the signal would then kill it. For main.py's own process only: the tests call
    main() in theirs, and an ignored signal is inherited by the processes it starts."""
    for sig in stop_signals(ctrl_c=False):  # (a hang-up nohup ignores is ignored already)
        if not (but_sigterm and sig == signal.SIGTERM):  # (_say_once's, under torchrun)
            signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":  # before torch loads (a second or more): a stop then is one line too
    outlive_reader()  # a closed terminal or pipe silences the lines, not the work
    stop_on_signals()  # training saves first (its own handler); elsewhere: clean up and stop

# above this ulimit -v, torch failing to load (it takes some 3.5 GB) is the machine's memory
TORCH_NEEDS = 8 * 10**9
try:
    import fire

    import config
    from distributed import is_main_process
    if __name__ == "__main__":
        raise_if_stopped()  # one that a library swallowed while it loaded
except ModuleNotFoundError as missing:  # a package, not one of ours: this Python lacks it
    top = (missing.name or "").split(".")[0]
    if __name__ != "__main__" or not top or (Path(__file__).parent / f"{top}.py").exists():
        raise
    print(no_package(top, __file__), file=sys.stderr)
    sys.exit(2)
except (ImportError, MemoryError) as e:  # torch's libraries, over a small address-space limit
    import resource  # (ulimit -v): "failed to map segment from shared object", or Python's
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]  # own MemoryError, in a traceback
    if __name__ != "__main__" or limit == resource.RLIM_INFINITY or not (
            isinstance(e, MemoryError) or "map segment" in str(e)):
        raise
    if limit < TORCH_NEEDS:
        print(f"error: this shell lets a program use {sized(limit)} of memory (ulimit -v), too "
              f"little to load torch: raise that limit (torch alone takes some 3.5 GB of it)",
              file=sys.stderr)
    else:  # a limit well above torch's need: the machine's memory ran out, not the limit
        print("error: out of memory on this machine while loading torch: free some memory "
              "(close other programs), then run the command again", file=sys.stderr)
    sys.exit(2)
except (KeyboardInterrupt, Terminated) as stop:
    if __name__ != "__main__":
        raise
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second one: at once, without a traceback
    line, status = _stopped(stop, sys.argv[1] if len(sys.argv) > 1 else None)
    _ignore_late_stops()
    if os.environ.get("RANK", "0") == "0":  # under torchrun every process met the stop
        print(line, file=sys.stderr)
    sys.exit(status)


def train(*args, **flags):
    """Train the DCGAN on a folder of faces, saving checkpoints and sample grids.

    Example: python main.py train --data-path=data-toy --nogpu --max-epoch=20 --save-every=5
    """
    _no_positional("train", args)
    opt = config.parse("train", flags)
    from train import train as run
    run(opt)


def generate(*args, **flags):
    """Draw gen_search_num faces, keep the gen_num that D scores best, save them as a grid.

    Example: python main.py generate --netg-path=checkpoints/netg_199.pth \\
                 --netd-path=checkpoints/netd_199.pth --gen-img=result.png
    """
    _no_positional("generate", args)
    opt = config.parse("generate", flags)
    from generate import generate as run
    run(opt)


def interpolate(*args, **flags):
    """Morph between faces: spherical interpolation between the latents of given seeds.

    Example: python main.py interpolate --netg-path=checkpoints/netg_199.pth \\
                 --seeds=17,42,7 --steps=8 --out=interp.png --gif=interp.gif --scale=2
    """
    _no_positional("interpolate", args)
    opt = config.parse("interpolate", flags)
    from generate import interpolate as run
    run(opt)


def evaluate(*args, **flags):
    """Compare a generator's faces with real images (SWD, modes, FID, KID), each with its floor.

    Example: python main.py evaluate --netg-path=checkpoints/netg_15.pth --data-path=data-toy \\
                 --num=2048 --out=metrics.json
    """
    _no_positional("evaluate", args)
    opt = config.parse("evaluate", flags)
    from evaluate import evaluate as run
    run(opt)


def explore(*args, **flags):
    """Look through a generator's faces in the browser (needs the extra: make app).

    Example: python main.py explore --netg-path=checkpoints/ --netd-path=checkpoints/netd_19.pth
    """
    _no_positional("explore", args)
    opt = config.parse("explore", flags)
    from explore import explore as run
    run(opt)


TOYFACES_FLAGS = {"out_dir": "path", "num": int, "seed": int}


def toyfaces(*args, **flags):
    """Draw a synthetic anime-face set: OUT_DIR/faces/*.jpg and OUT_DIR/attributes.csv.

    Example: python main.py toyfaces --out-dir=data-toy --num=10000 --seed=0

    Options: --out-dir (data-toy), --num (10000), --seed (0)
    """
    _no_positional("toyfaces", args)
    values = {"out_dir": config.TOY_DIR, "num": 10000, "seed": 0}
    values.update(config.coerce_flags(flags, TOYFACES_FLAGS))
    if values["num"] < 1:
        raise UserError(f"--num must be at least 1, not {values['num']}")
    if not 0 <= values["seed"] <= config.MAX_SEED:  # as every other command's --seed
        raise UserError(f"--seed takes a number from 0 to 2**31, not {values['seed']}")
    config.writable(values["out_dir"], "out-dir", folder=True)
    out = Path(values["out_dir"])
    with _drawing_alone(out, values["num"], values["seed"]) as drawn:
        if drawn:  # by the same command in another terminal (make demo and make demo-long)
            print(f"{out} holds the set now: another toyfaces drew it as this one waited; "
                  f"train on them with --data-path={quoted(values['out_dir'])}")
        else:
            _draw_toyfaces(out, values)


@contextlib.contextmanager
def _drawing_alone(out, num, seed):
    """Hold ``out`` (a lock on the folder itself, which the system drops however the process
    ends) while this run checks it and draws its set there; yields whether another run drew
    this very set there as this one waited for it. Two runs with other seeds into one new
    folder at once both drew there and both said they wrote their set: the faces were a mix
    of the two under the attributes.csv of one. Now the same set (make demo and make
    demo-long started together) waits for the other run, and any other set is refused. The
    other run is known by the note its lock leaves (checkpoint.held_folder), written as it
    takes the folder: its UNFINISHED mark came only once it had checked the folder (over 5 s
    on a busy machine: the same set refused), or was a killed run's, of another set."""
    import fcntl

    import checkpoint
    from toyfaces import UNFINISHED, finishing
    waited, patience = [], time.monotonic() + 5

    def busy(folder, holder):
        if holder is None and time.monotonic() < patience:  # it has just taken the folder
            time.sleep(0.05)
            return False
        pid, doing = holder or (None, "")
        # finishing's text: its Python and main.py as named where that run was started
        if " toyfaces --out-dir=" in doing and doing.endswith(f" --num={num} --seed={seed}"):
            print(f"another toyfaces (process {pid}) is drawing this set into {out}: "
                  f"waiting for it to end", flush=True)
            fcntl.flock(folder, fcntl.LOCK_EX)
            waited.append(True)
            return True
        what = f" (process {pid}: `{doing}`)" if holder else ""
        raise UserError(f"--out-dir: another run is writing into {out} now{what}: wait for it "
                        f"to end, or pick another --out-dir")
    with checkpoint.held_folder(out, busy, finishing(out, num, seed).strip()):
        yield bool(waited) and not (out / UNFINISHED).exists() and \
            _rows(out / "attributes.csv") == num


def _rows(csv_path):
    """The faces listed in a toy set's attributes.csv (its lines but the header), or None.
    (The mark read as another run waited may have been a stopped run's, of another set.)"""
    try:
        with open(csv_path, "rb") as f:
            return sum(1 for _ in f) - 1
    except OSError:
        return None


def _draw_toyfaces(out, values):
    """toyfaces' work in ``out``, which this run holds."""
    import shutil
    from toyfaces import drawn_here, finishing, make_toyfaces, room
    # a finished set, or files this one would not overwrite: new faces would mix with the old,
    # out of step with the CSV (what an interrupted run left is simply written again)
    def face_name(name):  # a face of any toyfaces run: 000123.jpg
        stem = name.removesuffix(".jpg")
        return name.endswith(".jpg") and stem.isascii() and stem.isdigit() and len(stem) >= 6

    def ours(name):  # asked of each file there, not of every face (--num may be huge)
        return face_name(name) and f"{int(name[:-4]):06d}" == name[:-4] and \
            int(name[:-4]) < values["num"]
    names = [p.name for p in (out / "faces").iterdir()] if (out / "faces").is_dir() else []
    others = sorted(name for name in names if not ours(name)  # (a face a kill -9 cut short:
                    and not (name.startswith(".") and name.endswith(".tmp")))  # drawn again)
    def refuse_if_not_drawn_here(first):
        # files of the faces' names that this seed does not draw are someone's own images
        # (a set named 000000.jpg, ...), not faces of a stopped run to draw again
        if first and not drawn_here(out / "faces" / first, values["seed"]):
            raise UserError(f"--out-dir: {out / 'faces'} holds images that toyfaces did not "
                            f"draw with --seed={values['seed']} (e.g. {first}), which it "
                            f"would write over: pick a new or empty --out-dir, or delete them "
                            f"first")
    if not (out / "attributes.csv").exists() and others and all(map(face_name, others)):
        # a stopped run of a larger set, or more of the user's own images than --num
        refuse_if_not_drawn_here(min(others, key=lambda name: int(name[:-4])))
        drawn = max(int(name[:-4]) for name in others) + 1
        raise UserError(f"--out-dir: {out} holds a set a stopped toyfaces left unfinished "
                        f"(no attributes.csv yet; faces up to {drawn - 1:06d}.jpg), larger than "
                        f"--num={values['num']}: run it again with the --num it had (at least "
                        f"{drawn}) to finish it, or delete {out / 'faces'} first")
    if (out / "attributes.csv").exists() or others:
        found = (f"{out / 'attributes.csv'}" if (out / "attributes.csv").exists() else
                 f"{counted(len(others), 'other file')} in {out / 'faces'}/ "
                 f"(e.g. {others[0]})")
        raise UserError(f"--out-dir: {out} already holds a face set ({found}): delete it "
                        f"first, or pick another --out-dir")
    # the faces a stopped run drew are drawn again over themselves
    refuse_if_not_drawn_here(min((name for name in names if ours(name)), default=None))
    elsewhere = _an_image_besides(out, out / "faces")
    if elsewhere:  # a folder of real faces: training on it would mix in the toy set
        raise UserError(f"--out-dir: {out} already holds images (e.g. {elsewhere}), and a "
                        f"training on it would mix the toy faces with them: pick a new or "
                        f"empty --out-dir")
    disk = config.nearest_existing(out)
    # a file takes whole blocks of the disk: 5.4 KB faces filled 8 KB each of 4 KB blocks, and
    # a set the check let through filled the disk at three faces in four
    block = max(os.statvfs(disk).f_frsize, 1) if hasattr(os, "statvfs") else 1
    # a stopped run's faces are drawn again over themselves: they hold their room already,
    # where the rerun its line had asked for was refused for the space they take
    drawn = sum(map(ours, names))
    need = room(values["num"], drawn, block, finishing(out, values["num"], values["seed"]))
    free = shutil.disk_usage(disk).free
    if need > free:  # 1e8 faces filled memory with jobs, then the disk
        more = f" more ({drawn} are drawn already)" if drawn else ""
        raise UserError(f"--num={values['num']} faces need about {sized(need, free)}{more}, and "
                        f"the disk of {out} has {sized(free, need)} free: lower --num or pick "
                        f"another --out-dir")  # (in KB below 0.1 MB: "0.0 GB" said nothing)
    from tqdm import tqdm
    try:
        csv_path = make_toyfaces(values["out_dir"], values["num"], values["seed"],
                                 progress=lambda it, total: tqdm(it, total=total, unit="face"))
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):  # (a quota: the same way out)
            raise
        full = f"no space left on the disk of {out}" if e.errno == errno.ENOSPC else \
            f"the disk quota of {out} is used up"
        raise UserError(f"{full} after some of the faces: free some, and the same command "
                        f"again draws the set whole") from None
    print(f"wrote {values['num']} faces to {values['out_dir']}/faces/ and {csv_path}: "
          f"train on them with --data-path={quoted(values['out_dir'])}")
    data = config.FIELDS["data_path"].default  # what train reads, with every subfolder
    if out.resolve().is_relative_to(Path(data).resolve()):  # --out-dir=data/toy, say
        print(f"note: {values['out_dir']} lies inside {data}, the folder train reads when "
              f"--data-path is not given: a training there without --data-path would mix "
              f"these faces with any others in {data} (your own in {data}faces/, say); move "
              f"them out, or always pass --data-path={quoted(values['out_dir'])}")


def _an_image_besides(out, faces):
    """The first image file found under ``out`` outside ``faces`` (the toy set's own
    folder), or None."""
    from data import is_image_name
    for folder, subfolders, names in os.walk(out):
        subfolders[:] = [d for d in subfolders if Path(folder) / d != faces]
        for name in names:
            if is_image_name(name):
                return Path(folder) / name
    return None


COMMANDS = {"train": train, "generate": generate, "interpolate": interpolate,
            "evaluate": evaluate, "explore": explore, "toyfaces": toyfaces}


def _no_positional(command, args):
    if args:
        raise UserError(f"unexpected argument {args[0]!r}: {command} takes options as "
                        f"--name=value (see python main.py {command} --help)")


def _help(command):
    fn = COMMANDS[command]
    if command in config.USED:
        return config.help_text(command, fn.__doc__)
    return fn.__doc__.strip()


def _say_once(line, status=2):
    """To stderr, from rank 0 only: under torchrun every process meets the same error. The
    others end with ``status`` on the SIGTERM torchrun sends once rank 0 ends (it came as
    they said nothing, and was a Terminated traceback, in about one run in a hundred)."""
    if is_main_process():
        print(line, file=sys.stderr)
    elif _torchrun():
        _sigterm_ends_quietly(status)


def _torchrun():
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _sigterm_ends_quietly(status):
    signal.signal(signal.SIGTERM, lambda *_: os._exit(status))


def _let_rank_0_say_it(most=10):
    """Under torchrun a mistake (a misspelt flag, a missing folder) ends every process with 2,
    and rank 0 alone says it. torchrun terminates the others as soon as one ends, so a
    process quicker than rank 0 had it terminated before its line: the only line was
    "terminated before training began" (about one run in three). The others wait instead for
    that SIGTERM, which rank 0's own end brings and which ends them at once (see _say_once);
    at most ``most`` seconds, where rank 0 goes on (the mistake was theirs alone)."""
    time.sleep(most)


def _peer_gone(error):
    """A collective that failed because another torchrun process ended (gloo's "Connection
    closed by peer" or "reset by peer"): rank 0 ended on an error only it meets (a full
    disk, a folder it cannot write), which its own line says, or a process was killed."""
    return _torchrun() and "by peer" in str(error)


def _address_limit():
    """An out-of-memory line's words on a shell's address-space limit (ulimit -v), which may
    be what ran out on a machine with memory to spare; none where there is no limit."""
    import resource
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    return "" if limit == resource.RLIM_INFINITY else \
        f" this shell lets a program use {sized(limit)} (ulimit -v): raise that limit or"


def _out_of_memory(command):
    """An out-of-memory line where the size asked for is not known; returns the exit status."""
    go_on = _going_on() if command == "train" else ""
    print(f"error: out of memory on this machine:{_address_limit()} lower "
          f"{LOWER.get(command, LOWER['train'])}{go_on}", file=sys.stderr)
    return 2


def main(argv):
    if len(argv) > 2 and argv[1] == "help" and not argv[2].startswith("-"):  # help generate
        argv = [argv[0], argv[2], "--help"]  # (help foo: unknown command, below)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        # asked for, the help is the answer; with no command at all it is a usage error (a
        # script that forgot its command must not pass for one that ran)
        out = sys.stdout if len(argv) >= 2 else sys.stderr
        print(__doc__.strip(), file=out)
        print("\nCommands: " + ", ".join(COMMANDS), file=out)
        if len(argv) < 2:
            print("error: name a command, e.g. python main.py train --help", file=sys.stderr)
            return 2
        return 0
    command = argv[1]
    if command not in COMMANDS and command.startswith("-"):
        # an option before the command word, as many tools take them: it was "unknown
        # command '--nogpu'", which did not say that the command goes first
        flag = command.partition("=")[0]
        named = next((a for a in argv[2:] if a in COMMANDS), None)
        if named:
            # a "--" before it goes (main.py -- train was answered with train --, which
            # refuses the "--")
            rest = argv[2:] if command == "--" else argv[1:]
            rest.remove(named)
            print(f"error: {flag} comes before the command: name the command first, then "
                  f"its options: {pasted(' '.join([named, *map(quoted, rest)]))}",
                  file=sys.stderr)
        else:
            print(f"error: {flag} is an option, and options follow a command: name one "
                  f"first, e.g. {pasted('train --help')} (commands: {', '.join(COMMANDS)})",
                  file=sys.stderr)
        return 2
    if command not in COMMANDS:
        import difflib
        # TRAIN, typed with caps lock on, was offered nothing
        close = difflib.get_close_matches(command.lower(), COMMANDS, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        print(f"error: unknown command {command!r}{hint} (commands: {', '.join(COMMANDS)})",
              file=sys.stderr)
        return 2
    if command != "train" and _torchrun():
        _say_once(f"error: {command} runs in one process: start it with python, not torchrun "
                  f"(each process drew the same grid into the same file)")
        return 2
    if "--" in argv[2:]:  # fire's own flags (--interactive, --trace, ...) would follow
        after = argv[argv.index("--", 2) + 1:]
        if any(a in ("-h", "--help") for a in after):  # fire's way to ask: train -- --help
            print(_help(command))
            return 0
        print(f"error: unexpected '--': {command} takes options as --name=value (see python "
              f"main.py {command} --help)", file=sys.stderr)
        return 2
    if any(a in ("-h", "--help") or a.startswith("--help=") for a in argv[2:]):
        print(_help(command))
        return 0
    kinds = TOYFACES_FLAGS if command == "toyfaces" else None
    args = config.no_as_fire_spells_it(argv[2:], kinds)
    try:
        config.refuse_both_ways(args, kinds, typed=argv[2:])
        fire.Fire({command: COMMANDS[command]}, command=[command, *config.keep_text(args)],
                  name="main.py")
    except UserError as e:  # --no-sn named as typed, not as fire was given it (--nosn)
        _say_once(f"error: {config.named_as_typed(str(e), args, argv[2:])}")
        return 2
    except OSError as e:  # the system refused a file: no space, no permission, read-only, ...
        line = refusal(e)
        if line is None:
            raise  # anything else is a bug and keeps its traceback
        _say_once(f"error: {line}")
        return 2
    except RuntimeError as e:  # torch's out-of-memory errors, on the GPU or the CPU
        if _peer_gone(e):  # another process ended (killed, by the OOM killer say)
            if not is_main_process():  # rank 0's line says why (a gloo traceback of ~45
                _sigterm_ends_quietly(1)  # lines said it did not know)
                return 1
            # rank 0's was a gloo traceback too
            go_on = _going_on("; nothing was saved yet: run the same command again")
            print(f"error: another process of this torchrun run ended while it trained "
                  f"(torchrun's report below names it; exit code -9 is a kill, often the "
                  f"out-of-memory killer's){go_on}", file=sys.stderr)
            return 1
        loop = re.fullmatch(r"Symlink loop from '(.*)'", str(e))  # pathlib's resolve()
        if loop:
            _say_once(f"error: cannot use {loop.group(1)}: {PATH_FAULTS[errno.ELOOP]}")
            return 2
        # oneDNN's words for a buffer refused under ulimit -v (train's step, interpolate's GIF)
        if "could not create a primitive" in str(e) and _address_limit():
            return _out_of_memory(command)
        wanted = re.search(r"[Tt]ried to allocate ([\d.]+ ?\w+)", str(e))
        if not ("out of memory" in str(e) or "can't allocate memory" in str(e)) or not wanted:
            raise  # anything else is a bug and keeps its traceback
        size = wanted.group(1)
        if size.endswith("bytes"):  # the CPU allocator counts bytes ("0.0 GiB" said nothing)
            count = float(size.split()[0])
            size = f"{count / 2**30:,.1f} GiB" if count >= 2**30 / 10 else \
                f"{max(count / 2**20, 0.1):,.1f} MiB"
        where = "the GPU" if "CUDA" in str(e) else "this machine"
        rank = os.environ.get("RANK", "0")  # under torchrun it strikes one process, not all
        where += f" (process {rank})" if rank != "0" else ""
        # torch's CPU allocator is refused by an address-space limit (ulimit -v) too
        room = "" if "CUDA" in str(e) else _address_limit()
        print(f"error: out of memory on {where}: {command} asked for {size} more;{room} lower "
              f"{LOWER.get(command, LOWER['train'])}", file=sys.stderr)
        return 2
    except MemoryError:  # Python's own, where an address-space limit (ulimit -v) is met
        # before torch's allocator counts it: a traceback, saying nothing of the limit
        return _out_of_memory(command)
    except Interrupted as e:  # a SIGTERM or hang-up ended with Ctrl-C's line and 130, where
        # every other stop by them says "terminated" and ends with 143 (a scheduler's
        # script reads the status)
        ctrl_c = e.signum in (None, signal.SIGINT)
        _say_once(f"{'interrupted' if ctrl_c else 'terminated'}: {e}", 130 if ctrl_c else 143)
        return 130 if ctrl_c else 143
    except (KeyboardInterrupt, Terminated) as e:  # train: see _stopped; the others: the first
        stop_under_way(signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
        if command == "train" and _finished():
            return 0
        line, status = _stopped(e, command)
        _say_once(line, status)
        return status
    return 0


if __name__ == "__main__":
    for stream in (sys.stdout, sys.stderr):  # a file name in another encoding, printed in a
        if hasattr(stream, "reconfigure"):  # note, was a UnicodeEncodeError traceback
            stream.reconfigure(errors="backslashreplace")
    code = main(sys.argv)
    # under torchrun, a process that leaves the saying to rank 0 waits for torchrun's SIGTERM
    waits = code in (1, 2) and _torchrun() and not is_main_process()
    if waits:
        _sigterm_ends_quietly(code)  # first: it may come at any moment now
    # the work is over and saved: a Ctrl-C while Python shuts down (joining workers, running
    # exit hooks) ends it at once, not with a KeyboardInterrupt traceback from an exit hook
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _ignore_late_stops(but_sigterm=waits)
    if _torchrun():
        # under torchrun: a finished rank 1 died now and then (in two of our CI runs) in the
        # C++ teardown of torch's gloo threads ("terminate called without an active
        # exception", SIGABRT), after its work was saved, and torchrun then failed the whole
        # run. The exit hooks (worker pools, a temporary image cache) run, then the process
        # ends without that teardown.
        import atexit
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a reader gone: nothing more to say to it
                pass
        if waits:
            _let_rank_0_say_it()
        os._exit(code)
    sys.exit(code)
