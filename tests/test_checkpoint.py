"""Saves are atomic; loads are safe and say clearly what is wrong with a file."""
import errno
import io
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

import checkpoint
import errors
from errors import UserError
from model import NetD, NetG

from conftest import ROOT, assert_clean_error, cli, run_cli, train_args


def test_grids_are_laid_out_as_the_articles_make_grid_lays_them(tmp_path):
    """Our own tiling (torchvision cost generate about 2.5 s to import): the same picture as
    make_grid with its 2-pixel black gaps, for a full row, rows left part empty, one face."""
    import numpy as np
    from torchvision.utils import make_grid
    make = torch.Generator().manual_seed(0)
    for count in (1, 2, 8, 9, 17, 64):
        faces = torch.rand(count, 3, 96, 96, generator=make) * 2 - 1
        checkpoint.save_grid(faces, tmp_path / "grid.png")
        article = make_grid(checkpoint.to_uint8(faces), nrow=8, padding=2)
        saved = torch.from_numpy(np.array(Image.open(tmp_path / "grid.png"))).permute(2, 0, 1)
        assert torch.equal(saved, article), count
    # and the pixels are the article's save_image's, rounded to the nearest level (levels
    # cut down, each face a shade darker, passed: the reference above is ours); they may
    # differ where a value lies a float's rounding from halfway
    pixels = make_grid(faces, nrow=8, padding=2, normalize=True, value_range=(-1, 1))
    pixels = pixels.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    assert (saved.int() - pixels.int()).abs().max() <= 1
    assert (saved != pixels).float().mean() < 1e-4


def test_the_same_weights_make_the_same_file(tmp_path):
    """Resumed and straight runs with equal weights wrote files that differed: torch named
    the records inside after the temporary file's random name. A checksum tells equal
    checkpoints apart from unequal ones now."""
    weights = NetG(100, 8).state_dict()
    checkpoint.save(weights, tmp_path / "netg_1.pth")
    checkpoint.save(weights, tmp_path / "netg_2.pth")
    first = (tmp_path / "netg_1.pth").read_bytes()
    assert first == (tmp_path / "netg_2.pth").read_bytes()
    loaded = torch.load(tmp_path / "netg_1.pth")
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)


