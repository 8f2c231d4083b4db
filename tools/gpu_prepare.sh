#!/usr/bin/env bash
# Prepare, here, what a paper-scale run on the lent GPU machine needs (docs/gpu.md says how to use it).
#
# That machine has Python 3.12 with PyTorch, numpy, pandas, scipy, scikit-learn, matplotlib,
# tqdm, pyyaml... (/work/.library/device/KINDS.md) but no DVC, Hydra or Great Expectations, no
# network, and no ../shared. This script, run in the repo root with the registries reachable:
#   1. keeps /.whl/ and /.gpu/ out of git (.git/info/exclude; .gitignore lists them too);
#   2. downloads DVC, Hydra/OmegaConf and Great Expectations with their whole dependency tree,
#      at the versions of this checkout's .venv, as manylinux x86_64 cp312 wheels, and keeps in
#      .whl/ only those the device image lacks (the rest it has: KINDS.md's package list);
#      antlr4-python3-runtime 4.9.3 (Hydra's parser) exists only as an sdist: built here into
#      a py3-none-any wheel;
#   3. copies ../shared/data/cifar10-jpeg.tar.gz to .gpu/ (the device gets no ../shared);
#   4. checks that the wheels plus the archive plus the working tree stay under the 64 MiB
#      a call may carry, and, where python3.12 exists here, installs the wheels with
#      --no-index into a scratch Python 3.12 venv that also holds the device's base packages,
#      and runs `python -m dvc version`, `pip check` and the imports our stages need.
#
#   tools/gpu_prepare.sh            # everything
#   SKIP_CHECK=1 tools/gpu_prepare.sh  # no local Python 3.12 check
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}          # the pip that downloads; its venv pins the versions
if [ -z "${PY312:-}" ]; then  # a python3.12 that runs (a pyenv shim may not)
  for c in python3.12 ~/.pyenv/versions/3.12*/bin/python3.12; do
    if "$c" --version >/dev/null 2>&1; then PY312=$c; break; fi
  done
fi
SHARED_CIFAR=${SHARED_CIFAR:-../shared/data/cifar10-jpeg.tar.gz}
STAGE=${STAGE:-/tmp/advhybrid-wheel-stage}  # the full tree, outside the repo (not carried)
LIMIT_MIB=64
ROOTS=(dvc great-expectations hydra-core omegaconf)   # what our stages import that the image lacks
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 manylinux_2_24_x86_64
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux2010_x86_64 manylinux_2_12_x86_64
           manylinux_2_5_x86_64 manylinux1_x86_64)
# The device image's Python packages (KINDS.md, read on 2026-11-17): never carried, so the
# device's own (CUDA-built or newer) versions are the ones imported.
DEVICE_HAS="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops
equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio
h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx
onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server
tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq
torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions
typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"

say() { printf '\n== %s\n' "$*"; }
norm() { tr 'A-Z' 'a-z' | sed -E 's/[-_.]+/-/g'; }

say "1. .git/info/exclude"
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for p in /.whl/ /.gpu/; do
  grep -qxF "$p" "$exclude" 2>/dev/null || echo "$p" >>"$exclude"
done
grep -E '^/\.(whl|gpu)/$' "$exclude"

say "2. wheels (cp312, manylinux x86_64) into .whl/"
[ -x "$PY" ] || { echo "no $PY: run 'make venv' first (its versions are the ones pinned)" >&2; exit 1; }
rm -rf "$STAGE" && mkdir -p "$STAGE/sdist-built" .whl
# Pin everything to this checkout's venv, so the device runs the versions the tests ran here.
"$PY" -m pip freeze --exclude-editable |
  grep -viE '^(torch|torchvision|triton|nvidia-|cuda-)' >"$STAGE/constraints.txt"
pins=()
for r in "${ROOTS[@]}" antlr4-python3-runtime; do
  pin=$(grep -iE "^${r//-/[-_.]}==" "$STAGE/constraints.txt") || { echo "$r is not installed in $PY's venv" >&2; exit 1; }
  pins+=("$pin")
done
antlr=${pins[-1]}; unset 'pins[-1]'
quiet() { "$@" >"$STAGE/pip.log" 2>&1 || { grep -v 'is ignored' "$STAGE/pip.log" >&2; exit 1; }; }
quiet "$PY" -m pip wheel -q --no-deps -w "$STAGE/sdist-built" "$antlr"
plat_args=(); for p in "${PLATFORMS[@]}"; do plat_args+=(--platform "$p"); done
quiet "$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${plat_args[@]}" \
  --find-links "$STAGE/sdist-built" -c "$STAGE/constraints.txt" -d "$STAGE/all" \
  "${pins[@]}"
# torchattacks alone, without its requests~=2.25 pin (pyproject.toml says why): a pure-Python wheel
ta=$(grep -iE '^torchattacks==' "$STAGE/constraints.txt") || { echo "torchattacks is not installed in $PY's venv" >&2; exit 1; }
quiet "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$STAGE/all" "$ta"

