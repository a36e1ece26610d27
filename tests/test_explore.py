"""explore: the faces page, opened in headless Chromium as a user opens it."""
import csv
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import (ROOT, assert_clean_error, cli, drawing_nets, free_port, listening_addresses,
                      run_cli)


def _pixels(source):
    """An image's pixels, from a file or the bytes of an http URL."""
    if str(source).startswith("http"):
        with urllib.request.urlopen(source, timeout=30) as r:
            source = io.BytesIO(r.read())
    return np.asarray(Image.open(source).convert("RGB"))


def _generated(tmp_path, name, *flags):
    """``generate`` as a user runs it, with --out-dir: {seed: (pixels, D score)}."""
    out = tmp_path / name
    r = cli("generate", "--nogpu", *flags, f"--out-dir={out}",
            f"--gen-img={tmp_path / (name + '.png')}")
    assert r.returncode == 0, r.stderr
    with open(out / "manifest.csv") as f:
        return {int(row["seed"]): (_pixels(out / row["file"]), row["d_score"])
                for row in csv.DictReader(f)}


def _checkpoints(folder):
    """A checkpoint folder as a training leaves it (netg_0, netg_ema_1, netd_1), the newest
    being netg_ema_1.pth."""
    folder.mkdir()
    netg, netd = drawing_nets()
    torch.save(netg.state_dict(), folder / "netg_ema_1.pth")
    torch.save(netd.state_dict(), folder / "netd_1.pth")
    other, _ = drawing_nets()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1)  # other faces: the folder's older G, never to be drawn
    torch.save(other.state_dict(), folder / "netg_0.pth")
    return folder