def test_a_stop_as_the_temporary_file_is_made_leaves_none_behind(tmp_path, monkeypatch):
    """Ctrl-C between the temporary file's creation and the clean-up that removes it left
    a .face_002_seed2.png.XXXX.tmp beside generate's faces (seen in a CI run). Holding the
    signals back in this thread was not enough (the next CI run): the system handed them to
    another of the process's threads, which still interrupted this one."""
    import signal
    import tempfile
    import threading
    import time
    made = tempfile.mkstemp

    def ctrl_c_just_after(*args, **kwargs):
        fd, name = made(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # at the worst moment: the file is there
        time.sleep(0.2)  # time for whichever thread the system hands it to
        return fd, name
    monkeypatch.setattr(tempfile, "mkstemp", ctrl_c_just_after)
    before = signal.getsignal(signal.SIGINT)
    done = threading.Event()  # another thread, as torch's are
    other = threading.Thread(target=done.wait)
    other.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            checkpoint.save_bytes(b"a face", tmp_path / "face_002_seed2.png")
    finally:
        done.set()
        other.join()
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is before  # put back


def test_a_stop_while_the_stops_are_put_off_leaves_no_handler_of_ours(tmp_path, monkeypatch):
    """A SIGTERM that came after Ctrl-C's handler had been swapped for the one that puts it off,
    before SIGTERM's was, left that handler in place: every later Ctrl-C only noted."""
    import signal
    real, swaps = signal.signal, []

    def stopped_at_the_second(sig, handler):
        swaps.append(sig)
        previous = real(sig, handler)
        if len(swaps) == 2:
            raise KeyboardInterrupt  # as the original handler of the stop that came raises
        return previous
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(signal, "signal", stopped_at_the_second)
    try:
        with pytest.raises(KeyboardInterrupt):
            checkpoint.save_bytes(b"a face", tmp_path / "face.png")
    finally:
        monkeypatch.undo()
        now = {sig: signal.getsignal(sig) for sig in before}
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert now == before  # both as they were
    assert list(tmp_path.iterdir()) == []


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "netg_9.pth"
    good = NetG(100, 8).state_dict()
    checkpoint.save(good, path)

    def crash(obj, f):  # f: the temporary file, open
        f.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(RuntimeError, match="killed mid-write"):  # the crash's own
        checkpoint.save(NetG(100, 8).state_dict(), path)
    monkeypatch.undo()
    loaded = torch.load(path, weights_only=True)
    assert all(torch.equal(loaded[k], good[k]) for k in good)
    assert [p.name for p in tmp_path.iterdir()] == ["netg_9.pth"]  # no temporary left


@pytest.mark.parametrize("stop", [KeyboardInterrupt, errors.Terminated])
def test_a_stop_while_torch_writes_is_the_stop_not_its_error(tmp_path, monkeypatch, stop):
    """A second Ctrl-C in the middle of a save reached torch's writer, which turned it into
    "RuntimeError: ... unexpected pos": a traceback and status 1, where train stops at once
    with its line and 130."""
    path = tmp_path / "last.pth"
    checkpoint.save({"w": torch.ones(3)}, path)

    class Stopping(io.BytesIO):  # the signal's handler raises in the middle of the writing
        writes = 0

        def write(self, b):
            Stopping.writes += 1
            if Stopping.writes == 3:
                raise stop
            return super().write(b)

    monkeypatch.setattr(checkpoint.io, "BytesIO", Stopping)
    with pytest.raises(stop):
        checkpoint.save({"w": torch.zeros(100_000)}, path)
    assert Stopping.writes == 3
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temporary left


def test_full_disk_is_a_clear_error(tmp_path, monkeypatch):
    for fault in (errno.ENOSPC, errno.EDQUOT):  # the disk full, or the user's quota of it
        def full(self, data):
            raise OSError(fault, os.strerror(fault))

        monkeypatch.setattr(checkpoint.Path, "write_bytes", full)
        with pytest.raises(UserError, match="disk full"):
            checkpoint.save({"x": torch.zeros(1)}, tmp_path / "a.pth")
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("what", ["checkpoint", "grid.png", "grid.jpg", "grid.bmp",
                                  "grid.tif"])
def test_a_file_size_limit_keeps_the_file_before_and_names_the_new_one(tmp_path, what):
    """A file size limit (ulimit -f) reached in a save: torch's writer said "unexpected
    pos" (a traceback), and PIL's JPEG, BMP and TIFF encoders took no notice of the short
    write, so a cut-short grid replaced the good one and the command said it wrote it."""
    import subprocess
    import sys
    from conftest import ROOT
    path = tmp_path / ("last.pth" if what == "checkpoint" else what)
    save = ("checkpoint.save({'w': torch.rand(100_000)}, path)" if what == "checkpoint" else
            "checkpoint.save_grid(torch.rand(4, 3, 32, 32) * 2 - 1, path)")
    small = ("checkpoint.save({'w': torch.ones(3)}, path)" if what == "checkpoint" else
             "checkpoint.save_grid(torch.zeros(1, 3, 8, 8), path)")
    program = f"""
import os, resource, signal, sys
sys.path.insert(0, {str(ROOT)!r})
import torch
import checkpoint
path = {str(path)!r}
{small}
room = os.path.getsize(path) + 1_000
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (room, room))
try:
    {save}
except OSError as e:
    print(e.errno, e.filename)
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(errno.EFBIG), str(path)]
    if what == "checkpoint":
        assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    else:
        from PIL import Image
        with Image.open(path) as kept:
            kept.load()  # whole: a cut-short file fails here
            assert kept.size == (8, 8)  # the one-face grid of before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


class Payload:
    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    Payload.marker = marker
    torch.save({"main.0.weight": Payload()}, tmp_path / "evil.pth")
    assert not marker.exists()
    line = assert_clean_error(
        run_cli("generate", "--nogpu", f"--netg-path={tmp_path / 'evil.pth'}"), "evil.pth")
    assert "refused" in line
    assert not marker.exists()


def test_a_whole_net_saved_is_refused_with_the_line_that_saves_its_weights(tmp_path):
    """A book reader who saved the net itself (torch.save(netg, ...)) was told to re-save it
    "as state_dicts", not how; the line's own command now gives a file generate draws from."""
    import shlex
    import shutil
    import subprocess
    import sys
    torch.save(NetG(100, 8), tmp_path / "netg_9.pth")
    line = assert_clean_error(
        run_cli("generate", "--nogpu", f"--netg-path={tmp_path / 'netg_9.pth'}"), "refused")
    command = shlex.split(line.split("where its code imports: ", 1)[1])
    # the command as given, where it was given: it named a bare python, which outside the
    # activated venv is another Python, without torch
    assert command[1] == "-c" and Path(shutil.which(command[0]) or command[0]).absolute() \
        == Path(sys.executable).absolute(), line
    subprocess.run(command, cwd=os.getcwd(), check=True)
    result = run_cli("generate", "--nogpu", f"--netg-path={tmp_path / 'netg_9_weights.pth'}",
                     f"--gen-img={tmp_path / 'r.png'}")
    assert result.returncode == 0, result.stderr
    assert "64 faces" in result.stdout and Image.open(tmp_path / "r.png").width > 8 * 96


def test_truncated_and_foreign_files(tmp_path):
    torch.save(NetG(100, 8).state_dict(), tmp_path / "g.pth")
    data = (tmp_path / "g.pth").read_bytes()
    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    for name in ("text.pth", "empty.pth"):
        assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / name}"), name)
    # cut short anywhere: some lengths made torch's reader seek before the file's start, an
    # OSError (EINVAL) that passed for an I/O error, a traceback
    for keep in (1000, 5000, 20_000, 50_000, len(data) // 2, len(data) - 10):
        (tmp_path / "cut.pth").write_bytes(data[:keep])
        result = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'cut.pth'}")
        line = assert_clean_error(result, "cut.pth")
        assert line.endswith("cut.pth is truncated or not a PyTorch checkpoint: use another "
                             "file (copied again, or an earlier one saved beside it)"), line
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'empty.pth'}"),
                       "is empty (0 bytes)")  # not "truncated": nothing was written at all
    # a link to a file that is not there is named as a link, not as a file that is missing
    (tmp_path / "link.pth").symlink_to(tmp_path / "gone" / "g.pth")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'link.pth'}"),
                       f"is a link to {tmp_path / 'gone' / 'g.pth'}, which does not exist")
    # short texts that torch's unpickler used to fail on with KeyError or IndexError, and
    # files that are plainly something else, which it called code that would run
    (tmp_path / "hello.pth").write_text("hello\n")
    (tmp_path / "abc.pth").write_text("abc")
    (tmp_path / "notes.pth").write_text("# Notes\n\nnot weights at all\n")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    (tmp_path / "picture.pth").write_bytes(buf.getvalue())
    for name in ("hello.pth", "abc.pth", "notes.pth", "picture.pth"):
        for command in ("generate", "interpolate"):
            line = assert_clean_error(cli(command, "--nogpu",
                                          f"--netg-path={tmp_path / name}"), name)
            assert "does not begin like one" in line and "refused" not in line
    # a bare pickle that begins like an old torch file and breaks its unpickler (KeyError)
    (tmp_path / "pickle.pth").write_bytes(b"\x80\x02h\x05.")
    line = assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'pickle.pth'}"),
                              "pickle.pth")
    assert "truncated or not a PyTorch checkpoint" in line
    # random bytes after a pickle's first byte: damaged, not "would run code", and no
    # torch warning about pickle protocols above the line
    (tmp_path / "noise.pth").write_bytes(b"\x80" + bytes(range(67, 250)))
    line = assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'noise.pth'}"),
                              "noise.pth", "not a PyTorch checkpoint")
    assert "refused" not in line
    # good weights in a pickle protocol torch's safe loader cannot read: told how to mend
    torch.save(NetG(100, 8).state_dict(), tmp_path / "p4.pth", pickle_protocol=4)
    line = assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'p4.pth'}"),
                              "p4.pth", "pickle protocol", "re-save")
    assert "refused" not in line


