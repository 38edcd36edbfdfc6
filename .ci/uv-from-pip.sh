# Sourced by .ci/run: proves the README's set-up works on a machine with only Python 3 and pip.
# It hides every uv on PATH, checks that none is left, then installs uv exactly as the README says
# (pip, into a virtual environment, so no system package changes) and puts it on PATH.

UV_VENV="${SBPET_UV_VENV:-$HOME/.uv-venv}"
PYTHON3_REAL="$(python3 -c 'import sys; print(sys.executable)')"  # python3 may be a shim living beside uv
HIDE="$(mktemp -d)"

# Every PATH folder that holds uv is replaced by a copy made of links to everything in it but uv/uvx,
# so the other tools (python3, npm, git, ...) stay reachable.
new_path=""
IFS=: read -r -a path_dirs <<< "$PATH"
for i in "${!path_dirs[@]}"; do
  dir="${path_dirs[$i]}"
  [ -n "$dir" ] || continue
  if [ -e "$dir/uv" ] || [ -e "$dir/uvx" ]; then
    mirror="$HIDE/$i"
    mkdir -p "$mirror"
    for entry in "$dir"/*; do
      name="${entry##*/}"
      case "$name" in uv|uvx) ;; *) ln -s "$entry" "$mirror/$name" ;; esac
    done
    dir="$mirror"
  fi
  new_path="${new_path:+$new_path:}$dir"
done
mkdir -p "$HIDE/python"
ln -s "$PYTHON3_REAL" "$HIDE/python/python3"
export PATH="$HIDE/python:$new_path"
hash -r
if command -v uv >/dev/null 2>&1; then
  echo "CI set-up check: could not hide uv ($(command -v uv))" >&2
  exit 1
fi
echo "CI set-up check: no uv on PATH; installing it with pip as the README says" >&2

# The README's command:
python3 -m venv "$UV_VENV" && "$UV_VENV/bin/pip" install --quiet uv && export PATH="$UV_VENV/bin:$PATH"
hash -r
uv --version
