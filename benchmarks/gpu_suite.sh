#!/usr/bin/env bash
# Every GPU measurement in one run of at most 8 minutes (benchmarks/gpu_suite.py says what it measures).
#
#   benchmarks/gpu_suite.sh --prepare    # here (network/venv): .gpu/qwen3-tokenizer and Liger's wheel in .gpu/wheels
#   benchmarks/gpu_suite.sh              # on the GPU machine (carry .gpu): $OUT/gpu_suite.{json,md}
#   benchmarks/gpu_suite.sh --dry-run    # on CPU, tiny shapes: checks the script end to end (tests/test_gpu_suite.py)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
OUT="${OUT:-$PWD/runs/gpu-suite}"
mkdir -p "$OUT"

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p .gpu/wheels
    PYTHONPATH=src "$PYTHON" -c "from dasd.models.assets import load_tokenizer; load_tokenizer('qwen3').save_pretrained('.gpu/qwen3-tokenizer')"
    # liger-kernel is pure Python over Triton (which the GPU image's torch brings): 0.9 MB
    "$PYTHON" -m pip download --no-deps --dest .gpu/wheels "liger-kernel==0.8.5"
    du -sh .gpu
    exit 0
fi

if [ "${1:-}" = "--dry-run" ]; then
    tokenizer_dir="$(mktemp -d)"
    trap 'rm -rf "$tokenizer_dir"' EXIT
    PYTHONPATH=src "$PYTHON" -c "from dasd.models.assets import load_tokenizer; load_tokenizer('qwen3').save_pretrained('$tokenizer_dir')"
    exec "$PYTHON" benchmarks/gpu_suite.py --dry-run --out "$OUT" --tokenizer "$tokenizer_dir"
fi

# Liger from the carried wheel when the image lacks it, into a folder of its own (the image stays as it is)
if ! "$PYTHON" -c "import liger_kernel" 2>/dev/null && ls .gpu/wheels/liger_kernel-*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet --no-deps --no-index --target .gpu/site .gpu/wheels/liger_kernel-*.whl \
        && export PYTHONPATH="$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# 8 minutes in all: parts start only while they can finish by 450 s; the hard stop leaves the partial files
timeout --signal=TERM --kill-after=10 470 "$PYTHON" benchmarks/gpu_suite.py --out "$OUT" "$@"
status=$?
cat "$OUT/gpu_suite.md" 2>/dev/null
exit $status
