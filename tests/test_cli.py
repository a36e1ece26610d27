"""What a user sees when something is wrong: one line, a non-zero exit, no traceback."""
import os
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from generate import grid_size
from model import NetD, NetG

from conftest import ROOT, assert_clean_error, cli, read_until, slow_start


def test_misspelt_flag_names_it_and_suggests(toy_dir):
    line = assert_clean_error(cli("train", f"--data-path={toy_dir}", "--bach-size=3"),
                              "--bach-size")
    assert "did you mean --batch-size" in line


WITHOUT_FIRE = """import os, runpy, sys
class Missing:  # this Python as if it had no fire
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "fire":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_python_without_the_packages_is_told_to_use_the_venv(tmp_path):
    """The article's `python main.py train --gpu`, typed with a Python other than the venv's,
    was a ModuleNotFoundError traceback."""
    import subprocess
    import sys
    base = Path(sys.base_prefix) / "bin" / "python3"  # the Python the venv was made from
    for python in (base, Path(sys.executable)):
        result = subprocess.run([str(python), "-c", WITHOUT_FIRE, "main.py",
                                 "train", "--gpu"], cwd=ROOT, capture_output=True, text=True)
        line = assert_clean_error(result, "has no fire")
        if python == base:
            assert line.endswith("which main.py needs; run it with the project's venv: "
                                 "`.venv/bin/python main.py ...` (or `source .venv/bin/activate`"
                                 " once, then `python main.py ...` as in the article)"), line
        elif Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():  # make test's venv
            assert "install its packages again with `rm -f " in line and \
                ".installed-stamp && make venv` in " in line, line  # as make installs them


WITHOUT_PACKAGES = """import os, runpy, sys
# this Python as if it had no packages installed at all
sys.path[:] = [p for p in sys.path if not p.endswith(("site-packages", "dist-packages"))]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("script,args,package", [
    ("visualize.py", ["serve"], "numpy"), ("bench.py", [], "torch"),
    ("experiments/settings.py", ["--epochs=1"], "torch"),
    ("experiments/grid.py", ["result.png"], "torch")])
def test_the_scripts_beside_main_py_tell_a_python_without_packages_to_use_the_venv(
        script, args, package):
    """The README's `python bench.py ...` and `make visdom`'s `visualize.py serve`, typed with
    a Python other than the venv's, were a ModuleNotFoundError traceback where main.py
    said in one line which Python to use."""
    import subprocess
    import sys
    base = Path(sys.base_prefix) / "bin" / "python3"
    for python in (base, Path(sys.executable)):
        result = subprocess.run([str(python), "-c", WITHOUT_PACKAGES, script, *args],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        line = assert_clean_error(result, f"has no {package}")
        if python == base:
            assert line.endswith(f"which {Path(script).name} needs; run it with the project's "
                                 f"venv: `.venv/bin/python {script} ...` (or `source "
                                 f".venv/bin/activate` once, then `python {script} ...`)"), line
        elif Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():  # make test's venv
            assert "install its packages again with `rm -f " in line and \
                ".installed-stamp && make venv` in " in line, line  # as make installs them


def test_the_lines_count_and_list_as_a_sentence_does():
    """Every count in a line goes through counted, and every list through listed: "0 image
    file", "1 batches" or "a, and b" would stand in many messages at once."""
    from errors import counted, listed
    assert [counted(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert [counted(n, "batch", "batches") for n in (1, 3)] == ["1 batch", "3 batches"]
    assert [listed(words) for words in ([], ["a"], ["a", "b"], ["a", "b", "c"])] == [
        "", "a", "a and b", "a, b and c"]


def test_unknown_command_suggests():
    line = assert_clean_error(cli("genrate"), "genrate")
    assert "generate" in line
    # toyfaces too, which takes none of the book's flags
    assert_clean_error(cli("toyface"), "unknown command 'toyface'", "did you mean toyfaces?")


def test_an_option_before_the_command_says_the_command_goes_first(tmp_path):
    """python main.py --nogpu train, as many tools take options, was "unknown command
    '--nogpu'", which did not say what to do; TRAIN (caps lock) was offered no command."""
    line = assert_clean_error(cli("--nogpu", "train", "--data-path=my data"),
                              "--nogpu comes before the command")
    assert line.endswith("main.py train --nogpu '--data-path=my data'`"), line
    assert_clean_error(cli("--data-path=x", "generate"), "--data-path comes before the command",
                       "generate --data-path=x`")
    assert_clean_error(cli("--nogpu"), "--nogpu is an option", "name one first",
                       "train --help`")
    assert_clean_error(cli("TRAIN"), "unknown command 'TRAIN'", "did you mean train?")
    assert not list(tmp_path.iterdir())


def test_a_double_dash_before_the_command_is_left_out_of_the_line_to_paste():
    """main.py -- train --max-epoch=1 (a wrapper's habit) was given the line to paste
    "train -- --max-epoch=1", which main.py then refused for its "--"."""
    line = assert_clean_error(cli("--", "train", "--max-epoch=1"),
                              "-- comes before the command")
    assert line.endswith("main.py train --max-epoch=1`"), line


def test_missing_data_folder(tmp_path):
    assert_clean_error(cli("train", f"--data-path={tmp_path / 'nope'}", "--nogpu"), "nope")


def test_empty_data_folder(tmp_path):
    (tmp_path / "data" / "faces").mkdir(parents=True)
    (tmp_path / "data" / "faces" / "notes.txt").write_text("no images here")
    assert_clean_error(cli("train", f"--data-path={tmp_path / 'data'}", "--nogpu", "--vis=False",
                           *_own_outputs(tmp_path)), "no images")


def _own_outputs(tmp_path):
    """--checkpoint-dir and --save-path in ``tmp_path``: train locks its folders before it
    looks at the data, and the defaults (the checkout's checkpoints/ and imgs/) were locked
    by another worker's test or the user's own run, which made the refusal read "another
    training run is using checkpoints"."""
    return f"--checkpoint-dir={tmp_path / 'c'}", f"--save-path={tmp_path / 'i'}"


def test_no_images_points_to_the_toy_set_where_toyfaces_puts_it(tmp_path, monkeypatch):
    """With the toy set moved out of data/, "no images in data: ... `python main.py
    toyfaces`" sent a user round in a circle: toyfaces drew into data-toy/, and the book's
    default --data-path=data/ found nothing again. The line now names the folder to pass."""
    import subprocess
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    for command in (("train", "--vis=False"), ("evaluate", "--netg-path=netg.pth")):
        line = assert_clean_error(cli(*command, "--nogpu"), "no images in data")
        # a command that runs as pasted here (.venv/bin/python where the venv is not
        # activated): plain `python` ran another Python, without fire
        command = re.search(r"or `([^`]+main\.py toyfaces)` draws a toy set into "
                            r"data-toy/, then pass --data-path=data-toy", line)[1]
        pasted = subprocess.run(["bash", "-c", f"{command} --help"], capture_output=True,
                                text=True)
        assert pasted.returncode == 0 and "--out-dir" in pasted.stdout, pasted.stderr
    r = cli("toyfaces", "--num=4")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("train on them with --data-path=data-toy")
    assert len(list((tmp_path / "data-toy" / "faces").glob("*.jpg"))) == 4
    line = assert_clean_error(cli("train", "--nogpu", "--vis=False"), "no images in data")
    assert line.endswith("or --data-path=data-toy trains on the toy set there")
    (tmp_path / "data").rmdir()
    line = assert_clean_error(cli("train", "--nogpu", "--vis=False"), "'data/' does not exist")
    assert line.endswith("--data-path (--data-path=data-toy trains on the toy set there)")
    # a --data-path given that is not there: "or pass --data-path" told the user to do what
    # they had done
    line = assert_clean_error(cli("train", "--nogpu", "--vis=False", "--data-path=dta"),
                              "'dta' does not exist")
    assert ": check the path, or make it and put the images in dta/faces/ (" in line, line
    assert "pass --data-path" not in line, line


def test_no_images_in_the_project_folder_points_to_make_demo(tmp_path, monkeypatch):
    """The toy set with the book's settings trains for hours on a CPU: where make demo is
    at hand (the project's folder), the line names it too."""
    monkeypatch.chdir(ROOT)
    (tmp_path / "data").mkdir()
    line = assert_clean_error(cli("train", "--nogpu", "--vis=False",
                                  f"--data-path={tmp_path / 'data'}", *_own_outputs(tmp_path)),
                              f"no images in {tmp_path / 'data'}")
    assert line.endswith("toy set there; `make demo` trains a short run on it, at most 10 "
                         "minutes on a CPU") or line.endswith(
        "then pass --data-path=data-toy; `make demo` trains a short run on it, at most 10 "
        "minutes on a CPU"), line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_gpu_without_cuda(toy_dir, tmp_path):
    assert_clean_error(cli("train", f"--data-path={toy_dir}", "--gpu"), "--gpu", "--nogpu")
    # the article's generate, before any training: the machine's line came only after the
    # user had fixed the paths, a second try for one thing to change
    assert_clean_error(cli("generate", "--gpu", "--vis", "False",
                           "--netd-path", str(tmp_path / "netd_199.pth"),
                           "--netg-path", str(tmp_path / "netg_199.pth")),
                       "--gpu asks for CUDA", "--nogpu")


@pytest.mark.parametrize("flag,culprit", [("--batch-size=0", "--batch-size"),
                                          ("--d-every=0", "--d-every"),
                                          ("--g-every=-1", "--g-every"),
                                          ("--image-size=64", "--image-size"),
                                          ("--lr1=-1e-4", "--lr1"),
                                          ("--vis=maybe", "--vis"),
                                          ("--max-epoch=ten", "--max-epoch"),
                                          ("--max-minutes=-5", "not -5"),
                                          ("--max-minutes=nan", "--max-minutes"),
                                          # as typed, not as the tuple fire reads
                                          ("--lr1=1e-4,2e-4", "not '0.0001,0.0002'"),
                                          ("--ngf=8,16", "not '8,16'"),
                                          ("--ngf=[8]", "not '[8]'"),  # was "not '8'"
                                          ("--vis-server=http://localhost:9999",
                                           "--vis-port=9999"),
                                          ("--vis-server=http://::1", "brackets"),
                                          ("--vis-server=ftp://127.0.0.1", "web address"),
                                          ("--vis-server=", "web address"),
                                          ("--env=a/b", "--env"), ("--env=", "--env"),
                                          ("--env=../../x", "--env"),
                                          # one byte past the longest file name visdom saves
                                          ("--env=" + "e" * 251, "--env is too long"),
                                          ("--vis-server=http://h:port", "not a number"),
                                          # visdom sent its requests without them, unsaid
                                          ("--vis-server=http://127.0.0.1/?x=1",
                                           "--vis-server: 'http://127.0.0.1/?x=1' has a query, "
                                           "which visdom does not send: pass the address "
                                           "alone, --vis-server=http://127.0.0.1/"),
                                          ("--vis-server=http://127.0.0.1/visdom#a",
                                           "has a fragment, which visdom does not send: pass "
                                           "the address alone, "
                                           "--vis-server=http://127.0.0.1/visdom")])
def test_bad_values(toy_dir, flag, culprit):
    assert_clean_error(cli("train", f"--data-path={toy_dir}", "--nogpu", flag), culprit)


@pytest.mark.parametrize("command, flag, culprit", [
    ("generate", "--seeds=4294967296", "not 4294967296"),  # 2**32: one past the last seed
    ("interpolate", "--steps=1", "--steps"), ("explore", "--port=0", "--port"),
    ("explore", "--port=70000", "--port"), ("train", "--vis-port=70000", "--vis-port"),
    ("train", "--num-workers=-1", "--num-workers"),
    ("train", "--label-smooth=0.5", "--label-smooth"),  # D's targets would cross at 0.5
    ("train", "--ema=1", "--ema")])  # an average that never moves from the untrained G
def test_values_just_past_their_range_are_one_line(toy_dir, tmp_path, command, flag, culprit):
    """Each bound at its edge: one past it ended in a traceback (generate's seeds, the
    steps of a morph, gradio's port, the workers) or trained nonsense without a word."""
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    where = ([f"--data-path={toy_dir}"] if command == "train"
             else [f"--netg-path={tmp_path / 'netg.pth'}"])
    assert_clean_error(cli(command, "--nogpu", *where, flag), culprit)


def test_batch_larger_than_data_set(toy_dir, tmp_path):
    assert_clean_error(cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False",
                           "--batch-size=1000", *_own_outputs(tmp_path)),
                       "lower --batch-size (now 1000) to 64 or less")  # (how far: unsaid)


def test_generate_errors(tmp_path):
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    torch.save(NetD(8).state_dict(), tmp_path / "netd.pth")
    assert_clean_error(cli("generate", "--nogpu"), "--netg-path")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'x.pth'}"),
                       "x.pth")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'netg.pth'}",
                           f"--netd-path={tmp_path / 'netd.pth'}", "--gen-num=100",
                           "--gen-search-num=50"), "--gen-num")
    # nothing to rank (no D, or --seeds): --gen-search-num plays no part, so is no obstacle
    for flags in (("--gen-num=3", "--gen-search-num=1", f"--gen-img={tmp_path / 'a.png'}"),
                  (f"--netd-path={tmp_path / 'netd.pth'}", "--seeds=1,2", "--gen-search-num=1",
                   f"--gen-img={tmp_path / 'b.png'}")):
        r = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'netg.pth'}", *flags)
        assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "a.png").size == grid_size(3)
    assert Image.open(tmp_path / "b.png").size == grid_size(2)
    # noise so wide it overflows: black squares ranked by NaN scores, and "wrote result.png"
    for flag in ("--gen-std=1e308", "--gen-mean=-1e300"):
        assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'netg.pth'}",
                               f"--netd-path={tmp_path / 'netd.pth'}", flag,
                               f"--gen-img={tmp_path / 'c.png'}"), flag.split("=")[0], "1000")
    assert not (tmp_path / "c.png").exists()
    line = assert_clean_error(cli("generate", "--nogpu",
                                  f"--netg-path={tmp_path / 'netd.pth'}",
                                  f"--netd-path={tmp_path / 'netg.pth'}"), "netd.pth")
    assert "swap" in line


