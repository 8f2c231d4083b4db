#!/usr/bin/env bash
# An offline wheelhouse for GPU nodes without network (docs/gpu.md, "Offline nodes").
#
#   tools/gpu_prepare.sh LIST DIR [-- PIP_DOWNLOAD_ARG ...]             # where the registries are reachable
#   tools/gpu_prepare.sh --install LIST DIR [-- PIP_INSTALL_ARG ...]    # on the GPU node, offline
#   tools/gpu_prepare.sh --cifar [DIR]                                  # CIFAR-10 for an offline node
#
# LIST is a pip requirements file (for instance `pip freeze --all --exclude-editable` of a venv
# that passes the tests); DIR the wheelhouse (.whl/ is ignored by git).
#  - The first form runs `pip download -r LIST -d DIR` plus the arguments after `--` (e.g.
#    --no-deps for a complete, pinned LIST; --only-binary=:all: --platform manylinux2014_x86_64
#    --python-version 3.11 when the GPU node's Python or platform differs from this machine's),
#    then builds a wheel from every source distribution in DIR (kept beside it), so the GPU node
#    needs no build backend from an index, and writes DIR/MANIFEST.txt.
#  - --install runs `pip install --no-index --find-links DIR -r LIST` plus the arguments after
#    `--`, with the Python in $PYTHON (default: .venv/bin/python when it exists, else python3).
#  - --cifar puts the official CIFAR-10 archive, md5-checked, in DIR (default the checkout's
#    data/raw/download, where the pipeline's `official` source looks before downloading); needs
#    the project installed in $PYTHON.
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
usage: tools/gpu_prepare.sh LIST DIR [-- PIP_DOWNLOAD_ARG ...]            download LIST's wheels into DIR
       tools/gpu_prepare.sh --install LIST DIR [-- PIP_INSTALL_ARG ...]   install LIST from DIR, offline
       tools/gpu_prepare.sh --cifar [DIR]                                 the CIFAR-10 archive (default data/raw/download)
  LIST: a pip requirements file; DIR: the wheelhouse folder (e.g. .whl)
EOF
}
fail() { echo "gpu_prepare: $*" >&2; usage; exit 2; }
say() { printf '== %s\n' "$*"; }

mode=download
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --install) mode=install; shift ;;
  --cifar) mode=cifar; shift ;;
  "") fail "expected a requirements file and a wheelhouse folder" ;;
  -*) fail "unknown option '$1'" ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)   # the checkout; LIST and DIR stay relative to where you are
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$root/.venv/bin/python" ]; then PYTHON=$root/.venv/bin/python; else PYTHON=python3; fi
fi

if [ "$mode" = cifar ]; then
  [ $# -le 1 ] || fail "--cifar takes at most one folder, got: $*"
  dir=${1:-$root/data/raw/download}
  mkdir -p "$dir"
  "$PYTHON" -c 'import sys
from advhybrid.data.cifar import download_official
print(download_official(sys.argv[1]))' "$dir" ||
    { echo "gpu_prepare: $PYTHON could not fetch CIFAR-10 (is the project installed in it, the network reachable?)" >&2; exit 1; }
  exit 0
fi

[ $# -ge 2 ] || fail "expected a requirements file and a wheelhouse folder, got ${#} argument(s)"
list=$1 dir=$2
shift 2
if [ $# -gt 0 ]; then
  [ "$1" = "--" ] || fail "'$1': extra pip arguments go after --"
  shift
fi
[ -f "$list" ] || fail "$list: no such requirements file"

if [ "$mode" = install ]; then
  [ -d "$dir" ] || fail "$dir: no such wheelhouse folder (make it with: tools/gpu_prepare.sh $list $dir)"
  say "$PYTHON -m pip install --no-index --find-links $dir -r $list $*"
  "$PYTHON" -m pip install --no-index --find-links "$dir" -r "$list" "$@"
  exit 0
fi

mkdir -p "$dir"
say "$PYTHON -m pip download -r $list -d $dir $*"
"$PYTHON" -m pip download -r "$list" -d "$dir" "$@"

# Source distributions (some packages publish no wheel) become wheels here, with the build
# backend from the index, so that the offline install needs neither. The sdist stays: a wheel
# built here fits this machine's platform, which may not be the GPU node's.
shopt -s nullglob
for sdist in "$dir"/*.tar.gz "$dir"/*.zip; do
  say "building a wheel from $(basename "$sdist")"
  "$PYTHON" -m pip wheel -q --no-deps -w "$dir" "$sdist" ||
    echo "gpu_prepare: could not build $(basename "$sdist"); the GPU node will have to build it" >&2
done
wheels=("$dir"/*.whl)
[ ${#wheels[@]} -gt 0 ] || { echo "gpu_prepare: no wheel in $dir" >&2; exit 1; }
for w in "${wheels[@]}"; do basename "$w"; done | sed -E 's/^([^-]+)-([^-]+)-.*/\1==\2/' | sort >"$dir/MANIFEST.txt"
say "$dir: ${#wheels[@]} wheels ($(du -sh "$dir" | cut -f1)); list in $dir/MANIFEST.txt"
say "on the GPU node: tools/gpu_prepare.sh --install $list $dir"
