# Shared by scripts/*: make ./.venv if missing and install qmpd into it.
# Usage: . scripts/_venv.sh [EXTRA]   (EXTRA: "test" installs the test extra)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.qmpd-installed-${1:-base}
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    spec="."
    [ -n "${1:-}" ] && spec=".[${1}]"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"
    touch "$stamp"
fi
