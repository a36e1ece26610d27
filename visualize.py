"""Watching training in visdom; the only file that imports visdom, and only when asked to.

``Visualizer`` sends the book's windows (``errord``, ``errorg``, ``fixfake``, ``real``) plus the
mean D(x)/D(G(z)) and a text log. It never blocks or breaks training: every request has a
timeout, a missing or dead server gives one warning line, and reconnecting is tried at most
once a minute; a server that answers again is sent the curves and texts so far, whole.
"""
import errno
import logging
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from errors import OneLineParser, UserError, require

RETRY_SECONDS = 60.0
# the curve windows: title, and each curve's legend with the loss log's column it plots
CURVES = {"errord": ("D loss (running mean)", {"loss_d": "loss_d"}),
          "errorg": ("G loss (running mean)", {"loss_g": "loss_g"}),
          "scores": ("mean D output on real and fake", {"D(x)": "d_real", "D(G(z))": "d_fake"})}


def _points(steps, rows, curves):
    """visdom's Y and X for ``rows`` of ``curves`` values at ``steps``: one column per curve,
    flat for a single curve."""
    import numpy as np  # here: `visualize.py serve` run by a Python without it says so in a line
    y = np.array(rows, dtype=np.float64)
    x = np.repeat(np.array(steps, dtype=np.float64)[:, None], curves, axis=1)
    return (y[:, 0], x[:, 0]) if curves == 1 else (y, x)


class Late(TimeoutError):
    """A request whose answer had not come whole within the timeout; ``thread`` still
    waits for it (a server that sends a byte every second met no timeout of the socket's)."""

    def __init__(self, thread):
        super().__init__("no whole answer in time")
        self.thread = thread


class NotVisdom(Exception):
    """A server that answered a request with what visdom never answers."""


def _client_class():
    import visdom

    class TimedVisdom(visdom.Visdom):
        """visdom's client with a timeout on every request (the stock one waits forever)."""

        timeout = 2.0

        def _handle_post(self, url, data=None):
            """The request in a thread of its own, the answer awaited ``timeout`` seconds in
            all: requests' timeout is the socket's, for each read, and a server that sent a
            byte now and then held the run at its start for ever."""
            answer = {}

            def post():
                try:
                    reply = self.session.post(url, data=data or {}, timeout=self.timeout)
                    reply.raise_for_status()  # another web server on that port: 404 or 501
                    answer["text"] = reply.text
                except Exception as e:  # noqa: BLE001 - raised below, in the caller's thread
                    answer["error"] = e
            thread = threading.Thread(target=post, name="visdom request", daemon=True)
            thread.start()
            thread.join(self.timeout)
            if thread.is_alive():
                raise Late(thread)
            if "error" in answer:
                raise answer["error"]
            return answer["text"]

        def has(self, win):
            """Whether the server holds ``win`` in this env (visdom's win_exists printed a
            line and said None where the server did not answer: this raises, and where a
            server answered neither true nor false: another web server said 200 to all)."""
            reply = self._send({"win": win, "eid": self.env}, endpoint="win_exists",
                               quiet=True)
            if reply not in ("true", "false"):
                raise NotVisdom(f"win_exists answered {str(reply)[:40]!r}")
            return reply == "true"

    return TimedVisdom


