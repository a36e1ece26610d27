"""Visdom, live: a real server on loopback, the book's windows, and a server that fails."""
import base64
import contextlib
import csv
import io
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import (ROOT, assert_clean_error, cli, ctrl_c_to_group, free_port, kill_group,
                      listening_addresses, run_cli)


def _wait_for(port, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture
def visdom_server(tmp_path):
    """`python visualize.py serve` on a free loopback port; stopped after the test."""
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(ROOT / "visualize.py"), "serve",
                             f"--port={port}", f"--env-path={tmp_path / 'envs'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_for(port, 30), "the visdom server did not start"
        proc.startup_seconds = time.monotonic() - started
        proc.port = port
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_ctrl_c_while_the_server_loads_is_one_line(tmp_path):
    """Ctrl-C in `make visdom`'s first second, while visdom and tornado load, printed a
    KeyboardInterrupt traceback."""
    port = free_port()
    script = ("import builtins, runpy, sys, time\n"
              "real = builtins.__import__\n\n"
              "def loading(name, *args, **kwargs):\n"
              "    if name == 'visdom.server.app':\n"
              "        builtins.__import__ = real\n"
              "        print('loading', file=sys.stderr, flush=True)\n"
              "        time.sleep(60)\n"
              "    return real(name, *args, **kwargs)\n\n"
              "builtins.__import__ = loading\n"
              f"sys.argv = ['visualize.py', 'serve', '--port={port}', "
              f"'--env-path={tmp_path / 'envs'}']\n"
              f"runpy.run_path({str(ROOT / 'visualize.py')!r}, run_name='__main__')\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stderr.readline() == "loading\n"
        err = ctrl_c_to_group(proc, 30)
    finally:
        kill_group(proc)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted before the server started"], err
    assert not _wait_for(port, 0.5)


@pytest.mark.slow
def test_server_starts_offline_on_loopback_only(visdom_server):
    assert visdom_server.startup_seconds < 5
    assert listening_addresses(visdom_server.port) == ["127.0.0.1"]
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{visdom_server.port}/", timeout=5) as r:
        page = r.read().decode()
        assert r.status == 200 and "visdom" in page.lower()
    # the page asks for a style sheet of one's own: missing, the server logged an ERROR
    # line at every page load, which looked like a broken install
    assert "user/style.css" in page
    visdom_server.terminate()
    log = visdom_server.communicate(timeout=10)[0]
    assert "Could not open static file" not in log and "ERROR" not in log, log
    assert "page scripts are not installed" not in log  # make test installs them


def test_a_server_on_ipv6_loopback_prints_an_address_that_opens(tmp_path):
    """--host ::1 printed "visdom server at http://::1:PORT", which no browser opens: the
    address goes in brackets."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            port = s.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")
    proc = subprocess.Popen([sys.executable, str(ROOT / "visualize.py"), "serve", "--host=::1",
                             f"--port={port}", f"--env-path={tmp_path / 'envs'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"visdom server at http://[::1]:{port} "), line
        import urllib.request
        url = line.split()[3]
        with urllib.request.urlopen(url + "/", timeout=5) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_a_second_server_on_a_taken_port_says_so_in_one_line(visdom_server, tmp_path):
    """`make visdom` run twice: the second used to end in an OSError traceback."""
    second = subprocess.run([sys.executable, str(ROOT / "visualize.py"), "serve",
                             f"--port={visdom_server.port}", f"--env-path={tmp_path / 'e2'}"],
                            capture_output=True, text=True, timeout=60)
    line = assert_clean_error(second, "already running", str(visdom_server.port))
    other = visdom_server.port + 1  # a port `make visdom` can be given, named as such
    assert f"make visdom VISDOM_PORT={other}, then train with --vis-port={other}" in line
    assert "Address already in use" in line
    assert visdom_server.poll() is None  # the first one still serves
    for flags, culprit in ((["--port=70000"], "--port"),
                           (["--port=abc"], "--port"),  # argparse's usage block stood above
                           ([f"--env-path={ROOT / 'Makefile'}", f"--port={free_port()}"],
                            "--env-path")):
        assert_clean_error(subprocess.run([sys.executable, str(ROOT / "visualize.py"), "serve",
                                           *flags], capture_output=True, text=True, timeout=60),
                           culprit)


@contextlib.contextmanager
def _served_again(port, env_path):
    """A visdom server on ``port`` again (the fixture's, stopped by the test), its envs in
    ``env_path``; stopped at the end."""
    again = subprocess.Popen([sys.executable, str(ROOT / "visualize.py"), "serve",
                              f"--port={port}", f"--env-path={env_path}"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_for(port, 30), "the visdom server did not start again"
        yield again
    finally:
        again.terminate()
        again.wait(timeout=10)


def _client(port):
    import visdom
    return visdom.Visdom(server="http://127.0.0.1", port=port, raise_exceptions=True,
                         use_incoming_socket=False)


def _png(window):
    src = window["content"]["src"]
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))


def _png_size(window):
    return _png(window).size


@pytest.mark.slow
def test_training_fills_the_book_windows(visdom_server, toy_dir, tmp_path):
    import torch
    from conftest import drawing_nets
    env = "test_run"
    # G starts from weights that draw faces which differ (a fresh tiny G's, after 8 steps, are
    # one flat grey, which any broken drawing of the window would match too)
    torch.save(drawing_nets()[0].state_dict(), tmp_path / "start.pth")
    result = cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=True", f"--env={env}",
                 "--vis-server=http://127.0.0.1", f"--vis-port={visdom_server.port}",
                 "--max-epoch=2", "--batch-size=16", "--plot-every=2", "--ngf=8", "--ndf=8",
                 f"--save-path={tmp_path}", f"--checkpoint-dir={tmp_path}", "--seed=0",
                 f"--netg-path={tmp_path / 'start.pth'}")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr

    with open(tmp_path / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4  # 4 batches an epoch, a row every 2, 2 epochs

    vis = _client(visdom_server.port)
    for win in ("errord", "errorg", "fixfake", "real", "scores", "options"):
        assert vis.win_exists(win, env), win
    for win, column in (("errord", "loss_d"), ("errorg", "loss_g")):
        trace = json.loads(vis.get_window_data(win, env))["content"]["data"][0]
        assert [int(x) for x in trace["x"]] == [int(r["step"]) for r in rows]
        assert trace["y"] == pytest.approx([float(r[column]) for r in rows], rel=1e-5)
    scores = json.loads(vis.get_window_data("scores", env))["content"]["data"]
    assert [t["name"] for t in scores] == ["D(x)", "D(G(z))"]
    assert scores[0]["y"] == pytest.approx([float(r["d_real"]) for r in rows], rel=1e-5)
    assert scores[1]["y"] == pytest.approx([float(r["d_fake"]) for r in rows], rel=1e-5)
    # visdom's grid: 8 per row, each 96x96 image padded by 2 on every side
    assert _png_size(json.loads(vis.get_window_data("fixfake", env))) == (8 * 100, 8 * 100)
    # and it shows G's last faces of the fixed noise: the grid saved with the last epoch
    # (1.png), cell by cell, to a level (a window of any 64 faces had the same size)
    shown = np.asarray(_png(json.loads(vis.get_window_data("fixfake", env))).convert("RGB"),
                       dtype=np.int16)
    saved = np.asarray(Image.open(tmp_path / "1.png").convert("RGB"), dtype=np.int16)
    for row in range(8):
        for col in range(8):
            face = saved[2 + 98 * row:98 * (row + 1), 2 + 98 * col:98 * (col + 1)]
            assert face.std() > 5, (row, col)
            assert min(np.abs(shown[100 * row + dy:100 * row + dy + 96,
                                    100 * col + dx:100 * col + dx + 96] - face).max()
                       for dy in range(5) for dx in range(5)) <= 1, (row, col)
    real = np.asarray(_png(json.loads(vis.get_window_data("real", env))).convert("RGB"),
                      dtype=np.int16)
    assert real.shape == (2 * 100, 8 * 100, 3)
    # each cell one of the set's faces with its colours as they are (not darkened, clipped),
    # wherever in its 100x100 visdom puts it
    faces = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.int16)
                      for p in sorted((toy_dir / "faces").iterdir())])
    for top in (0, 100):
        for left in range(0, 800, 100):
            assert min(np.abs(real[top + dy:top + dy + 96, left + dx:left + dx + 96] - faces)
                       .mean((1, 2, 3)).min() for dy in range(5) for dx in range(5)) < 1, \
                (top, left)
    # the options window lists this run's training options (not every command's)
    shown = json.loads(vis.get_window_data("options", env))["content"].split("<br>")
    assert {"max_epoch = 2", "batch_size = 16", "lr1 = 0.0002", "d_every = 1"} <= set(shown)
    assert not {line.split(" = ")[0] for line in shown} & {"port", "metrics", "gen_img"}
    # the progress window counts epochs from 1, as the progress bar does
    progress = json.loads(vis.get_window_data("log", env))["content"]
    assert progress.startswith("epoch 2, step 8,"), progress
    # and the server has the env on its disk: a restarted one shows the run (it kept envs in
    # memory only, though its first line says "envs saved in ...")
    saved = json.loads((tmp_path / "envs" / f"{env}.json").read_text())
    assert {"errord", "errorg", "fixfake", "scores"} <= set(saved["jsons"])

    # resumed, the run's curves go on: its first point replaced the windows' earlier ones
    result = cli("train", f"--resume={tmp_path / 'last.pth'}", "--max-epoch=3")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    for win, column in (("errord", "loss_d"), ("errorg", "loss_g")):
        trace = json.loads(vis.get_window_data(win, env))["content"]["data"][0]
        assert [int(x) for x in trace["x"]] == [int(r["step"]) for r in rows]
        assert trace["y"] == pytest.approx([float(r[column]) for r in rows], rel=1e-5)
    scores = json.loads(vis.get_window_data("scores", env))["content"]["data"]
    assert [len(t["x"]) for t in scores] == [6, 6]


def _one_epoch_plotting(toy_dir, tmp_path, port, *flags, server="http://127.0.0.1", run=cli,
                        **kwargs):
    """train's one epoch on the tiny nets, plotting to visdom at ``server``:``port`` (a
    program a test started there), its grids in tmp_path/i and its weights in tmp_path/c."""
    return run("train", f"--data-path={toy_dir}", "--nogpu", "--vis=True", f"--vis-port={port}",
               f"--vis-server={server}", "--max-epoch=1", "--batch-size=16", "--plot-every=1",
               "--ngf=8", "--ndf=8", f"--save-path={tmp_path / 'i'}",
               f"--checkpoint-dir={tmp_path / 'c'}", *flags, **kwargs)


def _warnings(stderr):
    return [line for line in stderr.splitlines() if line.startswith("warning")]


@pytest.mark.slow
def test_no_server_one_warning_and_training_finishes(toy_dir, tmp_path):
    port = free_port()
    result = cli("train", f"--data-path={toy_dir}", "--nogpu", "--vis=True",
                 f"--vis-port={port}", "--vis-server=http://127.0.0.1",
                 "--max-epoch=2", "--batch-size=16", "--plot-every=1", "--ngf=8", "--ndf=8",
                 f"--save-path={tmp_path}", f"--checkpoint-dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(_warnings(result.stderr)) == 1
    assert "(connection refused: nothing listens on that port)" in result.stderr  # each cause
    # read "(ConnectionError)", visdom's name for them all
    # the server to start is one on the port asked for (`make visdom` alone serves 8097)
    assert f"(start one with `make visdom VISDOM_PORT={port}`, or pass --vis=False)" \
        in result.stderr
    assert (tmp_path / "netg_1.pth").is_file()


@pytest.mark.slow
def test_another_web_server_on_the_port_is_one_warning(toy_dir, tmp_path):
    """A plain web server there answered every plot with 404 or 501, and training believed
    its plots went somewhere."""
    port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                            str(port)], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # until it listens
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        result = _one_epoch_plotting(toy_dir, tmp_path, port)
    finally:
        web.terminate()
        web.wait(timeout=10)
    assert result.returncode == 0, result.stderr
    warnings = _warnings(result.stderr)
    assert len(warnings) == 1 and "not a visdom server" in warnings[0], result.stderr
    # not `make visdom VISDOM_PORT=<this port>`, which cannot listen where the other server does
    assert (f"(another program answers on that port: start visdom on another, `make visdom "
            f"VISDOM_PORT={port + 1}`, and train with --vis-port={port + 1}, or pass "
            f"--vis=False)") in warnings[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_web_server_that_answers_200_to_everything_is_one_warning(toy_dir, tmp_path):
    """A program on the port that answered every request with 200 and a page of its own was
    taken for visdom: not a word, and the plots went nowhere."""
    import http.server
    import threading

    class Yes(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            page = b"<html>it works</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Yes)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    port = web.server_address[1]
    try:
        result = _one_epoch_plotting(toy_dir, tmp_path, port)
    finally:
        web.shutdown()
        web.server_close()
    assert result.returncode == 0, result.stderr
    warning, = _warnings(result.stderr)
    assert warning.startswith(
        f"warning: no visdom server answers at http://127.0.0.1:{port} (HTTP 200, but not "
        f"visdom's answer: not a visdom server); training goes on without plots (another "
        f"program answers on that port"), warning
    assert (tmp_path / "c" / "netg_0.pth").is_file()


@pytest.mark.slow
def test_a_port_that_never_answers_does_not_hang(toy_dir, tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections, never reads or answers
    try:
        result = _one_epoch_plotting(toy_dir, tmp_path, silent.getsockname()[1], run=run_cli,
                                     timeout=120)
        # each request waits 2 s: the run waited for as many as it made (counted, not timed:
        # the training's own minutes vary threefold between the CPUs that run this)
        silent.setblocking(False)
        tries = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                silent.accept()[0].close()
                tries += 1
    finally:
        silent.close()
    assert result.returncode == 0, result.stderr
    assert len(_warnings(result.stderr)) == 1 and "Traceback" not in result.stderr
    assert "(no answer within 2 s)" in result.stderr
    # the first, and the last at the run's end (one more where the run passes a minute)
    assert 2 <= tries <= 3


@pytest.mark.parametrize("server", ["http://127.0.0.1", "https://127.0.0.1/visdom"])
def test_a_port_that_keeps_the_request_is_not_sent_to_make_visdom_there(server, capsys):
    """A program that took the request and never answered (or dripped its answer) was met
    with `make visdom VISDOM_PORT=<that port>`, which cannot listen where it does: "Address
    already in use"."""
    from visualize import Visualizer
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never reads or answers
    port = silent.getsockname()[1]
    try:
        Visualizer("x", server, port, timeout=1.0)
    finally:
        silent.close()
    warning, = _warnings(capsys.readouterr().err)
    assert f"VISDOM_PORT={port}`" not in warning, warning
    if server.startswith("http://"):
        assert warning.endswith(
            f"(no answer within 1 s); training goes on without plots (a program on that port "
            f"took the request but did not answer: start visdom on another, `make visdom "
            f"VISDOM_PORT={port + 1}`, and train with --vis-port={port + 1}, or pass "
            f"--vis=False)"), warning
    else:  # https:// to a plain server (visdom's own waits for a handshake): the fix is http://
        assert warning.endswith("check --vis-server); training goes on without plots (train "
                                "with --vis-server=http://127.0.0.1/visdom, or pass "
                                "--vis=False)"), warning


@pytest.mark.slow
def test_a_server_that_drips_its_answer_does_not_hang(toy_dir, tmp_path):
    """A server that took each request and sent its answer a byte at a time held `train` at
    its start for ever: each read came well within the 2 s timeout, which was the socket's."""
    import threading
    drip = socket.create_server(("127.0.0.1", 0))
    port = drip.getsockname()[1]
    stop, taken = threading.Event(), []

    def answer(conn):
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000:
                if stop.wait(0.5):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:  # the client gave up
                    return

    def accept():
        while True:
            try:
                conn, _ = drip.accept()
            except OSError:  # closed by the test
                return
            taken.append(conn)
            threading.Thread(target=answer, args=(conn,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    try:
        result = _one_epoch_plotting(toy_dir, tmp_path, port, run=run_cli, timeout=120)
    finally:
        stop.set()
        drip.shutdown(socket.SHUT_RDWR)  # wakes the accept
        drip.close()
    assert result.returncode == 0, result.stderr
    warning, = _warnings(result.stderr)
    assert warning.startswith(f"warning: no visdom server answers at http://127.0.0.1:{port} "
                              f"(no answer within 2 s); training goes on without plots")
    assert "Traceback" not in result.stderr
    assert (tmp_path / "c" / "netg_0.pth").is_file()
    # not asked again while it still sent the first answer (as the run ended, or each
    # minute): one connection and thread held by it, not one more a minute
    assert len(taken) == 1


@pytest.mark.slow
def test_an_unknown_host_is_named_as_such(capsys):
    from visualize import Visualizer
    vis = Visualizer("x", "http://no-such-host.invalid", 8097, timeout=2.0)
    assert vis.client is None
    assert "(unknown host: check --vis-server)" in _warnings(capsys.readouterr().err)[0]


@pytest.mark.parametrize("server, path", [("http://127.0.0.1/", ""),
                                          ("http://127.0.0.1/visdom", "/visdom"),
                                          ("http://127.0.0.1/visdom/", "/visdom")])
def test_the_warning_names_the_address_the_requests_went_to(server, path, capsys):
    """--vis-server with a trailing slash or a path was named http://127.0.0.1/:PORT in the
    warning, an address nothing was sent to: the port goes before the path."""
    from visualize import Visualizer
    port = free_port()
    vis = Visualizer("x", server, port, timeout=2.0)
    assert vis.client is None
    warning, = _warnings(capsys.readouterr().err)
    assert warning.startswith(f"warning: no visdom server answers at "
                              f"http://127.0.0.1:{port}{path} (connection refused"), warning


@pytest.mark.parametrize("server", ["http://127.0.0.1", "http://localhost", "http://[::1]",
                                    "http://visdom.invalid"])
def test_the_warning_advises_make_visdom_only_where_it_would_serve(server, capsys):
    """`make visdom` starts a server on this machine's 127.0.0.1: it was the advice for a
    --vis-server on another host too, and for [::1], where that server does not listen."""
    from visualize import Visualizer
    port = free_port()
    assert Visualizer("x", server, port, timeout=2.0).client is None
    warning, = _warnings(capsys.readouterr().err)
    advice = {"http://[::1]": f"(`make visdom` listens on 127.0.0.1: start one with `make visdom "
                              f"VISDOM_PORT={port}` and train with --vis-server=http://localhost, "
                              f"or pass --vis=False)",
              "http://visdom.invalid": "(check that visdom runs there, on that port, and that "
                                       "--vis-server and --vis-port name it, or pass --vis=False)"}
    assert warning.endswith(advice.get(server, f"(start one with `make visdom VISDOM_PORT={port}`"
                                               f", or pass --vis=False)")), warning


@pytest.mark.slow
def test_a_server_under_a_path_gets_the_plots(toy_dir, tmp_path):
    """--vis-server=http://127.0.0.1/visdom (a server behind a proxy, under a path) lost its
    path: the plots went to http://127.0.0.1:PORT/, which answered "HTTP 404: not a visdom
    server". `visualize.py serve --base-url=/visdom` serves under one."""
    import visdom
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "visualize.py"), "serve",
                               f"--port={port}", "--base-url=/visdom",
                               f"--env-path={tmp_path / 'envs'}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_for(port, 30), "the visdom server did not start"
        said = next(line for line in server.stdout if line.startswith("visdom server at"))
        assert said.startswith(f"visdom server at http://localhost:{port}/visdom ("), said
        result = _one_epoch_plotting(toy_dir, tmp_path, port, "--env=under",
                                     server="http://127.0.0.1/visdom")
        assert result.returncode == 0 and not _warnings(result.stderr), result.stderr
        client = visdom.Visdom(server="http://127.0.0.1", port=port, base_url="/visdom",
                               raise_exceptions=True, use_incoming_socket=False)
        trace = json.loads(client.get_window_data("errord", "under"))["content"]["data"][0]
        assert [int(x) for x in trace["x"]] == [1, 2, 3, 4]
        assert (tmp_path / "envs" / "under.json").is_file()  # the epoch's end kept it
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_server_that_cannot_save_the_env_is_one_warning_and_keeps_plotting(
        visdom_server, tmp_path, capsys):
    """A visdom server whose env folder was removed (or whose disk is full) answers the save
    of each epoch's end with HTTP 500: training said "not a visdom server ... another program
    answers on that port", stopped plotting, and said it again after every reconnect."""
    import shutil
    from visualize import Visualizer
    vis = Visualizer("nosave", "http://127.0.0.1", visdom_server.port, timeout=5.0)
    vis.plot("errord", 1, {"loss_d": 1.0}, "D loss")
    shutil.rmtree(tmp_path / "envs")
    for step in (2, 3):  # two epochs' ends
        vis.keep()
        vis.plot("errord", step, {"loss_d": float(step)}, "D loss")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"warning: the visdom server at http://127.0.0.1:{visdom_server.port} could not save "
        f"env 'nosave' to its folder"), err
    assert vis.client is not None  # still plotting: every point is in the window
    trace = json.loads(vis.client.get_window_data("errord", "nosave"))["content"]["data"][0]
    assert [int(x) for x in trace["x"]] == [1, 2, 3]


def test_https_to_the_plain_server_and_a_closed_connection_are_named(visdom_server, capsys):
    """https:// to visdom's plain server read "no answer within 2 s" (a handshake that never
    comes), and a server stopped in the middle of a request "(ConnectionError)"."""
    import http.client
    import requests
    from visualize import Visualizer
    Visualizer("x", "https://127.0.0.1", visdom_server.port, timeout=1.0)
    warning, = _warnings(capsys.readouterr().err)
    assert "visdom's own server speaks plain http://: check --vis-server" in warning
    closed = requests.exceptions.ConnectionError("visdom's request failed")
    closed.__context__ = http.client.RemoteDisconnected("Remote end closed connection")
    vis = Visualizer("x", "http://127.0.0.1", visdom_server.port)
    assert vis._why(closed) == "the server closed the connection: was it stopped?"


def test_https_to_a_plain_server_that_refuses_the_handshake_is_named(capsys):
    """A plain server can read the TLS handshake as a bad request and answer it in plain
    HTTP (visdom's own did so once in a CI run): the line said "TLS failed: check http:// or
    https://" and left out that visdom speaks plain http://."""
    import threading
    from visualize import Visualizer
    plain = socket.create_server(("127.0.0.1", 0))

    def answer():
        while True:
            try:
                conn, _ = plain.accept()
            except OSError:  # closed by the test
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
    serving = threading.Thread(target=answer, daemon=True)
    serving.start()
    try:
        Visualizer("x", "https://127.0.0.1", plain.getsockname()[1], timeout=5.0)
    finally:
        plain.shutdown(socket.SHUT_RDWR)  # wakes the accept: close alone leaves it waiting
        plain.close()
        serving.join(timeout=10)
    warning, = _warnings(capsys.readouterr().err)
    assert ("(TLS failed; visdom's own server speaks plain http://: check --vis-server)"
            in warning)


def test_a_training_keeps_the_curves_of_an_outage_for_the_server(toy_dir, tmp_path,
                                                                  monkeypatch):
    """Training handed its points to the visualizer only while a server answered, so one
    that answered again (or was started after the training) never got those of the outage,
    though the line said "the curves so far are sent to it"."""
    import visualize
    from conftest import free_port, train_small
    made = []

    class Kept(visualize.Visualizer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

        def finish(self, *faces):
            made.append("finished")  # the last try, at the run's end
            super().finish(*faces)
    monkeypatch.setattr(visualize, "Visualizer", Kept)
    # no server on this port for the whole run
    train_small(toy_dir, tmp_path, max_epoch=2, vis=True, vis_server="http://127.0.0.1",
                vis_port=free_port(), plot_every=1)
    with open(tmp_path / "imgs" / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert made[0].client is None and made[1:] == ["finished"]
    _, _, steps, points = made[0].curves["errord"]
    assert steps == [int(r["step"]) for r in rows] and len(steps) == 8
    assert [p[0] for p in points] == pytest.approx([float(r["loss_d"]) for r in rows],
                                                    rel=1e-5)


def test_server_killed_mid_run(visdom_server, capsys, monkeypatch, tmp_path):
    import torch
    from tqdm import tqdm
    import visualize
    from model import NetG
    from visualize import Visualizer

    vis = Visualizer("killed", "http://127.0.0.1", visdom_server.port, timeout=2.0)
    netg = NetG(100, 8)
    noise = torch.randn(4, 100, 1, 1)
    means = {"loss_d": 1.0, "loss_g": 2.0, "d_real": 0.6, "d_fake": 0.4}
    vis.text("options", "lr1 = 0.0002", "options of this run")
    vis.step(1, 0, means, 10.0, lambda: netg(noise), torch.zeros(4, 3, 96, 96))
    assert vis.client is not None and _client(visdom_server.port).win_exists("errord", "killed")
    visdom_server.terminate()
    visdom_server.wait(timeout=10)
    started = time.monotonic()
    bar = tqdm(total=12, initial=1, desc="epoch 1/1", file=sys.stderr)  # as training draws it
    for step in range(2, 12):
        vis.step(step, 0, means, 10.0, lambda: netg(noise), torch.zeros(4, 3, 96, 96))
        bar.update(1)
    bar.close()
    assert vis.client is None and vis.warned  # gave up after one failure, until a retry
    assert time.monotonic() - started < 10
    # the warning stands on a line of its own, not glued to the end of the progress bar's
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert [line for line in lines if "warning" in line] == _warnings("\n".join(lines))
    assert len(_warnings("\n".join(lines))) == 1

    # a server started again (here with none of the run's env): at the next try it gets every
    # point so far and the options window; it got only the points after it came back, and
    # nothing said it was back
    with _served_again(visdom_server.port, tmp_path / "new") as again:
        monkeypatch.setattr(visualize, "RETRY_SECONDS", 0.0)  # the minute between tries
        vis.step(12, 0, dict(means, loss_d=0.5), 10.0, lambda: netg(noise),
                 torch.zeros(4, 3, 96, 96))
        assert vis.client is not None
        client = _client(visdom_server.port)
        trace = json.loads(client.get_window_data("errord", "killed"))["content"]["data"][0]
        assert [int(x) for x in trace["x"]] == list(range(1, 13))
        assert trace["y"] == [1.0] * 11 + [0.5]
        scores = json.loads(client.get_window_data("scores", "killed"))["content"]["data"]
        assert [len(t["x"]) for t in scores] == [12, 12]
        assert "lr1 = 0.0002" in json.loads(client.get_window_data("options", "killed"))["content"]
        said = capsys.readouterr().err
        assert said.count("answers now; the curves so far are sent to it") == 1, said
        # down a second time: said again, once (the first warning does not silence it)
        again.terminate()
        again.wait(timeout=10)
        for step in range(13, 16):
            vis.step(step, 0, means, 10.0, lambda: netg(noise), torch.zeros(4, 3, 96, 96))
        assert len(_warnings(capsys.readouterr().err)) == 1


def test_a_server_started_after_the_warning_of_a_short_run_gets_its_curves(tmp_path):
    """A server started on the warning, a few seconds into a run shorter than a minute, got
    nothing: the next try was a minute after the first, and the run had ended."""
    from visualize import Visualizer
    port = free_port()
    vis = Visualizer("short", "http://127.0.0.1", port, timeout=2.0)  # nothing there yet
    means = {"loss_d": 1.0, "loss_g": 2.0, "d_real": 0.6, "d_fake": 0.4}
    for step in range(1, 4):
        vis.step(step, 0, means, 10.0, None, None)  # (no faces drawn while none answers)
    assert vis.client is None and vis.warned
    server = subprocess.Popen([sys.executable, str(ROOT / "visualize.py"), "serve",
                               f"--port={port}", f"--env-path={tmp_path / 'envs'}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_for(port, 30), "the visdom server did not start"
        import torch
        vis.finish(lambda: torch.zeros(4, 3, 96, 96), torch.ones(4, 3, 96, 96))  # seconds
        trace = json.loads(_client(port).get_window_data("errord", "short"))["content"]
        assert [int(x) for x in trace["data"][0]["x"]] == [1, 2, 3]  # after the warning
        # the book's image windows too (a step drew them only while a server answered)
        windows = json.loads(_client(port).get_window_data(env="short"))
        assert {"fixfake", "real"} <= set(windows), set(windows)
        assert (tmp_path / "envs" / "short.json").is_file()  # kept on the server's disk
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_server_restarted_between_two_plots_gets_the_curves_whole(visdom_server, tmp_path):
    """A server stopped and started again between two plots (a second or so, where a plot
    comes every few seconds) failed no request, so nothing was sent again: its curves began
    at the restart, and the options window was gone for the rest of the run."""
    from visualize import Visualizer
    vis = Visualizer("restarted", "http://127.0.0.1", visdom_server.port, timeout=2.0)
    vis.text("options", "lr1 = 0.0002", "options of this run")
    for step in range(1, 4):
        vis.plot("errord", step, {"loss_d": 1.0}, "D loss")
    visdom_server.terminate()
    visdom_server.wait(timeout=10)
    with _served_again(visdom_server.port, tmp_path / "new"):
        vis.plot("errord", 4, {"loss_d": 0.5}, "D loss")
        client = _client(visdom_server.port)
        trace = json.loads(client.get_window_data("errord", "restarted"))["content"]["data"][0]
        assert [int(x) for x in trace["x"]] == [1, 2, 3, 4]
        assert trace["y"] == [1.0, 1.0, 1.0, 0.5]
        assert "lr1" in json.loads(client.get_window_data("options", "restarted"))["content"]


@pytest.mark.slow
def test_a_run_stopped_within_an_epoch_keeps_its_plots_for_a_restarted_server(
        visdom_server, toy_dir, tmp_path):
    """The env went to the server's disk only at an epoch's end: a run stopped within one
    (--max-minutes here, as Ctrl-C and a scheduler's SIGTERM) left a restarted server without
    the points since, and within its first epoch without the run at all."""
    from conftest import train_small
    train_small(toy_dir, tmp_path / "c", max_epoch=2, max_minutes=0.0001, plot_every=1,
                vis=True, vis_server="http://127.0.0.1", vis_port=visdom_server.port,
                env="stopped")  # stopped after its first step, of 4 in an epoch
    with open(tmp_path / "c" / "imgs" / "losses.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == [1]
    visdom_server.terminate()
    visdom_server.wait(timeout=10)
    with _served_again(visdom_server.port, tmp_path / "envs"):
        client = _client(visdom_server.port)
        trace = json.loads(client.get_window_data("errord", "stopped"))["content"]["data"][0]
        assert [int(x) for x in trace["x"]] == steps


def test_a_resumed_run_with_no_row_yet_still_reaches_a_late_server(tmp_path):
    """A resumed run whose loss log had no row yet (stopped before its first plot) made
    empty curve windows, which failed every sending again with an IndexError: a server
    started after the warning got nothing, not even the faces at the run's end."""
    import torch
    from visualize import Visualizer
    port = free_port()
    vis = Visualizer("norow", "http://127.0.0.1", port, timeout=2.0)  # nothing there yet
    vis.earlier([])
    vis.text("options", "lr1 = 0.0002", "options of this run")
    server = subprocess.Popen([sys.executable, str(ROOT / "visualize.py"), "serve",
                               f"--port={port}", f"--env-path={tmp_path / 'envs'}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_for(port, 30), "the visdom server did not start"
        vis.finish(lambda: torch.zeros(4, 3, 96, 96), torch.ones(4, 3, 96, 96))
        windows = json.loads(_client(port).get_window_data(env="norow"))
        assert {"fixfake", "real", "options"} <= set(windows), set(windows)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _chromium():
    import browser
    path = browser.find()
    assert path, browser.HOW  # `make test` finds or installs one first
    return path


def _screenshot(url, out, profile):
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run", "--disable-quic",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
                    "--window-size=1280,900", "--virtual-time-budget=15000",
                    f"--screenshot={out}", url],
                   capture_output=True, timeout=120, check=True)
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def _blue_pixels(shot):
    """Pixels of plotly's first trace colour, #1f77b4."""
    return int((np.abs(shot - np.array([31, 119, 180])).max(axis=2) < 12).sum())


@pytest.mark.slow
def test_browser_shows_the_loss_plot_offline(visdom_server, tmp_path):
    """Headless Chromium opens the env page with the npm assets in place: the curve is drawn."""
    from visualize import Visualizer

    vis = Visualizer("browser", "http://127.0.0.1", visdom_server.port)
    for step in range(1, 40):
        vis.plot("errord", step, {"loss_d": 1.5 + np.sin(step / 4)}, "D loss (running mean)")
    base = f"http://127.0.0.1:{visdom_server.port}"
    empty = _screenshot(f"{base}/env/nothing_here", tmp_path / "empty.png", tmp_path / "p1")
    shot = _screenshot(f"{base}/env/browser", tmp_path / "plot.png", tmp_path / "p2")
    assert _blue_pixels(empty) < 50
    assert _blue_pixels(shot) > 300, "no loss curve on the page"


def test_the_server_keeps_its_envs_in_the_users_home_wherever_it_starts(tmp_path):
    """make visdom, started from another folder, kept the runs' windows in ~/.visdom, where
    the README says to find GAN.json: the same server started anywhere shows them again."""
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.Popen([sys.executable, str(ROOT / "visualize.py"), "serve",
                             f"--port={port}"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, HOME=str(home)), cwd=tmp_path)
    try:
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert f"envs saved in {home / '.visdom'})" in line, line
    assert (home / ".visdom").is_dir() and not (tmp_path / ".visdom").exists()


def test_visdom_assets_puts_in_place_every_file_visdoms_own_build_fetches(tmp_path):
    """`make visdom-assets` copies from npm what visdom's own build step downloads from CDNs
    at each start. A copy dropped from the script left the page without plots and passed
    every test: the venv already held the file from an earlier install. Here the script
    runs into a visdom of its own, npm standing in with the files its packages hold."""
    import ast
    import re
    from pathlib import Path
    import visdom.server.build as build
    script = (ROOT / "scripts" / "visdom-assets.sh").read_text()
    visdoms = Path(build.__file__).read_text()
    # visdom's list: each file its build fetches, by the folder the build puts it in
    fetched = next(node.value for node in ast.walk(ast.parse(visdoms))
                   if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") ==
                   "ext_files")
    wanted = {}
    for url, name in zip(fetched.keys, fetched.values):
        name = name.value  # the svg font's, fragment and all: the name visdom looks for
        folder = ("js" if name.endswith((".js", ".js.map")) else
                  "css" if name.endswith(".css") else "fonts")
        wanted[f"{folder}/{name}"] = ast.unparse(url)
    # a visdom of its own: the script finds its static folder from visdom.server
    site = tmp_path / "site"
    (site / "visdom" / "server").mkdir(parents=True)
    (site / "visdom" / "__init__.py").write_text("")
    (site / "visdom" / "server" / "__init__.py").write_text("")
    (site / "visdom" / "VERSION").write_text("0.2.4\n")
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    # npm: the files the packages it is asked for hold, under node_modules
    held = re.findall(r"\$M/([^\s\"]+)", script)
    held = [p.replace(".*", ext) for p in held
            for ext in ([".eot", ".woff", ".woff2", ".ttf", ".svg"] if ".*" in p else [""])]
    held = [p for p in held if "$part" not in p] + [
        "mathjax/MathJax.js", "mathjax/config/TeX-AMS_HTML.js",
        "mathjax/extensions/tex2jax.js", "mathjax/jax/output/HTML-CSS/jax.js",
        "mathjax/localization/en/en.js"] + [
        f"mathjax/{p.split('?')[0]}" for p in re.findall(r'"([^"]+\?V=2\.7\.5)"', visdoms)]
    npm = tmp_path / "bin" / "npm"
    npm.parent.mkdir()
    npm.write_text(f"""#!{sys.executable}
import pathlib, sys
with open({str(tmp_path / 'asked')!r}, "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1] == "install":
    for name in {held!r}:
        path = pathlib.Path("node_modules") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
""")
    npm.chmod(0o755)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "visdom-assets.sh"), str(python)],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PATH": f"{npm.parent}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    static = site / "visdom" / "static"
    missing = {name: url for name, url in wanted.items() if not (static / name).is_file()}
    assert missing == {}, missing
    assert (static / "js" / "mathjax" / "2.7.5" / "MathJax.js").is_file()
    assert (static / "version.built").read_text().strip() == "0.2.4"
    # and `python -m visdom.server`'s own check at its start fetches nothing: it fetched the
    # svg font at every start (an ERROR line where offline), found under another name
    asked_for = []

    def fetch(url, *args, **kwargs):
        asked_for.append(getattr(url, "full_url", url))
        raise build.URLError("no fetching in this test")
    opener = type("Opener", (), {"open": staticmethod(fetch)})()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build.request, "build_opener", lambda *handlers: opener)
        patch.setattr(build.request, "install_opener", lambda opener: None)
        patch.setattr("requests.get", fetch)
        build.download_scripts(install_dir=str(site / "visdom"))
    assert asked_for == []
    # the versions visdom's build names (react@16.2.0, ...), from npm
    install = (tmp_path / "asked").read_text().splitlines()[-1]
    pins = set(re.findall(r"%s([\w-]+@[\d.]*\d)", visdoms))
    assert pins and pins <= set(install.split()), (pins, install)
