#!/usr/bin/env bash
# The project's venv with its pip, for the Makefile's installs:
#   scripts/make-venv.sh PYTHON VENV      (make runs it with $(PY) and .venv)
# A venv whose Python has pip is kept as it is. One with a Python and no pip is given its pip,
# not remade: Debian and Ubuntu leave ensurepip to their python3.X-venv package, so there
# `python3 -m venv` stopped halfway, and a make after installing that package skipped the
# venv (it had its Python) and failed on the missing pip. The venv's Python must be the one
# the pins are installed and tested with: another version spent minutes in pip, silent
# (`-q`), on a torch it could not install, and the venv it left was kept by the next make
# with the right PY. make's default, python3, where it is not that version: python3.11 where
# there is one (a line says so), where make stopped and asked for PY=python3.11. Whatever
# stops it is one line.
set -uo pipefail
NEED=3.11  # as the README says; requirements.txt's torch is pinned for it
if [ $# -ne 2 ]; then
    echo "error: scripts/make-venv.sh takes a Python and the venv's folder, e.g." \
        "scripts/make-venv.sh python$NEED .venv" >&2
    exit 1
fi
PY=$1
VENV=$2
AGAIN="run your make again with PY=python$NEED (make demo PY=python$NEED, say) or the path of one"
if ! command -v "python$NEED" > /dev/null; then  # PY=python3.11 would be "no python3.11"
    AGAIN="run your make again with PY= the path of a Python $NEED"
    AGAIN+=" (make demo PY=/usr/local/bin/python$NEED, say)"
fi
if [ -z "$PY" ]; then
    echo "error: PY names no Python: leave it out, or $AGAIN" >&2
    exit 1
fi
# "3.11"; where the Python does not run, the first line it said, and a failure. Isolated
# (-I) and stdout alone: PYTHONWARNINGS, PYTHONVERBOSE and the like write on stderr
version() {
    local probe='import sys; print("%d.%d" % sys.version_info[:2])'
    "$1" -I -c "$probe" 2> /dev/null && return 0
    "$1" -I -c "$probe" 2>&1 > /dev/null | grep -m 1 .
    return 1
}
if [ -L "$VENV" ] && [ ! -e "$VENV" ]; then
    echo "error: $VENV links to $(readlink "$VENV"), which is not there (a disk not" \
        "mounted?): mount it, or remove the link to make a venv here, then make again" >&2
    exit 1
fi
if [ -L "$VENV/bin/python" ] && [ ! -e "$VENV/bin/python" ]; then
    home=$(sed -n 's/^home *= *//p' "$VENV/pyvenv.cfg" 2> /dev/null)
    echo "error: the venv's Python is gone (it was made from the one in" \
        "${home:-$(readlink "$VENV/bin/python")}, which is no more): \`rm -r $VENV\`, then" \
        "make again" >&2
    exit 1
fi
if [ -x "$VENV/bin/python" ]; then
    if ! have=$(version "$VENV/bin/python"); then
        echo "error: the venv's Python ($VENV/bin/python) does not run ($have):" \
            "\`rm -r $VENV\`, then make again" >&2
        exit 1
    fi
    if [ "$have" != "$NEED" ]; then
        echo "error: $VENV holds Python $have, and the project needs Python $NEED:" \
            "\`rm -r $VENV\`, then $AGAIN" >&2
        exit 1
    fi
    "$VENV/bin/python" -m pip --version > /dev/null 2>&1 && exit 0
else
    if [ -e "$VENV" ] && [ ! -d "$VENV" ]; then
        echo "error: $VENV is a file, where the venv goes: move it away, then make again" >&2
        exit 1
    fi
    if [ "$PY" = python3 ] && [ "$(version python3)" != "$NEED" ] &&
        [ "$(version "python$NEED")" = "$NEED" ]; then  # make's default, and not it
        echo "note: python3 is not Python $NEED here: making $VENV with python$NEED"
        PY=python$NEED
    fi
    if ! command -v "$PY" > /dev/null; then
        echo "error: no $PY on this machine: install Python $NEED, or $AGAIN" >&2
        exit 1
    fi
    if ! have=$(version "$PY"); then  # a pyenv shim of a version not selected, say
        echo "error: $PY does not run here: $have" >&2
        exit 1
    fi
    if [ "$have" != "$NEED" ]; then
        echo "error: $PY is Python $have, and the project needs Python $NEED (its pinned" \
            "torch is installed and tested with it): $AGAIN" >&2
        exit 1
    fi
    if ! said=$("$PY" -m venv --without-pip "$VENV" 2>&1); then
        echo "error: $PY could not make the venv $VENV: $(tail -n 1 <<< "$said")" >&2
        exit 1
    fi
fi
if ! said=$("$VENV/bin/python" -m ensurepip --upgrade --default-pip 2>&1); then
    echo "error: the venv's Python $NEED ($VENV/bin/python) cannot install pip (Debian and" \
        "Ubuntu keep ensurepip in python$NEED-venv): run \`sudo apt install" \
        "python$NEED-venv\` and make again; without root, \`rm -r $VENV\`, then run your" \
        "make again with PY= the path of a Python $NEED whose ensurepip works (pyenv's," \
        "conda's, python.org's) (ensurepip said: $(tail -n 1 <<< "$said"))" >&2
    exit 1
fi
