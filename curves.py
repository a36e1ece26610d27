"""Training curves on disk, for users without visdom: ``losses.csv`` and ``losses.png``.

Every ``plot_every`` batches train appends one row (the running means since the last save
point, as the book plots them); at every save point the CSV is drawn to ``losses.png``.
"""
import csv
import errno
import io
import os
from pathlib import Path

import checkpoint
from errors import DiskFull, stop_wins

COLUMNS = ("step", "epoch", "loss_d", "loss_g", "d_real", "d_fake", "images_per_s")


def read_rows(path, up_to=None):
    """The rows of a losses.csv, as dicts of numbers; with ``up_to``, those of the steps up
    to it (a resumed run's: the rows past its step belong to a run that no longer exists).
    A row cut short (a run killed, or a full disk, while it appended the row) is left out:
    it stopped the resumed run, and the plot at every save, with a traceback."""
    rows = []
    # utf-8-sig: a log saved again by a spreadsheet begins with a byte-order mark, which
    # named the first column "\ufeffstep" and failed the resume with a KeyError traceback; a
    # byte that is not UTF-8 (a hand edit) failed it with a UnicodeDecodeError, where it now
    # spoils its row alone
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        text = f.read()
    # a log saved again by a spreadsheet set to a language with decimal commas has ";" (or a
    # tab) between its columns, and a hand edit may put spaces after the commas: the names
    # then matched none of ours, and a resume rewrote the log without a single row
    header = text.partition("\n")[0]
    comma = max(",;\t", key=header.count)
    for row in csv.DictReader(io.StringIO(text, newline=""), delimiter=comma):
        row = {k.strip().lower(): v.strip() for k, v in row.items()
               if k is not None and isinstance(v, str)}
        try:  # only our columns: one added by hand failed the resume's rewrite of the
            # file with a ValueError traceback; a row short of one of ours is left out
            rows.append({k: (int(row[k]) if k in ("step", "epoch") else
                             float(row[k].replace(",", ".") if comma != "," else row[k]))
                         for k in COLUMNS})
        except (KeyError, TypeError, ValueError):
            continue
    return rows if up_to is None else [r for r in rows if r["step"] <= up_to]


class LossLog:
    def __init__(self, folder, resume_step=None, loss="bce"):
        self.loss = loss  # names the curves' unit on the plot
        self.csv = Path(folder) / "losses.csv"
        self.png = Path(folder) / "losses.png"
        # a fresh run starts a fresh log; a resumed one keeps the rows up to its step
        resumed = resume_step is not None and self.csv.is_file()
        self._write(read_rows(self.csv, up_to=resume_step) if resumed else [])

    def rows(self):
        return read_rows(self.csv)

    def _write(self, rows):
        out = io.StringIO()
        writer = csv.DictWriter(out, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        checkpoint.save_text(out.getvalue(), self.csv)

    def append(self, step, epoch, means, speed):
        """One row, whole or not at all: on a full disk the file is cut back to the rows
        before it (it kept half a row) and DiskFull names it."""
        row = io.StringIO()
        csv.writer(row).writerow([step, epoch] + [f"{means[k]:.6g}" for k in
                                                  ("loss_d", "loss_g", "d_real", "d_fake")]
                                 + [f"{speed:.1f}"])
        data = row.getvalue().encode()
        fd = os.open(self.csv, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                while data:  # a part taken (the disk full, a file size limit): the rest's
                    written = os.write(fd, data)  # write says why
                    if not written:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    data = data[written:]
            except OSError as e:
                os.ftruncate(fd, start)
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):  # named: os.write names none
                    raise OSError(e.errno, e.strerror, str(self.csv)) from None
                raise DiskFull(self.csv) from None
        finally:
            os.close(fd)

    def plot(self):
        """Draw losses.png: the D and G losses, and D's mean outputs, against the step."""
        with stop_wins():  # a second Ctrl-C in the renderer: the Ctrl-C, not a ValueError
            self._plot()

    def _plot(self):
        rows = self.rows()
        if not rows:
            return
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        step = [r["step"] for r in rows]
        mark = dict(marker="o") if len(rows) == 1 else {}  # a line of one point draws nothing
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 2]})
        top.plot(step, [r["loss_d"] for r in rows], label="D loss", color="tab:blue", **mark)
        top.plot(step, [r["loss_g"] for r in rows], label="G loss", color="tab:orange", **mark)
        top.set_ylabel(f"{'hinge' if self.loss == 'hinge' else 'BCE'} loss (running mean)")
        top.set_title("DCGAN training losses")
        top.legend(loc="upper right")
        top.grid(alpha=0.3)
        bottom.plot(step, [r["d_real"] for r in rows], label="D(x), real", color="tab:green",
                    **mark)
        bottom.plot(step, [r["d_fake"] for r in rows], label="D(G(z)), fake", color="tab:red",
                    **mark)
        bottom.set_ylim(0, 1)
        bottom.set_ylabel("mean D output")
        bottom.set_xlabel("step (batches)")
        bottom.legend(loc="upper right")
        bottom.grid(alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        checkpoint.save_bytes(buf.getvalue(), self.png)
