#!/usr/bin/env bash
# Validates SBOMs with the formats' own tools: CycloneDX files (*.cdx.json)
# against the official CycloneDX JSON schema as cyclonedx-python-lib ships it,
# SPDX files (*.spdx.json) with the SPDX project's spdx-tools. Installs both
# from PyPI into a private venv (VENV, created once, reused).
#   validate.sh VENV FILE...
set -euo pipefail
venv=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$(dirname "$venv")"
(
  # One installer at a time; `.ok` is written last, so a half-made venv is redone.
  flock 9
  if [ ! -e "$venv/.ok" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      'cyclonedx-python-lib[json-validation]==11.12.0' 'spdx-tools==0.8.5' 'rfc3339-validator==0.1.4'
    touch "$venv/.ok"
  fi
) 9>"$venv.lock"
exec "$venv/bin/python" "$here/validate.py" "$@"
