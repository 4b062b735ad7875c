#!/usr/bin/env bash
# Runs benchmarks/gpu.py on the lent GPU machine, from the repository root, with
# the wheels in .whl/ carried (gpu.py's docstring says how they are made):
#
#     bash benchmarks/gpu_machine.sh [gpu.py arguments]
#
# The machine has torch, transformers and peft but not speechbrain, hyperpyyaml
# or ruamel.yaml: their wheels go to $SITE (default /tmp/site), ahead of the
# machine's packages on PYTHONPATH. Writes $OUT/gpu.json and $OUT/gpu.log ($OUT
# is set on that machine). PYTHON (default python3) and SITE let it be tried
# on another machine, e.g. a CPU with --smallest.
set -o pipefail
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
: "${OUT:?set OUT to the folder that gets gpu.json and gpu.log}"
mkdir -p "$OUT" "$SITE"

install() {
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$@"
}
if ! ls .whl/speechbrain-*.whl >/dev/null 2>&1; then
    echo "no .whl/speechbrain-*.whl in $PWD: make the wheels and carry .whl (see benchmarks/gpu.py)"
    exit 1
fi
install .whl/speechbrain-*.whl .whl/hyperpyyaml-*.whl .whl/ruamel_yaml-*.whl || exit 1
# ruamel.yaml's optional C loader is built for one Python (3.12); without it, pure Python.
install .whl/ruamel_yaml_clib-*.whl 2>/dev/null ||
    echo "ruamel.yaml.clib not installed for $("$PYTHON" -V 2>&1): ruamel.yaml runs in pure Python"

export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
nvidia-smi -L 2>/dev/null
"$PYTHON" benchmarks/gpu.py --json "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.log"