@pytest.fixture
def nets(tmp_path):
    return _checkpoints(tmp_path / "ckpt")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The explore page of a checkpoint folder, served on a free loopback port, and a headless
    Chromium: (folder, port, browser). One server for the page's tests (it takes about 9 s
    to start); each test that changes the folder puts it back. The server is stopped at the
    end."""
    from playwright.sync_api import sync_playwright
    import browser
    chromium = browser.find()
    assert chromium, browser.HOW
    base = tmp_path_factory.mktemp("explore")
    folder = _checkpoints(base / "ckpt")
    port = free_port()
    log = open(base / "server.log", "w")  # a file: a pipe nobody reads could fill up
    server = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "explore", "--nogpu",
                               f"--netg-path={folder}", f"--netd-path={folder / 'netd_1.pth'}",
                               f"--port={port}", "--steps=5"],
                              stdout=log, stderr=subprocess.STDOUT,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.2)
        assert server.poll() is None, (base / "server.log").read_text()
        with sync_playwright() as p:
            chrome = p.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync"])
            yield folder, port, chrome
            chrome.close()
    finally:
        server.terminate()  # SIGTERM: the page ends as on Ctrl-C, its temporary files go
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture
def page(served):
    """The page opened in a new tab of ``served``'s Chromium; every URL it asks for is
    recorded."""
    _, port, chrome = served
    tab = chrome.new_page(viewport={"width": 1280, "height": 1400})
    tab.requests = []
    tab.on("request", lambda request: tab.requests.append(request.url))
    tab.goto(f"http://127.0.0.1:{port}/")
    tab.port = port
    yield tab
    tab.close()


def _grid(tab, count):
    tab.wait_for_function(f"document.querySelectorAll('#faces img').length == {count}",
                          timeout=60000)
    images = tab.locator("#faces img")
    captions = tab.locator("#faces .caption-label")
    return ([images.nth(i).get_attribute("src") for i in range(count)],
            [captions.nth(i).inner_text() for i in range(count)])


def _shown(tab, selector, before=None):
    """The pixels of the image in ``selector`` once it shows something other than ``before``."""
    tab.wait_for_function(
        f"(() => {{ const i = document.querySelector('{selector} img');"
        f" return i && i.src && i.src !== {repr(before or '')}; }})()", timeout=60000)
    src = tab.locator(f"{selector} img").first.get_attribute("src")
    return src, _pixels(src)


@pytest.mark.slow
def test_the_page_draws_the_generators_faces_more_morphs_and_stays_local(page, served,
                                                                         tmp_path):
    nets = served[0]
    g, d = nets / "netg_ema_1.pth", nets / "netd_1.pth"
    generated = _generated(tmp_path, "seeds", f"--netg-path={g}", f"--netd-path={d}",
                           f"--seeds={','.join(map(str, range(32)))}")
    assert "netg_ema_1.pth" in page.locator("#source").inner_text()  # the newest file

    # the grid: seeds 0..15, each the face generate --seeds draws, with its D score
    sources, captions = _grid(page, 16)
    for seed, (src, caption) in enumerate(zip(sources, captions)):
        face, score = generated[seed]
        assert np.array_equal(_pixels(src), face), seed
        assert caption == f"{seed} · D {float(score):.2f}"

    page.click("#more")  # 16 more: seeds 16..31
    sources, captions = _grid(page, 32)
    assert [int(c.split(" ·")[0]) for c in captions] == list(range(32))
    for seed in (16, 31):
        assert np.array_equal(_pixels(sources[seed]), generated[seed][0]), seed

    # morph before two faces are picked: said, and nothing greyed out under an "Error" mark
    page.click("#morph")
    page.wait_for_function("document.body.innerText.includes('click two faces first')")
    assert "Error" not in page.inner_text("#frame") + page.inner_text("#gif")

    # a click shows the face large, with its seed and score; the PNG to download is the face
    page.locator("#faces img").nth(2).click()
    _, big = _shown(page, "#face")
    assert np.array_equal(big[::4, ::4], generated[2][0])
    assert page.locator("#caption").inner_text() == f"seed 2 · D {float(generated[2][1]):.3f}"
    with page.expect_download() as download:
        page.click("#download")
    assert np.array_equal(_pixels(download.value.path()), generated[2][0])

    # a second click, then morph: the frames are interpolate's row for seeds 2 -> 5
    page.locator("#faces img").nth(5).click()
    page.wait_for_function("document.querySelector('#picked').innerText.includes('seed 5')")
    assert "seed 2 → seed 5" in page.locator("#picked").inner_text()
    r = cli("interpolate", "--nogpu", f"--netg-path={g}", "--seeds=2,5", "--steps=5",
            f"--out={tmp_path / 'interp.png'}")
    assert r.returncode == 0, r.stderr
    row = _pixels(tmp_path / "interp.png")
    cells = [row[2:98, 2 + k * 98:98 + k * 98] for k in range(5)]
    page.click("#morph")
    src, frame = _shown(page, "#frame")
    assert np.array_equal(frame[::4, ::4], cells[0])
    number = page.locator("#step input[type=number]")
    number.fill("2")
    number.press("Enter")
    src, frame = _shown(page, "#frame", before=src)
    assert np.array_equal(frame[::4, ::4], cells[2])
    assert not np.array_equal(cells[2], cells[0])
    gif = Image.open(io.BytesIO(urllib.request.urlopen(
        page.locator("#gif img").first.get_attribute("src"), timeout=30).read()))
    assert gif.n_frames == 2 * 5 - 2  # there and back
    first = np.asarray(gif.convert("RGB"), dtype=np.int16)
    assert first.shape == (4 * 96, 4 * 96, 3)  # as large as the frame
    # its first frame is the morph's first face, give or take the GIF's 256 colours
    assert np.abs(first[::4, ::4] - cells[0]).mean() < 2 < np.abs(first[::4, ::4] - cells[2]).mean()
    # and its frames go there and back: faces 0, 1, 2, 3, 4, 3, 2, 1 of the morph (a loop
    # that jumped from the last face back to the second had as many frames)
    for k, face in enumerate([0, 1, 2, 3, 4, 3, 2, 1]):
        gif.seek(k)
        shown = np.asarray(gif.convert("RGB"), dtype=np.int16)[::4, ::4]
        far = [np.abs(shown - cell).mean() for cell in cells]
        assert far.index(min(far)) == face, (k, far)

    # nothing but the page's own server was asked for anything
    others = [u for u in page.requests
              if not u.startswith(f"http://127.0.0.1:{page.port}/") and not
              u.startswith(("data:", "blob:"))]
    assert page.requests and others == []


@pytest.mark.slow
def test_ds_best_only_and_reloading_the_newest_g(page, served, tmp_path):
    nets = served[0]
    g, d = nets / "netg_ema_1.pth", nets / "netd_1.pth"
    best = _generated(tmp_path, "best", f"--netg-path={g}", f"--netd-path={d}",
                      "--gen-num=16", "--gen-search-num=64", "--seed=0")
    _grid(page, 16)
    page.locator("#best input").check()
    page.wait_for_function(  # the captions are no longer seeds 0..15 in order
        "Array.from(document.querySelectorAll('#faces .caption-label')).map("
        "c => c.innerText.split(' ')[0]).join(',') !== "
        f"'{','.join(map(str, range(16)))}'", timeout=60000)
    sources, captions = _grid(page, 16)
    seeds = [int(c.split()[0]) for c in captions]
    assert seeds == list(best)  # generate's best 16 of seeds 0..63, best first
    assert np.array_equal(_pixels(sources[0]), best[seeds[0]][0])

    # a training saves a newer G into the folder; "reload G" draws with it
    newer, _ = drawing_nets()
    with torch.no_grad():
        for p in newer.parameters():
            p.mul_(0.5)
    torch.save(newer.state_dict(), nets / "netg_2.pth")
    page.click("#reload")
    page.wait_for_function("document.querySelector('#source').innerText.includes('netg_2')",
                           timeout=60000)
    after = _generated(tmp_path, "after", f"--netg-path={nets / 'netg_2.pth'}",
                       f"--netd-path={d}", f"--seeds={seeds[0]}")
    src = sources[0]
    page.wait_for_function(f"document.querySelector('#faces img').src !== {src!r}",
                           timeout=60000)
    sources, captions = _grid(page, 16)
    assert [int(c.split()[0]) for c in captions] == seeds  # the same seeds, the new weights
    assert np.array_equal(_pixels(sources[0]), after[seeds[0]][0])

    # a newer file cut short (a copy still under way): the page says so, in one line, and
    # the terminal had a traceback of it
    (nets / "netg_3.pth").write_bytes((nets / "netg_2.pth").read_bytes()[:1000])
    page.click("#reload")
    page.wait_for_function("document.body.innerText.includes('netg_3.pth is truncated')",
                           timeout=60000)
    assert _grid(page, 16)[0] == sources and "Error" not in page.inner_text("#faces")  # kept
    assert "Traceback" not in (nets.parent / "server.log").read_text()
    (nets / "netg_3.pth").unlink()

    # that file gone, "reload G" goes back to the newest left (and the folder is as the
    # other tests of the page found it)
    (nets / "netg_2.pth").unlink()
    page.click("#reload")
    page.wait_for_function(
        "document.querySelector('#source').innerText.includes('netg_ema_1')", timeout=60000)
    page.wait_for_function(f"document.querySelector('#faces img').src !== {sources[0]!r}",
                           timeout=60000)
    sources, captions = _grid(page, 16)
    assert [int(c.split()[0]) for c in captions] == seeds
    assert np.array_equal(_pixels(sources[0]), best[seeds[0]][0])


@pytest.mark.slow
def test_the_page_listens_on_this_machine_alone(served):
    """explore's page answers on 127.0.0.1 only, as the README says: not on every address
    of the machine, where anyone on the network could draw from the user's generator."""
    assert listening_addresses(served[1]) == ["127.0.0.1"]


