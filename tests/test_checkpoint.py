"""Saves are atomic; loads are safe and say clearly what is wrong with a file."""
import errno
import io

import pytest
import torch
from PIL import Image

import checkpoint
from errors import UserError
from model import NetD, NetG

from conftest import assert_clean_error, cli, run_cli


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "netg_9.pth"
    good = NetG(100, 8).state_dict()
    checkpoint.save(good, path)

    def crash(obj, f):
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(RuntimeError):
        checkpoint.save(NetG(100, 8).state_dict(), path)
    monkeypatch.undo()
    loaded = torch.load(path, weights_only=True)
    assert all(torch.equal(loaded[k], good[k]) for k in good)
    assert [p.name for p in tmp_path.iterdir()] == ["netg_9.pth"]  # no temporary left


def test_full_disk_is_a_clear_error(tmp_path, monkeypatch):
    def full(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(UserError, match="disk full"):
        checkpoint.save({"x": torch.zeros(1)}, tmp_path / "a.pth")
    assert list(tmp_path.iterdir()) == []


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


def test_truncated_and_foreign_files(tmp_path):
    torch.save(NetG(100, 8).state_dict(), tmp_path / "g.pth")
    data = (tmp_path / "g.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:len(data) // 2])
    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    for name in ("cut.pth", "text.pth", "empty.pth"):
        assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / name}"), name)
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
    result = run_cli("generate", "--nogpu", f"--netg-path={tmp_path / 'g32.pth'}",
                     f"--gen-img={tmp_path / 'r.png'}", "--gen-num=8", "--gen-search-num=8",
                     "--ngf=64")  # the book's default, given: the file's width wins, said so
    assert result.returncode == 0 and "using the file's ngf=32" in result.stdout
    assert (tmp_path / "r.png").is_file()
    assert_clean_error(cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False",
                           f"--netg-path={tmp_path / 'g32.pth'}",
                           f"--checkpoint-dir={tmp_path}"), "ngf=32")


def test_swapped_files_in_train(tmp_path, toy_dir):
    torch.save(NetD(8).state_dict(), tmp_path / "d.pth")
    line = assert_clean_error(cli("train", f"--data-path={toy_dir}", "--nogpu",
                                  f"--netg-path={tmp_path / 'd.pth'}", "--vis=False",
                                  f"--checkpoint-dir={tmp_path}"), "d.pth")
    assert "swap" in line


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
    assert widths == {"nz": 100, "ngf": 8}
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
                       "four dimensions")
    train_small(toy_dir, tmp_path / "run", max_epoch=1)
    good = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    for name, change, why in (("empty", {"netg": {}}, "damaged"),
                              ("text", {"options": "ngf=8"}, "damaged"),
                              ("shapes", {"netg": NetG(100, 16).state_dict()}, "do not fit")):
        torch.save({**good, **change}, tmp_path / f"{name}.pth")
        assert_clean_error(cli("train", "--nogpu", f"--resume={tmp_path / name}.pth",
                               "--max-epoch=2", f"--checkpoint-dir={tmp_path / 'c'}",
                               f"--save-path={tmp_path / 'c'}"), f"{name}.pth", why)
    assert not (tmp_path / "c").exists()  # not even the folder
    assert checkpoint.load_state(tmp_path / "run" / "last.pth")["options"]["ngf"] == 8
