# Shared by scripts/test and scripts/demo: build the virtual environments once, reuse them after.
# Sourced, not run. Needs only python3 (3.10+) and pip access to PyPI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AIRFLOW3_VERSION="${SFBULK_AIRFLOW3_VERSION:-3.3.2}"
AIRFLOW2_VERSION="${SFBULK_AIRFLOW2_VERSION:-2.11.2}"
PYTHON="${PYTHON:-python3}"

_stamp() {  # what the environment was built from; a change rebuilds it
  cat "$ROOT/pyproject.toml" "$ROOT/scripts/_env.sh" | sha256sum | cut -c1-16
}

# ensure_venv DIR AIRFLOW_VERSION EXTRAS
ensure_venv() {
  local dir="$1" airflow_version="$2" extras="$3"
  local stamp; stamp="$(_stamp)-$airflow_version-$extras"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.sfbulk-stamp" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  echo ">> building $dir (Airflow $airflow_version)" >&2
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check uv
  VIRTUAL_ENV="$dir" "$dir/bin/uv" pip install --quiet --python "$dir/bin/python" \
    "apache-airflow==$airflow_version" -e "$ROOT$extras"
  echo "$stamp" > "$dir/.sfbulk-stamp"
}
