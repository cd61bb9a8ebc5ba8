#!/usr/bin/env bash
# Validates JSON documents against a JSON Schema with python-jsonschema, installed
# from PyPI into a private venv (VENV, created once, reused). Exits 1 naming every
# invalid file and why; fails (never skips) when jsonschema cannot be installed.
#   validate.sh VENV SCHEMA FILE...
set -euo pipefail
venv=$1
shift
mkdir -p "$(dirname "$venv")"
(
  # One installer at a time; `.ok` is written last, so a half-made venv is redone.
  flock 9
  if [ ! -e "$venv/.ok" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'jsonschema==4.23.0'
    touch "$venv/.ok"
  fi
) 9>"$venv.lock"
exec "$venv/bin/python" - "$@" <<'PY'
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
validator = Draft202012Validator(schema)
bad = 0
for path in sys.argv[2:]:
    errors = sorted(validator.iter_errors(json.load(open(path))), key=lambda e: list(e.path))
    for e in errors:
        print(f"{path}: {'/'.join(map(str, e.path))}: {e.message}")
    bad += bool(errors)
sys.exit(1 if bad else 0)
PY