device_has=$(echo $DEVICE_HAS | tr ' ' '\n' | norm | sort -u)
rm -f .whl/*.whl
carried=0; skipped=()
for whl in "$STAGE"/all/*.whl; do
  name=$(basename "$whl" | cut -d- -f1 | norm)
  if grep -qxF "$name" <<<"$device_has"; then skipped+=("$name"); else cp "$whl" .whl/; carried=$((carried + 1)); fi
done
dupes=$(ls .whl | cut -d- -f1 | norm | sort | uniq -d)
[ -z "$dupes" ] || { echo "two versions of: $dupes (one stops the whole install there)" >&2; exit 1; }
echo "$carried wheels carried; left to the device image: ${skipped[*]}"

say "3. CIFAR-10 archive into .gpu/"
mkdir -p .gpu
[ -f "$SHARED_CIFAR" ] || { echo "no $SHARED_CIFAR: put a CIFAR-10 archive at .gpu/cifar10-jpeg.tar.gz yourself" >&2; exit 1; }
cmp -s "$SHARED_CIFAR" .gpu/cifar10-jpeg.tar.gz 2>/dev/null || cp "$SHARED_CIFAR" .gpu/cifar10-jpeg.tar.gz

say "4. sizes (a call carries at most $LIMIT_MIB MiB)"
tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
whl=$(du -cb .whl/*.whl | tail -1 | cut -f1)
cifar=$(du -b .gpu/cifar10-jpeg.tar.gz | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "working tree $(mib "$tree") + .whl $(mib "$whl") + .gpu/cifar10-jpeg.tar.gz $(mib "$cifar") = $(mib $((tree + whl + cifar)))"
[ $((tree + whl + cifar)) -lt $((LIMIT_MIB * 1048576)) ] || { echo "over the carry limit" >&2; exit 1; }
ls .whl | sed -E 's/^([^-]+)-([^-]+)-.*/\1==\2/' >.whl/MANIFEST.txt

if [ -n "${SKIP_CHECK:-}" ] || [ -z "$PY312" ]; then
  say "5. no local check (${PY312:-no python3.12 here})"; exit 0
fi
say "5. local check with $PY312: device base packages in a venv, .whl/ on PYTHONPATH as there"
check=$STAGE/check
"$PY312" -m venv "$check/venv"
# The base packages the device image has, at the versions resolved above (the device's may be newer).
base=(); for whl in "$STAGE"/all/*.whl; do [ -e ".whl/$(basename "$whl")" ] || base+=("$whl"); done
"$check/venv/bin/python" -m pip install -q --no-index --no-deps "${base[@]}"
"$check/venv/bin/python" -m pip install -q --no-index --no-deps --no-compile --target "$check/site" .whl/*.whl
if ! out=$(PYTHONPATH=$check/site "$check/venv/bin/python" -m pip check 2>&1); then
  # the one known conflict: torchattacks' requests pin, installed with --no-deps on purpose
  rest=$(grep -vE '^torchattacks .*requests' <<<"$out" || true)
  [ -z "$rest" ] || { echo "$out" >&2; exit 1; }
fi
# What tools/gpu_run.sh does there, short of running a stage (no torch in this venv): compose
# params.yaml with DVC's Hydra composition in a copy without git, and let DVC plan the run.
rm -rf "$check/work" && mkdir -p "$check/work/.dvc"
cp -a dvc.yaml conf src .dvcignore "$check/work/"
# as gpu_run.sh does: no remotes there (none is reachable, and an s3 one would need dvc-s3 + botocore)
awk '/^\[/{skip = ($0 ~ /^\[.remote /)} !skip && !/^[[:space:]]*remote[[:space:]]*=/' .dvc/config >"$check/work/.dvc/config"
printf '[core]\n    no_scm = true\n' >"$check/work/.dvc/config.local"
cd "$check/work"
PYTHONPATH=$check/site DVC_NO_ANALYTICS=1 "$check/venv/bin/python" -m dvc version
PYTHONPATH=$check/site "$check/venv/bin/python" - <<'PYEOF'
import os, great_expectations, hydra, omegaconf, pandas, tqdm, yaml
from dvc.utils.hydra import compose_and_dump
compose_and_dump("params.yaml", os.path.abspath("conf"), None, "config", os.getcwd(), ["scale=paper"])
p = yaml.safe_load(open("params.yaml"))
assert p["scale_info"]["name"] == "paper" and p["train"]["width"] == 1.0, p["scale_info"]
print("imports ok: great_expectations", great_expectations.__version__, "hydra", hydra.__version__,
      "omegaconf", omegaconf.__version__, "; params.yaml composed at scale", p["scale_info"]["name"])
PYEOF
dvc312() { PYTHONPATH=$check/site DVC_NO_ANALYTICS=1 "$check/venv/bin/python" -m dvc "$@" >"$check/dvc.log" 2>&1 ||
  { cat "$check/dvc.log" >&2; exit 1; }; }
dvc312 dag --dot   # dvc.yaml expanded with the paper's params (foreach over train.models)
echo "dvc dag: $(grep -oE '^"[a-z_@0-9]+"' "$check/dvc.log" | sort -u | tr -d '"' | tr '\n' ' ')"
dvc312 status      # every stage still to run, none refused
echo "dvc status, to run: $(grep -oE '^[a-z_@0-9]+:' "$check/dvc.log" | tr -d ':' | tr '\n' ' ')"
cd - >/dev/null
echo "ok: .whl/ ($carried wheels) and .gpu/ are ready; see docs/gpu.md"