@pytest.mark.slow
def test_widths_are_inferred_for_generate_and_checked_for_train(tmp_path, toy_dir):
    torch.save(NetG(100, 32).state_dict(), tmp_path / "g32.pth")
    result = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'g32.pth'}",
                 f"--gen-img={tmp_path / 'r.png'}", "--gen-num=8", "--gen-search-num=8",
                 "--ngf=64")  # the book's default, given: the file's width wins, said so
    assert result.returncode == 0 and "using the file's ngf=32" in result.stdout
    assert (tmp_path / "r.png").is_file()
    assert_clean_error(cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False",
                           f"--netg-path={tmp_path / 'g32.pth'}",
                           f"--checkpoint-dir={tmp_path}", f"--save-path={tmp_path / 'i'}"),
                       "ngf=32")  # (the default imgs/ can be locked by another run)


def test_a_g_with_skip_layer_excitation_draws_and_train_names_the_flag(tmp_path, toy_dir):
    """--sle's G file holds its gates beside the book's keys: generate builds that G from the
    file alone; a file with part of the gates is named; train from it without --sle, or from
    a book G with it, says which flag to pass."""
    torch.manual_seed(0)
    net = NetG(100, 8, sle=True).eval()
    with torch.no_grad():  # gates far from their start, so a G without them draws otherwise
        for p in net.excite4.parameters():
            p.normal_(0, 1)
    torch.save(net.state_dict(), tmp_path / "sle.pth")
    loaded, found = checkpoint.load_net(tmp_path / "sle.pth", "netg")
    z = torch.randn(4, 100, 1, 1)
    assert found == {"nz": 100, "ngf": 8, "sle": True, "sle_gates": 2}
    assert torch.equal(loaded.eval()(z), net(z))
    plain = NetG(100, 8).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if k.startswith("main.")})
    # the gates draw part of the faces
    assert (plain(z) - net(z)).abs().max() > 0.1 * net(z).abs().max()
    result = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'sle.pth'}",
                 f"--gen-img={tmp_path / 'r.png'}", "--gen-num=8", "--gen-search-num=8")
    assert result.returncode == 0 and (tmp_path / "r.png").is_file()
    part = {k: v for k, v in net.state_dict().items() if k != "excite8.3.weight"}
    torch.save(part, tmp_path / "part.pth")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'part.pth'}"),
                       "part.pth", "lacks 1 key (excite8.3.weight)")
    torch.save(plain.state_dict(), tmp_path / "book.pth")
    for name, flags, needles in (
            ("sle.pth", [], ("sle=True, not nz=100, ngf=8, sle=False", "pass --sle")),
            ("book.pth", ["--sle"], ("sle=False, not nz=100, ngf=8, sle=True",
                                     "pass --sle=False"))):
        assert_clean_error(cli(*train_args(toy_dir, tmp_path / "c", "--ngf=8",
                                           f"--netg-path={tmp_path / name}", *flags)),
                           name, *needles)
    assert not (tmp_path / "c").exists()


