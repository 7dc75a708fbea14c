#!/usr/bin/env bash
# CI checks of the notebooks that need no run (tests/test_notebooks.py executes them):
#   - every notebooks/X.ipynb has the same cells as its Jupytext pair notebooks/X.py;
#   - no .ipynb carries outputs (they are generated, not committed);
#   - the python3 kernel papermill asks for starts this environment's python.
# Usage: bash scripts/check_notebooks.sh   (inside the project's venv)
set -euo pipefail
cd "$(dirname "$0")/.."
python - <<'EOF'
import glob
import sys

import jupytext
from jupyter_client.manager import KernelManager

problems = []
for py in sorted(glob.glob("notebooks/*.py")):
    ipynb = py[:-3] + ".ipynb"
    try:
        a, b = jupytext.read(py), jupytext.read(ipynb)
    except FileNotFoundError:
        problems.append(f"{ipynb}: missing (fix: jupytext --to ipynb --set-kernel python3 {py})")
        continue
    cells = [(c.cell_type, c.source) for c in a.cells]
    if cells != [(c.cell_type, c.source) for c in b.cells]:
        problems.append(f"{ipynb}: cells differ from {py} (fix: jupytext --sync {py})")
    if b.metadata.get("kernelspec", {}).get("name") != "python3":
        problems.append(f"{ipynb}: no python3 kernelspec (fix: jupytext --set-kernel python3 {py})")
    if any(c.get("outputs") for c in b.cells if c.cell_type == "code"):
        problems.append(f"{ipynb}: has outputs (fix: jupytext --to ipynb --set-kernel python3 {py})")

cmd = KernelManager(kernel_name="python3").format_kernel_cmd()
if cmd[0] != sys.executable:
    problems.append(f"kernel python3 runs {cmd[0]}, not {sys.executable} (fix: pip install ipykernel)")

print("\n".join(problems) or "notebooks: pairs in sync, no outputs, python3 kernel ok")
sys.exit(1 if problems else 0)
EOF
