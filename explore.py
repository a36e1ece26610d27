"""The explore command: a page in the browser for looking through a generator's faces.

    python main.py explore --netg-path=checkpoints/ --netd-path=checkpoints/netd_19.pth

A grid of faces with their seeds ("more" draws the next seeds; with a D, "D's best only"
shows the best of four times as many); a click shows a face large, with its seed and D
score, to download as PNG; the last two faces clicked morph into each other (a slider over
the frames, and a GIF). A seed draws the same face as ``generate --seeds``, and a morph is
the row ``interpolate`` draws for the same two seeds.

``--netg-path`` may name a checkpoint folder: the newest ``netg_*.pth`` (or ``netg_ema_*``)
in it is drawn, and "reload G" looks again, so a running training can be watched.

Gradio serves the page on 127.0.0.1 only (``--host`` to choose another interface), with no
share link and no analytics; its scripts, styles and fonts come from the installed wheel.
Gradio is an optional extra: ``make app`` (requirements-app.txt).
"""
import atexit
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

import config
from config import newest_checkpoint, resolve_device, runs_below
from errors import UserError
from generate import Faces, gif_bytes, say_widths, to_pil

PAGE = 16  # faces that "more" adds
SEARCH = 4  # D's best only: each page is the best PAGE of PAGE * SEARCH seeds
BIG = 4  # the clicked face and the morph, drawn this many times larger
INSTALL = ("the explorer page needs Gradio, an optional extra: run `make app` (or "
           "`.venv/bin/pip install -r requirements-app.txt`)")


def newest(path, kind):
    """``path`` itself, or the newest ``{kind}_N.pth`` / ``{kind}_ema_N.pth`` in a folder
    (the highest N; at the same N the moving average, which draws the samples; a folder
    without either: its last.pth, which holds both nets)."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = newest_checkpoint(path, kind, average=True)
    if found is None:
        raise UserError(f"no {kind}_N.pth in {path}{runs_below(path, kind)}: pass a file, or "
                        f"the checkpoint folder of a training that has saved once")
    return found


class Explorer:
    """What the page shows, without the page: faces by seed, D's best, one face, a morph."""

    def __init__(self, netg_path, netd_path=None, device="cpu", mean=0.0, std=1.0,
                 batch_size=64, steps=8, scale=BIG):
        self.netg_path, self.netd_path = netg_path, netd_path
        self.device, self.mean, self.std = device, mean, std
        self.batch_size, self.steps, self.scale = batch_size, steps, scale
        self.folder = Path(tempfile.mkdtemp(prefix="explore-"))  # PNGs and GIFs to download
        atexit.register(shutil.rmtree, self.folder, ignore_errors=True)
        self.reload()

    def reload(self):
        """Load the newest G (and D) again; returns a line saying which files are drawn."""
        g_file = newest(self.netg_path, "netg")
        d_file = newest(self.netd_path, "netd") if self.netd_path else None
        self.faces = Faces.load(g_file, d_file, self.device, mean=self.mean, std=self.std,
                                batch_size=self.batch_size)
        self.g_file, self.d_file = g_file, d_file  # only once they loaded
        return self.source()

    def source(self):
        d = f", judged by {self.d_file}" if self.d_file else ""
        average = " (its moving average of G)" if self.faces.averaged else ""
        return f"Faces of {self.g_file}{average}{d}"

    @torch.no_grad()
    def page(self, first, best=False):
        """The next page of faces from seed ``first``: ([(PIL image, caption)], seeds,
        the first seed of the page after it)."""
        if best and self.faces.netd is not None:
            faces, scores, seeds = self.faces.best(PAGE, PAGE * SEARCH, first)
            return self._items(faces, scores, seeds), seeds, first + PAGE * SEARCH
        seeds = list(range(first, first + PAGE))
        return self.items(seeds), seeds, first + PAGE

    @torch.no_grad()
    def items(self, seeds):
        """The grid's (PIL image, caption) of each of ``seeds``."""
        faces = self.faces.tensors(seeds)
        return self._items(faces, self.faces.scores(faces), seeds)

    def _items(self, faces, scores, seeds):
        return [(to_pil(face), self.caption(seed, score))
                for face, seed, score in zip(faces, seeds, scores.tolist())]

    @staticmethod
    def caption(seed, score, short=True):
        """The grid's caption (narrow: seed · D score to 2 places), or the large face's."""
        if score != score:  # no D
            return f"{seed}" if short else f"seed {seed}"
        return f"{seed} · D {score:.2f}" if short else f"seed {seed} · D {score:.3f}"

    @torch.no_grad()
    def face(self, seed):
        """One face, large: (PIL image, its caption, the path of its 96-pixel PNG)."""
        face = self.faces.tensors([seed])
        score = self.faces.scores(face)[0].item()
        path = self.folder / f"face_seed{seed}.png"
        to_pil(face[0]).save(path)
        return to_pil(face[0], self.scale), self.caption(seed, score, short=False), str(path)

    @torch.no_grad()
    def morph(self, a, b):
        """The morph from seed a to seed b: (its frames as PIL images, ``scale`` times 96
        pixels, the path of a GIF going there and back)."""
        frames = [to_pil(face, self.scale) for face in self.faces.morph([a, b], self.steps)[0]]
        path = self.folder / f"morph_{a}_{b}.gif"
        path.write_bytes(gif_bytes(frames + frames[-2:0:-1]))
        return frames, str(path)