def test_the_third_gate_multiplies_the_32x32_maps_gains_and_its_file_names_the_flag(
        tmp_path, toy_dir):
    """--sle-gates=3: each channel of the 32x32 map is multiplied by the 8x8 map's gain and
    by the 4x4 map's third one; the file holds that gate, generate builds it from the file,
    and train from it without the flag (or from a two-gate G with it) says which to pass."""
    torch.manual_seed(0)
    net = NetG(100, 8, sle=True, sle_gates=3).eval()
    with torch.no_grad():  # gains far from their start, so that a missing one shows
        for p in net.excite4b.parameters():
            p.normal_(0, 1)
    z = torch.randn(4, 100, 1, 1)
    with torch.no_grad():  # by hand, layer by layer
        m = net.main
        f4 = m[0:3](z)
        f8 = m[3:6](f4)
        f16 = m[6:9](f8) * net.excite4(f4)
        f32 = m[9:12](f16)
        gain8, gain4 = net.excite8(f8), net.excite4b(f4)
        assert gain4.shape == (4, 8, 1, 1) and 0.05 < gain4.std() and (gain4 < 1).all()
        by_hand = m[12:](f32 * gain8 * gain4)
        assert torch.allclose(net(z), by_hand, atol=1e-6)
        two = NetG(100, 8, sle=True).eval()  # the same weights without the third gate
        two.load_state_dict({k: v for k, v in net.state_dict().items()
                             if not k.startswith("excite4b.")})
        drawn = net(z)
        assert ((two(z) - drawn).abs().max() > 0.1 * drawn.abs().max()).item()
    torch.save(net.state_dict(), tmp_path / "three.pth")
    loaded, found = checkpoint.load_net(tmp_path / "three.pth", "netg")
    assert found == {"nz": 100, "ngf": 8, "sle": True, "sle_gates": 3}
    with torch.no_grad():
        assert torch.equal(loaded.eval()(z), net(z))
    result = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'three.pth'}",
                 f"--gen-img={tmp_path / 'r.png'}", "--gen-num=8", "--gen-search-num=8")
    assert result.returncode == 0 and (tmp_path / "r.png").is_file()
    part = {k: v for k, v in net.state_dict().items() if k != "excite4b.3.weight"}
    torch.save(part, tmp_path / "part.pth")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'part.pth'}"),
                       "part.pth", "lacks 1 key (excite4b.3.weight)")
    torch.save(two.state_dict(), tmp_path / "two.pth")
    for name, flags, needles in (
            ("three.pth", ["--sle"], ("sle_gates=3, not nz=100, ngf=8, sle=True, sle_gates=2",
                                      "pass --sle-gates=3")),
            ("three.pth", [], ("pass --sle --sle-gates=3",)),
            ("two.pth", ["--sle", "--sle-gates=3"], ("pass --sle-gates=2",))):
        assert_clean_error(cli(*train_args(toy_dir, tmp_path / "c", "--ngf=8",
                                           f"--netg-path={tmp_path / name}", *flags)),
                           name, *needles)
    for flags, needle in ((["--sle-gates=3"], "--sle-gates=3 adds a gate to --sle's: pass --sle"),
                          (["--sle", "--sle-gates=4"], "--sle-gates takes 2 or 3, not 4")):
        assert_clean_error(cli(*train_args(toy_dir, tmp_path / "c", *flags)), needle)
    assert not (tmp_path / "c").exists()


def test_swapped_files_in_train(tmp_path, toy_dir):
    torch.save(NetD(8).state_dict(), tmp_path / "d.pth")
    line = assert_clean_error(cli("train", f"--data-path={toy_dir}", "--nogpu",
                                  f"--netg-path={tmp_path / 'd.pth'}", "--vis=False",
                                  f"--checkpoint-dir={tmp_path}",
                                  f"--save-path={tmp_path / 'i'}"), "d.pth")
    assert "holds a netd (discriminator), not a netg" in line and "swap" in line
    torch.save(NetG(100, 8).state_dict(), tmp_path / "g.pth")  # and the other way round
    line = assert_clean_error(cli("train", f"--data-path={toy_dir}", "--nogpu",
                                  f"--netd-path={tmp_path / 'g.pth'}", "--vis=False",
                                  f"--checkpoint-dir={tmp_path}",
                                  f"--save-path={tmp_path / 'i'}"), "g.pth")
    assert "holds a netg (generator), not a netd" in line and "swap" in line


def test_gpu_saved_checkpoint_loads_on_the_cpu(tmp_path):
    """A file whose tensors are tagged cuda:0, as a GPU run writes them."""
    def tag_cuda(obj):
        return "cuda:0" if getattr(obj, "device", None) is not None \
            and obj.device.type == "cpu" else None

    registry = torch.serialization._package_registry
    entry = (0, tag_cuda, lambda obj, location: None)
    registry.insert(0, entry)
    try:
        net = NetG(100, 8)
        torch.save(net.state_dict(), tmp_path / "gpu.pth")
    finally:
        registry.remove(entry)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "gpu.pth", weights_only=True)  # what the book's code hits
    loaded, widths = checkpoint.load_net(tmp_path / "gpu.pth", "netg", "cpu")
    assert widths == {"nz": 100, "ngf": 8, "sle": False, "sle_gates": 2}
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                  net.state_dict().values()))


def test_saved_files_get_the_usual_permissions(tmp_path):
    import os
    mask = os.umask(0o022)
    try:
        checkpoint.save({"x": torch.zeros(1)}, tmp_path / "a.pth")
        (tmp_path / "b.txt").write_text("plain open()")
    finally:
        os.umask(mask)
    mode = (tmp_path / "b.txt").stat().st_mode & 0o777  # what the umask gives any new file
    assert (tmp_path / "a.pth").stat().st_mode & 0o777 == mode


def test_damaged_states_and_weights_are_one_line(tmp_path, toy_dir):
    """Hand-edited or damaged files that pass the header check used to end in an IndexError,
    a load_state_dict RuntimeError or a TypeError."""
    import checkpoint
    from conftest import train_small
    flat = NetG(100, 8).state_dict()
    flat["main.0.weight"] = flat["main.0.weight"].flatten()
    torch.save(flat, tmp_path / "flat.pth")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'flat.pth'}"),
                       f"{tmp_path / 'flat.pth'}: ", "four dimensions", "use a checkpoint")
    train_small(toy_dir, tmp_path / "run", max_epoch=1)
    good = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    d_adam = {**good["optimizer_d"], "state": {  # D's Adam averages, one of them NaN
        k: {**v, "exp_avg": v["exp_avg"] * float("nan") if k == 0 else v["exp_avg"]}
        for k, v in good["optimizer_d"]["state"].items()}}
    for name, change, why in (
            ("empty", {"netg": {}}, "damaged training state (its netg is not what train"),
            ("text", {"options": "ngf=8"}, "damaged training state (its options is not"),
            ("shapes", {"netg": NetG(100, 16).state_dict()}, "do not fit"),
            ("adam", {"optimizer_d": d_adam}, "NaN or infinite")):
        torch.save({**good, **change}, tmp_path / f"{name}.pth")
        assert_clean_error(cli("train", "--nogpu", f"--resume={tmp_path / name}.pth",
                               "--max-epoch=2", f"--checkpoint-dir={tmp_path / 'c'}",
                               f"--save-path={tmp_path / 'c'}"), f"{name}.pth", why)
    assert not (tmp_path / "c").exists()  # not even the folder
    assert checkpoint.load_state(tmp_path / "run" / "last.pth")["options"]["ngf"] == 8
    # every part an exact resume reads, missing, is named before any of it is used (one left
    # out of the check ended the resume in a KeyError traceback)
    for key in ("epoch", "batch", "step", "netg", "netd", "optimizer_g", "optimizer_d",
                "fixed_noise", "meters", "rng", "options"):
        torch.save({k: v for k, v in good.items() if k != key}, tmp_path / "part.pth")
        with pytest.raises(checkpoint.Damaged, match=f"incomplete training state \\(no {key}\\)"):
            checkpoint.load_state(tmp_path / "part.pth")