def test_a_checkpoint_not_found_names_the_newest_beside_it_or_the_runs_below(tmp_path):
    """After 200 epochs a user asks for netg_200.pth, where epochs count from 0 and the last
    saved is netg_199.pth (the file the article's generate names); and after make demo,
    explore --netg-path=checkpoints/ found no netg_N.pth there, its run being in
    checkpoints/demo/. Both lines said what was missing, not where to look."""
    run = tmp_path / "checkpoints" / "demo"
    run.mkdir(parents=True)
    for epoch in (9, 199, 19):
        torch.save(NetG(100, 8).state_dict(), run / f"netg_{epoch}.pth")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={run / 'netg_200.pth'}"),
                       f"no file '{run / 'netg_200.pth'}'; the newest beside it: "
                       f"--netg-path={run / 'netg_199.pth'}")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'no' / 'g.pth'}"),
                       "no file")  # nothing beside it: nothing more said
    for command in ("generate", "explore"):
        assert_clean_error(cli(command, "--nogpu", f"--netg-path={run.parent}"),
                           f"(the runs in folders below it: {run}/)")


def test_sizes_past_the_drawing_commands_limits_are_one_line(tmp_path, toy_dir):
    """generate, interpolate, evaluate and explore took --batch-size past 2**20, and generate
    --gen-num or --gen-search-num past 2**31, to a ValueError traceback from generate's own
    check (exit 1), where train's --batch-size of the same size gets its line."""
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    g = f"--netg-path={tmp_path / 'netg.pth'}"
    big = str(2**20 + 1)
    for command, flags in (("generate", [g, f"--batch-size={big}"]),
                           ("interpolate", [g, "--seeds=1,2", f"--batch-size={big}"]),
                           ("evaluate", [g, f"--data-path={toy_dir}", f"--batch-size={big}"]),
                           ("explore", [g, f"--batch-size={big}"])):
        r = cli(command, "--nogpu", *flags)
        assert_clean_error(r, "--batch-size", "2**20", big)
        assert r.returncode == 2  # a usage error, as train's
    for flags in (["--gen-num=3000000000", "--gen-search-num=3000000000"],
                  ["--gen-search-num=3000000000"]):  # no D: the search still sets the seeds
        assert_clean_error(cli("generate", "--nogpu", g, *flags, f"--gen-img={tmp_path / 'x.png'}"),
                           "2**31", "3000000000")
    assert not (tmp_path / "x.png").exists()
    r = cli("generate", "--nogpu", g, f"--batch-size={2**20}", "--gen-num=2",
            "--gen-search-num=2", f"--gen-img={tmp_path / 'top.png'}")  # the limit itself
    assert r.returncode == 0, r.stderr


def test_no_command_is_a_usage_error_and_help_is_not():
    bare = cli()
    assert bare.returncode == 2 and bare.stdout == ""
    assert "Commands: train" in bare.stderr
    assert bare.stderr.strip().splitlines()[-1].startswith("error: name a command")
    for asked in ("help", "--help", "-h"):
        page = cli(asked)
        assert page.returncode == 0 and "Commands: train" in page.stdout and not page.stderr
    # git's and pip's way: `help generate` is generate's page, as `generate --help` is
    page = cli("help", "generate")
    assert page.returncode == 0 and page.stdout == cli("generate", "--help").stdout
    assert "--gen-search-num" in page.stdout
    # fire's way to ask for a command's page; `help foo` was the general page, exit 0
    page = cli("train", "--", "--help")
    assert page.returncode == 0 and page.stdout == cli("train", "--help").stdout
    assert_clean_error(cli("help", "genrate"), "unknown command 'genrate'", "generate")


def test_help_lists_flags_with_defaults():
    result = cli("train", "--help")
    assert result.returncode == 0
    for text in ("--batch-size", "[256]", "--g-every", "[5]", "--lr1", "--netg-path"):
        assert text in result.stdout
    result = cli("generate", "--help")
    assert "--gen-search-num" in result.stdout and "[512]" in result.stdout
    # an option without a default reads as unset (its help says what happens then), not None
    seeds = next(line for line in result.stdout.splitlines()
                 if line.lstrip().startswith("--seed "))
    assert seeds.endswith("[unset]") and "None" not in result.stdout
    asked = cli("train", "--help=yes")  # was "unknown option --help; see --help"
    assert asked.returncode == 0 and "Options (default in brackets):" in asked.stdout
    # where a command gives an unset option a value of its own, the help shows that value
    for command, flag, value in (("interpolate", "--out ", "['interp.png']"),
                                 ("evaluate", "--out ", "['metrics.json']"),
                                 ("evaluate", "--seed ", "[0]")):
        page = cli(command, "--help").stdout.splitlines()
        assert next(line for line in page if line.lstrip().startswith(flag)).endswith(value)


def test_every_field_of_the_books_config_is_taken(toy_dir):
    """The article's command lines work unchanged: its Config's fields, as it spells them."""
    from config import parse
    book = dict(data_path=str(toy_dir), num_workers=4, image_size=96, batch_size=256,
                max_epoch=200, lr1=2e-4, lr2=2e-4, beta1=0.5, gpu=False, nz=100, ngf=64,
                ndf=64, save_path="imgs/", vis=False, env="GAN", plot_every=20,
                debug_file="/tmp/debuggan", d_every=1, g_every=5, save_every=10,
                netd_path=None, netg_path=None, gen_img="result.png", gen_num=64,
                gen_search_num=512, gen_mean=0, gen_std=1)
    face = str(toy_dir / "faces" / "000000.jpg")  # a file, for generate's --netg-path
    # and each arrives: the book's values are mostly the defaults, so values of its kinds
    # that are not (a field taken and then dropped would read as the default)
    other = dict(book, num_workers=1, batch_size=32, max_epoch=3, lr1=1e-4, lr2=3e-4,
                 beta1=0.4, nz=64, ngf=16, ndf=24, save_path="mine/", env="mine",
                 plot_every=7, d_every=2, g_every=3, save_every=2, gen_img="mine.png",
                 gen_num=16, gen_search_num=32, gen_mean=0.5, gen_std=0.8)
    for command, values in [("train", book), ("generate", dict(book, netg_path=face)),
                            ("train", other), ("generate", dict(other, netg_path=face))]:
        opt = parse(command, values)
        assert {k: getattr(opt, k, None) for k in values if k != "debug_file"} == \
            {k: v for k, v in values.items() if k != "debug_file"}
    page = cli("train", "--debug-file=/tmp/debuggan", "--help").stdout
    assert "--debug-file" in page.split("unused here:")[1]


@pytest.mark.parametrize("command, flag, said", [
    ("generate", "--out=mine.png", ["--out is not an option of generate (it is interpolate and "
                                    "evaluate's)", "--gen-img", "--out-dir"]),
    ("generate", "--num=5", ["--num", "evaluate's", "--gen-num faces"]),
    ("generate", "--recipe=modern", ["--recipe", "train's"]),
    # named as typed: it was refused as --sn, a flag the user did not type
    ("generate", "--nosn", ["--nosn is not an option of generate (it is train's)"]),
    ("generate", "--no-sn", ["--no-sn is not an option of generate (it is train's)"]),
    ("interpolate", "--gen-img=morph.png", ["--gen-img is not an option of interpolate",
                                            "--out"]),
    ("evaluate", "--gen-num=8", ["--gen-num", "--num faces"]),
    ("train", "--steps=4", ["--steps is not an option of train", "interpolate and explore's"]),
    ("generate", "--sle", ["--sle is not an option of generate (it is train's)",
                           "whether G has --sle's layers from its file"]),
    ("evaluate", "--sle-gates=3", ["--sle-gates is not an option of evaluate (it is train's)",
                                   "whether G has --sle's layers from its file"]),
])
def test_a_flag_of_another_command_is_refused_not_ignored(tmp_path, monkeypatch, command, flag,
                                                          said):
    """generate --out=mine.png wrote result.png and said so, leaving no mine.png; evaluate
    --gen-num=8 compared 2,048 faces."""
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    monkeypatch.chdir(tmp_path)  # where result.png, interp.png or metrics.json would go
    r = cli(command, "--nogpu", f"--netg-path={tmp_path / 'netg.pth'}", flag)
    line = assert_clean_error(r, *said)
    assert f"see python main.py {command} --help" in line
    assert list(tmp_path.iterdir()) == [tmp_path / "netg.pth"]  # nothing drawn or written


def test_train_from_weights_of_other_widths_names_the_flags_to_pass(tmp_path, toy_dir):
    """It said "pass those flags" after listing nz and ngf both, without the flags."""
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    line = assert_clean_error(cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False",
                                  f"--netg-path={tmp_path / 'netg.pth'}",
                                  *_own_outputs(tmp_path)),
                              "was trained with nz=100, ngf=8, not nz=100, ngf=64")
    assert line.endswith(": pass --ngf=8")
    torch.save(NetG(128, 64).state_dict(), tmp_path / "netg.pth")  # the noise's width alone
    line = assert_clean_error(cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=False",
                                  f"--netg-path={tmp_path / 'netg.pth'}",
                                  *_own_outputs(tmp_path)),
                              "was trained with nz=128, ngf=64, not nz=100, ngf=64")
    assert line.endswith(": pass --nz=128")


def test_a_read_only_output_file_is_not_written_over(tmp_path, monkeypatch):
    """generate replaced a grid the user had made read-only (chmod 444) to keep it: the
    atomic rename is stopped by the folder's permissions, not the file's. Root may write
    anything, so os.access says it here, as it does for any other user."""
    import os
    import config
    from conftest import tiny_nets
    torch.save(tiny_nets(nz=100)[0].state_dict(), tmp_path / "g.pth")
    kept = tmp_path / "kept.png"
    kept.write_bytes(b"the user's own grid")
    kept.chmod(0o444)
    access = os.access
    monkeypatch.setattr(config.os, "access", lambda path, mode: access(path, mode) and not (
        Path(path).resolve() == kept and mode & os.W_OK))  # (kept: the file of each check)
    r = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'g.pth'}", f"--gen-img={kept}")
    assert_clean_error(r, f"--gen-img: '{kept}' is read-only: make it writable (chmod u+w) "
                       f"to replace it, or name another file")
    assert kept.read_bytes() == b"the user's own grid" and r.stdout == ""
    # the files of an unset --out as well (interpolate's interp.png, evaluate's metrics.json)
    monkeypatch.chdir(tmp_path)
    for command, name in (("interpolate", "interp.png"), ("evaluate", "metrics.json")):
        kept = tmp_path / name
        kept.write_bytes(b"the user's own")
        r = cli(command, "--nogpu", f"--netg-path={tmp_path / 'g.pth'}", "--data-path=.")
        assert_clean_error(r, f"--out: '{name}' is read-only")
        assert kept.read_bytes() == b"the user's own"
    kept = tmp_path / "kept.png"
    monkeypatch.undo()
    kept.chmod(0o644)  # made writable: replaced, as any output
    assert cli("generate", "--nogpu", f"--netg-path={tmp_path / 'g.pth'}",
               f"--gen-img={kept}", "--gen-num=8").returncode == 0
    assert kept.read_bytes().startswith(b"\x89PNG")


def test_an_output_on_a_read_only_disk_is_named_as_such(tmp_path, monkeypatch):
    """A disk mounted read-only was "no permission to write in", which sent users to chmod
    (and root is refused as well). Mounting one needs root, so statvfs says it here."""
    import os
    from collections import namedtuple
    import config
    from errors import UserError
    stat = namedtuple("stat", "f_flag")
    monkeypatch.setattr(config.os, "statvfs", lambda path: stat(os.ST_RDONLY))
    with pytest.raises(UserError, match=f"'{tmp_path}' is on a read-only file system: pick a "
                       "folder on a disk you can write to"):
        config.writable(tmp_path / "toy", "out-dir", folder=True)
    monkeypatch.setattr(config.os, "statvfs", lambda path: stat(0))
    config.writable(tmp_path / "toy", "out-dir", folder=True)  # a disk that takes files


def test_readme_documents_every_flag():
    from config import BOOK_ONLY, FIELDS
    from conftest import ROOT
    readme = (ROOT / "README.md").read_text()
    for name in [*FIELDS, *BOOK_ONLY]:
        assert f"`--{name.replace('_', '-')}" in readme, name


@pytest.mark.parametrize("flags,culprit", [
    (dict(loss="wasserstein"), "--loss"), (dict(diffaug="color,flip"), "flip"),
    (dict(r1=-1.0), "--r1"), (dict(beta2=1.0), "--beta2"), (dict(recipe="old"), "--recipe"),
    (dict(d_low=10), "--d-low"),
    (dict(loss="hinge", label_smooth=0.1), "--label-smooth")])
def test_bad_values_of_the_new_training_options(toy_dir, flags, culprit):
    from config import parse
    from errors import UserError
    with pytest.raises(UserError, match=culprit):
        parse("train", dict(data_path=str(toy_dir), **flags))


