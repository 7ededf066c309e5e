# Sourced by the other scripts: puts a pinned uv on PATH and syncs .venv from uv.lock.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UV_VERSION="0.13.8"
cd "$ROOT"
if ! command -v uv >/dev/null 2>&1; then
    if [ ! -x "$ROOT/.tools/bin/uv" ]; then
        echo "bootstrap: installing uv $UV_VERSION into .tools/" >&2
        python3 -m venv "$ROOT/.tools"
        "$ROOT/.tools/bin/pip" install --quiet "uv==$UV_VERSION"
    fi
    export PATH="$ROOT/.tools/bin:$PATH"
fi
uv sync --locked --quiet