def test_weights_saved_inside_a_dict_load_and_other_dicts_are_named(tmp_path):
    """{"state_dict": weights, "epoch": 5}, as many training scripts save G, was "holds no
    netg weights", with nothing on what the file held or what to do."""
    from conftest import drawing_nets
    netg = drawing_nets()[0]
    torch.save(netg.state_dict(), tmp_path / "bare.pth")
    torch.save({"state_dict": netg.state_dict(), "epoch": 5}, tmp_path / "wrapped.pth")
    grids = []
    for name in ("bare", "wrapped"):
        r = cli("generate", "--nogpu", f"--netg-path={tmp_path / name}.pth", "--gen-num=8",
                "--seed=3", f"--gen-img={tmp_path / name}.png")
        assert r.returncode == 0, r.stderr
        grids.append((tmp_path / f"{name}.png").read_bytes())
    assert grids[0] == grids[1]  # the same weights: the same faces
    torch.save({"epoch": 5, "note": "no weights"}, tmp_path / "none.pth")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'none.pth'}"),
                       "holds no netg weights (its keys: epoch, note): save "
                       "netg.state_dict() itself, as train does")
    nets = drawing_nets()  # both nets in one file, as DCGAN scripts save them
    torch.save({"G": nets[0].state_dict(), "D": nets[1].state_dict()}, tmp_path / "both.pth")
    r = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'both.pth'}", "--gen-num=8",
            "--seed=3", f"--gen-img={tmp_path / 'both.png'}")  # D's weights are no G's
    assert r.returncode == 0 and (tmp_path / "both.png").read_bytes() == grids[0], r.stderr
    torch.save({"G": netg.state_dict(), "G_ema": netg.state_dict()}, tmp_path / "two.pth")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'two.pth'}"),
                       "holds 2 sets of netg weights (its keys: G, G_ema): save the one to "
                       "use alone")
    torch.save([1, 2], tmp_path / "list.pth")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'list.pth'}"),
                       "holds no netg weights (it holds a list, not a state_dict)")


def _poisoned(state, keys, value=float("nan")):
    """``state`` with the tensors of ``keys`` (all floating-point ones: None) set to
    ``value``."""
    return {k: torch.full_like(v, value) if v.is_floating_point() and (keys is None or k in keys)
            else v for k, v in state.items()}


def test_weights_holding_nan_or_inf_are_refused_wherever_they_load(tmp_path, toy_dir):
    """The book's code saves on through a divergence. Such a G drew an all-black grid and
    exited 0, and training from it stopped at once blaming --lr1/--lr2."""
    from conftest import train_small
    from explore import Explorer
    from generate import Faces
    torch.save(NetG(100, 8).state_dict(), tmp_path / "g.pth")
    torch.save(NetD(8).state_dict(), tmp_path / "d.pth")
    torch.save(_poisoned(NetG(100, 8).state_dict(), None), tmp_path / "nan.pth")
    # only one BatchNorm statistic of D infinite
    torch.save(_poisoned(NetD(8).state_dict(), {"main.6.running_var"}, float("inf")),
               tmp_path / "inf.pth")
    out = tmp_path / "out"
    for args, name in (
            (("generate", f"--netg-path={tmp_path / 'nan.pth'}",
              f"--netd-path={tmp_path / 'd.pth'}", f"--gen-img={out / 'r.png'}"), "nan.pth"),
            (("generate", f"--netg-path={tmp_path / 'g.pth'}",
              f"--netd-path={tmp_path / 'inf.pth'}", f"--gen-img={out / 'r.png'}"), "inf.pth"),
            (("interpolate", f"--netg-path={tmp_path / 'nan.pth'}", f"--out={out / 'i.png'}"),
             "nan.pth"),
            (("evaluate", f"--netg-path={tmp_path / 'nan.pth'}", f"--data-path={toy_dir}",
              "--metrics=swd", f"--out={out / 'e.json'}"), "nan.pth"),
            (("train", f"--data-path={toy_dir}", "--vis=False", f"--checkpoint-dir={out}",
              f"--save-path={out}", f"--netg-path={tmp_path / 'nan.pth'}"), "nan.pth"),
            (("train", f"--data-path={toy_dir}", "--vis=False", f"--checkpoint-dir={out}",
              f"--save-path={out}", "--ndf=8", f"--netd-path={tmp_path / 'inf.pth'}"),
             "inf.pth")):
        line = assert_clean_error(cli(*args, "--nogpu"), name, "NaN or infinite",
                                  "earlier checkpoint")
        assert "diverged" in line and "--lr" not in line
    assert not out.exists()
    for load in (lambda: Faces.load(tmp_path / "nan.pth", device="cpu"),
                 lambda: Faces.load(tmp_path / "g.pth", tmp_path / "inf.pth", device="cpu"),
                 lambda: Explorer(tmp_path / "nan.pth")):
        with pytest.raises(UserError, match="inf.pth|nan.pth"):
            load()
    # a training state (last.pth): resumed, or drawn from (its moving average of G)
    train_small(toy_dir, tmp_path / "run", max_epoch=1)
    good = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    torch.save({**good, "netd": _poisoned(good["netd"], {"main.3.running_mean"})},
               tmp_path / "run" / "nan_d.pth")
    torch.save({**good, "ema": {"decay": 0.999, "updates": 1, "measured": True,
                                "netg": _poisoned(good["netg"], None)}},
               tmp_path / "run" / "nan_ema.pth")
    # one of Adam's averages (a flipped byte): the weights are fine, and the resumed run
    # diverged at once, whatever rates the message then advised
    adam = good["optimizer_g"]
    first = next(iter(adam["state"]))
    torch.save({**good, "optimizer_g": {**adam, "state": {**adam["state"], first: _poisoned(
        adam["state"][first], {"exp_avg"})}}}, tmp_path / "run" / "nan_adam.pth")
    for name in ("nan_d.pth", "nan_ema.pth", "nan_adam.pth"):
        assert_clean_error(cli("train", "--nogpu", f"--resume={tmp_path / 'run' / name}",
                               "--max-epoch=2"), name, "NaN or infinite", "--netg-path")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'run/nan_ema.pth'}",
                           f"--gen-img={out / 'r.png'}"), "nan_ema.pth", "NaN or infinite")
    assert not out.exists()