def test_a_first_seed_out_of_range_is_said_on_the_page_alone(page, served):
    """Gradio's own range check refused it first: "Error" on the page, and a traceback of
    some 30 lines in the terminal for each try; 2.5 was taken as 2 without a word. Said as
    an error, it then emptied the grid of the faces the user was looking at."""
    log = served[0].parent / "server.log"
    for typed, shown in (("-5", "not -5"), ("2.5", "not 2.5"), ("1e30", "not 1e+30"),
                         ("2147483649", "not 2147483649")):  # was "not 2.14748e+09"
        sources, _ = _grid(page, 16)
        page.fill("#first input", typed)
        page.click("#show")
        page.wait_for_function(
            "document.body.innerText.includes('the first seed must be a whole number from 0 "
            f"to 2**31, {shown}')", timeout=60000)
        # the faces shown stay, not greyed out under an "Error" mark
        assert _grid(page, 16)[0] == sources and "Error" not in page.inner_text("#faces")
    assert "Traceback" not in log.read_text()


def test_ds_best_only_pages_go_on_after_the_seeds_they_searched(nets, tmp_path):
    """"more" with D's best only: each page is the best of the seeds after those the page
    before searched, as generate --gen-search-num --seed picks them; no seed shown twice."""
    from explore import PAGE, SEARCH, Explorer
    explorer = Explorer(nets, nets / "netd_1.pth")
    _, first, after = explorer.page(0, best=True)
    _, second, _ = explorer.page(after, best=True)  # what "more" draws next
    assert after == PAGE * SEARCH and not set(first) & set(second)
    best = _generated(tmp_path, "next", f"--netg-path={nets / 'netg_ema_1.pth'}",
                      f"--netd-path={nets / 'netd_1.pth'}", f"--gen-num={PAGE}",
                      f"--gen-search-num={PAGE * SEARCH}", f"--seed={after}")
    assert second == list(best)