def build_page(explorer, gr):
    """The Gradio page over ``explorer``."""
    has_d = explorer.faces.netd is not None
    with gr.Blocks(title="AnimeGAN explorer", analytics_enabled=False) as page:
        state = gr.State({"next": 0, "seeds": [], "items": [], "picked": [], "frames": []})
        header = gr.Markdown(explorer.source(), elem_id="source")
        with gr.Row():
            # checked by draw, in its own words: Gradio's range check printed a traceback in
            # the terminal for each number out of range, and its rounding took 2.5 for 2
            first = gr.Number(0, label="first seed", elem_id="first")
            best = gr.Checkbox(False, label=f"D's best only (of {SEARCH}x as many)",
                               interactive=has_d, elem_id="best")
            show = gr.Button("show", elem_id="show")
            more = gr.Button("more", elem_id="more")
            reload = gr.Button("reload G", elem_id="reload")
        gallery = gr.Gallery(label="faces: seed · D score (click one)", columns=8,
                             format="png", allow_preview=False, buttons=[], height="auto",
                             elem_id="faces")
        with gr.Row():
            big = gr.Image(label="face", format="png", type="pil", interactive=False,
                           buttons=["download"], elem_id="face")
            with gr.Column():
                caption = gr.Markdown("Click a face to see it here.", elem_id="caption")
                download = gr.DownloadButton("download PNG", visible=False,
                                             elem_id="download")
                picked = gr.Markdown("Click two faces, then morph from the first to the "
                                     "second.", elem_id="picked")
                morph = gr.Button("morph", elem_id="morph")
        with gr.Row():
            with gr.Column():
                step = gr.Slider(0, explorer.steps - 1, value=0, step=1,
                                 label="morph step", elem_id="step")
                frame = gr.Image(label="morph frame", format="png", type="pil",
                                 interactive=False, buttons=["download"], elem_id="frame")
            gif = gr.Image(label="morph (GIF)", type="filepath", interactive=False,
                           buttons=["download"], elem_id="gif")

        def draw(start, only_best, st):
            start = start or 0
            number = isinstance(start, (int, float)) and not isinstance(start, bool)
            if not (number and math.isfinite(start) and start == int(start)
                    and 0 <= start <= config.MAX_SEED):  # (text: from a script's call)
                whole = number and math.isfinite(start) and start == int(start) \
                    and abs(start) < 1e15  # as typed: 2147483649 was shown as 2.14748e+09
                typed = int(start) if whole else f"{start:g}" if number else repr(start)
                # said on the page, the faces shown kept (an error emptied the grid)
                gr.Warning(f"the first seed must be a whole number from 0 to 2**31, not "
                           f"{typed}")
                return gr.skip(), st
            start = int(start)
            items, seeds, after = explorer.page(start, only_best)
            st = dict(st, next=after, seeds=seeds, items=items)
            return items, st

        def add(only_best, st):
            items, seeds, after = explorer.page(st["next"], only_best)
            st = dict(st, next=after, seeds=st["seeds"] + seeds, items=st["items"] + items)
            return st["items"], st

        def again(start, only_best, st):
            try:
                line = explorer.reload()
            except UserError as e:  # a file cut short, a folder emptied: the page says it,
                gr.Warning(str(e))  # and the faces of the G loaded before stay
                return gr.skip(), gr.skip(), st
            seeds = st["seeds"]
            if not seeds:
                items, st = draw(start, only_best, st)
                return line, items, st
            items = explorer.items(seeds)  # the same seeds, the new weights
            return line, items, dict(st, items=items)

        def pick(st, evt: gr.SelectData):
            seed = st["seeds"][evt.index]
            image, text, path = explorer.face(seed)
            chosen = (st["picked"] + [seed])[-2:]
            st = dict(st, picked=chosen)
            line = (f"Morph: seed {chosen[0]} → seed {chosen[1]}" if len(chosen) == 2
                    else f"Morph from seed {seed}: click a second face.")
            return image, f"**{text}**", gr.DownloadButton(value=path, visible=True), line, st

        def make_morph(st):
            if len(st["picked"]) < 2:
                gr.Warning("click two faces first")
                return gr.skip(), gr.skip(), gr.skip(), st
            frames, path = explorer.morph(*st["picked"])
            st = dict(st, frames=frames)
            return frames[0], gr.Slider(value=0), path, st

        def show_step(i, st):
            return st["frames"][int(i)] if st["frames"] else None

        show.click(draw, [first, best, state], [gallery, state])
        first.submit(draw, [first, best, state], [gallery, state])
        best.change(draw, [first, best, state], [gallery, state])
        more.click(add, [best, state], [gallery, state])
        reload.click(again, [first, best, state], [header, gallery, state])
        gallery.select(pick, [state], [big, caption, download, picked, state])
        morph.click(make_morph, [state], [frame, step, gif, state])
        step.change(show_step, [step, state], [frame])
        page.load(draw, [first, best, state], [gallery, state])
    return page


