# Shared by scripts/test and scripts/demo: build the virtual environments once, reuse them after.
# Sourced, not run. Needs only python3 (3.10+) and pip access to PyPI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AIRFLOW3_VERSION="${SFBULK_AIRFLOW3_VERSION:-3.3.2}"
AIRFLOW2_VERSION="${SFBULK_AIRFLOW2_VERSION:-2.11.2}"
# The older 3.x minors we claim: the newest patch of each. scripts/test runs the compat job on them (the
# provider's registration checks and the DAG-level tests), one virtual environment each.
AIRFLOW30_VERSION="${SFBULK_AIRFLOW30_VERSION:-3.0.6}"
AIRFLOW31_VERSION="${SFBULK_AIRFLOW31_VERSION:-3.1.8}"
AIRFLOW32_VERSION="${SFBULK_AIRFLOW32_VERSION:-3.2.2}"
# What each of those needs beyond its own metadata. Airflow is installed without its constraints file, and
# some releases leave open what a later one capped. FastAPI: 3.0 and 3.2 set no upper bound, and with
# today's FastAPI every task that dag.test() runs fails against the in-process execution API (3.0: a 422
# on the task's start; 3.2: the routes no longer build). universal-pathlib: 3.0's ObjectStoragePath
# refuses every path under 0.3 ("detected protocol file which is incompatible"). Each cap is the one the
# next release of Airflow put in its own metadata. svcs: 3.2 enters the execution API's lifespan without
# waiting for it and stores the registry on app.state itself; svcs 26 takes that attribute over and removes
# it again, so every task of dag.test() failed with "'State' object has no attribute 'svcs_registry'"
# (3.3 rewrote InProcessExecutionAPI; svcs 25.1, the release before 26, works with 3.2.2).
AIRFLOW30_PINS="fastapi<0.118 universal-pathlib<0.3"
AIRFLOW31_PINS=""
AIRFLOW32_PINS="fastapi<0.137 svcs<26"
PYTHON="${PYTHON:-python3}"

_stamp() {  # what the environment was built from; a change rebuilds it
  cat "$ROOT/pyproject.toml" "$ROOT/scripts/_env.sh" | sha256sum | cut -c1-16
}

# ensure_venv DIR AIRFLOW_VERSION EXTRAS [PINS]   (PINS: extra requirements, space-separated)
ensure_venv() {
  local dir="$1" airflow_version="$2" extras="$3" pins="${4:-}"
  local stamp; stamp="$(_stamp)-$airflow_version-$extras${pins:+-$pins}"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.sfbulk-stamp" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  echo ">> building $dir (Airflow $airflow_version)" >&2
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check uv
  VIRTUAL_ENV="$dir" "$dir/bin/uv" pip install --quiet --python "$dir/bin/python" \
    "apache-airflow==$airflow_version" -e "$ROOT$extras" $pins
  echo "$stamp" > "$dir/.sfbulk-stamp"
}

# ensure_debian_packages PKG...: installs those of the Debian packages that are missing (apt-get, as root or
# through a password-less sudo). Returns non-zero, having said why, when installing is impossible here; the
# suites that need the packages then skip with a message of their own.
ensure_debian_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n); else
      echo ">> cannot install Debian packages ${missing[*]}: not root and no password-less sudo" >&2; return 1
    fi
  fi
  if ! command -v apt-get >/dev/null; then
    echo ">> cannot install Debian packages ${missing[*]}: no apt-get on this machine" >&2; return 1
  fi
  echo ">> installing Debian packages: ${missing[*]}" >&2
  "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null || { echo ">> apt-get could not install ${missing[*]}" >&2; return 1; }
}