class Visualizer:
    def __init__(self, env="GAN", server="http://localhost", port=8097, timeout=2.0):
        logging.getLogger("visdom").setLevel(logging.CRITICAL)  # its own chatter, not ours
        self.env, self.server, self.port, self.timeout = env, server, port, timeout
        # the path of a server behind a proxy (http://host/visdom): visdom's base_url
        self.base_url = urlsplit(server if "://" in server else "//" + server).path.rstrip("/")
        self.client = None
        self.down_since = None
        self.late = None  # the thread of a request still unanswered after its timeout
        self.warned = False
        self.save_warned = False
        self.windows = set()
        self.curves = {}  # win: (legend, title, steps, rows): every point sent, to send again
        self.texts = {}  # win: (html, title), the last of each
        self._connect()

    def _connect(self):
        try:
            cls = _client_class()
            cls.timeout = self.timeout
            client = cls(server=self.server, port=self.port, base_url=self.base_url or "/",
                         env=self.env, raise_exceptions=True, use_incoming_socket=False)
            client.has("options")  # a visdom server, not any web server answering 200
            self.client, self.down_since = client, None
        except Exception as e:  # noqa: BLE001 - any failure means "no server"; training goes on
            self._down(e)

    def earlier(self, rows):
        """The loss log's rows of a resumed run up to its stop: the curve windows start with
        them (the first points of this process replaced the run's curves)."""
        for win, (title, columns) in CURVES.items() if rows else ():  # (no window of no point)
            self.curves[win] = (list(columns), title, [r["step"] for r in rows],
                                [[r[c] for c in columns.values()] for r in rows])

    def _line_whole(self, client, win):
        """Every point of ``win`` this run has, in place of what the server shows in it."""
        names, title, steps, rows = self.curves[win]
        y, x = _points(steps, rows, len(names))
        client.line(Y=y, X=x, win=win, opts=dict(title=title, legend=names, xlabel="step"))

    def _send_again(self):
        """After an outage: the curves whole, in place of what the server has of them (the
        env it kept on disk at the last epoch's end, or nothing), and the texts."""
        from tqdm import tqdm
        try:
            self._everything(self.client)
        except Exception as e:  # noqa: BLE001 - down again: one more try in a minute
            self._down(e)
            return
        self.warned = False  # a later outage is said too
        tqdm.write(f"visdom: the server at {self.address()} answers now; the "
                   f"curves so far are sent to it", file=sys.stderr)

    def _everything(self, client):
        """The curves whole and the texts, in place of what the server has of them."""
        for win in self.curves:
            self._line_whole(client, win)
        for win, (html, title) in self.texts.items():
            client.text(html, win=win, opts=dict(title=title))
        self.windows = set(self.curves)

    def address(self):
        """The address the requests go to: the port goes before a path of --vis-server (a
        trailing slash was shown as http://localhost/:8097, an address nothing was sent to)."""
        parts = urlsplit(self.server if "://" in self.server else "//" + self.server)
        scheme = f"{parts.scheme}://" if parts.scheme else ""
        return f"{scheme}{parts.netloc}:{self.port}{self.base_url}"

    def _down(self, error):
        self.client = None
        self.down_since = time.monotonic()
        self.late = next((c.thread for c in self._causes(error) if isinstance(c, Late)), None)
        if not self.warned:
            self.warned = True
            from tqdm import tqdm  # on a line of its own, not after the progress bar's
            why = self._why(error)
            start = "make visdom" + (f" VISDOM_PORT={self.port}" if self.port != 8097 else "")
            advice = f"start one with `{start}`"
            other = self.port + 1 if self.port < 65535 else self.port - 1
            elsewhere = (f"start visdom on another, `make visdom VISDOM_PORT={other}`, and "
                         f"train with --vis-port={other}")
            # `make visdom` starts one on this machine's 127.0.0.1, of no use to another host
            host = urlsplit(self.server if "://" in self.server else "//" + self.server).hostname
            # a program holds the port (it answered, or took the request and kept it): make
            # visdom on that very port fails with "Address already in use"
            if why.startswith("no answer within") and "plain http://" in why:
                advice = f"train with --vis-server=http://{self.server[len('https://'):]}"
            elif host == "::1":
                advice = f"`make visdom` listens on 127.0.0.1: start one with `{start}` and " \
                         f"train with --vis-server=http://localhost"
            elif host not in ("localhost", "127.0.0.1"):
                advice = "check that visdom runs there, on that port, and that --vis-server " \
                         "and --vis-port name it"
            elif why.startswith("HTTP"):
                advice = f"another program answers on that port: {elsewhere}"
            elif why.startswith("no answer within"):
                advice = f"a program on that port took the request but did not answer: {elsewhere}"
            tqdm.write(f"warning: no visdom server answers at {self.address()} "
                       f"({why}); training goes on without plots ({advice}, or pass "
                       f"--vis=False)", file=sys.stderr)

    @staticmethod
    def _causes(error):
        """``error`` and every exception found below it."""
        causes, seen, stack = [], set(), [error]
        while stack:
            cause = stack.pop(0)
            if not isinstance(cause, BaseException) or id(cause) in seen:
                continue
            seen.add(id(cause))
            causes.append(cause)
            stack += [cause.__cause__, cause.__context__, getattr(cause, "reason", None),
                      *getattr(cause, "args", ())]
        return causes

    def _why(self, error):
        """What the request met, in words. visdom re-raises every failure as a
        ConnectionError: the cause is further down, in its causes, contexts, arguments and
        urllib3's ``reason``."""
        causes = self._causes(error)
        names = {type(c).__name__ for c in causes}
        for cause in causes:
            if getattr(cause, "response", None) is not None:
                return f"HTTP {cause.response.status_code}: not a visdom server"
        if any(isinstance(c, NotVisdom) for c in causes):
            return "HTTP 200, but not visdom's answer: not a visdom server"
        if any(isinstance(c, ConnectionRefusedError) for c in causes):
            return "connection refused: nothing listens on that port"
        if "NameResolutionError" in names or any(isinstance(c, socket.gaierror) for c in causes):
            return "unknown host: check --vis-server"
        # https:// to visdom's plain server mostly waits for a handshake that never comes,
        # and now and then fails it: the server read the handshake as a bad request
        plain = ("; visdom's own server speaks plain http://: check --vis-server"
                 if self.server.startswith("https://") else "")
        if any("SSL" in type(c).__name__ for c in causes):
            return "TLS failed" + (plain or ": check http:// or https:// in --vis-server")
        if any(isinstance(c, TimeoutError) or "Timeout" in type(c).__name__ for c in causes):
            return f"no answer within {self.timeout:g} s{plain}"
        if any(isinstance(c, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError))
               or type(c).__name__ in ("RemoteDisconnected", "ProtocolError") for c in causes):
            return "the server closed the connection: was it stopped?"
        return type(error).__name__

    def ready(self):
        """Whether a server is connected (reconnecting at most once a minute, and not while
        it still sends the answer to a request that timed out: one thread and connection
        held by it, not one more a minute)."""
        if self.client is None and self.down_since is not None \
                and time.monotonic() - self.down_since >= RETRY_SECONDS \
                and not (self.late and self.late.is_alive()):
            self._connect()
            if self.client is not None:
                self._send_again()
        return self.client is not None

    def _send(self, fn, *args, **kwargs):
        if not self.ready():
            return
        try:
            fn(self.client, *args, **kwargs)
        except Exception as e:  # noqa: BLE001
            self._down(e)

    def plot(self, win, step, values, title):
        """Append one point per curve (``values``: {legend: y}) at x = ``step``."""
        names = list(values)
        kept = self.curves.setdefault(win, (names, title, [], []))
        row = [values[n] for n in names]
        kept[2].append(step)
        kept[3].append(row)
        y, x = _points([step], [row], len(names))

        def send(client):
            if win in self.windows and client.has(win):
                client.line(Y=y, X=x, win=win, update="append",
                            opts=dict(title=title, legend=names, xlabel="step"))
            elif win in self.windows:  # a server restarted between two plots (no request
                self._everything(client)  # failed): an append drew this point alone
            else:  # this process's first point: the window holds what came before it too
                self._line_whole(client, win)
            self.windows.add(win)
        self._send(send)

    def images(self, win, images, title, nrow=8):
        """Show a batch in [-1, 1] as a grid."""
        array = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
        self._send(lambda c: c.images(array, win=win, nrow=nrow, opts=dict(title=title)))

    def text(self, win, html, title):
        self.texts[win] = (html, title)
        self._send(lambda c: c.text(html, win=win, opts=dict(title=title)))

    def finish(self, draw_fake=None, real=None):
        """The run's end: a server that did not answer is tried once more, whatever the
        minute, and is sent the curves and texts whole, and the faces (``draw_fake`` and
        ``real``, as for ``step``), its env kept on its disk (one started on the warning of a
        run shorter than a minute got nothing: the next try never came)."""
        if self.client is not None or self.down_since is None:
            return  # answering all along: the last epoch's end kept its env already
        self.down_since -= RETRY_SECONDS  # due now
        if self.ready():
            if draw_fake is not None:  # the book's image windows, which only a step drew
                self.images("fixfake", draw_fake(), "G(fixed noise)")
            if real is not None:
                self.images("real", real[:64], "a real batch")
            self.keep()

    def keep(self):
        """Have the server write this run's env to its folder (ENV.json in ~/.visdom, or its
        --env-path): visdom keeps envs in memory only, so a restarted server showed nothing
        of the run."""
        if not self.ready():
            return
        try:
            self.client.save([self.env])
        except Exception as e:  # noqa: BLE001
            response = next((c.response for c in self._causes(e)
                             if getattr(c, "response", None) is not None), None)
            if response is None or response.status_code != 500:
                self._down(e)
            elif not self.save_warned:  # the server answered, and failed to write the file
                # (its env folder removed, its disk full): the plots go on; "not a visdom
                # server" and the down-and-back lines of every epoch's end said otherwise
                self.save_warned = True
                from tqdm import tqdm
                tqdm.write(f"warning: the visdom server at {self.address()} could not save env "
                           f"{self.env!r} to its folder (its terminal says why: a folder "
                           f"removed, a full disk?); the plots go on, but a restarted server "
                           f"will not show them", file=sys.stderr)

    def step(self, step, epoch, means, speed, draw_fake, real):
        """Everything the training loop shows every ``plot_every`` batches. ``draw_fake``:
        G's faces of the fixed noise, drawn only while a server answers; the curves' points
        are kept either way, so a server that answers later gets them from the first."""
        if self.ready():
            self.images("fixfake", draw_fake(), "G(fixed noise)")
            self.images("real", real[:64], "a real batch")
        for win, (title, columns) in CURVES.items():
            self.plot(win, step, {name: means[c] for name, c in columns.items()}, title)
        self.text("log", f"epoch {epoch + 1}, step {step}, {speed:.0f} images/s",  # as the bar
                  "progress")