def test_the_page_draws_from_the_noise_of_its_flags(nets, tmp_path, monkeypatch):
    """explore --gen-mean/--gen-std: a seed's face on the page is generate's with the same
    flags (a page drawing from the default noise showed other faces for the same seed)."""
    import explore
    from errors import UserError
    built, real = [], explore.Explorer

    def explorer(*args, **kwargs):  # the page's explorer, kept; no server started
        built.append(real(*args, **kwargs))
        raise UserError("built")
    monkeypatch.setattr(explore, "Explorer", explorer)
    noise = ("--gen-mean=0.5", "--gen-std=0.8")
    assert_clean_error(cli("explore", "--nogpu", f"--netg-path={nets}", *noise), "built")
    drawn = _generated(tmp_path, "noise", f"--netg-path={nets / 'netg_ema_1.pth'}",
                       "--seeds=3", *noise)
    _, _, png = built[0].face(3)
    assert np.array_equal(_pixels(png), drawn[3][0])


def _without_gradio(tmp_path):
    """An environment whose gradio cannot be imported, as when it is missing."""
    hidden = tmp_path / "nogradio" / "gradio"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('No module named gradio')\n")
    return dict(os.environ, PYTHONPATH=str(hidden.parent))


def test_without_gradio_one_line_says_how_to_install(nets, tmp_path):
    env = _without_gradio(tmp_path)
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), "explore", "--nogpu",
                             f"--netg-path={nets}"], capture_output=True, text=True,
                            env=env, timeout=120)
    line = assert_clean_error(result, "make app", "requirements-app.txt")
    assert "Gradio" in line


def test_the_page_says_the_widths_and_passes_it_draws_with_as_generate_does(nets, tmp_path):
    """explore --ngf or --batch-size other than the files and the CPU take: the lines generate
    prints, naming the file the folder resolved to (explore printed none of them)."""
    env = _without_gradio(tmp_path)  # the lines come before the page: none is served
    said = {}
    for flags in (("--ngf=64", "--batch-size=8192"), ("--ngf=8", "--batch-size=64")):
        result = subprocess.run([sys.executable, str(ROOT / "main.py"), "explore", "--nogpu",
                                 f"--netg-path={nets}", *flags], capture_output=True,
                                text=True, env=env, timeout=120)
        assert_clean_error(result, "make app")
        said[flags] = [line for line in result.stdout.splitlines() if line.startswith("note:")]
    assert said == {
        ("--ngf=64", "--batch-size=8192"): [
            f"note: {nets / 'netg_ema_1.pth'}: using the file's ngf=8, not --ngf=64",
            "note: --batch-size=8192: on the CPU faces are drawn 64 at a time, as fast, and "
            "larger passes take about 1 MB a face more memory (the same faces either way)"],
        ("--ngf=8", "--batch-size=64"): []}


@pytest.mark.parametrize("signum, status, word", [(signal.SIGINT, 130, "interrupted"),
                                                  (signal.SIGTERM, 143, "terminated")])
