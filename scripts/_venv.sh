# Shared by scripts/*: make the repo's .venv if missing and install qmpd into it.
# Usage: . scripts/_venv.sh [EXTRA]   (EXTRA: "test" installs the test extra)
# Sets REPO and VENV; leaves the caller's working directory alone.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$REPO/.venv"
if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
stamp="$VENV/.qmpd-installed-${1:-base}"
if [ ! -f "$stamp" ] || [ "$REPO/pyproject.toml" -nt "$stamp" ]; then
    spec="$REPO"
    [ -n "${1:-}" ] && spec="$REPO[${1}]"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec"
    touch "$stamp"
fi