def test_weights_saved_from_a_wrapped_network_load_as_the_plain_ones(tmp_path):
    """DataParallel and DistributedDataParallel put ``module.`` before every key,
    torch.compile ``_orig_mod.``; such files were "not the book's main.N.* layout"."""
    from conftest import drawing_nets
    netg, netd = drawing_nets()
    torch.save(netg.state_dict(), tmp_path / "g.pth")
    torch.save(netd.state_dict(), tmp_path / "d.pth")
    torch.save(torch.nn.DataParallel(netg).state_dict(), tmp_path / "dp_g.pth")
    torch.save({f"module._orig_mod.{k}": v for k, v in netg.state_dict().items()},
               tmp_path / "ddp_compiled_g.pth")
    torch.save({f"_orig_mod.{k}": v for k, v in netd.state_dict().items()},
               tmp_path / "compiled_d.pth")
    grids = []
    for g, d in (("g", "d"), ("dp_g", "compiled_d"), ("ddp_compiled_g", "d")):
        out = tmp_path / f"{g}.png"
        result = cli("generate", "--nogpu", f"--netg-path={tmp_path / g}.pth",
                     f"--netd-path={tmp_path / d}.pth", f"--gen-img={out}", "--seed=3",
                     "--gen-num=8", "--gen-search-num=16")
        assert result.returncode == 0, result.stderr
        grids.append(out.read_bytes())
    assert grids[1] == grids[0] and grids[2] == grids[0]  # the same faces, the same ranking
    for name, kind, net in (("dp_g.pth", "netg", netg), ("compiled_d.pth", "netd", netd)):
        loaded = checkpoint.load_net(tmp_path / name, kind, expect=None)[0]  # as train does
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                      net.state_dict().values()))
    # a prefix on some keys only is no wrapper's: those keys are named
    torch.save({**netg.state_dict(), "module.main.0.weight": netg.main[0].weight},
               tmp_path / "half.pth")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'half.pth'}"),
                       "half.pth", "module.main.0.weight")


def test_a_missing_or_extra_key_is_named(tmp_path):
    """One key missing was "not the book's main.N.* layout", one key too many "some layers
    have other shapes": both false."""
    good = NetG(100, 8).state_dict()
    cases = (
        ("no_first.pth", {k: v for k, v in good.items() if k != "main.0.weight"},
         ("lacks 1 key (main.0.weight)",)),
        ("no_var.pth", {k: v for k, v in good.items() if k != "main.4.running_var"},
         ("lacks 1 key (main.4.running_var)",)),
        ("no_bn.pth", {k: v for k, v in good.items() if not k.startswith(("main.7", "main.10"))},
         ("lacks 8 keys (main.7.weight, main.7.bias, main.7.running_mean and 5 more)",)),
        ("extra.pth", {**good, "main.13.weight": torch.zeros(3)},
         ("has 1 key the article's netg has not (main.13.weight)", "delete that key")),
        ("both.pth", {**{k: v for k, v in good.items() if k != "main.12.weight"},
                      "main.15.weight": torch.zeros(3)},
         ("lacks 1 key (main.12.weight)", "main.15.weight")))
    for name, state, needles in cases:
        torch.save(state, tmp_path / name)
        line = assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / name}"),
                                  name, *needles)
        assert "layout" not in line and "shapes" not in line
    # a file from this torch without BatchNorm's counters: named too (it said "shapes")
    state = NetG(100, 8).state_dict()
    for key in [k for k in state if k.endswith("num_batches_tracked")]:
        del state[key]
    torch.save(state, tmp_path / "counters.pth")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'counters.pth'}"),
                       "counters.pth", "lacks 4 keys (main.1.num_batches_tracked")
    # ... and the same file from torch before 0.4.1, which had no counters, still loads
    torch.save(dict(state), tmp_path / "old.pth")
    net, _ = checkpoint.load_net(tmp_path / "old.pth", "netg")
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    # D's keys are checked too; a foreign layout and a swapped file keep their lines
    torch.save({**NetD(8).state_dict(), "main.1.weight": torch.zeros(3)}, tmp_path / "d.pth")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'no_var.pth'}",
                           f"--netd-path={tmp_path / 'd.pth'}"), "no_var.pth")
    torch.save(NetG(100, 8).state_dict(), tmp_path / "g.pth")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'g.pth'}",
                           f"--netd-path={tmp_path / 'd.pth'}"), "d.pth",
                       "the article's netd has not (main.1.weight)")
    torch.save({f"gen.{k}": v for k, v in good.items()}, tmp_path / "foreign.pth")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'foreign.pth'}"),
                       "foreign.pth", "not the book's main.N.* layout")


