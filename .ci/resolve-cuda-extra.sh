#!/usr/bin/env bash
# Resolves this package's `cuda` and `test` extras (plus its base dependencies) for the GPU platform
# (x86_64 Linux with glibc 2.35, CPython 3.12) against PyPI, without installing anything: pip's dry run
# with platform tags, wheels only, as a GPU user's `pip install "vllm-qwen3next[cuda]"` would.
# Exits non-zero on a conflict or on a requirement without a wheel for that platform; prints the
# versions it picked. Needs network access; not run by .ci/run (resolution takes minutes).
#
#   bash .ci/resolve-cuda-extra.sh                 # the newest vLLM the extra admits
#   bash .ci/resolve-cuda-extra.sh vllm==0.32.0    # forced pins, passed to pip as constraints
#   bash .ci/resolve-cuda-extra.sh vllm==0.33.0
#   GLIBC_MINOR=28 bash .ci/resolve-cuda-extra.sh  # an older host (fails: see below)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PY" - > "$work/requirements.txt" <<'EOF'
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
print("\n".join(project["dependencies"] + extras["cuda"] + extras["test"]))
EOF
printf '%s\n' "$@" > "$work/constraints.txt"
echo "requirements:"; sed 's/^/  /' "$work/requirements.txt"
[ $# -eq 0 ] || { echo "constraints:"; sed 's/^/  /' "$work/constraints.txt"; }

# A host with glibc 2.$GLIBC_MINOR takes every older manylinux wheel too (pip does not expand
# --platform by itself). Default 2.35 (Ubuntu 22.04): vLLM 0.32 and 0.33 need llguidance 1.7, whose
# x86_64 wheels are manylinux_2_31, so GLIBC_MINOR=28 (manylinux_2_28, vLLM's own wheel tag) fails.
GLIBC_MINOR=${GLIBC_MINOR:-35}
platforms=()
for minor in $(seq "$GLIBC_MINOR" -1 17); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
# A current pip (run from its wheel, nothing installed): pip 23 reads no PEP 658 metadata (it downloads
# whole wheels, GBs of CUDA libraries) and rejects torch's cuda-toolkit[...]==13.0.3 pin (13.0.3.0 on PyPI).
nopipconf=(env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL PIP_CONFIG_FILE=/dev/null)
"${nopipconf[@]}" "$PY" -m pip download --quiet --no-deps --index-url https://pypi.org/simple -d "$work/pip" pip
PIP=("$PY" "$(ls "$work"/pip/pip-*.whl)/pip")
echo "resolving with $("${PIP[@]}" --version | cut -d' ' -f1-2)"
# PyPI only: no local pip configuration (find-links, extra indexes, local CPU torch wheels, whose
# 2.x.0+cpu versions would satisfy vLLM's torch==2.x.0 pin); certificates as configured.
if ! "${nopipconf[@]}" "${PIP[@]}" install --index-url https://pypi.org/simple --dry-run --ignore-installed --report "$work/report.json" \
        "${platforms[@]}" --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
        --only-binary=:all: --target "$work/target" \
        -r "$work/requirements.txt" -c "$work/constraints.txt"; then
    echo "FAILED: the cuda extra does not resolve for glibc 2.$GLIBC_MINOR x86_64 / CPython 3.12 ${*:+with $*}" >&2
    exit 1
fi
"$PY" - "$work/report.json" <<'EOF'
import json
import sys

picked = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.load(open(sys.argv[1]))["install"]}
shown = ["vllm", "torch", "triton", "flash-linear-attention", "fla-core", "flashinfer-python", "transformers",
         "openai", "pytest", "safetensors", "tokenizers"]
print(f"resolved {len(picked)} distributions; " + ", ".join(f"{n} {picked[n]}" for n in shown if n in picked))
EOF