def test_recipe_expands_to_its_flags_and_given_flags_win(toy_dir):
    from config import RECIPES, parse
    opt = parse("train", dict(data_path=str(toy_dir), recipe="modern"))
    assert all(getattr(opt, k) == v for k, v in RECIPES["modern"].items())
    assert (opt.loss, opt.sn) == ("hinge", True)
    opt = parse("train", dict(data_path=str(toy_dir), recipe="modern", g_every=3, sn=False))
    assert (opt.g_every, opt.sn, opt.loss) == (3, False, "hinge")
    book = parse("train", dict(data_path=str(toy_dir)))
    assert (book.loss, book.sn, book.diffaug, book.r1, book.beta2, book.g_every) == \
        ("bce", False, "", 0.0, 0.999, 5)
    # the recipe is the flags the README spells out for it (a weight changed in the code
    # alone, --r1=1 for 0.1, went unnoticed), and those flags train as the recipe does
    import ast
    readme = (ROOT / "README.md").read_text()
    spelt = re.search(r"- `--recipe=modern` = `([^`]+)`", readme.replace("\n  ", " "))[1]
    flags = {}
    for token in spelt.split():
        name, _, value = token[2:].partition("=")
        try:
            flags[name.replace("-", "_")] = ast.literal_eval(value) if value else True
        except (ValueError, SyntaxError):
            flags[name.replace("-", "_")] = value
    assert flags == RECIPES["modern"], spelt
    by_hand = parse("train", dict(data_path=str(toy_dir), **flags))
    recipe = parse("train", dict(data_path=str(toy_dir), recipe="modern"))
    assert {**vars(by_hand), "given": None} == {**vars(recipe), "recipe": "", "given": None}


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path, toy_dir):
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    g = f"--netg-path={tmp_path / 'netg.pth'}"
    afile = tmp_path / "afile"
    afile.write_text("a file where a folder should be")
    grid = tmp_path / "grid.png"
    cases = [
        (("generate", g, f"--gen-img={afile / 'r.png'}"), "--gen-img", "is a file"),
        (("generate", g, f"--gen-img={tmp_path / 'dirx'}/"), "--gen-img", "is a folder"),
        (("generate", g, f"--gen-img={tmp_path}"), "--gen-img", "is a folder"),
        (("generate", g, f"--gen-img={tmp_path / 'out.txt'}"), "--gen-img", ".png"),
        (("generate", g, f"--gen-img={tmp_path / 'out.xbm'}"), "--gen-img", ".png"),  # 1-bit
        # icons, saved at icon sizes: 4 faces came out 64x16 pixels, "wrote out.ico"
        (("generate", g, f"--gen-img={tmp_path / 'out.ico'}"), "--gen-img", ".png"),
        (("interpolate", g, f"--out={tmp_path / 'x.icns'}"), "--out", ".png"),
        (("evaluate", g, f"--data-path={toy_dir}", f"--out={tmp_path}"), "--out",
         "metrics.json"),
        (("generate", g, f"--gen-img={grid}", f"--out-dir={afile / 'o'}"), "--out-dir",
         "is a file"),
        (("interpolate", g, f"--out={tmp_path / 'x.txt'}"), "--out", ".png"),
        (("interpolate", g, f"--out={grid}", f"--gif={afile / 'g.gif'}"), "--gif", "is a file"),
        (("evaluate", g, f"--data-path={toy_dir}", f"--out={afile / 'm.json'}"), "--out",
         "is a file"),
        (("train", f"--data-path={toy_dir}", f"--checkpoint-dir={afile / 'ck'}"),
         "--checkpoint-dir", "is a file"),
        (("train", f"--data-path={toy_dir}", f"--save-path={afile}"), "--save-path",
         "is a file"),
        (("toyfaces", f"--out-dir={afile}", "--num=2"), "--out-dir", "is a file"),
        # places that take no files, whatever the permissions say (also to root)
        (("generate", g, "--gen-img=/proc/r.png"), "--gen-img", "cannot write"),
        (("interpolate", g, f"--out={grid}", "--gif=/sys/m.gif"), "--gif", "cannot write"),
        (("train", f"--data-path={toy_dir}", "--checkpoint-dir=/proc/ck"), "--checkpoint-dir",
         "cannot write"),
    ]
    for args, flag, why in cases:
        command, *rest = args
        assert_clean_error(cli(command, "--nogpu", *rest) if command != "toyfaces"
                           else cli(command, *rest), flag, why)
    # nothing was written on the way: not the grid before the faces' folder failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "netg.pth"]


def test_a_dash_for_an_output_is_refused_not_written_as_a_file(tmp_path, toy_dir,
                                                               monkeypatch):
    """--gen-img=-, read as standard output by habit, wrote a grid into a file named "-" where
    the command ran, "wrote -" (a PNG), exit 0: awkward to find and to remove."""
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    g = f"--netg-path={tmp_path / 'netg.pth'}"
    monkeypatch.chdir(tmp_path)
    cases = [(("generate", g, "--gen-img=-"), "--gen-img=-", "'result.png'"),
             (("generate", g, "--out-dir=-"), "--out-dir=-", "a folder"),
             (("interpolate", g, "--out=-"), "--out=-", "'interp.png'"),
             (("interpolate", g, "--gif=-"), "--gif=-", "'interp.gif'"),
             (("evaluate", g, f"--data-path={toy_dir}", "--out=-"), "--out=-", "'metrics.json'"),
             (("train", f"--data-path={toy_dir}", "--save-path=-"), "--save-path=-", "a folder")]
    for (command, *rest), flag, example in cases:
        assert_clean_error(cli(command, "--nogpu", *rest), flag, "not standard output", example)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netg.pth"]


def test_an_output_named_only_by_its_suffix_is_refused(tmp_path, toy_dir, monkeypatch):
    """--gen-img=.png (a script's "$NAME.png" with NAME empty) wrote a hidden file named .png,
    "wrote .png (a PNG: the name has no suffix)", exit 0; a hidden name with a stem is kept."""
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    g = f"--netg-path={tmp_path / 'netg.pth'}"
    monkeypatch.chdir(tmp_path)
    cases = [(("generate", g, "--gen-img=.png"), "'result.png'"),
             (("generate", g, "--gen-img=out/.jpg"), "'out/result.jpg'"),
             (("interpolate", g, "--gif=.gif"), "'interp.gif'"),
             (("evaluate", g, f"--data-path={toy_dir}", "--out=.json"), "'metrics.json'")]
    for (command, *rest), example in cases:
        assert_clean_error(cli(command, "--nogpu", *rest), "only a suffix", example)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netg.pth"]
    r = cli("generate", "--nogpu", g, "--gen-num=1", "--gen-search-num=1", "--gen-img=.a.png")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / ".a.png").format == "PNG"


@pytest.mark.parametrize("seed", ["-1", str(2**31 + 1), "99999999999999999999"])
def test_seed_out_of_range(tmp_path, seed):
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    for command in ("generate", "interpolate"):
        assert_clean_error(cli(command, "--nogpu", f"--netg-path={tmp_path / 'netg.pth'}",
                               f"--seed={seed}"), "--seed", seed)


def test_the_largest_seed_draws_faces_that_can_be_drawn_again(tmp_path):
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    g = f"--netg-path={tmp_path / 'netg.pth'}"
    r = cli("generate", "--nogpu", g, f"--seed={2**31}", "--gen-num=2", "--gen-search-num=2",
            f"--out-dir={tmp_path / 'top'}", f"--gen-img={tmp_path / 'top.png'}")
    assert r.returncode == 0, r.stderr
    r = cli("generate", "--nogpu", g, f"--seeds={2**31},{2**31 + 1}",
            f"--gen-img={tmp_path / 'again.png'}")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "top.png").read_bytes() == (tmp_path / "again.png").read_bytes()
    # torch reads a seed's low 32 bits: 2**32 + 17 drew seed 17's face, under another name
    assert_clean_error(cli("generate", "--nogpu", g, f"--seeds=17,{2**32 + 17}"), "--seeds",
                       "0 to 2**32-1", f"not {2**32 + 17}")
    r = cli("generate", "--nogpu", g, f"--seeds={2**32 - 1}", f"--gen-img={tmp_path / 'l.png'}")
    assert r.returncode == 0, r.stderr


