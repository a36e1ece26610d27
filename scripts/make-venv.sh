#!/usr/bin/env bash
# The project's venv with its pip, for the Makefile's installs:
#   scripts/make-venv.sh PYTHON VENV      (make runs it with $(PY) and .venv)
# A venv whose Python has pip is kept as it is. One with a Python and no pip is given its pip,
# not remade: Debian and Ubuntu leave ensurepip to their python3.X-venv package, so there
# `python3 -m venv` stopped halfway, and a make after installing that package skipped the
# venv (it had its Python) and failed on the missing pip. The venv's Python must be the one
# the pins are installed and tested with: another version spent minutes in pip, silent
# (`-q`), on a torch it could not install, and the venv it left was kept by the next make
# with the right PY. Whatever stops it is one line.
set -uo pipefail
NEED=3.11  # as the README says; torch 2.14.1 is pinned for it (requirements.txt)
if [ $# -ne 2 ] || [ -z "$1" ]; then
    echo "error: PY names no Python: leave it out, or name one, e.g. make PY=python$NEED" >&2
    exit 1
fi
PY=$1
VENV=$2
version() {  # "3.11", or what the Python said where it did not run
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>&1
}
if [ -L "$VENV/bin/python" ] && [ ! -e "$VENV/bin/python" ]; then
    echo "error: the venv's Python is gone ($VENV/bin/python links to" \
        "$(readlink "$VENV/bin/python"), which is no more): \`rm -r $VENV\`, then make" \
        "again" >&2
    exit 1
fi
if [ -x "$VENV/bin/python" ]; then
    have=$(version "$VENV/bin/python")
    if [ "$have" != "$NEED" ]; then
        echo "error: $VENV holds Python $have, and the project needs Python $NEED:" \
            "\`rm -r $VENV\`, then make PY=python$NEED (or the path of one)" >&2
        exit 1
    fi
    "$VENV/bin/python" -m pip --version > /dev/null 2>&1 && exit 0
else
    if [ -e "$VENV" ] && [ ! -d "$VENV" ]; then
        echo "error: $VENV is a file, where the venv goes: move it away, then make again" >&2
        exit 1
    fi
    if ! command -v "$PY" > /dev/null; then
        echo "error: no $PY on this machine: install Python $NEED, or name one you have," \
            "e.g. make PY=/usr/bin/python$NEED" >&2
        exit 1
    fi
    if ! have=$(version "$PY"); then  # a pyenv shim of a version not selected, say
        echo "error: $PY does not run here: $(head -n 1 <<< "$have")" >&2
        exit 1
    fi
    if [ "$have" != "$NEED" ]; then
        echo "error: $PY is Python $have, and the project needs Python $NEED (its pinned" \
            "torch is installed and tested with it): make PY=python$NEED (or the path of" \
            "one)" >&2
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
        "python$NEED-venv\` and make again; without root, \`rm -r $VENV\`, then make" \
        "PY= a Python $NEED that has pip (ensurepip said: $(tail -n 1 <<< "$said"))" >&2
    exit 1
fi
