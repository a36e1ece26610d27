"""Shared fixtures: a tiny toy face set on disk and a way to run the real command line."""
import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`'s two workers, one per core: each
    os.environ["OMP_NUM_THREADS"] = "1"  # with torch on one thread (two would take turns)
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))  # scripts/browser.py, for the browser tests

from toyfaces import make_toyfaces  # noqa: E402

# A suite started in the background by a script (`make test &`) or under nohup has
# Ctrl-C, SIGQUIT and hang-ups ignored, and so had every process a test starts: a Ctrl-C
# sent to one was then ignored as such a user's is (visualize.py serve ran on, the test
# timed out). The tests start their processes as a terminal does; those that test an
# ignored signal ignore it themselves.
for _sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        signal.signal(_sig, signal.default_int_handler if _sig == signal.SIGINT else
                      signal.SIG_DFL)

# The slowest file first (pytest --durations): make test's workers each take a whole file
# (--dist loadfile) in the order collected, and the attribute classifier's file, about two
# minutes, started late and then ran on alone after the other worker had finished. (The
# next slowest first too put the heaviest files, each with processes of its own, side by
# side: in the one run measured so, the classifier took a quarter longer.)
SLOW_FIRST = ("test_metrics.py",)


def pytest_collection_modifyitems(items):
    def rank(item):
        return SLOW_FIRST.index(item.path.name) if item.path.name in SLOW_FIRST else \
            len(SLOW_FIRST)
    items.sort(key=rank)  # stable: each file's tests keep their order


@pytest.fixture(autouse=True)
def _signal_handlers_kept():
    """Every test leaves this process's Ctrl-C, SIGTERM and hang-up handlers as it found them:
    an ignored SIGTERM left behind (by main() run in this process) was inherited by the servers
    later tests started, which then outlived their test's terminate(). So with the signals
    blocked: a process started later inherits the block, and a Ctrl-C would never reach it."""
    import signal
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    yield
    for sig, handler in before.items():
        assert signal.getsignal(sig) == handler, f"the test left {sig.name} handled otherwise"
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == blocked, "the test left signals blocked"


@pytest.fixture(autouse=True)
def _stops_of_its_own(monkeypatch):
    """The stops a test's handlers note (errors' lists, which tell a Ctrl-C that C code turned
    into another error) stay that test's: left behind, they made a later test's error read as
    a stop."""
    import errors
    monkeypatch.setattr(errors, "_seen", [])
    monkeypatch.setattr(errors, "_under_way", [])


@pytest.fixture(scope="session", autouse=True)
def _cache_folder_of_its_own(tmp_path_factory):
    """The user's cache folder (~/.cache) stays out of the tests: one that read the attribute
    classifier cached there by an earlier evaluate passed in seconds, and on a machine without
    it trained the classifier for minutes, into the user's folder. The tests, and the
    processes they start, use a folder of their own (test_metrics.py's classifier fixture,
    another)."""
    folder = tmp_path_factory.mktemp("cache")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    return folder


@pytest.fixture(autouse=True)
def _no_classifier_trained_unasked(_cache_folder_of_its_own):
    """The attribute classifier is trained once, by test_metrics.py's fixture (minutes): a test
    whose evaluate trained it again in the tests' cache folder fails, naming the way out."""
    yield
    trained = list(_cache_folder_of_its_own.glob("animegan/attributes-*"))
    assert not trained, (f"the test trained the attribute classifier ({trained[0].name}): use "
                         f"test_metrics.py's classifier fixture, data without attributes.csv, or "
                         f"--metrics without modes")


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    """64 toy faces in the book's layout: DIR/faces/*.jpg."""
    out = tmp_path_factory.mktemp("toy")
    make_toyfaces(out, num=64, seed=0, workers=1)
    return out


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now, for a server a test starts."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port):
    """The local addresses with a socket listening on ``port``, from /proc/net/tcp{,6}: a
    server a test starts must listen on 127.0.0.1 alone."""
    import socket
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    raw = bytes.fromhex(address)
                    if len(raw) == 4:
                        found.append(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                    else:  # IPv6: four little-endian 32-bit words
                        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                        found.append(socket.inet_ntop(socket.AF_INET6, words))
    return found


def read_until(proc, text, seconds=120):
    """``proc``'s stderr (a pipe) read as it comes until ``text`` shows; fails if it closes
    first or ``seconds`` pass, also while the process prints nothing (a read that waited
    for the next character hung the test as long as the process lived). Returns what was
    read. Byte by byte from the pipe itself, so that nothing past ``text`` is taken from a
    later read (a ``\\r`` of a progress bar comes as it is, not turned into a newline)."""
    import select
    import time
    fd, seen = proc.stderr.fileno(), b""
    deadline = time.monotonic() + seconds
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, seen.decode(errors="replace")
        if select.select([fd], [], [], min(left, 1))[0]:
            byte = os.read(fd, 1)
            assert byte, seen.decode(errors="replace")  # closed first
            seen += byte
    return seen.decode(errors="replace")


def group_ends(pgid, seconds=10):
    """Whether every process of group ``pgid`` is gone within ``seconds``: a killed one stays
    a zombie until the system reaps it (a second or so here), which is not a process left
    running."""
    import time
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def stop_in_a_bar(call):
    """``call(Bar)``, Bar making a progress bar (tqdm's arguments: what it wraps, its total)
    whose iteration a Ctrl-C stops before its first item. Returns what happened, in order:
    "closed" when the bar was closed, "left" when the KeyboardInterrupt left ``call``. A bar
    closed only as Python freed it drew itself again under main.py's stop line."""
    events = []

    class Bar:
        def __init__(self, iterable, total):
            pass

        def __iter__(self):
            raise KeyboardInterrupt
            yield  # a generator, as tqdm's

        def close(self):
            events.append("closed")

    with pytest.raises(KeyboardInterrupt):
        try:
            call(Bar)
        finally:
            events.append("left")
    return events


def ctrl_c_to_group(proc, timeout):
    """Ctrl-C as a terminal sends it: to every process of ``proc``'s group (started with
    ``start_new_session=True``). Returns its stderr once it has ended, checking that no other
    process of the group outlived it."""
    import signal
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=timeout)
    assert group_ends(proc.pid), f"a process of its group is still running; stderr: {err}"
    return err


def _stat_fields(stat):
    """The fields of a /proc/PID/stat file after the command's name (state, parent, ...), or
    None once the process has ended."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def children(pid):
    """The pids of ``pid``'s child processes, from /proc."""
    return [int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat")
            if (fields := _stat_fields(stat)) and int(fields[1]) == pid]


def running(pid):
    """Whether ``pid`` runs: neither gone nor a zombie waiting to be reaped."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return fields is not None and fields[0] != "Z"


def stderr_within(proc, seconds, hung):
    """``proc``'s stderr once it has ended, within ``seconds``; else its process group
    (started with ``start_new_session=True``) is killed, so that no run is left behind, and
    the test fails saying ``hung``."""
    import signal
    import subprocess
    try:
        return proc.communicate(timeout=seconds)[1]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(hung)


def kill_group(proc):
    """SIGKILL to whatever is left of ``proc``'s group, after a test, passed or failed."""
    import signal
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def slow_start(name, seconds, pid=False):
    """Python source, one line, that makes each worker started through data's ``name`` (a
    DataLoader's loader_worker_signals, a pool's _pool_worker_signals) wait ``seconds`` first,
    as on a busy machine; with ``pid``, each prints its process id before it waits (to kill
    one left behind). For the script of a process a test starts, with ROOT on sys.path."""
    said = "print(os.getpid(), flush=True), " if pid else ""
    return (f"import os, time, data; start = data.{name}; "
            f"data.{name} = lambda *a: ({said}time.sleep({seconds}), start(*a))")


def tiny_nets(nz=16, width=8):
    """A seeded, DCGAN-initialised NetG/NetD pair of small width, for plumbing tests."""
    import torch
    from model import NetD, NetG, weights_init
    torch.manual_seed(0)
    netg, netd = NetG(nz, width), NetD(width)
    netg.apply(weights_init)
    netd.apply(weights_init)
    return netg, netd


def drawing_nets():
    """A tiny G and D (nz=100, width 8) in eval mode with BatchNorm statistics of their own:
    fresh ones make every face the same grey and every D score 0.5, so no face or ranking
    could be told from another."""
    import torch
    from torch.optim.swa_utils import update_bn
    netg, netd = tiny_nets(nz=100)
    make = torch.Generator().manual_seed(0)
    with torch.no_grad():
        update_bn([torch.randn(256, 100, 1, 1, generator=make)], netg)
        update_bn([netg.eval()(torch.randn(256, 100, 1, 1, generator=make))], netd)
    return netg.eval(), netd.eval()


def train_args(toy_dir, ckpt, *flags):
    """``main.py train``'s arguments as a user gives them for the toy faces: the CPU, no
    visdom, seed 1, weights and grids in ``ckpt``; ``flags`` added."""
    return ["train", f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--seed=1",
            f"--checkpoint-dir={ckpt}", f"--save-path={ckpt}", *flags]


def r1_weights(monkeypatch):
    """The weight of R1's penalty at each step of D (0 where it is not due), recorded as
    train calls d_step."""
    import train
    weights = []
    real_d = train.d_step

    def recorded(*a, **k):
        weights.append(a[8])  # d_step's r1: the weight of this step's penalty
        return real_d(*a, **k)
    monkeypatch.setattr(train, "d_step", recorded)
    return weights


def train_small(toy_dir, ckpt, **flags):
    """``train`` in this process on the toy faces: tiny nets (width 8), batch 16, seed 0,
    on the CPU unless ``gpu=True``; ``flags`` override."""
    from config import parse
    from train import train
    base = dict(data_path=str(toy_dir), gpu=False, vis=False, batch_size=16, ngf=8, ndf=8,
                seed=0, save_path=str(ckpt / "imgs"), checkpoint_dir=str(ckpt))
    base.update(flags)
    train(parse("train", base))


def stopped_run(toy_dir, ckpt, of):
    """A run in ``ckpt`` that stopped after the first of ``of`` epochs: train_small for one
    epoch, its state then saying ``of`` were planned."""
    import torch
    train_small(toy_dir, ckpt, max_epoch=1)
    state = torch.load(ckpt / "last.pth", weights_only=True)
    state["options"]["max_epoch"] = of
    torch.save(state, ckpt / "last.pth")


def same_weights(a, b):
    """Whether two saved state dicts hold the very same tensors."""
    import torch
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def run_cli(*args, cwd=None, timeout=600):
    """Run ``python main.py ARGS`` as a user would; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd or ROOT, env=env,
                          timeout=timeout)


def cli(*args):
    """``main.py ARGS`` in this process (no second Python, torch and torch's compiler to
    start: about 4 s less per call on our 2-core CPU): the same exit status, stdout and
    stderr as run_cli, trainings included, for every check of what a command wrote or said.
    run_cli is for what a process of its own does (signals, its terminal, the encoding of its
    output, a timeout). An exception that main lets through fails the test, as a traceback
    would."""
    import contextlib
    import io
    import main
    out, err = io.StringIO(), io.StringIO()
    argv = ["main.py", *map(str, args)]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main.main(argv)
        except SystemExit as e:  # what fire raises for its own usage errors
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def draw_grid(netg_path, netd_path, out, gen_num, gen_search_num):
    """``generate`` from these files as a user runs it; asserts it wrote its grid to ``out``."""
    result = cli("generate", "--nogpu", f"--netg-path={netg_path}",
                 f"--netd-path={netd_path}", f"--gen-img={out}", f"--gen-num={gen_num}",
                 f"--gen-search-num={gen_search_num}")
    assert result.returncode == 0, result.stderr
    assert Path(out).is_file()
    return result


def assert_clean_error(result, *needles):
    """A user error: non-zero exit, one error line naming the culprit, no traceback.

    Progress bars drawn before the error was found may stand above it on stderr.
    """
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    bar = re.compile(r"^(decoding images once|epoch \d+/\d+):")
    lines = [line for line in result.stderr.splitlines() if line.strip() and not bar.match(line)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@contextlib.contextmanager
def within(seconds, what):
    """Fail with a TimeoutError when the block runs longer than ``seconds`` (SIGALRM): for
    work that, broken, would run until memory ran out rather than fail."""
    def too_slow(*_):
        raise TimeoutError(f"{what} took over {seconds} s")
    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
