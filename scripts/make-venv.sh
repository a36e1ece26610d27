#!/usr/bin/env bash
# The project's venv with its pip, for the Makefile's installs:
#   scripts/make-venv.sh PYTHON VENV      (make runs it with $(PY) and .venv)
# A venv whose Python has pip is kept as it is. One with a Python and no pip is given its pip,
# not remade: Debian and Ubuntu leave ensurepip to their python3.X-venv package, so there
# `python3 -m venv` stopped halfway, and a make after installing that package skipped the
# venv (it had its Python) and failed on the missing pip. Whatever stops it is one line.
set -uo pipefail
PY=$1
VENV=$2
"$VENV/bin/python" -m pip --version > /dev/null 2>&1 && exit 0
if [ ! -x "$VENV/bin/python" ]; then
    if ! command -v "$PY" > /dev/null; then
        echo "error: no $PY on this machine: install Python 3.11, or name one you have," \
            "e.g. make PY=/usr/bin/python3.11" >&2
        exit 1
    fi
    if ! said=$("$PY" -m venv --without-pip "$VENV" 2>&1); then
        echo "error: $PY could not make the venv $VENV: $(tail -n 1 <<< "$said")" >&2
        exit 1
    fi
fi
if ! said=$("$VENV/bin/python" -m ensurepip --upgrade --default-pip 2>&1); then
    version=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    echo "error: the venv's Python $version ($VENV/bin/python) cannot install pip (Debian" \
        "and Ubuntu keep ensurepip in python$version-venv): run \`sudo apt install" \
        "python$version-venv\` and make again; without root, \`rm -r $VENV\`, then make" \
        "PY= a Python that has pip (ensurepip said: $(tail -n 1 <<< "$said"))" >&2
    exit 1
fi
