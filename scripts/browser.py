"""A headless Chromium for the browser tests, found or installed without root.

    python scripts/browser.py          # print the browser's path; install one if there is none
    python scripts/browser.py --find   # print it, or fail: never installs

Looked for in this order: $CHROMIUM, then chromium, chromium-browser, google-chrome,
google-chrome-stable and chrome on PATH, then a Chromium that Playwright installed into the
user's cache ($PLAYWRIGHT_BROWSERS_PATH or ~/.cache/ms-playwright). With none, it installs
one as an ordinary user would: Playwright's `playwright install chromium` into that cache
(no root needed; needs Playwright's download host). Only as root, if that fails, Debian's
package (apt-get install chromium). Where nothing works: one line saying how to get one,
and exit status 1.
"""
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# where Playwright's builds keep the executable, under its cache folder
PLAYWRIGHT_BUILDS = ("chromium-*/chrome-linux*/chrome",
                     "chromium_headless_shell-*/*/chrome-headless-shell",
                     "chromium_headless_shell-*/*/headless_shell")
HOW = ("no Chromium or Chrome found: install one (e.g. `sudo apt-get install chromium`, or "
       "`pip install playwright && playwright install chromium` where its download host is "
       "reachable), or point CHROMIUM=/path/to/chrome at one, then run make test again")


def _playwright_cache():
    return Path(os.environ.get("PLAYWRIGHT_BROWSERS_PATH")
                or Path.home() / ".cache" / "ms-playwright")


def find():
    """The path of a Chromium or Chrome on this machine, or None."""
    given = os.environ.get("CHROMIUM")
    if given:
        return shutil.which(given)
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    for pattern in PLAYWRIGHT_BUILDS:  # the newest build: chromium-1200 after chromium-999
        # the folder's name escaped: a [ in it (a HOME of /home/a[1]) was read as a pattern
        found = sorted(glob.glob(os.path.join(glob.escape(str(_playwright_cache())), pattern)),
                       key=_build_number)
        if found and os.access(found[-1], os.X_OK):
            return found[-1]
    return None


def _build_number(path):
    """Playwright's build number in ``path`` (its folder chromium-1200/...), as a number."""
    folder = Path(path).relative_to(_playwright_cache()).parts[0]
    number = folder.rpartition("-")[2]
    return int(number) if number.isdigit() else -1


def _run(*command):
    print("browser:", " ".join(command), file=sys.stderr)
    try:
        return subprocess.run(command, timeout=600).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def install():
    """Try Playwright's user install, then (root only) Debian's package. True if one is there."""
    python = sys.executable
    if _run(python, "-m", "pip", "install", "-q", "playwright") and \
            _run(python, "-m", "playwright", "install", "chromium") and find():
        return True
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                         "chromium"]):
            print("browser:", " ".join(command), file=sys.stderr)
            if subprocess.run(command, env=env).returncode != 0:
                return False
    return find() is not None


def main(argv):
    given = os.environ.get("CHROMIUM")
    if given and not shutil.which(given):
        print(f"error: CHROMIUM={given} is not an executable: point it at a Chromium or "
              f"Chrome, or unset it", file=sys.stderr)
        return 1
    path = find()
    if path is None and "--find" not in argv and install():
        path = find()
    if path is None:
        print(f"error: {HOW}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