def test_a_refused_file_is_one_line_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    import errno
    import os
    import main

    def full(*args, **flags):
        raise OSError(errno.ENOSPC, "No space left on device", "checkpoints/netg_3.pth")
    monkeypatch.setitem(main.COMMANDS, "train", full)
    assert main.main(["main.py", "train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "netg_3.pth" in err[0]
    assert "No space left on device" in err[0] and "free space" in err[0]
    # the other refusals of a disk or a folder a night's run can meet: one line each too
    for code in (errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT, errno.EFBIG,
                 errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
        def refused(*args, _code=code, **flags):
            raise OSError(_code, os.strerror(_code), "checkpoints/netg_3.pth")
        monkeypatch.setitem(main.COMMANDS, "train", refused)
        assert main.main(["main.py", "train"]) == 2, errno.errorcode[code]
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and os.strerror(code) in err[0], err

    def bug(*args, **flags):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "nowhere.pth")
    monkeypatch.setitem(main.COMMANDS, "train", bug)
    with pytest.raises(FileNotFoundError):
        main.main(["main.py", "train"])


# main.py run with its DataLoader workers slow to start, as on a busy machine: ``-c`` CODE
# ROOT main.py ARGS...
SLOW_WORKERS = ("import runpy, sys; sys.path.insert(0, sys.argv[1]); "
                f"{slow_start('loader_worker_signals', 3)}; "
                "sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def _train_limited(toy_dir, tmp_path, limit, workers, slow_workers=False):
    """A one-epoch training of tiny nets on the toy faces, decoded as it goes by ``workers``
    loader processes (``slow_workers``: each waits 3 s before it starts), in a process that
    ``limit`` sets a shell's limit in first."""
    import subprocess
    import sys
    python = [sys.executable] + (["-c", SLOW_WORKERS, str(ROOT)] if slow_workers else [])
    return subprocess.run(
        python + [str(ROOT / "main.py"), "train", f"--data-path={toy_dir}", "--nogpu",
         "--vis=False", "--cache=False", f"--num-workers={workers}", "--max-epoch=1",
         "--ngf=8", "--ndf=8", "--batch-size=8", f"--save-path={tmp_path / 'I'}",
         f"--checkpoint-dir={tmp_path / 'C'}"],
        capture_output=True, text=True, timeout=300, preexec_fn=limit,
        env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_a_file_over_the_file_size_limit_is_named_with_what_to_do(tmp_path, toy_dir):
    """A shell's file size limit (ulimit -f) reached by train's first save: the line named
    no file ("cannot write or read: File too large") and advised to check the free space,
    which was not the fault. Nothing half-written is left where the grid goes."""
    result = _train_limited(toy_dir, tmp_path, _limited(65536), workers=0)
    line = assert_clean_error(result, "File too large", "(ulimit -f)", "raise that limit")
    assert "free space" not in line
    # the first save over the limit (the grid, or netd_0.pth where the grid of this run's
    # random seed is smaller), named, and not left half-written
    named = re.match(r"error: cannot write or read (\S+): File too large;", line)
    assert named and Path(named[1]).parent in (tmp_path / "I", tmp_path / "C"), line
    assert not Path(named[1]).exists()
    assert not [p for p in (tmp_path / "I").iterdir() if p.suffix == ".tmp"]
    assert not [p for p in (tmp_path / "C").iterdir() if p.suffix == ".tmp"]


def _limited(size):
    """A preexec_fn: files of at most ``size`` bytes (ulimit -f), the write refused (EFBIG)
    where the default would kill the process (SIGXFSZ)."""
    def limit():
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


@pytest.mark.slow
def test_a_batch_over_the_file_size_limit_is_one_line_not_a_hang(tmp_path, toy_dir):
    """The --num-workers processes hand each batch over in a shared-memory file: a batch over
    a shell's file size limit (ulimit -f) was a traceback from each worker, and the run
    waited for ever for its first batch."""
    result = _train_limited(toy_dir, tmp_path, _limited(65536),  # a batch of 8 faces:
                            workers=2)  # 884,736 bytes
    assert_clean_error(result, "(ulimit -f)", "--num-workers=0")


@pytest.mark.slow
def test_a_batch_just_over_the_file_size_limit_is_told_apart_from_it(tmp_path, toy_dir):
    """A batch of 884,736 bytes over a limit of 870,000: both were said as "0.9 MB", so the
    line read as a batch over a limit of its own size."""
    line = assert_clean_error(_train_limited(toy_dir, tmp_path, _limited(870_000), workers=2),
                              "(ulimit -f)", "--num-workers=0")
    assert "a batch of decoded images (0.88 MB) is over " in line, line
    assert "(ulimit -f), 0.87 MB, " in line, line


def test_a_cache_over_the_file_size_limit_says_so_and_the_way_around(tmp_path, toy_dir):
    """The decoded-image cache over a file size limit: the line named a temporary file in
    /tmp (the fallback place, refused too) or no file at all, and not --cache=False."""
    import shutil
    import subprocess
    import sys
    shutil.copytree(toy_dir / "faces", tmp_path / "own" / "faces")  # no cache built yet
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "train", f"--data-path={tmp_path / 'own'}",
         "--nogpu",
         "--vis=False", "--num-workers=0", "--max-epoch=1", "--ngf=8", "--ndf=8",
         "--batch-size=8", f"--save-path={tmp_path / 'I'}",
         f"--checkpoint-dir={tmp_path / 'C'}"],
        capture_output=True, text=True, timeout=300, preexec_fn=_limited(200_000),
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    line = assert_clean_error(result, "error: the decoded-image cache ", ".npy (1.8 MB) is "
                              "over the largest file this shell lets a program write (ulimit "
                              "-f)", "raise that limit, or pass --cache=False")
    assert "/tmp/facecache-" not in line
    # bench.py's synthetic cache: the measuring process's one line, not its traceback
    bench = subprocess.run(
        [sys.executable, str(ROOT / "bench.py"), "--cache-sizes=64", "--batch-size=16",
         "--measure=2", "--warmup=0", "--nogpu", f"--scratch={tmp_path / 'scratch'}"],
        capture_output=True, text=True, timeout=300, preexec_fn=_limited(50_000),
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert bench.returncode != 0 and "Traceback" not in bench.stderr, bench.stderr
    assert bench.stderr.strip().splitlines()[-1].startswith(
        f"error: the run with 64 images failed: cannot write or read {tmp_path / 'scratch'}")
    assert "File too large" in bench.stderr.strip().splitlines()[-1]


def test_evaluate_refuses_other_image_sizes_before_decoding(tmp_path, toy_dir):
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    before = sorted(p.name for p in toy_dir.parent.iterdir())
    assert_clean_error(cli("evaluate", "--nogpu", f"--netg-path={tmp_path / 'netg.pth'}",
                           f"--data-path={toy_dir}", "--image-size=64", "--num=8",
                           f"--out={tmp_path / 'm.json'}"), "--image-size")
    assert sorted(p.name for p in toy_dir.parent.iterdir()) == before  # no cache built


def test_a_file_given_for_a_folder_and_the_reverse_is_named_as_such(tmp_path, toy_dir):
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    g = f"--netg-path={tmp_path / 'netg.pth'}"
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    line = assert_clean_error(cli("train", "--nogpu", f"--data-path={afile}"),
                              "is a file, not a folder", "pass the folder")
    assert "afile/faces" not in line  # no images to put into a file
    assert_clean_error(cli("evaluate", "--nogpu", g, f"--data-path={afile}"),
                       "is a file, not a folder")
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path}"),
                       "is a folder, not a checkpoint file: it holds no netg_N.pth or last.pth")
    # a run's folder: the file it most likely meant, to paste
    for name in ("netg_2.pth", "netg_10.pth", "netg_ema_12.pth", "netd_10.pth"):
        (tmp_path / "run" / name).parent.mkdir(exist_ok=True)
        net = NetD(8) if name.startswith("netd") else NetG(100, 8)
        torch.save(net.state_dict(), tmp_path / "run" / name)
    # the newest G, its moving average where that is the newest (it draws the samples)
    assert_clean_error(cli("generate", "--nogpu", f"--netg-path={tmp_path / 'run'}/"),
                       f"name one in it, e.g. --netg-path={tmp_path / 'run' / 'netg_ema_12.pth'}")
    assert_clean_error(cli("generate", "--nogpu", g, f"--netd-path={tmp_path / 'run'}"),
                       f"e.g. --netd-path={tmp_path / 'run' / 'netd_10.pth'}")
    # and --resume there, with no last.pth, names the same newest G to start again from
    assert_clean_error(cli("train", "--nogpu", "--resume", f"--checkpoint-dir={tmp_path / 'run'}"),
                       "no full state", f"or from its newest weights with --netg-path="
                       f"{tmp_path / 'run' / 'netg_10.pth'} --netd-path="
                       f"{tmp_path / 'run' / 'netd_10.pth'}")
    # the folder given as --resume: the same, and once it holds a last.pth, that file
    assert_clean_error(cli("train", "--nogpu", f"--resume={tmp_path / 'run'}"),
                       f"no {tmp_path / 'run' / 'last.pth'}", "no full state")
    (tmp_path / "run" / "last.pth").write_bytes(b"")
    assert_clean_error(cli("train", "--nogpu", f"--resume={tmp_path / 'run'}"),
                       "is a folder, not a checkpoint file",
                       f"pass --resume={tmp_path / 'run' / 'last.pth'}")


def test_flag_values_that_are_no_value_are_refused(tmp_path, toy_dir):
    """fire turns the text None into None, a bare --flag into True and 1e999 into inf: each
    used to reach the code (a TypeError, a grid named True, an all-black grid)."""
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    g = f"--netg-path={tmp_path / 'netg.pth'}"
    data = f"--data-path={toy_dir}"
    cases = [
        (("train", data, "--lr1=None"), "--lr1", "None"),
        (("train", data, "--batch-size=None"), "--batch-size", "None"),
        (("train", "--data-path=None"), "--data-path", "None"),
        (("train", data, "--lr1=1e999"), "--lr1", "finite"),
        (("generate", g, "--gen-std=1e999"), "--gen-std", "finite"),
        (("generate", g, "--gen-mean=-1e999"), "--gen-mean", "finite"),
        (("generate", g, "--gen-img"), "--gen-img", "needs a path"),
        (("train", data, "--nogpu", "--gpu"), "--gpu and --nogpu were both given"),
        (("train", data, "--amp=False", "--noamp"), "--amp and --noamp were both given"),
        (("generate", g, "--gen-img="), "--gen-img", "names no path"),
        (("generate", g, "--out-dir"), "--out-dir", "needs a path"),
        (("train", data, "--loss"), "--loss", "needs a value"),
        (("train", data, "--batch-size"), "--batch-size needs a number"),  # was "not True"
        # both spellings, two values: fire kept the last without a word
        (("train", data, "--batch-size=16", "--batch_size=32"),
         "--batch-size was given twice, with two values (16 and 32)"),
        (("generate", g, "--seed", "3", "--seed=4"), "--seed was given twice", "3 and 4"),
        # an empty second one was called "bare", as a flag with no = at all is
        (("generate", g, "--gen-img=a.png", "--gen-img="), "--gen-img was given twice",
         "(a.png and empty)"),
        (("generate", g, "--gen-img=a.png", "--gen-img"), "(a.png and bare)"),
        (("train", data, "--checkpoint-dir="), "--checkpoint-dir", "names no path"),
        (("train", data, "--resume="), "--resume", "--resume alone"),
        (("evaluate", g, data, "--metrics="), "--metrics", "names none"),
        (("evaluate", g, data, "--metrics=fid", "--num=1"), "--num", "at least 2"),
        (("toyfaces", "--num=None"), "--num", "None"),
        (("train", data, "--", "--interactive"), "'--'"),
    ]
    for args, *needles in cases:
        command, *rest = args
        flags = ["--nogpu"] if command != "toyfaces" else []
        assert_clean_error(cli(command, *flags, *rest), *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netg.pth"]
    # None still means "unset" where that is the default: a fresh seed is printed
    r = cli("generate", "--nogpu", g, "--seed=None", "--gen-num=1", "--gen-search-num=1",
            f"--gen-img={tmp_path / 'one.png'}")
    assert r.returncode == 0 and (tmp_path / "one.png").is_file(), r.stderr
    assert re.search(r"^seeds from \d+ \(pass --seed=\d+ ", r.stdout, re.M), r.stdout


def test_a_space_before_or_after_a_path_is_refused_unless_it_names_one(tmp_path, toy_dir,
                                                                        monkeypatch):
    """--checkpoint-dir="ck " (a paste, a quote around too much) trained into a new folder
    named with a space, beside the ck/ meant, without a word; a space inside a name, or a
    path that exists with its space, is the user's own."""
    import subprocess
    import sys
    monkeypatch.chdir(tmp_path)
    torch.save(NetG(100, 8).state_dict(), "netg.pth")
    train = ("train", "--nogpu", "--vis=False", "--ngf=8", "--ndf=8", "--batch-size=16",
             "--max-epoch=1")
    cases = [
        ((*train, f"--data-path={toy_dir}", "--checkpoint-dir=ck ", "--save-path=ck"),
         "--checkpoint-dir: 'ck ' has a space at its end, which would name another path "
         "than 'ck': remove it"),
        ((*train, f"--data-path={toy_dir}", "--checkpoint-dir=ck", "--save-path= imgs"),
         "--save-path: ' imgs' has a space at its start"),
        ((*train, f"--data-path={toy_dir} "), "--data-path: ", "at its end"),
        (("generate", "--nogpu", "--netg-path=netg.pth\t"), "--netg-path: 'netg.pth\\t' has "
         "whitespace at its end"),
        (("generate", "--nogpu", "--netg-path=netg.pth", "--gen-img= my face.png "),
         "--gen-img: ' my face.png ' has a space at both ends"),
        (("toyfaces", "--out-dir=toy ", "--num=2"), "--out-dir: 'toy ' has a space"),
    ]
    for args, *needles in cases:
        assert_clean_error(cli(*args), *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netg.pth"]
    # bench.py's path flags as main.py's: --json="b.json " wrote a file named with a space
    for flag, said in ((f"--data-path={toy_dir} ", "at its end"),
                       ("--json= b.json", "' b.json' has a space at its start, which would "
                                          "name another path than 'b.json': remove it"),
                       ("--scratch=tmp ", "'tmp ' has a space at its end")):
        r = subprocess.run([sys.executable, str(ROOT / "bench.py"), flag], text=True,
                           capture_output=True, timeout=120)
        assert_clean_error(r, f"{flag.partition('=')[0]}: ", said)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netg.pth"]
    Path("my toy ").mkdir()  # there as named: taken, space and all
    r = cli("toyfaces", "--out-dir=my toy ", "--num=2")
    assert r.returncode == 0, r.stderr
    assert len(list(Path("my toy ", "faces").iterdir())) == 2


def test_home_in_a_path_is_the_users_home(tmp_path, monkeypatch):
    """The shell leaves ~ after = alone; a folder named ~ used to appear in the working one."""
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    r = cli("generate", "--nogpu", "--netg-path=~/../netg.pth", "--gen-num=1",
            "--gen-search-num=1", "--gen-img=~/face.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "home" / "face.png").is_file()


def test_outputs_that_would_overwrite_another_file_are_refused(tmp_path, toy_dir):
    """evaluate's JSON and interpolate's GIF used to be written under any name, over a
    checkpoint as readily as anything; and two outputs named alike overwrote each other."""
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    g = f"--netg-path={tmp_path / 'netg.pth'}"
    kept = tmp_path / "netd_3.pth"
    kept.write_bytes(b"PK\x03\x04 a checkpoint")
    cases = [
        (("evaluate", g, f"--data-path={toy_dir}", f"--out={kept}"), "--out", ".json"),
        (("interpolate", g, f"--out={tmp_path / 'i.png'}", f"--gif={kept}"), "--gif", ".gif"),
        (("interpolate", g, f"--out={tmp_path / 'i.png'}", f"--gif={tmp_path / 'i.png'}"),
         "--gif", ".gif"),
        (("generate", g, f"--gen-img={tmp_path / 'x.png'}", f"--out-dir={tmp_path / 'x.png'}"),
         "--gen-img and --out-dir", "same path"),
    ]
    for (command, *rest), *needles in cases:
        assert_clean_error(cli(command, "--nogpu", *rest), *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netd_3.pth", "netg.pth"]
    assert kept.read_bytes() == b"PK\x03\x04 a checkpoint"


def test_a_resumed_run_refuses_what_it_would_ignore(tmp_path, toy_dir):
    """--recipe and the start weights were taken in silence on --resume and not applied; an
    empty --recipe= (the book's recipe asked for) was still, on a modern run."""
    import checkpoint
    from config import Config
    state = tmp_path / "last.pth"
    torch.save({"format": checkpoint.STATE_FORMAT, "options": Config().to_dict()}, state)
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    for flag in ("--recipe=modern", "--recipe=bogus", "--recipe=",
                 f"--netg-path={tmp_path / 'netg.pth'}"):
        assert_clean_error(cli("train", "--nogpu", f"--data-path={toy_dir}",
                               f"--resume={state}", flag), flag.split("=")[0], "--resume")


def test_modes_alone_on_a_folder_without_attributes_is_refused_before_work(tmp_path, toy_dir):
    """It used to decode, draw and write a report with no metric in it, and exit 0."""
    import shutil
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    shutil.copytree(toy_dir / "faces", tmp_path / "photos" / "faces")
    out = tmp_path / "m.json"
    assert_clean_error(cli("evaluate", "--nogpu", f"--netg-path={tmp_path / 'netg.pth'}",
                           f"--data-path={tmp_path / 'photos'}", "--metrics=modes", "--num=8",
                           f"--out={out}"), "attributes.csv", "swd")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netg.pth", "photos"]  # no cache


@pytest.mark.slow
def test_sizes_that_outgrow_memory_are_refused_and_a_long_search_shows_progress(tmp_path):
    """--scale=1e9 ended in PIL's OverflowError after the grid was written, --steps=1e7 ran
    out of memory slowly, and a large --gen-search-num ranked in silence."""
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    torch.save(NetD(8).state_dict(), tmp_path / "netd.pth")
    g = f"--netg-path={tmp_path / 'netg.pth'}"
    grid = f"--gen-img={tmp_path / 'grid.png'}"
    assert_clean_error(cli("generate", "--nogpu", g, grid, "--scale=33",
                           f"--out-dir={tmp_path / 'big'}"), "--scale", "32")
    assert_clean_error(cli("interpolate", "--nogpu", g, "--steps=257",
                           f"--out={tmp_path / 'i.png'}"), "--steps", "256")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netd.pth", "netg.pth"]
    r = cli("generate", "--nogpu", g, f"--netd-path={tmp_path / 'netd.pth'}", grid,
            "--gen-num=4", "--gen-search-num=4200")
    assert r.returncode == 0, r.stderr
    # the CPU's passes of 64 (CPU_PASS), whatever --batch-size asks
    assert "ranking faces by D" in r.stderr and "66/66" in r.stderr


TOYFACES_STOPPED = ": the set is not finished; the same command again draws it whole"


def test_ctrl_c_outside_training_does_not_speak_of_save_points(monkeypatch, capsys):
    import main

    def stopped(*args, **flags):
        raise KeyboardInterrupt
    monkeypatch.setitem(main.COMMANDS, "generate", stopped)
    assert main.main(["main.py", "generate"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    import train
    monkeypatch.setitem(main.COMMANDS, "train", stopped)
    monkeypatch.setattr(train, "training", None)  # building the cache, say
    assert main.main(["main.py", "train"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted before training began: nothing " \
                                              "was trained"
    from types import SimpleNamespace
    monkeypatch.setattr(train, "training", SimpleNamespace(
        saved="ck/last.pth", resume_command=lambda: "`python main.py train --resume=ck/...`"))
    assert main.main(["main.py", "train"]) == 130
    assert "nothing saved since its last save; continue from it with `python main.py" in \
        capsys.readouterr().err


def test_the_commands_that_draw_refuse_torchrun(tmp_path, monkeypatch):
    """generate under torchrun drew in every process, into the same file, each process
    naming its own seeds."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.chdir(tmp_path)
    for command in ("generate", "interpolate", "evaluate", "explore", "toyfaces"):
        assert_clean_error(cli(command, "--nogpu"), f"error: {command} runs in one process",
                           "not torchrun")
    assert list(tmp_path.iterdir()) == []


def test_a_stop_while_torch_loads_is_said_by_the_first_process_alone(tmp_path, monkeypatch):
    """Ctrl-C under torchrun as the processes started printed its line once per process."""
    import os
    import signal
    monkeypatch.setenv("RANK", "1")
    proc = _main_while_loading(tmp_path, ["print('loading', file=sys.stderr, flush=True)",
                                          "time.sleep(60)"])
    read_until(proc, "loading")
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "", err


def _main_while_loading(tmp_path, when_loading):
    """main.py run as a user runs it, with ``when_loading`` done as its first heavy import
    (fire, then torch) begins: the first second or two of every command."""
    import subprocess
    import sys
    from conftest import ROOT
    args = ["main.py", "toyfaces", f"--out-dir={tmp_path / 'toy'}", "--num=64"]
    script = ("import builtins, os, runpy, signal, sys, time\n"
              "real = builtins.__import__\n\n"
              "def loading(name, *args, **kwargs):\n"
              "    if name == 'fire':\n"
              "        builtins.__import__ = real\n"
              + "".join(f"        {line}\n" for line in when_loading) +
              "    return real(name, *args, **kwargs)\n\n"
              f"builtins.__import__ = loading\nsys.argv = {args!r}\n"
              f"runpy.run_path({str(ROOT / 'main.py')!r}, run_name='__main__')\n")
    return subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_stop_while_torch_loads_is_one_line(tmp_path, signame):
    """Ctrl-C in a command's first second or two, while torch loads, printed a
    KeyboardInterrupt traceback of 30 lines; SIGTERM then ended it without a word."""
    import os
    import signal
    proc = _main_while_loading(tmp_path, ["print('loading', file=sys.stderr, flush=True)",
                                          "time.sleep(60)"])
    read_until(proc, "loading")
    os.kill(proc.pid, getattr(signal, signame))
    # past the 60 s "load": a stop CPython let pass unraised is acted on once the load ends
    # (raise_if_stopped; once in a CI run here the SIGINT case outlived a 60 s wait)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143}[signame], err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == {"SIGINT": "interrupted", "SIGTERM": "terminated"}[
        signame] + TOYFACES_STOPPED
    assert not (tmp_path / "toy").exists()


@pytest.mark.slow
def test_a_ctrl_c_that_torch_loading_swallowed_still_stops_the_command(tmp_path):
    """CPython loses a KeyboardInterrupt raised inside a finaliser, or under C code that
    clears errors: 3 of 60 Ctrl-Cs sent in toyfaces' first 3 seconds were forgotten, and it
    drew every face. Here the loading swallows one on purpose."""
    proc = _main_while_loading(tmp_path, ["try:",
                                          "    os.kill(os.getpid(), signal.SIGINT)",
                                          "    time.sleep(5)",
                                          "except KeyboardInterrupt:",
                                          "    pass"])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted" + TOYFACES_STOPPED], err
    assert not (tmp_path / "toy").exists()


def test_out_of_memory_is_one_line_and_other_runtime_errors_keep_their_traceback(
        monkeypatch, capsys):
    import main

    def raiser(error):
        def command(*args, **flags):
            raise error
        return command
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't "
                       "allocate memory: you tried to allocate 20480000000000 bytes. Error "
                       "code 12 (Cannot allocate memory)")
    gpu = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
                                 "total capacity of 79.10 GiB of which 1.2 GiB is free.")
    small = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                         "37748736 bytes. Error code 12 (Cannot allocate memory)")
    for error, needles in ((cpu, ("this machine", "19,073.5 GiB")), (gpu, ("the GPU",
                                                                            "2.00 GiB")),
                           (small, ("asked for 36.0 MiB more",))):  # not "0.0 GiB"
        monkeypatch.setitem(main.COMMANDS, "train", raiser(error))
        assert main.main(["main.py", "train"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: out of memory"), err
        assert all(n in err[0] for n in needles) and "--batch-size" in err[0]
        assert "--nz" in err[0]  # at batch 1, --nz=10000000 asked for 305 GiB of weights
    monkeypatch.setitem(main.COMMANDS, "generate", raiser(cpu))  # its faces kept in memory
    assert main.main(["main.py", "generate"]) == 2
    assert "lower --gen-num (or the seeds, --scale) or --batch-size" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "3")  # under torchrun: said by the process it struck
    monkeypatch.setitem(main.COMMANDS, "train", raiser(gpu))
    assert main.main(["main.py", "train"]) == 2
    assert "(process 3)" in capsys.readouterr().err
    monkeypatch.setitem(main.COMMANDS, "train", raiser(RuntimeError("shapes do not match")))
    with pytest.raises(RuntimeError, match="shapes do not match"):  # not memory: kept as it is
        main.main(["main.py", "train"])


def test_visdom_addresses_that_work_are_taken(toy_dir):
    from config import parse
    from errors import UserError
    for address in ("http://localhost", "http://[::1]", "https://vis.example.org/",
                    "127.0.0.1"):
        assert parse("train", dict(data_path=str(toy_dir), vis_server=address)).vis_server \
            == address
    # an address with its port is refused where visdom is on, and not checked where it is off
    with pytest.raises(UserError, match="--vis-server"):
        parse("train", dict(data_path=str(toy_dir), vis_server="http://localhost:9999"))
    assert parse("train", dict(data_path=str(toy_dir), vis=False,
                               vis_server="http://localhost:9999")).vis_server == \
        "http://localhost:9999"


def test_outputs_inside_the_training_data_are_refused_or_named(tmp_path, toy_dir,
                                                               monkeypatch):
    """A run's grids in its own data folder were read as training images by the next run
    (200 faces became 202); generate's faces there would be too. The folder the error
    suggests instead lies outside the data (run from inside it, it was that same imgs/)."""
    before = sorted(p.relative_to(toy_dir) for p in toy_dir.rglob("*"))
    monkeypatch.chdir(toy_dir / "faces")
    (toy_dir / "faces" / "imgs").mkdir()  # a data folder named imgs, inside the faces
    for data, inside in ((toy_dir, toy_dir / "faces"), (toy_dir, toy_dir), (toy_dir, "grids"),
                         (".", "imgs/"),  # train --data-path=. from the faces
                         ("imgs", "imgs/grids"), ("..", "x")):
        r = cli("train", f"--data-path={data}", "--nogpu", "--vis=False",
                f"--save-path={inside}", f"--checkpoint-dir={tmp_path / 'ck'}")
        assert_clean_error(r, "--save-path", "training images")
        suggested = Path(re.search(r"\(e\.g\. (.+)\)$", r.stderr.strip()).group(1)).resolve()
        assert not suggested.is_relative_to(Path(data).resolve()), r.stderr
    (toy_dir / "faces" / "imgs").rmdir()
    assert sorted(p.relative_to(toy_dir) for p in toy_dir.rglob("*")) == before
    assert not (tmp_path / "ck").exists()
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    inside = tmp_path / "data" / "faces"
    inside.mkdir(parents=True)
    r = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'netg.pth'}", "--seeds=1",
            f"--data-path={tmp_path / 'data'}", f"--gen-img={inside / 'grid.png'}",
            f"--out-dir={tmp_path / 'kept'}")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "1 face for seed 1" in r.stdout
    notes = [line for line in r.stdout.splitlines() if "training images" in line]
    assert len(notes) == 1 and str(inside / "grid.png") in notes[0]  # not the kept faces
    # and --out-dir's faces inside it are named the same way (the grid alone was checked)
    r = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'netg.pth'}", "--seeds=1",
            f"--data-path={tmp_path / 'data'}", f"--gen-img={tmp_path / 'grid.png'}",
            f"--out-dir={inside / 'kept'}")
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stdout.splitlines() if "training images" in line]
    assert len(notes) == 1 and f"note: {inside / 'kept'} lies inside" in notes[0], r.stdout
    # the data folder itself: it said "X lies inside X"
    r = cli("generate", "--nogpu", f"--netg-path={tmp_path / 'netg.pth'}", "--seeds=2",
            f"--data-path={tmp_path / 'data'}", f"--gen-img={tmp_path / 'grid.png'}",
            f"--out-dir={tmp_path / 'data'}")
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stdout.splitlines() if "training images" in line]
    assert notes == [f"note: {tmp_path / 'data'} is the training images' folder (--data-path): "
                     f"train would read these faces as training images; move them out before "
                     f"training there"], r.stdout
    for face in (tmp_path / "data").glob("face_*"):  # as the note asks, before what follows
        face.unlink()
    (tmp_path / "data" / "manifest.csv").unlink()
    # an image that is already there is a training image (or that grid, asked to be moved
    # out): writing over it lost it, and the note came after
    face = inside / "000001.jpg"
    face.write_bytes((toy_dir / "faces" / "000001.jpg").read_bytes())
    for command, flag in (("generate", "--gen-img"), ("interpolate", "--out")):
        for path in (face, inside / "grid.png"):
            before = path.read_bytes()
            r = cli(command, "--nogpu", f"--netg-path={tmp_path / 'netg.pth'}", "--seeds=1,2",
                    f"--data-path={tmp_path / 'data'}", f"{flag}={path}")
            assert_clean_error(r, flag, "already lies among the training images", "outside it")
            assert path.read_bytes() == before


def test_a_no_flag_takes_a_value_too(toy_dir, tmp_path):
    """--nogpu=False was 'unknown option --nogpu' though --nogpu and --nogpu=True worked. False
    takes the flag back: the option's default (--gpu: unset, CUDA where there is one)."""
    from config import parse
    # (--nogpu=1, as --gpu=1, is refused: a device number, or yes?)
    for given, gpu in (("nogpu", True), ("nogpu", "True"), ("nogpu", "False"),
                       ("nogpu", "no"), ("gpu", "False")):
        expected = {"True": False, "False": None, "no": None}[str(gpu)] \
            if given == "nogpu" else False
        assert parse("train", {"data_path": str(toy_dir), given: gpu}).gpu is expected
    assert parse("train", {"data_path": str(toy_dir), "novis": "True"}).vis is False
    for said, vis in (("yes", True), ("no", False), ("true", True), ("0", False)):
        assert parse("train", {"data_path": str(toy_dir), "vis": said}).vis is vis, said
    from errors import UserError
    with pytest.raises(UserError, match="--num-workers must be 0 or more, not -1"):
        parse("train", {"data_path": str(toy_dir), "num_workers": -1})
    assert parse("train", {"data_path": str(toy_dir), "novis": "False"}).vis is True
    # on --resume too, as --gpu=None: the run's saved --nogpu was kept (a resumed run on a
    # machine with CUDA trained on the CPU)
    from conftest import train_small
    train_small(toy_dir, tmp_path, max_epoch=1, gpu=False)
    for given in ({"nogpu": "False"}, {"gpu": None}):
        assert parse("train", {"resume": str(tmp_path / "last.pth"), "max_epoch": 2,
                               **given}).gpu is None, given
    assert parse("train", {"resume": str(tmp_path / "last.pth"), "max_epoch": 2}).gpu is False
    for value in ("maybe", None):  # fire hands --nogpu=None over as None
        assert_clean_error(cli("train", f"--data-path={toy_dir}", f"--nogpu={value}"),
                           "--nogpu")
    assert_clean_error(cli("train", f"--data-path={toy_dir}", "--seed=+-3"), "--seed")
    # the book's --gpu is yes or no; --gpu=0 trained on the CPU for a user after device 0
    for value in ("0", "1"):
        assert_clean_error(cli("generate", "--netg-path=g.pth", f"--gpu={value}"),
                           f"--gpu takes True or False, not a device number ({value}): pass "
                           f"--gpu for CUDA (CUDA_VISIBLE_DEVICES=N picks the device), or "
                           f"--nogpu for the CPU")
        # --nogpu=0 took --nogpu back (CUDA where there is one): not GPU 0, or the CPU?
        assert_clean_error(cli("generate", "--netg-path=g.pth", f"--nogpu={value}"),
                           f"--nogpu takes True or False, not a device number ({value}): "
                           f"pass --gpu for CUDA")


def test_no_dash_flag_is_the_no_flag_and_close_names_are_all_offered(tmp_path):
    """--no-gpu said "unknown option ---gpu; did you mean --gpu?", the very opposite of what
    the user asked; --lr offered --lr2 alone (D's rate), not --lr1 (G's)."""
    import subprocess
    import sys
    from conftest import ROOT
    for flag in ("--no-gpu", "--no_gpu", "--no-gpu=True"):  # read: the data folder speaks
        assert_clean_error(cli("train", "--data-path=nowhere", flag), "'nowhere' does not exist")
    # named as typed: fire is handed --novis, and the line said so
    assert_clean_error(cli("train", "--data-path=nowhere", "--no-vis", "--vis"),
                       "--vis and --no-vis were both given")
    assert_clean_error(cli("train", "--data-path=nowhere", "--no_sn=maybe"),
                       "--no-sn takes True or False, not 'maybe'")
    # a bare --nogpu is handed to fire as --nogpu=True: "two values (True and False)"
    line = assert_clean_error(cli("train", "--data-path=nowhere", "--nogpu", "--nogpu=False"))
    assert line == "error: --nogpu and --nogpu=False were both given: pass one of them"
    assert_clean_error(cli("train", "--data-path=nowhere", "--no-such"),
                       "unknown option --no-such; see --help")
    assert_clean_error(cli("train", "--data-path=nowhere", "--lr=1e-4"),
                       "unknown option --lr; did you mean --lr1 or --lr2?")
    # fire reads --nogpu as gpu=False: toyfaces, which has no such flag, named --gpu alone,
    # the flag the user did not type, and sent them to --help for its three options; then
    # "--gpu/--nogpu" (and --vis=False "--vis/--novis"), a pair toyfaces does not have
    for flag, typed in (("--nogpu", "--nogpu"), ("--no-gpu", "--no-gpu"),
                        ("--gpu=False", "--gpu"), ("--vis=False", "--vis"),
                        ("--novis", "--novis"), ("--vis", "--vis")):
        assert_clean_error(cli("toyfaces", f"--out-dir={tmp_path / 'toy'}", flag),
                           f"unknown option {typed}; the options are --out-dir, --num, "
                           f"--seed")
    # the pair of a flag toyfaces does not have: "both given", before the line that it has none
    assert_clean_error(cli("toyfaces", f"--out-dir={tmp_path / 'toy'}", "--gpu", "--nogpu"),
                       "unknown option --gpu; the options are --out-dir, --num, --seed")
    assert not (tmp_path / "toy").exists()
    # any --no word was read as a negation: --noise as "--ise/--noise; did you mean --vis?"
    for flag in ("--noise", "--nonsense=False"):
        assert_clean_error(cli("train", "--data-path=nowhere", flag),
                           f"unknown option {flag.partition('=')[0]}; ")
    r = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--no-gpu", "--measure=0"],
                       cwd=tmp_path, text=True, capture_output=True)
    assert r.stderr.strip() == "error: --measure must be at least 1, not 0", r.stderr


def test_a_flag_in_capitals_or_cpu_for_the_cpu_is_pointed_to_the_flag_meant(capsys):
    """--cpu was offered --gpu, the very opposite of what the user asked, and --BATCH-SIZE no
    flag at all; bench.py and settings.py said only 'unrecognized arguments'."""
    for typed, meant in (("--cpu", "--nogpu"), ("--CPU", "--nogpu"), ("--cuda", "--gpu"),
                         ("--BATCH-SIZE=3", "--batch-size"), ("--NOVIS", "--novis")):
        assert_clean_error(cli("train", "--data-path=nowhere", typed),
                           f"unknown option {typed.partition('=')[0]}; did you mean {meant}?")
    from errors import OneLineParser
    parser = OneLineParser()
    parser.add_switch("gpu", None, "CUDA")
    parser.add_argument("--measure", type=int)
    for typed, line in (("--cpu", "unknown option --cpu; did you mean --nogpu?"),
                        ("--MEASURE=2", "unknown option --MEASURE; did you mean --measure?"),
                        ("--xyz", "unrecognized arguments: --xyz; see --help"),
                        ("--gpu=0", "argument --gpu: takes True or False, not a device number "
                                    "(0): pass --gpu for CUDA (CUDA_VISIBLE_DEVICES=N picks the "
                                    "device), or --nogpu for the CPU; see --help"),
                        ("--nogpu=0", "argument --nogpu/--no-gpu: takes True or False, not a "
                                      "device number (0): pass --gpu for CUDA "
                                      "(CUDA_VISIBLE_DEVICES=N picks the device), or --nogpu "
                                      "for the CPU; see --help")):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args([typed])
        assert (stop.value.code, capsys.readouterr().err) == (2, f"error: {line}\n")
    assert parser.parse_args(["--nogpu", "--measure=2"]).gpu is False
    # both, as train refuses them: bench.py --gpu --nogpu benchmarked the CPU without a word
    # the negation named as typed: --no-gpu was shown as --nogpu
    for pair, no in ((["--gpu", "--nogpu"], "--nogpu"), (["--no-gpu", "--gpu=true"], "--no-gpu"),
                     (["--gpu=false", "--nogpu"], "--nogpu"), (["--gpu", "--no_gpu"], "--no-gpu")):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(pair)
        assert (stop.value.code, capsys.readouterr().err) == (
            2, f"error: --gpu and {no} were both given: pass one of them\n")


def test_a_number_with_a_comma_after_it_is_shown_with_its_comma(toy_dir):
    """fire reads 16, as the tuple (16,): the line was "--batch-size takes a whole number,
    not '16'", which 16 is."""
    for flag, said in (("--batch-size=16,", "not '16,'"), ("--lr1=2e-4,", "not '0.0002,'")):
        assert_clean_error(cli("train", f"--data-path={toy_dir}", flag), said)


def test_an_image_size_the_networks_do_not_draw_is_refused_by_every_command(tmp_path):
    """generate, interpolate and explore took --image-size=64 and drew 96x96 faces without a
    word (train and evaluate refused it)."""
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    g = f"--netg-path={tmp_path / 'netg.pth'}"
    for command, out in (("generate", f"--gen-img={tmp_path / 'a.png'}"),
                         ("interpolate", f"--out={tmp_path / 'a.png'}"), ("explore", "")):
        assert_clean_error(cli(command, "--nogpu", g, "--image-size=64", *filter(None, [out])),
                           "--image-size must be 96", "not 64")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netg.pth"]


def test_a_misspelt_flag_is_offered_the_commands_own_flags_only():
    """The closest of every command's flags was offered, and the command then refused it:
    train --output-dir was offered generate's --out-dir, explore --server-port train's
    --vis-port; torch's --device=cpu was offered --d-every."""
    for args, line in ((("train", "--output-dir=ck"), "unknown option --output-dir; see --help"),
                       (("explore", "--server-port=80"),
                        "unknown option --server-port; see --help"),
                       (("interpolate", "--frames=9"), "unknown option --frames; see --help"),
                       (("generate", "--output=a.png"), "unknown option --output; see --help"),
                       (("train", "--device=cpu"),
                        "unknown option --device; did you mean --gpu or --nogpu?")):
        assert_clean_error(cli(*args), line)


def test_a_weights_file_named_with_a_slash_after_it_is_named_as_such(tmp_path, toy_dir):
    """netg_4.pth/ was "cannot write or read netg_4.pth/: Not a directory; check the path,
    its permissions and the free space", after the flags had passed, and named no flag."""
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    torch.save(NetD(8).state_dict(), tmp_path / "netd.pth")
    g, d = tmp_path / "netg.pth", tmp_path / "netd.pth"
    for args, flag in ((("generate", f"--netg-path={g}/"), "--netg-path"),
                       (("generate", f"--netg-path={g}", f"--netd-path={d}/"), "--netd-path"),
                       (("train", f"--data-path={toy_dir}", f"--resume={g}/"), "--resume")):
        assert_clean_error(cli(args[0], "--nogpu", *args[1:],
                               f"--gen-img={tmp_path / 'a.png'}" if args[0] == "generate"
                               else f"--checkpoint-dir={tmp_path / 'ck'}"),
                           f"{flag}: '{tmp_path}/net", "is a file, not a folder",
                           "without the '/'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["netd.pth", "netg.pth"]


def test_a_whole_number_with_leading_zeros_is_a_whole_number(toy_dir):
    from config import parse
    assert parse("train", {"data_path": str(toy_dir), "d_low": "0012"}).d_low == 12


def test_a_number_with_leading_zeros_is_a_number_for_the_decimal_options_too(toy_dir):
    """--max-minutes=05 (a budget padded as a script pads it) was refused, "takes a number,
    not '05'", where --max-epoch=05 was taken: fire leaves both as text."""
    from config import parse
    assert parse("train", {"data_path": str(toy_dir), "max_minutes": "05"}).max_minutes == 5


def test_folder_and_env_names_that_read_as_numbers_stay_as_typed(tmp_path, toy_dir):
    """fire reads every value as a Python literal: --checkpoint-dir=2e-4 (a folder named
    after its learning rate) trained into 0.0002, --data-path=007 read the folder 7,
    --env=1.10 plotted into env 1.1."""
    assert_clean_error(cli("train", "--data-path=1e3", "--nogpu"), "'1e3' does not exist")
    assert_clean_error(cli("train", "--data-path", "007", "--nogpu"), "'007' does not exist")
    from config import keep_text, parse
    import ast
    given = (a[2:].split("=", 1) for a in keep_text(
        ["--checkpoint-dir=2e-4", "--env", "1.10", "--data-path=" + str(toy_dir)]))
    opt = parse("train", {k.replace("-", "_"): ast.literal_eval(v) for k, v in given})
    assert (opt.checkpoint_dir, opt.env) == ("2e-4", "1.10")
    r = cli("train", f"--data-path={toy_dir}", "--nogpu", "--resume", "--checkpoint-dir=2e-4")
    assert_clean_error(r, "no 2e-4/last.pth")


def test_the_training_data_note_names_only_what_train_would_read(tmp_path):
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    data = tmp_path / "data"
    data.mkdir()
    r = cli("interpolate", "--nogpu", f"--netg-path={tmp_path / 'netg.pth'}", "--seeds=1,2",
            "--steps=2", f"--data-path={data}", f"--out={data / 'row.png'}",
            f"--gif={data / 'loop.gif'}")
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stdout.splitlines() if "training images" in line]
    assert len(notes) == 1 and "row.png" in notes[0]  # train leaves .gif files alone


def test_a_symlink_loop_or_an_overlong_name_is_one_line_in_every_command(tmp_path, toy_dir):
    """Each was a traceback (RuntimeError: Symlink loop, OSError: File name too long)."""
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    long = tmp_path / ("a" * 300 + ".pth")
    train = ("train", "--nogpu", "--vis=False")
    for args, culprit in [
            ((*train, f"--data-path={loop}"), loop),
            ((*train, f"--data-path={toy_dir}", f"--checkpoint-dir={loop}"), loop),
            (("train", f"--resume={loop}"), loop),
            (("toyfaces", f"--out-dir={loop}", "--num=2"), loop),
            (("generate", "--nogpu", "--vis=False", f"--netg-path={long}", "--netd-path=x"),
             long)]:
        line = assert_clean_error(cli(*args), str(culprit))
        assert ("is a loop of symbolic links" if culprit == loop else "too long") in line
    assert [p.name for p in tmp_path.iterdir()] == ["loop"]  # nothing written


def test_a_link_to_a_disk_that_is_not_mounted_is_named(tmp_path, toy_dir, capsys):
    """The README suggests data/faces as a link to another disk; with that disk gone the
    answers were "put the faces in data/faces/" (they are there), "put the images in
    data/faces/faces/" and, for an output folder, "File exists"."""
    import shutil
    from data import list_images
    data = tmp_path / "data"
    data.mkdir()
    (data / "faces").symlink_to(tmp_path / "unmounted")
    gone = f"{data / 'faces'} is a link to {tmp_path / 'unmounted'}, which does not exist"
    train = ("train", "--nogpu", "--vis=False")
    own = _own_outputs(tmp_path)
    assert gone in assert_clean_error(cli(*train, f"--data-path={data}", *own),
                                      f"no images in {data}")
    line = assert_clean_error(cli(*train, f"--data-path={data / 'faces'}", *own), "is not there")
    assert f"{str(data / 'faces')!r} is a link to {tmp_path / 'unmounted'}, which does not " \
           f"exist" in line and "faces/faces" not in line
    (tmp_path / "out").symlink_to(tmp_path / "unmounted")
    for flag in ("--checkpoint-dir", "--save-path"):
        other = own[1] if flag == "--checkpoint-dir" else own[0]
        line = assert_clean_error(cli(*train, f"--data-path={toy_dir}", other,
                                      f"{flag}={tmp_path / 'out' / 'run'}"), flag)
        assert f"{str(tmp_path / 'out')!r} is a link to {tmp_path / 'unmounted'}, which does " \
               f"not exist" in line
    # beside readable images, the missing ones are named: the run would train on part
    shutil.copytree(toy_dir / "faces", data / "toy")
    capsys.readouterr()
    assert len(list_images(data)) == 64
    assert f"note: {gone}: what it held is not used" in capsys.readouterr().out
    # a link that leads back to itself is a loop, not a path that "does not exist"
    (data / "faces").unlink()
    (data / "faces").symlink_to("faces")
    assert len(list_images(data)) == 64
    assert f"note: {data / 'faces'} is a loop of symbolic links: what it held is not used" \
        in capsys.readouterr().out


def test_seeds_written_in_exponent_form_are_taken_as_seed_takes_them(tmp_path):
    """--seed=1e3 was taken and --seeds=1e3 refused, quoting '1000.0': first in a list too,
    then alone."""
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    g = f"--netg-path={tmp_path / 'netg.pth'}"
    for seeds, name in (("1e3,5", "e.png"), ("1000,5", "plain.png"), ("1e3", "e1.png"),
                        ("1000", "plain1.png")):
        r = cli("generate", "--nogpu", g, f"--seeds={seeds}", f"--gen-img={tmp_path / name}")
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "e.png").read_bytes() == (tmp_path / "plain.png").read_bytes()
    assert (tmp_path / "e1.png").read_bytes() == (tmp_path / "plain1.png").read_bytes()
    assert_clean_error(cli("generate", "--nogpu", g, "--seeds=1.5"), "--seeds", "not '1.5'")
    assert_clean_error(cli("generate", "--nogpu", g, "--seeds="), "--seeds= names no seed")
    for typed in ("1,,2", ",17"):  # 1,,2 drew the faces of 1 and 2: a seed left out?
        assert_clean_error(cli("generate", "--nogpu", g, f"--seeds={typed}"),
                           f"--seeds={typed} has an empty place in its list")
    assert_clean_error(cli("generate", "--nogpu", g, "--seeds=7,-1"), "--seeds", "not -1")


def test_make_clean_removes_the_demos_and_keeps_your_runs(tmp_path):
    """It removed checkpoints/*.pth: train's default folder, where a night of training (or
    the book's netg_199.pth) lives."""
    import shutil
    import subprocess
    from conftest import ROOT
    shutil.copy(ROOT / "Makefile", tmp_path)
    yours = ["checkpoints/netg_199.pth", "checkpoints/last.pth", "checkpoints/options.json",
             "imgs/199.png", "imgs/losses.csv",
             # the book's data folder's decoded cache, and the toy set (seconds to draw)
             ".data.faces96-0123456789abcdef.npy", "data-toy/attributes.csv"]
    # the toy set's decoded cache too: 276 MB, hidden, that make clean left; and the one a
    # run given its faces folder (--data-path=data-toy/faces) builds inside data-toy/
    demos = ["result.png", "result-long.png", "checkpoints/demo/last.pth", "imgs/demo/4.png",
             "checkpoints/demo-long/last.pth", "imgs/demo-long/15.png",
             ".data-toy.faces96-fce38176d7f62056.npy", ".data-toy.faces96-fce38176d7f62056.json",
             "data-toy/.faces.faces96-0123456789abcdef.npy"]
    for name in yours + demos:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    r = subprocess.run(["make", "clean"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert [n for n in yours if not (tmp_path / n).exists()] == []
    assert [n for n in demos if (tmp_path / n).exists()] == []


def _makefile_with_a_venv_python(folder, script, *made):
    """The Makefile in ``folder`` with its venv in place (make installs nothing) and the
    files ``made`` newer than it; the venv's Python a new file, the sh ``script``."""
    import shutil
    import time
    shutil.copy(ROOT / "Makefile", folder)
    for name in ["requirements.txt", "requirements-dev.txt", ".venv/.installed-stamp", *made]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("")
        time.sleep(0.05)  # each newer than the one before
    python = folder / ".venv" / "bin" / "python"
    python.parent.mkdir()
    python.write_text(f"#!/bin/sh\n{script}\n")
    python.chmod(0o755)


def _makefile_with_a_recording_python(folder, *made, record='$@'):
    """The Makefile in ``folder`` as above, its venv's Python recording in ``folder/asked``
    what make asks of it (``record``: a line of sh words; its arguments by default)."""
    _makefile_with_a_venv_python(folder, f'echo "{record}" >> {folder / "asked"}', *made)


def test_make_demo_long_visdom_and_test_fast_run_what_the_readme_says(tmp_path):
    """make demo-long writing result.png (the demo's) over the other, make visdom
    VISDOM_PORT=8098 serving on 8097 (the line visdom's warning suggests), and make test-fast
    running the slow tests too all passed."""
    import subprocess
    _makefile_with_a_recording_python(
        tmp_path, "data-toy/attributes.csv", "requirements-eval.txt", "requirements-app.txt",
        "scripts/visdom-assets.sh", ".venv/.eval-stamp", ".venv/.app-stamp",
        ".venv/.visdom-assets-stamp")
    asked = tmp_path / "asked"

    def run(*target):
        asked.unlink(missing_ok=True)
        r = subprocess.run(["make", *target], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return asked.read_text().splitlines()

    demo, _ = run("demo")
    train, generate = run("demo-long")
    readme = (ROOT / "README.md").read_text()
    spelt = re.search(r"given 16 epochs: `([^`]+)` at batch 16", readme.replace("\n", " "))[1]
    long = {"--diffaug=translation", "--d-low=12", "--d-every=2", "--max-epoch=16",
            "--checkpoint-dir=checkpoints/demo-long", "--save-path=imgs/demo-long"}
    assert set(spelt.split()) <= set(train.split()), (spelt, train)
    assert set(train.split()) == {flag for flag in demo.split() if not flag.startswith(
        ("--diffaug", "--sle", "--d-low", "--max-epoch", "--max-minutes", "--checkpoint-dir",
         "--save-path"))} | long, train
    assert {"--sle", "--sle-gates=3", "--d-low=12"} <= set(demo.split()), demo
    assert "--sle" not in train, train
    assert generate.split() == ["main.py", "generate", "--nogpu", "--seed=0",
                                "--netg-path=checkpoints/demo-long/last.pth",
                                "--gen-img=result-long.png"]
    assert run("visdom", "VISDOM_PORT=8098") == ["visualize.py serve --port 8098"]
    fast, = run("test-fast")
    assert fast.startswith("-m pytest ") and " -m not slow " in fast and \
        " -n 2 --dist loadfile " in fast, fast


def test_make_demo_keeps_the_toy_set_out_of_the_books_data_folder(tmp_path):
    """make demo drew the toy set in data/toy, where the book's `train --gpu` (default
    --data-path=data/) trained on its 10,000 faces along with the user's data/faces. It now
    goes to data-toy/, and a clone that has one in data/toy gets it moved, not drawn again."""
    import subprocess
    _makefile_with_a_recording_python(tmp_path)
    target = ["make", "data-toy/attributes.csv"]

    r = subprocess.run(target, cwd=tmp_path, capture_output=True, text=True)  # a fresh clone
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "asked").read_text() == (
        "main.py toyfaces --out-dir=data-toy --num=10000 --seed=0\n")
    assert not (tmp_path / "data").exists()

    (tmp_path / "asked").unlink()
    old = tmp_path / "data" / "toy"
    (old / "faces").mkdir(parents=True)
    (old / "faces" / "000000.jpg").write_bytes(b"jpg")
    (old / "attributes.csv").write_text("file,hair\n")
    (tmp_path / "data" / ".toy.faces96-0123456789abcdef.npy").write_bytes(b"cache")
    (tmp_path / "data" / "faces").mkdir()  # the user's own faces stay
    (tmp_path / "data" / "faces" / "mine.jpg").write_bytes(b"mine")
    r = subprocess.run(target, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "moved the toy set from data/toy to data-toy" in r.stdout
    assert not (tmp_path / "asked").exists()  # nothing drawn again
    assert (tmp_path / "data-toy" / "faces" / "000000.jpg").read_bytes() == b"jpg"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["faces"]
    assert (tmp_path / "data" / "faces" / "mine.jpg").read_bytes() == b"mine"
    r = subprocess.run(target, cwd=tmp_path, capture_output=True, text=True)  # then: done
    assert r.returncode == 0 and "is up to date" in r.stdout, r.stdout + r.stderr

    (old / "faces").mkdir(parents=True)  # drawn again there, beside data-toy: not moved,
    (old / "attributes.csv").write_text("file,hair\n")  # and each demo says to remove it
    r = subprocess.run(["make", "demo"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "note: data/toy holds an older toy set" in r.stdout and "rm -r data/toy" in r.stdout
    train, generate = (tmp_path / "asked").read_text().splitlines()
    assert train.startswith("main.py train --data-path=data-toy ") and generate.startswith(
        "main.py generate "), (train, generate)


def _makefile_without_a_venv(folder):
    """The Makefile and its venv script in ``folder``, with requirements that install
    nothing, and no venv yet."""
    import shutil
    for name in ["Makefile", "scripts/make-venv.sh"]:
        (folder / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, folder / name)
    for name in ["requirements.txt", "requirements-dev.txt"]:
        (folder / name).write_text("")


def _make_venv(folder, *variables, path=None):
    """`make venv VARIABLES` in ``folder`` (``path``: its PATH), its stderr without make's own
    line where the recipe stopped ("make[1]: ***" under make test's make)."""
    import os
    import subprocess
    env = dict(os.environ, PATH=path) if path else None
    r = subprocess.run(["make", "venv", *variables], cwd=folder, capture_output=True,
                       text=True, env=env)
    r.stderr = "".join(line for line in r.stderr.splitlines(True)
                       if not re.match(r"make(\[\d+\])?: \*\*\* ", line))
    return r


def _again():
    """What make-venv.sh's lines say to run again with: PY=python3.11 where the PATH has one
    (these tests' make has this PATH), else the path of one."""
    import shutil
    return "run your make again with PY=" + (
        "python3.11" if shutil.which("python3.11") else " the path of a Python 3.11")


def test_make_makes_its_venv_again_after_a_python_without_ensurepip(tmp_path):
    """Debian's and Ubuntu's python3 without their python3.X-venv package makes the venv's
    Python and then stops, ensurepip missing. After `apt install python3.11-venv` the next
    make skipped the venv (its Python was there) and stopped at `.venv/bin/pip: not found`;
    the first said nothing of what to do without root."""
    import sys
    _makefile_without_a_venv(tmp_path)
    asked, package = tmp_path / "asked", tmp_path / "python3.11-venv"
    # the venv's Python: pip once ensurepip ran, and ensurepip once the package is in
    (tmp_path / "venv-python").write_text(f"""#!/bin/sh
echo "$@" >> {asked}
case "$1 $2" in
"-m pip") [ "$3" = install ] || [ -f {tmp_path}/pip-in ] ;;
"-m ensurepip") [ -f {package} ] && touch {tmp_path}/pip-in ||
    {{ echo "looking for pip's wheel" >&2; echo "/usr/bin/python3: No module named ensurepip" >&2
       exit 1; }} ;;
*) exec {sys.executable} "$@" ;;
esac
""")
    debian = tmp_path / "my py" / "python3"  # its venv stops halfway, in several lines
    debian.parent.mkdir()
    debian.write_text(f"""#!/bin/sh
[ "$1" = -I ] && exec {sys.executable} "$@"
[ "$1 $2" = "-m venv" ] || exit 3
eval "dir=\\${{$#}}"
mkdir -p "$dir/bin" && cp {tmp_path}/venv-python "$dir/bin/python" && chmod +x "$dir/bin/python"
[ "$3" = --without-pip ] && exit 0
echo "The virtual environment was not created successfully because ensurepip is not"
echo "available.  On Debian/Ubuntu systems, you need to install the python3-venv"
exit 1
""")
    debian.chmod(0o755)

    def make(python):
        return _make_venv(tmp_path, f"PY={python}")

    assert_clean_error(make("python3.99"), "no python3.99 on this machine",
                       _again())
    assert_clean_error(make(""), "PY names no Python")
    other = tmp_path / "python3.12"  # another version: pip would spend minutes on torch
    other.write_text("#!/bin/sh\necho 3.12\n")
    other.chmod(0o755)
    assert_clean_error(make(other), "is Python 3.12, and the project needs Python 3.11",
                       _again())
    assert not (tmp_path / ".venv").exists()
    line = assert_clean_error(make(debian), "sudo apt install python3.11-venv",
                              "without root", "No module named ensurepip")
    assert "looking for" not in line  # ensurepip's last line says why, not its first
    assert not (tmp_path / ".venv" / ".installed-stamp").exists(), line

    package.touch()  # the package in: the same venv gets its pip, and the installs follow
    asked.unlink()
    r = make(debian)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = asked.read_text().splitlines()
    assert [line for line in lines if line.startswith("-m ensurepip")] == [
        "-m ensurepip --upgrade --default-pip"], lines
    # visdom and torchnet build with a setuptools that still has pkg_resources (81 has not)
    assert lines[-2:] == ["-m pip install -q setuptools<81 wheel", "-m pip install -q "
                          "--no-build-isolation setuptools<81 -r requirements.txt -r "
                          "requirements-dev.txt"], lines
    assert (tmp_path / ".venv" / ".installed-stamp").exists()


def test_make_takes_python3_11_where_python3_is_another_version(tmp_path):
    """Where python3 was another version, make stopped and asked for PY=python3.11 even with
    a python3.11 on the PATH; and where there was none, it asked for PY=python3.11 all the
    same, which stopped at "no python3.11 on this machine" and asked for it again."""
    import shutil
    import sys
    _makefile_without_a_venv(tmp_path)
    tools = tmp_path / "tools"  # the PATH's programs, no Python among them
    tools.mkdir()
    for name in ["make", "bash", "sh", "sed", "grep", "tail", "readlink", "touch"]:
        (tools / name).symlink_to(shutil.which(name))
    python3 = tools / "python3"
    python3.write_text("#!/bin/sh\necho 3.12\n")
    python3.chmod(0o755)
    path = str(tools)
    line = assert_clean_error(_make_venv(tmp_path, path=path),
                              "python3 is Python 3.12, and the project needs Python 3.11")
    assert line.endswith(": run your make again with PY= the path of a Python 3.11 (make demo "
                         "PY=/usr/local/bin/python3.11, say)"), line
    line = assert_clean_error(_make_venv(tmp_path, "PY=python3.11", path=path),
                              "no python3.11 on this machine: install Python 3.11, or run "
                              "your make again with PY= the path of a Python 3.11")
    assert "PY=python3.11" not in line, line
    # one on the PATH: the venv is made with it (its Python records what it is asked)
    asked = tmp_path / "asked"
    py311 = tmp_path / "bin" / "python3.11"
    py311.parent.mkdir()
    py311.write_text(f"""#!/bin/sh
[ "$1" = -I ] && exec {sys.executable} "$@"
[ "$1 $2" = "-m venv" ] || exit 3
eval "dir=\\${{$#}}"
mkdir -p "$dir/bin" && printf '#!/bin/sh\\necho "$*" >> {asked}\\n' > "$dir/bin/python" &&
    chmod +x "$dir/bin/python"
""")
    py311.chmod(0o755)
    (tools / "mkdir").symlink_to(shutil.which("mkdir"))
    (tools / "chmod").symlink_to(shutil.which("chmod"))
    r = _make_venv(tmp_path, path=f"{py311.parent}:{tools}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "note: python3 is not Python 3.11 here: making .venv with python3.11\n" in r.stdout
    assert asked.read_text().splitlines()[0] == "-m ensurepip --upgrade --default-pip"
    assert (tmp_path / ".venv" / ".installed-stamp").exists()


def test_the_torch_pins_are_written_in_requirements_txt_alone():
    """torch's version was written in requirements.txt, in make-venv.sh's comment and in the
    README's install paragraph: a new pin left the others naming the old one."""
    pins = re.findall(r"^torch(?:vision)?==(\S+)$", (ROOT / "requirements.txt").read_text(),
                      re.M)
    assert len(pins) == 2, pins
    readme = (ROOT / "README.md").read_text()
    install = readme[readme.index("These need Python"):].split("\n\n")[0]
    for text in [install, (ROOT / "scripts" / "make-venv.sh").read_text(),
                 (ROOT / "Makefile").read_text()]:
        assert not [pin for pin in pins if pin in text], text


def test_make_refuses_a_venv_it_cannot_use_in_one_line(tmp_path):
    """A venv of another Python version was kept by the next make (it had its pip), which
    installed into it; one whose Python was removed (pyenv, Homebrew) got a line naming an
    apt package `python-venv`; a file named .venv got venv's own words."""
    _makefile_without_a_venv(tmp_path)

    def make(*python):
        return _make_venv(tmp_path, *python)

    # its venv cannot write there: venv's last line says so; and PYTHONWARNINGS's complaint
    # on stderr is not read as its version
    python3 = tmp_path / "python3"
    python3.write_text("#!/bin/sh\nif [ \"$1\" = -I ]; then echo Invalid -W option >&2\n"
                       "echo 3.11; exit 0; fi\necho Traceback:\n"
                       "echo \"Error: [Errno 13] Permission denied: '.venv'\"\nexit 1\n")
    python3.chmod(0o755)
    assert_clean_error(make(f"PY={python3}"), "could not make the venv .venv",
                       "Permission denied")
    venv = tmp_path / ".venv"
    venv.symlink_to(tmp_path / "unmounted" / "venv")  # a venv kept on a disk not there now
    assert_clean_error(make(), f".venv links to {tmp_path}/unmounted/venv, which is not there")
    venv.unlink()
    venv.write_text("notes")
    assert_clean_error(make(), ".venv is a file, where the venv goes")
    assert venv.read_text() == "notes"
    venv.unlink()
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text("#!/bin/sh\n[ \"$1\" = -I ] && echo 3.12\nexit 0\n")  # with its pip
    python.chmod(0o755)
    assert_clean_error(make(), ".venv holds Python 3.12", "rm -r .venv",
                       _again())
    python.write_text("#!/bin/sh\necho 'Fatal Python error: init_fs_encoding' >&2\n"
                      "echo 'Python runtime state: core initialized' >&2\nexit 1\n")
    assert_clean_error(make(), "the venv's Python (.venv/bin/python) does not run (Fatal "
                       "Python error: init_fs_encoding)", "rm -r .venv")
    python.unlink()  # as venv lays it out: python -> python3.11 -> the Python it was made from
    (venv / "bin" / "python3.11").symlink_to(tmp_path / "removed" / "bin" / "python3.11")
    python.symlink_to("python3.11")
    (venv / "pyvenv.cfg").write_text(f"home = {tmp_path / 'removed' / 'bin'}\n")
    assert_clean_error(make(), "the venv's Python is gone (it was made from the one in "
                       f"{tmp_path / 'removed' / 'bin'}, which is no more)", "rm -r .venv")
    assert not (venv / ".installed-stamp").exists()


def test_make_help_lists_every_target_a_user_runs():
    """`make help` was "No rule to make target 'help'": the list was a comment in the
    Makefile only."""
    import re
    import subprocess
    from conftest import ROOT
    r = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    listed = set(re.findall(r"^make ([\w-]+)", r.stdout, re.M))
    assert listed == {"demo", "demo-long", "test", "test-fast", "eval", "app", "visdom",
                      "visdom-assets", "venv", "clean", "help"}, r.stdout
    assert "#" not in r.stdout and "PY ?=" not in r.stdout  # the comment alone, as words
    plain = subprocess.run(["make", "-n"], cwd=ROOT, capture_output=True, text=True)
    assert "awk" not in plain.stdout  # a bare make builds the venv, as before help came first


@pytest.mark.slow
def test_the_commands_start_without_importing_torchvision():
    """Importing torchvision loads torch's compiler too: generate and evaluate took about
    2.5 s longer to start on our 2-core Intel Xeon (5.6-5.9 s against 2.9-3.4 s for their
    modules). The article's transform and grid are our own few lines, so no command needs it
    (bench.py still runs the article's pipeline with it)."""
    import subprocess
    import sys
    from conftest import ROOT
    modules = ["main", "train", "generate", "evaluate", "explore", "data", "checkpoint",
               "metrics", "visualize", "toyfaces", "steps", "augment", "distributed", "config",
               "model", "ema", "curves"]
    probe = f"import sys; import {', '.join(modules)}; print('torchvision' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_printed_path_with_bytes_that_are_not_utf8_pastes_back_to_that_file():
    """A checkpoint folder named with bytes that are not UTF-8: the resume command printed
    'runs/r\\udcfe x/last.pth', which named no file when pasted."""
    import os
    import subprocess
    from errors import quoted
    for name in (b"runs/r\xfe x/last.pth", b"it's \xff\\.pth", b"plain name.pth"):
        # as the terminal shows it (the lines are written with backslashreplace) and a user
        # pastes it
        shown = quoted(os.fsdecode(name)).encode("utf-8", "backslashreplace").decode()
        back = subprocess.run(["bash", "-c", f"printf %s {shown}"], capture_output=True)
        assert back.stdout == name, shown


def test_make_demo_resume_trains_the_stopped_demo_on_and_draws_its_result_again(tmp_path):
    """A demo stopped by Ctrl-C or its 10 minutes said to continue with train --resume, which
    left result.png as it was (or none), and make demo again started afresh. RESUME=1 trains
    the demo's own last.pth on and draws the result again; each demo tells train the make
    command to name in its lines."""
    import subprocess
    _makefile_with_a_recording_python(tmp_path, "data-toy/attributes.csv",
                                      record="$ANIMEGAN_CONTINUE|$@")
    for target, folder, result in (("demo", "checkpoints/demo", "result.png"),
                                   ("demo-long", "checkpoints/demo-long", "result-long.png")):
        for given in ([], ["RESUME=1"]):
            (tmp_path / "asked").unlink(missing_ok=True)
            r = subprocess.run(["make", target, *given], cwd=tmp_path, capture_output=True,
                               text=True)
            assert r.returncode == 0, r.stderr
            train, generate = (tmp_path / "asked").read_text().splitlines()
            assert train.startswith(f"make {target} RESUME=1|main.py train "), train
            assert generate.split("|")[1].split() == [
                "main.py", "generate", "--nogpu", "--seed=0", f"--netg-path={folder}/last.pth",
                f"--gen-img={result}"]
            if given:
                assert train.split("|")[1] == f"main.py train --resume={folder}/last.pth"
            else:
                assert "--fresh" in train.split() and "--resume" not in train


def test_make_demo_trains_as_the_readme_says_and_draws_from_where_it_stopped(tmp_path):
    """The demo's flags are its promise (10 minutes at most, started afresh over a demo
    stopped halfway): dropping --max-minutes=10 or --fresh from the Makefile passed. They
    are held to the README's "like the demo" command and the extras it names."""
    import subprocess
    _makefile_with_a_recording_python(tmp_path, "data-toy/attributes.csv")
    r = subprocess.run(["make", "demo"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    train, generate = (tmp_path / "asked").read_text().splitlines()
    readme = (ROOT / "README.md").read_text().replace("\\\n    ", "")
    typed = re.search(r"main\.py (train --data-path=data-toy [^#\n]*?)\s+# like the demo",
                      readme)[1].split()
    folders = {"--checkpoint-dir=checkpoints/demo", "--save-path=imgs/demo"}
    assert set(train.split()[1:]) == ({flag for flag in typed if not flag.startswith(
        ("--checkpoint-dir", "--save-path"))} | folders
        | {"--seed=0", "--amp=False", "--vis=False", "--fresh"}), train
    assert "--max-minutes=10" in typed and "--fresh" in train.split()
    assert generate.split() == ["main.py", "generate", "--nogpu", "--seed=0",
                                "--netg-path=checkpoints/demo/last.pth", "--gen-img=result.png"]


@pytest.mark.parametrize("slow_workers", [False, True], ids=["idle", "busy"])
def test_too_few_open_files_for_the_workers_says_which_limit_and_what_to_do(tmp_path,
                                                                            toy_dir,
                                                                            slow_workers):
    """A shared machine's low limit on open files (ulimit -n 16): the DataLoader's workers
    could not start and the run ended in a traceback of os.pipe(), naming no limit. On a busy
    machine, where the worker that did start was still starting, the run then hung after its
    error line for ever."""
    import resource

    def few_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
    result = _train_limited(toy_dir, tmp_path, few_files, workers=2,
                            slow_workers=slow_workers)
    assert_clean_error(result, "too many open files", "open 16 (ulimit -n)",
                       "raise it (ulimit -n 1024)")


def test_too_little_address_space_to_load_torch_is_one_line(tmp_path):
    """A shared machine's address-space limit (ulimit -v 1000000): torch's libraries could
    not be mapped, and every command ended in an ImportError traceback."""
    import resource
    import subprocess
    import sys

    def one_gb():
        resource.setrlimit(resource.RLIMIT_AS, (10**9, 10**9))
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "generate", "--nogpu",
         f"--gen-img={tmp_path / 'faces.png'}"],
        capture_output=True, text=True, timeout=300, preexec_fn=one_gb)
    assert_clean_error(result, "this shell lets a program use 1.0 GB of memory (ulimit -v), "
                       "too little to load torch: raise that limit")


def test_a_memory_error_while_torch_loads_under_a_limit_is_one_line(tmp_path):
    """ulimit -v 3200000: torch's libraries were mapped, then Python's own MemoryError came
    while it read one of torch's modules, in a traceback of 20 lines. Here a package that
    main.py loads (fire, put first on the path) meets it, under a limit far from reached."""
    import resource
    import subprocess
    import sys
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "fire.py").write_text("raise MemoryError\n")

    # under a limit far above torch's need the machine ran out, not the limit: it said
    # "1,000.0 GB ... too little to load torch"
    for size, said in ((7 * 10**9, "this shell lets a program use 7.0 GB of memory (ulimit -v), "
                                   "too little to load torch: raise that limit"),
                       (10**12, "out of memory on this machine while loading torch: free some "
                                "memory")):
        result = subprocess.run(
            [sys.executable, str(ROOT / "main.py"), "generate", "--nogpu",
             f"--gen-img={tmp_path / 'faces.png'}"],
            capture_output=True, text=True, timeout=300,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (size, size)),
            env=dict(os.environ, PYTHONPATH=str(tmp_path / "lib")))
        assert_clean_error(result, said)


def test_torch_out_of_memory_under_an_address_space_limit_names_it(tmp_path, toy_dir,
                                                                    monkeypatch):
    """evaluate under ulimit -v 3.3 GB: torch's CPU allocator refused its SWD pass, and the
    line said "out of memory on this machine" with no word of the shell's limit, the one
    thing to raise (Python's own MemoryError named it)."""
    import resource
    import evaluate
    import generate

    def refused(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                           "9437184 bytes. Error code 12 (Cannot allocate memory)")
    real = resource.getrlimit
    limit = generate._mapped() + 2**31  # a limit that leaves evaluate's check 2 GiB
    monkeypatch.setattr(evaluate, "swd", refused)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (limit, limit)
                        if which == resource.RLIMIT_AS else real(which))
    torch.save(NetG(100, 8).state_dict(), tmp_path / "netg.pth")
    result = cli("evaluate", "--nogpu", f"--netg-path={tmp_path / 'netg.pth'}",
                 f"--data-path={toy_dir}", "--num=4", "--metrics=swd",
                 f"--out={tmp_path / 'm.json'}")
    line = assert_clean_error(result, "out of memory on this machine", "(ulimit -v)",
                              "raise that limit")
    assert "9.0 MiB" in line