def serve(port=8097, host="127.0.0.1", env_path=None, base_url=""):
    """Start a visdom server that needs no network: loopback only unless ``host`` says so;
    its pages under ``base_url`` (/visdom: behind a proxy that serves it there).

    ``python -m visdom.server`` downloads its JS/CSS from public CDNs at every start, which
    fails offline and hangs behind some firewalls; starting the app directly skips that. The
    page's scripts come from visdom's static folder (see ``make visdom-assets``).
    """
    sys.modules.setdefault("torch", None)  # visdom imports torch only for type checks: skip it
    from visdom.server.app import Application
    from tornado import ioloop

    env_path = str(Path(env_path or Path.home() / ".visdom").expanduser())
    try:
        Path(env_path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--env-path: cannot use {env_path!r} as the folder for saved envs "
                        f"({e.strerror}): name a folder") from None
    # the page asks for user/style.css (a place for one's own styles); without the file the
    # server logs an ERROR at every page load of a working install
    import visdom
    own_styles = Path(visdom.__file__).parent / "user" / "style.css"
    try:
        if not own_styles.exists():
            own_styles.parent.mkdir(exist_ok=True)
            own_styles.write_text("/* styles of your own for visdom's page */\n")
    except OSError:  # a read-only install: the page works, the server logs its line
        pass
    base_url = "/" + base_url.strip("/") if base_url.strip("/") else ""
    app = Application(port=port, base_url=base_url, env_path=env_path, readonly=False)
    try:
        app.listen(port, address=host, max_buffer_size=1024**3)
    except OSError as e:  # socket.gaierror (an unknown host) is one too
        other = port + 1 if port < 65535 else port - 1
        hint = (f"is a visdom server already running there? Open it, or pick another port "
                f"(make visdom VISDOM_PORT={other}, then train with --vis-port={other})"
                if e.errno == errno.EADDRINUSE else "check --host and --port")
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}): {hint}") from None
    # an IPv6 address in a URL is written in brackets: http://::1:8097 opened nothing
    shown = "localhost" if host == "127.0.0.1" else f"[{host}]" if ":" in host else host
    scripts = Path(visdom.__file__).parent / "static" / "js" / "react-react.min.js"
    if not scripts.is_file():  # the page would be blank, its server logging 14 lines a load
        print("note: visdom's page scripts are not installed, so its page stays blank: run "
              "`make visdom-assets` once (npm, no root), then reload the page", file=sys.stderr,
              flush=True)
    print(f"visdom server at http://{shown}:{port}{base_url} (listening on {host} only; envs "
          f"saved in {env_path}); Ctrl-C stops it", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print("warning: anyone who can reach this address can read and change your plots",
              file=sys.stderr, flush=True)
    try:
        ioloop.IOLoop.current().start()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    require(__file__, "numpy", "visdom")
    parser = OneLineParser(description="Start a visdom server for watching training.")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--port", type=int, default=8097,
                        help="port to listen on (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: loopback only)")
    parser.add_argument("--env-path", default=None, help="where saved envs live (~/.visdom)")
    parser.add_argument("--base-url", default="",
                        help="serve under this path, e.g. /visdom behind a proxy (default: /)")
    args = parser.parse_args()
    try:
        if not 1 <= args.port <= 65535:
            raise UserError(f"--port must be a port number (1 to 65535), not {args.port}")
        serve(args.port, args.host, args.env_path, args.base_url)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # while visdom loads (once serving, Ctrl-C just stops it)
        print("\ninterrupted before the server started", file=sys.stderr)
        sys.exit(130)