def test_a_file_name_of_249_characters_is_saved(tmp_path):
    """The temporary file of an atomic save, ``.NAME.XXXXXXXX.tmp``, passed the 255 bytes a
    file name may have: File name too long."""
    from train import STALE
    torch.save(NetG(100, 8).state_dict(), tmp_path / "g.pth")
    out = tmp_path / "w" / ("a" * 245 + ".png")
    assert len(out.name) == 249
    result = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'g.pth'}", f"--gen-img={out}",
                 "--gen-num=8", "--gen-search-num=8")
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (8 * 98 + 2, 98 + 2)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left
    # the temporary names keep their suffix, and train's own still match its globs for stale
    # ones; short names stay whole
    for name, glob in (("b" * 245 + ".pth", ".*.pth.*.tmp"), ("é" * 125 + ".png", ".*.png.*.tmp"),
                       ("netg_3.pth", ".net[gd]_*.pth.*.tmp"), ("12.png", ".[0-9]*.png.*.tmp"),
                       ("losses.csv", ".losses.csv.*.tmp")):
        assert glob in STALE or len(os.fsencode(name)) > 200
        seen = {}

        def write(tmp):
            seen["tmp"] = Path(tmp).name
            seen["stale"] = [p.name for p in tmp_path.glob(glob)]  # what train would clean
            Path(tmp).write_bytes(b"x")

        checkpoint._atomic_write(tmp_path / name, write)
        assert seen["stale"] == [seen["tmp"]] and len(os.fsencode(seen["tmp"])) <= 255
        assert (tmp_path / name).read_bytes() == b"x"
        if len(name) < 20:
            assert seen["tmp"].startswith(f".{name}.")


def test_a_link_is_written_through_and_a_pipe_or_a_loop_is_refused(tmp_path):
    """Every file is renamed into place: onto a link, that replaced the link with a file (its
    target kept the old picture); onto a device or named pipe, it replaced them (as root,
    --gen-img=/dev/null turned /dev/null into a PNG). generate refuses before drawing."""
    (tmp_path / "kept").mkdir()
    (tmp_path / "link.png").symlink_to(tmp_path / "kept" / "result.png")
    checkpoint.save_bytes(b"first", tmp_path / "link.png")
    checkpoint.save_bytes(b"second", tmp_path / "link.png")
    assert (tmp_path / "link.png").is_symlink()
    assert (tmp_path / "kept" / "result.png").read_bytes() == b"second"
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "loop1.png").symlink_to(tmp_path / "loop2.png")
    (tmp_path / "loop2.png").symlink_to(tmp_path / "loop1.png")
    # a link into a disk not mounted: writing through made its folders, the file hidden
    (tmp_path / "usb.png").symlink_to(tmp_path / "mnt" / "usb" / "result.png")
    refused = (("pipe.png", "is a named pipe"), ("loop1.png", "loop of symbolic links"),
               ("usb.png", "a disk not mounted"))
    for name, fault in refused:
        with pytest.raises(UserError, match=fault):
            checkpoint.save_bytes(b"x", tmp_path / name)
    assert (tmp_path / "pipe.png").is_fifo() and (tmp_path / "loop1.png").is_symlink()
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    for name, fault in refused:
        r = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'netg.pth'}", "--gen-num=4",
                "--seed=1", f"--gen-img={tmp_path / name}")
        assert_clean_error(r, "--gen-img", fault)
        assert "wrote" not in r.stdout
    r = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'netg.pth'}", "--gen-num=4",
            "--seed=1", f"--gen-img={tmp_path / 'link.png'}")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "kept" / "result.png").size == checkpoint.grid_size(4)
    assert (tmp_path / "link.png").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kept", "link.png", "loop1.png", "loop2.png", "netg.pth", "pipe.png", "usb.png"]
    (tmp_path / "kept" / "result.png").unlink()  # a link to a file not yet made: made there
    checkpoint.save_bytes(b"third", tmp_path / "link.png")
    assert (tmp_path / "kept" / "result.png").read_bytes() == b"third"


def test_a_refused_replace_names_the_file_asked_for_not_the_temporary_one(tmp_path,
                                                                          monkeypatch):
    """A grid that could not be replaced (an immutable file, chattr +i) said "cannot write or
    read .../.imm.png.lc2qwwue.tmp", a name the user never gave, and left nothing of it."""
    from conftest import tiny_nets
    torch.save(tiny_nets(nz=100)[0].state_dict(), tmp_path / "g.pth")
    grid = tmp_path / "imm.png"
    grid.write_bytes(b"kept")

    def refused(src, dst):
        raise PermissionError(errno.EPERM, "Operation not permitted", src, dst)
    monkeypatch.setattr(checkpoint.os, "replace", refused)
    r = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'g.pth'}", f"--gen-img={grid}",
            "--gen-num=8")
    assert_clean_error(r, f"error: cannot write or read {grid}: Operation not permitted")
    assert grid.read_bytes() == b"kept" and sorted(tmp_path.iterdir()) == [tmp_path / "g.pth",
                                                                          grid]


