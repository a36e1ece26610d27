"""The synthetic anime-face set: procedural 96x96 avatars a fresh clone can train on.

We cannot ship the crawled anime faces, so we draw our own: a face with a pointed chin, hair
with bangs and side locks framing it, large eyes (iris, pupil, highlight, lashes), brows, a
small mouth, optional blush and a plain background. Every attribute is drawn independently
and written to ``attributes.csv``; small jitter in position, scale and tilt keeps the set
from being a handful of templates. Each image is drawn at 4x and box-downsampled, so edges
are anti-aliased. Image ``i`` depends only on ``(seed, i)``: the set is the same for a seed
whatever the number of worker processes.

    python main.py toyfaces --out-dir=data-toy --num=10000 --seed=0
"""
import csv
import functools
import itertools
import math
import os
import random
import sys
from contextlib import nullcontext
from pathlib import Path

from PIL import Image, ImageDraw

from errors import command_line, progress_bar, quoted, raise_if_stopped, running

VERSION = 1  # bump when the drawing changes: caches keyed on the toy set depend on it

SIZE = 96
UNFINISHED = ".toyfaces-unfinished"  # in OUT_DIR while a set is drawn: the command to finish it
SUPER = 4  # drawn at 4x, then downsampled

HAIR_COLORS = {
    "black": (40, 38, 52), "brown": (112, 70, 40), "blonde": (236, 200, 104),
    "red": (196, 48, 44), "pink": (244, 140, 178), "blue": (60, 100, 210),
    "silver": (206, 210, 222), "green": (60, 160, 90), "purple": (130, 70, 180),
}
HAIR_STYLES = ("bob", "long", "twintails", "spiky")
EYE_COLORS = {
    "blue": (40, 110, 230), "green": (30, 160, 70), "red": (210, 30, 40),
    "purple": (140, 50, 200), "brown": (120, 70, 30), "gold": (230, 170, 20),
}
SKIN_TONES = {"fair": (255, 232, 218), "light": (246, 208, 176), "tan": (204, 150, 110)}
MOUTHS = ("smile", "open", "flat")
BACKGROUNDS = {
    "white": (242, 242, 238), "sky": (170, 210, 240), "mint": (180, 232, 200),
    "peach": (250, 206, 180), "lilac": (214, 196, 240), "grey": (120, 124, 134),
}
ATTRIBUTES = ("hair_color", "hair_style", "eye_color", "skin_tone", "mouth", "blush", "background")
CHOICES = {
    "hair_color": tuple(HAIR_COLORS), "hair_style": HAIR_STYLES, "eye_color": tuple(EYE_COLORS),
    "skin_tone": tuple(SKIN_TONES), "mouth": MOUTHS, "blush": ("no", "yes"),
    "background": tuple(BACKGROUNDS),
}


def _shade(color, k):
    """k < 1 darkens, k > 1 mixes towards white."""
    if k <= 1:
        return tuple(int(c * k) for c in color)
    t = k - 1
    return tuple(int(c + (255 - c) * t) for c in color)


def _jitter(rng, color, amount=8):
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in color)


def sample_attributes(rng):
    """One independent, uniform choice per attribute."""
    return {name: rng.choice(CHOICES[name]) for name in ATTRIBUTES}


@functools.lru_cache(maxsize=None)
def _arc_points(cx, cy, rx, ry, a0, a1, n):
    """n+1 points on an elliptic arc, angles in degrees (0 = right, 90 = down). The shapes'
    arcs are the same for every face (the pen tilts and moves them): each is computed once."""
    return tuple((cx + rx * math.cos(math.radians(a0 + (a1 - a0) * i / n)),
                  cy + ry * math.sin(math.radians(a0 + (a1 - a0) * i / n)))
                 for i in range(n + 1))


