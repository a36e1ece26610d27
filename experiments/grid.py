"""The hair colours of a saved grid of toy faces, counted: what the demo's grids are judged by
(every one of the toy set's 9 hair colours, none on more than a quarter of the faces), read by
evaluate's attribute classifier instead of by eye, with the faces it reads as clear.

    .venv/bin/python experiments/grid.py result.png imgs/demo/4.png

A grid is laid out as generate and train save theirs: faces of 96 pixels, 8 to a row, 2-pixel
black gaps around and between them (a lone face has none). Blank places in the last row are
left out. The classifier is the one evaluate trains and keeps (trained here if it is missing:
3 to 4 minutes on 2 cores).
"""
import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from errors import (OneLineParser, Terminated, UserError, refusal, require,  # noqa: E402
                    stop_on_signals)


def faces_of(picture):
    """The faces of a grid picture (an RGB PIL image) as uint8 (N, 3, side, side), read from
    the places checkpoint.tile put them (the toy set's side, the book's)."""
    import numpy as np
    import torch
    from checkpoint import GAP as gap, SIDE as side, grid_places
    pixels = np.asarray(picture)
    height, width = pixels.shape[:2]
    if (width, height) == (side, side):
        places = [(0, 0)]  # a lone face, with no border
    else:
        across, rest = divmod(width - gap, side + gap)
        rows, rest_rows = divmod(height - gap, side + gap)
        if rest or rest_rows or not across or not rows:
            raise UserError(f"{width}x{height} pixels, not a grid of {side}-pixel faces with "
                            f"{gap}-pixel gaps")
        places = grid_places(rows * across, across, side, gap)
    faces = [pixels[top:top + side, left:left + side] for top, left in places]
    faces = [f for f in faces if f.any()]  # the blank end of a last row
    if not faces:
        raise UserError(f"{width}x{height} pixels of black, with no face in any place")
    return torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).contiguous()


def hair_colours(net, faces):
    """(how many faces of each hair colour, most first; how many faces are clear), as
    evaluate's attribute modes read them (its shares of all the faces, times their number)."""
    import metrics
    read, total = metrics.modes(net, faces), len(faces)
    counts = collections.Counter({colour: round(share * total) for colour, share
                                  in read["value_shares"]["hair_color"].items() if share})
    return counts.most_common(), round(read["confident_share"] * total)


def report(name, counts, clear, total):
    """Two lines: whether the grid holds the demo's bar, then every colour's count."""
    import toyfaces
    names = list(toyfaces.CHOICES["hair_color"])
    missing = [c for c in names if c not in dict(counts)]
    most, most_faces = counts[0]
    crowded = most_faces * 4 > total
    shown = f"{len(counts)} of {len(names)} hair colours" + (
        f" (none {', none '.join(missing)})" if missing else "")
    spread = (f"{most} on {most_faces}, more than a quarter" if crowded else
              f"none on more than a quarter (the most: {most}, {most_faces})")
    return (f"{name}: {total} faces, {shown}, {spread}; {clear} clear ({clear / total:.0%}): "
            f"{'fails' if missing or crowded else 'holds'} the demo's bar\n  "
            + ", ".join(f"{c} {n}" for c, n in counts))


def main(argv=None):
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grids", nargs="+", metavar="GRID", help="image files of face grids")
    args = parser.parse_args(argv)
    import data
    pictures = []
    for path in args.grids:  # every file read before the classifier: a wrong one fails fast
        try:
            pictures.append((path, faces_of(data.open_rgb(path))))
        except OSError as e:
            why = refusal(e) or e.strerror or e
            raise UserError(f"{path} cannot be read as an image ({why}): give a grid that "
                            "generate or train saved") from None
        except UserError as e:
            raise UserError(f"{path} is {e}: give a grid that generate or train saved") from None
    import metrics
    net, _ = metrics.attribute_classifier(progress=lambda line: print(line, file=sys.stderr))
    for path, faces in pictures:
        counts, clear = hair_colours(net, faces)
        print(report(path, counts, clear, len(faces)))


if __name__ == "__main__":
    require(__file__, "torch", "numpy", "PIL")
    stop_on_signals()
    try:
        main()
    except (KeyboardInterrupt, Terminated) as stop:  # it writes nothing: nothing is lost
        print("\n" + ("terminated" if isinstance(stop, Terminated) else "interrupted"),
              file=sys.stderr)
        sys.exit(143 if isinstance(stop, Terminated) else 130)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