def test_a_stop_ends_the_page_as_every_commands_stop(nets, tmp_path, signum, status, word):
    """Ctrl-C printed Gradio's "Keyboard interruption in main thread... closing server." and
    ended with status 0 (SIGTERM: 0 too); every other command says "interrupted" and ends
    with 130 (143), so a script could not tell a stopped page from one that never ran."""
    port = free_port()
    page = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "explore", "--nogpu",
                             f"--netg-path={nets}", f"--port={port}"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, TMPDIR=str(tmp_path), PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + 120
        while True:  # until the page answers
            assert page.poll() is None and time.monotonic() < deadline
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        page.send_signal(signum)
        out, err = page.communicate(timeout=60)
    finally:
        if page.poll() is None:
            page.kill()
            page.communicate()
    assert page.returncode == status, err
    assert err.strip().splitlines()[-1] == word and "Traceback" not in err, err
    assert "Keyboard interruption" not in out + err and "Closing server" not in out + err
    assert not list(tmp_path.glob("explore-gradio-*"))  # its temporary folder is gone


@pytest.mark.slow
def test_an_ipv6_host_is_served_at_the_address_it_prints(nets, tmp_path):
    """--host=::1 printed "open http://::1:PORT/", which no browser opens, and then ended in
    a traceback of Gradio's own request to that URL (httpx.InvalidURL), exit status 1."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = free_port()
    page = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "explore", "--nogpu",
                             f"--netg-path={nets}", f"--port={port}", "--host=::1"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, TMPDIR=str(tmp_path), PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + 120
        while True:  # until the page answers at the address it printed
            assert page.poll() is None and time.monotonic() < deadline, page.communicate()
            try:
                with urllib.request.urlopen(f"http://[::1]:{port}/config", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        page.send_signal(signal.SIGINT)
        out, err = page.communicate(timeout=60)
    finally:
        if page.poll() is None:
            page.kill()
            page.communicate()
    assert f"open http://[::1]:{port}/ (Ctrl-C to stop)" in out, out
    assert page.returncode == 130 and "Traceback" not in err, err


def test_a_folder_without_generators_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_clean_error(cli("explore", "--nogpu", f"--netg-path={tmp_path / 'empty'}"),
                       "no netg_N.pth", "empty")


def test_the_newest_file_of_a_folder_is_the_one_generate_is_told_of(nets):
    """explore's scan of a folder and the one behind generate's hint had drifted apart: one
    preferred the average at the same epoch, the other alone fell back to last.pth."""
    from explore import newest
    assert newest(nets, "netg") == nets / "netg_ema_1.pth"
    assert newest(nets, "netd") == nets / "netd_1.pth"
    line = assert_clean_error(cli("generate", "--nogpu", f"--netg-path={nets}"), "e.g.")
    assert line.endswith(f"--netg-path={nets / 'netg_ema_1.pth'}")
    (nets / "netg_0.pth").unlink()  # a folder with the state only (a stand-in here)
    (nets / "netd_1.pth").unlink()
    (nets / "netg_ema_1.pth").rename(nets / "last.pth")
    assert newest(nets, "netg") == newest(nets, "netd") == nets / "last.pth"  # both nets in it


@pytest.mark.slow
def test_a_taken_port_is_one_line_before_any_address_is_printed(nets):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("explore", "--nogpu", f"--netg-path={nets}", f"--port={port}",
                         timeout=180)
    line = assert_clean_error(result, "cannot serve", str(port), "--port")
    assert "open http" not in result.stdout and "ERROR" not in result.stderr
    assert "the port is taken" in line and "address" not in line  # it named both causes


def test_an_address_of_another_machine_or_an_unknown_name_is_named_as_such():
    from errors import UserError
    from explore import _check_listen
    with pytest.raises(UserError, match="192.0.2.1 is not an address of this machine"):
        _check_listen("192.0.2.1", 7860)  # TEST-NET-1: never this machine's
    with pytest.raises(UserError, match="'no-such-host.invalid' is not a name or address"):
        _check_listen("no-such-host.invalid", 7860)