class _Pen:
    """Draws in face coordinates: origin at the face centre, units of output pixels.

    Every shape becomes a polygon, so scale, shift and tilt apply exactly to all of it
    (rotating the finished image instead costs 4x more time than all the drawing).
    """

    def __init__(self, draw, cx, cy, scale, tilt):
        self.draw, self.cx, self.cy, self.k = draw, cx, cy, scale * SUPER
        self.cos, self.sin = math.cos(math.radians(tilt)), math.sin(math.radians(tilt))

    def _all(self, points):
        """The points in the image's coordinates: turned by the tilt, scaled, moved."""
        cx, cy, k, c, s = self.cx, self.cy, self.k, self.cos, self.sin
        return [(cx + (x * c - y * s) * k, cy + (x * s + y * c) * k) for x, y in points]

    def w(self, width):
        return max(1, round(width * self.k))

    def ellipse(self, x0, y0, x1, y1, fill=None, outline=None, width=1.0):
        points = _arc_points((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2, 0, 360, 36)
        self.polygon(points[:-1], fill=fill, outline=outline, width=width)

    def polygon(self, points, fill=None, outline=None, width=1.0):
        self.draw.polygon(self._all(points), fill=fill, outline=outline,
                          width=self.w(width))

    def line(self, points, fill, width=1.0):
        self.draw.line(self._all(points), fill=fill, width=self.w(width),
                       joint="curve")

    def arc(self, x0, y0, x1, y1, start, end, fill, width=1.0):
        self.line(_arc_points((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2,
                              start, end, 12), fill=fill, width=width)

    def chord(self, x0, y0, x1, y1, start, end, fill):
        self.polygon(_arc_points((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2,
                                 start, end, 16), fill=fill)


def _back_hair(pen, style, hair, dark):
    pen.ellipse(-31, -47, 31, 12, fill=hair, outline=dark, width=0.8)  # the skull under the hair
    if style == "bob":
        pen.polygon([(-31, -16), (-33, 26), (-22, 29), (22, 29), (33, 26), (31, -16)],
                    fill=hair, outline=dark, width=0.8)
    elif style == "long":
        pen.polygon([(-31, -16), (-38, 52), (38, 52), (31, -16)], fill=hair, outline=dark,
                    width=0.8)
    elif style == "twintails":
        for s in (-1, 1):
            pen.polygon([(s * 24, -34), (s * 40, -30), (s * 47, -6), (s * 45, 30), (s * 38, 50),
                         (s * 33, 30), (s * 30, -6)], fill=hair, outline=dark, width=0.8)
            pen.ellipse(s * 27 - 4, -37, s * 27 + 4, -29, fill=(230, 60, 80))  # hair tie
    else:  # spiky: short hair with spikes all round the top
        spikes = []
        for i, (x, y) in enumerate(_arc_points(0, -12, 33, 34, 160, 380, 12)):
            r = 1.0 if i % 2 == 0 else 1.22
            spikes.append((x * r, -12 + (y + 12) * r))
        pen.polygon(spikes, fill=hair, outline=dark, width=0.8)


def _face(pen, skin, outline):
    pen.ellipse(-22, -30, 22, 20, fill=skin)
    jaw = [(-22, 0), (-21, 10), (-15, 21), (-7, 28), (0, 31), (7, 28), (15, 21), (21, 10), (22, 0)]
    pen.polygon(jaw, fill=skin)
    pen.line(jaw, fill=outline, width=0.7)


def _eyes(pen, iris, lash):
    iris_dark = _shade(iris, 0.55)
    iris_light = _shade(iris, 1.35)
    for s in (-1, 1):
        x = s * 11
        pen.ellipse(x - 7, -3, x + 7, 12, fill=(255, 255, 255))  # white
        pen.ellipse(x - 5, -2, x + 5, 12, fill=iris_dark)  # iris, dark rim on top
        pen.ellipse(x - 4, 2, x + 4, 11.5, fill=iris)
        pen.ellipse(x - 3, 6, x + 3, 11, fill=iris_light)  # lighter lower half
        pen.ellipse(x - 2, 1.5, x + 2, 8, fill=(20, 16, 24))  # pupil
        pen.ellipse(x - s * 1.5 - 2.4, -0.5, x - s * 1.5 + 0.6, 3.5, fill=(255, 255, 255))
        pen.ellipse(x + s * 1.5 - 0.6, 7.5, x + s * 1.5 + 0.8, 9, fill=(255, 255, 255))
        # thick upper lash with a flick at the outer corner, thin lower line
        pen.polygon([(x - s * 7.5, 0), (x - s * 4, -3.5), (x + s * 3, -4), (x + s * 8.5, -2),
                     (x + s * 9.5, -3.5), (x + s * 8, 0.5), (x + s * 3, -1.8), (x - s * 4, -1.6)],
                    fill=lash)
        pen.line([(x - s * 4, 12.3), (x + s * 5, 11.8)], fill=lash, width=0.6)


def _brows(pen, color):
    for s in (-1, 1):
        pen.line([(s * 5.5, -8), (s * 11, -9.6), (s * 16, -8.6)], fill=color, width=1.1)


def _mouth(pen, mouth, skin):
    line = (150, 60, 60)
    if mouth == "smile":
        pen.arc(-4.5, 14, 4.5, 21.5, 20, 160, fill=line, width=1.0)
    elif mouth == "open":
        pen.chord(-3.6, 16, 3.6, 24, 0, 180, fill=(170, 40, 50))
        pen.chord(-2.2, 20, 2.2, 23.6, 180, 360, fill=(240, 120, 130))  # tongue
    else:
        pen.line([(-3, 20), (0, 20.6), (3, 20)], fill=line, width=0.9)
    pen.line([(0.4, 12.5), (-0.3, 14)], fill=_shade(skin, 0.75), width=0.7)  # nose


def _blush(pen):
    for s in (-1, 1):
        pen.ellipse(s * 14 - 4.5, 11.5, s * 14 + 4.5, 15, fill=(255, 90, 110, 90))
        for i in (-2, 0, 2):
            pen.line([(s * 14 + i + 0.8, 12), (s * 14 + i - 0.4, 14.5)], fill=(230, 70, 90, 150),
                     width=0.4)


def _bangs(pen, style, hair, dark, light):
    # the top of the head, then a zigzag fringe from right to left
    top = _arc_points(0, -14, 30, 33, 180, 360, 12)
    if style == "spiky":
        tips = [(25, -6), (19, -24), (13, -8), (6, -22), (0, -10), (-6, -23), (-12, -6),
                (-19, -24), (-25, -6)]
    elif style == "long":  # parted in the middle
        tips = [(26, 2), (20, -18), (14, -12), (8, -22), (2, -30), (-2, -30), (-8, -22),
                (-14, -12), (-20, -18), (-26, 2)]
    elif style == "bob":  # straight cut
        tips = [(26, -4), (21, -16), (17, -11), (12, -17), (7, -11), (2, -17), (-3, -11),
                (-8, -17), (-13, -11), (-18, -17), (-22, -12), (-26, -4)]
    else:  # twintails: swept to one side
        tips = [(26, -2), (20, -20), (16, -12), (8, -22), (2, -10), (-4, -20), (-12, -8),
                (-17, -20), (-26, -6)]
    fringe = [*top, (30, -14), *tips, (-30, -14)]
    pen.polygon(fringe, fill=hair, outline=dark, width=0.8)
    # side locks hanging in front of the cheeks
    for s in (-1, 1):
        pen.polygon([(s * 22, -14), (s * 27, -10), (s * 27, 22), (s * 24, 30), (s * 21, 18),
                     (s * 20, -6)], fill=hair, outline=dark, width=0.7)
    pen.arc(-22, -40, 22, -8, 200, 250, fill=light, width=1.6)  # shine on the hair


def draw_face(attrs, rng):
    """Draw one face (a 96x96 RGB PIL image) for the given attributes and jitter source."""
    big = SIZE * SUPER
    background = _jitter(rng, BACKGROUNDS[attrs["background"]], 6)
    img = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(img, "RGBA")
    scale = rng.uniform(0.92, 1.08)
    cx = (48 + rng.uniform(-3, 3)) * SUPER
    cy = (50 + rng.uniform(-3, 3)) * SUPER
    pen = _Pen(draw, cx, cy, scale, tilt=rng.uniform(-8, 8))

    hair = _jitter(rng, HAIR_COLORS[attrs["hair_color"]])
    dark, light = _shade(hair, 0.6), _shade(hair, 1.4)
    skin = SKIN_TONES[attrs["skin_tone"]]
    iris = _jitter(rng, EYE_COLORS[attrs["eye_color"]])

    _back_hair(pen, attrs["hair_style"], hair, dark)
    pen.polygon([(-7, 22), (7, 22), (8, 44), (-8, 44)], fill=_shade(skin, 0.85))  # neck
    pen.polygon([(-48, 60), (-42, 44), (-14, 38), (0, 48), (14, 38), (42, 44), (48, 60)],
                fill=(50, 56, 86))  # clothes
    pen.polygon([(-14, 38), (0, 48), (14, 38), (9, 37), (0, 43), (-9, 37)], fill=(245, 245, 245))
    _face(pen, skin, _shade(skin, 0.7))
    _eyes(pen, iris, _shade(hair, 0.35) if attrs["hair_color"] != "black" else (20, 18, 26))
    _brows(pen, _shade(hair, 0.55))
    _mouth(pen, attrs["mouth"], skin)
    if attrs["blush"] == "yes":
        _blush(pen)
    _bangs(pen, attrs["hair_style"], hair, dark, light)
    return img.reduce(SUPER)


def face(seed, index):
    """The attributes and image of face ``index`` of the set drawn with ``seed``."""
    rng = random.Random(seed * 1_000_003 + index)
    attrs = sample_attributes(rng)
    return attrs, draw_face(attrs, rng)


FACE_BYTES = 5400  # a face's JPEG on disk, on average (the 10,000 of the default set)
QUALITY = 95  # the faces' JPEG quality
BLOCK = 4096  # faces handed to the workers at a time: memory does not grow with --num


def finishing(out, num, seed):
    """The command that draws the set whole: the text of ``out``'s mark (UNFINISHED), named
    as every command a line gives to paste is (errors.command_line: this Python, not a bare
    `python` that may lack the project's packages)."""
    return command_line(f"toyfaces --out-dir={quoted(out)} --num={num} --seed={seed}") + "\n"


def room(num, drawn, block, mark):
    """About what drawing a set of ``num`` faces takes of a disk whose files take whole
    ``block``-byte blocks, ``drawn`` of its faces there already: the faces left, their names in
    faces/, attributes.csv and the ``mark`` (UNFINISHED's text). The faces alone were
    counted, and a disk they filled to the last block refused the CSV at the end."""
    def whole(nbytes):
        return -(-nbytes // block) * block
    name = len(f"{num - 1:06d}.jpg")
    row = name + sum(max(map(len, CHOICES[a])) for a in ATTRIBUTES) + len(ATTRIBUTES) + 2
    header = len("file") + sum(map(len, ATTRIBUTES)) + len(ATTRIBUTES) + 2  # (\r\n: csv's)
    entry = 8 + name + 3  # a name in a folder of ext4's (8 bytes and the name, in steps of 4)
    return ((num - drawn) * (whole(FACE_BYTES) + entry) + whole(header + num * row)
            + whole(len(mark.encode())))


def _write_one(job):
    out, seed, index = job
    attrs, img = face(seed, index)
    name = f"{index:06d}.jpg"
    tmp = out / f".{name}.{os.getpid()}.tmp"  # a full disk leaves no cut-short face behind
    try:
        try:
            tmp.write_bytes(_jpeg(img))  # (PIL's own writer did not notice a short write)
        except OSError as e:  # named as the face, not as the temporary file
            raise OSError(e.errno, e.strerror, str(out / name)) from None
        os.replace(tmp, out / name)
    finally:
        tmp.unlink(missing_ok=True)
    return name, attrs


def _jpeg(img):
    """A face's JPEG file, as bytes."""
    import io
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=QUALITY)
    return buf.getvalue()


def drawn_here(path, seed):
    """Whether the file ``path`` (``000123.jpg``) is the face this module writes under that
    name for ``seed``, byte for byte: a stopped run's, not someone's own image of that name."""
    _, img = face(seed, int(Path(path).stem))
    try:
        return Path(path).read_bytes() == _jpeg(img)
    except OSError:
        return False


def make_toyfaces(out_dir="data-toy", num=10000, seed=0, workers=None, progress=None):
    """Write ``num`` faces to ``out_dir/faces/`` and their attributes to ``out_dir/attributes.csv``.

    Returns the path of the CSV. ``progress`` wraps the result iterator (e.g. tqdm).
    """
    out = Path(out_dir)
    faces = out / "faces"
    faces.mkdir(parents=True, exist_ok=True)
    # the temporary files of a run a kill -9 ended, each named .NAME.PID.tmp (the CSV's with
    # letters of its own after PID, below): the set drawn whole kept them, a face or the CSV
    # cut short and hidden beside it, for good
    for stale in [*faces.glob(".*.jpg.*.tmp"), *out.glob(".attributes.csv.*.tmp")]:
        pid = stale.name.split(".")[-2].partition("-")[0]
        if pid.isdigit() and not running(int(pid)):
            stale.unlink(missing_ok=True)
    workers = workers or os.cpu_count() or 1

    def pooling():  # started once the CSV's file is open, so that nothing leaks if it is not
        if workers > 1 and num >= 64:
            from data import start_pool  # torch with it: not loaded for a handful of faces
            return start_pool(workers)
        return nullcontext()

    def blocks(write):  # each block's jobs made when the one before is done
        for start in range(0, num, BLOCK):
            yield write(_write_one, ((faces, seed, i) for i in range(start, min(num,
                                                                                start + BLOCK))))

    csv_path = out / "attributes.csv"
    # this run's own: two runs drawing the same set at once (make demo and make demo-long in
    # two terminals) wrote into one, and the later to finish found it renamed, a traceback
    tmp = csv_path.with_name(f".{csv_path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    # there until the set is whole: a training on a stopped run's faces says it is not
    (out / UNFINISHED).write_text(finishing(out, num, seed))
    try:
        with open(tmp, "w", newline="") as f, pooling() as pool:
            write = (lambda fn, jobs: pool.imap(fn, jobs, chunksize=64)) if pool else map
            rows = itertools.chain.from_iterable(blocks(write))
            writer = csv.writer(f)
            writer.writerow(("file",) + ATTRIBUTES)
            with progress_bar(progress, rows, total=num) as bar:
                for name, attrs in rows if bar is None else bar:
                    raise_if_stopped()  # a Ctrl-C whose exception was lost stops it
                    writer.writerow((name,) + tuple(attrs[a] for a in ATTRIBUTES))
        os.replace(tmp, csv_path)
        (out / UNFINISHED).unlink(missing_ok=True)  # (the other's end may have removed it)
    finally:
        tmp.unlink(missing_ok=True)
    return csv_path


if __name__ == "__main__":  # the command lives in main.py, with the others
    sys.exit("error: toyfaces.py is a module: run `python main.py toyfaces --out-dir=data-toy "
             "--num=10000 --seed=0`")
