#!/usr/bin/env bash
# Rebuild the prebuilt labextension (labextension/) from src/, style/ and package.json.
# Builds in a scratch copy so node_modules never lands in the repository.
# Needs node >= 18 and npm (registry access); uses the JupyterLab of NOTEBOOK_ENV for the
# shared-package versions, so the output matches the JupyterLab the learners run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
notebook_env="${NOTEBOOK_ENV:-/opt/academy/venv-notebook}"
# A fixed build path: webpack's chunk hashes depend on it, so the same source gives the same files.
work="${TMPDIR:-/tmp}/academy-session-timer-build"
rm -rf "$work" && mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

cp -r "$here/package.json" "$here/tsconfig.json" "$here/src" "$here/style" "$work/"
cd "$work"
npm install --no-fund --no-audit --ignore-scripts --no-package-lock
npx tsc
staging="$("$notebook_env/bin/python" -c 'import jupyterlab, os; print(os.path.join(os.path.dirname(jupyterlab.__file__), "staging"))')"
PATH="$notebook_env/bin:$PATH" jupyter labextension build --core-path "$staging" .
cp "$here/install.json" labextension/install.json

rm -rf "$here/labextension"
cp -r labextension "$here/labextension"
du -sh "$here/labextension"