def explore(opt):
    # the files first (one line if they are wrong), then the optional package
    explorer = Explorer(opt.netg_path, opt.netd_path, resolve_device(opt.gpu),
                        mean=opt.gen_mean, std=opt.gen_std, batch_size=opt.batch_size,
                        steps=opt.steps)
    say_widths(opt, explorer.faces, explorer.g_file, explorer.d_file)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # Gradio keeps the images it serves in /tmp/gradio unless told otherwise; another user's
    # folder of that name there would leave the page without faces
    if "GRADIO_TEMP_DIR" not in os.environ:
        os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="explore-gradio-")
        atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)
    import importlib.util
    if importlib.util.find_spec("gradio") is None:
        raise UserError(INSTALL)
    # an IPv6 address as a URL writes it, [::1]: bare, its URL was http://::1:7860/ and
    # Gradio's request to it a traceback (httpx.InvalidURL)
    host = f"[{opt.host}]" if ":" in opt.host and not opt.host.startswith("[") else opt.host
    # the address before gradio's import (about 5 s) and before it is printed as the one to open
    _check_listen(host, opt.port)
    try:
        import gradio as gr
    except ImportError:
        raise UserError(INSTALL) from None
    page = build_page(explorer, gr)
    where = (f"http://127.0.0.1:{opt.port}/ (or this machine's address, from elsewhere)"
             if host == "0.0.0.0" else f"http://{host}:{opt.port}/")
    print(f"{explorer.source()}; open {where} (Ctrl-C to stop)", flush=True)
    try:
        page.launch(server_name=host, server_port=opt.port, share=False,
                    inbrowser=False, quiet=True, show_error=True, prevent_thread_lock=True)
    except OSError:
        raise UserError(_CANNOT_SERVE.format(host=host, port=opt.port)) from None
    # served until Ctrl-C or SIGTERM, which end it as every command's do (a line, status 130
    # or 143, the temporary folders removed): Gradio's own wait printed "Keyboard
    # interruption in main thread... closing server." and ended with status 0
    try:
        while page.is_running:
            time.sleep(0.1)
    finally:
        page.close(verbose=False)  # (it printed "Closing server running on port: N")


_CANNOT_SERVE = ("cannot serve on {host}:{port} (the port is taken, or the address is not this "
                 "machine's): pass another --port or --host")


def _check_listen(host, port):
    """Bind the page's address for a moment: a taken port or a foreign address is refused
    before anything is printed (uvicorn would log an ERROR line of its own first)."""
    import errno
    import socket
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]
    try:
        addresses = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM)
    except OSError:
        raise UserError(f"cannot serve on {host}:{port}: {host!r} is not a name or address "
                        f"this machine knows; pass --host=127.0.0.1 (this machine only) or "
                        f"--host=0.0.0.0 (every address)") from None
    errors = set()
    for family, kind, proto, _, address in addresses:  # one that binds is enough
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(address)
            return
        except OSError as e:
            errors.add(e.errno)
    if errno.EADDRINUSE in errors:
        raise UserError(f"cannot serve on {host}:{port}: the port is taken (another explore "
                        f"page or server is on it): pass another --port, e.g. --port={port + 1}"
                        if port < 65535 else f"cannot serve on {host}:{port}: the port is "
                        f"taken: pass another --port")
    if errno.EACCES in errors:
        raise UserError(f"cannot serve on {host}:{port}: ports below 1024 need root: pass "
                        f"--port=7860 or another above 1023")
    if errno.EADDRNOTAVAIL in errors:
        raise UserError(f"cannot serve on {host}:{port}: {host} is not an address of this "
                        f"machine: pass --host=127.0.0.1 (this machine only) or --host=0.0.0.0")
    raise UserError(_CANNOT_SERVE.format(host=host, port=port))