def test_a_folder_refusing_new_files_mid_run_names_the_file_not_a_temporary_one(tmp_path,
                                                                                 monkeypatch):
    """A checkpoint folder made immutable (chattr +i) while train ran ended it with "cannot
    write or read ck/.last.pth.gobgtqi2.tmp: Operation not permitted", a file that never
    was: the temporary file's creation was refused, not the rename."""
    import tempfile
    from conftest import tiny_nets
    torch.save(tiny_nets(nz=100)[0].state_dict(), tmp_path / "g.pth")
    grid = tmp_path / "grid.png"

    def refused(*args, dir=None, prefix="", suffix="", **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted",
                              os.path.join(dir, f"{prefix}gobgtqi2{suffix}"))
    monkeypatch.setattr(tempfile, "mkstemp", refused)
    r = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'g.pth'}", f"--gen-img={grid}",
            "--gen-num=8")
    line = assert_clean_error(r, f"error: cannot write or read {grid}: Operation not permitted")
    assert ".tmp" not in line


def test_a_named_pipe_given_as_a_checkpoint_is_refused_not_waited_on(tmp_path):
    """--resume=PIPE waited for ever for a writer (opened to read its first bytes), and
    --netg-path=PIPE said "no file", though there is one: both say it is a named pipe."""
    os.mkfifo(tmp_path / "last.pth")
    r = run_cli("train", "--nogpu", f"--resume={tmp_path / 'last.pth'}",
                f"--checkpoint-dir={tmp_path / 'ck'}", timeout=60)
    assert_clean_error(r, f"{tmp_path / 'last.pth'} is a named pipe, not a checkpoint file")
    r = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'last.pth'}",
            f"--gen-img={tmp_path / 'g.png'}")
    assert_clean_error(r, f"{tmp_path / 'last.pth'} is a named pipe, not a checkpoint file")


def test_a_missing_checkpoint_says_what_its_folder_holds(tmp_path):
    """`--resume=ck/nothere/last.pth` said "no checkpoint at ..." and no more: a typo in the
    folder and a file of another name looked the same."""
    assert_clean_error(cli("train", "--nogpu", f"--resume={tmp_path / 'nope' / 'last.pth'}"),
                       f"no checkpoint at {tmp_path / 'nope' / 'last.pth'}: there is no "
                       f"folder {tmp_path / 'nope'}")
    (tmp_path / "netg_4.pth").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    assert_clean_error(cli("train", "--nogpu", f"--resume={tmp_path / 'last.pth'}"),
                       f"no checkpoint at {tmp_path / 'last.pth'}; {tmp_path} holds netg_4.pth")


def test_a_resume_through_a_link_that_leads_nowhere_says_so(tmp_path):
    """--resume=ck/last.pth, a link to a disk not mounted, said "no checkpoint at
    ck/last.pth; ck holds last.pth", the very file it could not find."""
    (tmp_path / "last.pth").symlink_to(tmp_path / "usb" / "last.pth")
    (tmp_path / "chain.pth").symlink_to(tmp_path / "last.pth")
    for name, to in (("last.pth", tmp_path / "usb" / "last.pth"),
                     ("chain.pth", tmp_path / "last.pth")):
        line = assert_clean_error(cli("train", "--nogpu", f"--resume={tmp_path / name}"),
                                  f"no checkpoint at {tmp_path / name}: {tmp_path / name} is "
                                  f"a link to {to}, which does not exist")
        assert "holds" not in line


def test_a_file_is_on_the_disk_before_it_takes_its_name(tmp_path, monkeypatch):
    """The written file is flushed to the disk (fsync) before the rename that gives it its
    name: renamed first, a power cut could leave last.pth or netg_N.pth empty under its
    name, the file it replaced gone."""
    import checkpoint
    done = []
    fsync, replace = os.fsync, os.replace

    def synced(fd):
        done.append(("fsync", os.fstat(fd).st_size))
        fsync(fd)

    def renamed(src, dst):
        done.append(("replace", os.path.basename(dst)))
        replace(src, dst)
    monkeypatch.setattr(checkpoint.os, "fsync", synced)
    monkeypatch.setattr(checkpoint.os, "replace", renamed)
    checkpoint.save_bytes(b"weights", tmp_path / "last.pth")
    assert done == [("fsync", 7), ("replace", "last.pth")]
    assert (tmp_path / "last.pth").read_bytes() == b"weights"


def test_a_save_out_of_memory_is_one_line_naming_the_memory(toy_dir, tmp_path, monkeypatch):
    """A checkpoint's in-memory copy that could not grow (an address-space limit, ulimit -v,
    met at an epoch's save): torch's writer said "unexpected pos" in a traceback."""
    from types import SimpleNamespace

    class Tight(io.BytesIO):  # the limit refuses a weight's large block, not the small rest
        def write(self, data):
            if len(memoryview(data).cast("B")) > 100_000:
                raise MemoryError
            return super().write(data)
    monkeypatch.setattr(checkpoint, "io", SimpleNamespace(BytesIO=Tight))
    result = cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False", "--max-epoch=1",
                 "--ngf=8", "--ndf=8", "--batch-size=8", f"--save-path={tmp_path / 'I'}",
                 f"--checkpoint-dir={tmp_path / 'C'}")
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: out of memory on this machine: "), line
    assert "lower --batch-size" in line, line
    assert not (tmp_path / "C" / "last.pth").exists()
