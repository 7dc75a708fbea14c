#!/usr/bin/env bash
# Build a folder of wheels for an offline Kaggle run: attach it as a dataset, and
# notebooks/submit.ipynb installs from it (pip --no-index, only what is missing).
#
#   bash scripts/build_wheels.sh [options] [OUT_DIR] [REQUIREMENTS]
#
#   OUT_DIR            where the wheels go (default: wheels)
#   REQUIREMENTS       extra requirements on top of arc-ttft, e.g. requirements-gpu.txt
#                      (vLLM pins its own torch: add --with-torch, or --torch-version
#                      with the version Kaggle has)
#   --python X.Y       the target's Python (default $WHEELS_PYTHON, else 3.11: Kaggle's image)
#   --platform TAG     a target platform tag, repeatable (default $WHEELS_PLATFORMS, else
#                      manylinux_2_28_x86_64 down to manylinux_2_17 and manylinux2014_x86_64)
#   --torch-version V  the torch the target already has (default $WHEELS_TORCH, else 2.4.0,
#                      arc-ttft's minimum): dependencies are resolved against it and no torch
#                      is downloaded
#   --with-torch       download torch and its CUDA libraries too (GBs; on Kaggle it then
#                      replaces the preinstalled torch only where a requirement needs it)
#   --package WHEEL    an arc-ttft wheel already built (default: build one from this checkout)
#   --dry-run          print the commands, run nothing
#
# Kaggle's image comes with a CUDA build of torch that fits its driver, so by default the
# folder holds no torch: pip has no "everything but torch" option, so a metadata-only
# stand-in (torch==V+preinstalled) satisfies torch while resolving and is deleted after.
# Run it on Linux x86_64 with internet; pip evaluates environment markers for this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${WHEELS_PYTHON:-3.11}"
read -r -a PLATFORMS <<<"${WHEELS_PLATFORMS:-}"
TORCH="${WHEELS_TORCH:-2.4.0}"
WITH_TORCH=0
DRY_RUN=0
PACKAGE=""
POSITIONAL=()
PYTHON="${PYTHON:-python3}"

usage() {
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --python) PY="${2:?--python needs X.Y}"; shift 2 ;;
        --platform) PLATFORMS+=("${2:?--platform needs a tag}"); shift 2 ;;
        --torch-version) TORCH="${2:?--torch-version needs a version}"; shift 2 ;;
        --with-torch) WITH_TORCH=1; shift ;;
        --package) PACKAGE="${2:?--package needs a wheel}"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage 0 ;;
        -*) echo "build_wheels.sh: unknown option $1" >&2; usage 2 >&2 ;;
        *) POSITIONAL+=("$1"); shift ;;
    esac
done
if [[ ${#POSITIONAL[@]} -gt 2 ]]; then
    echo "build_wheels.sh: at most OUT_DIR and REQUIREMENTS, got: ${POSITIONAL[*]}" >&2
    exit 2
fi
OUT="${POSITIONAL[0]:-wheels}"
REQ="${POSITIONAL[1]:-}"
if [[ ! "$PY" =~ ^3\.[0-9]+$ ]]; then
    echo "build_wheels.sh: --python $PY: give the target's X.Y, e.g. 3.11" >&2
    exit 2
fi
if [[ -n "$REQ" && ! -f "$REQ" ]]; then
    echo "build_wheels.sh: requirements file $REQ not found" >&2
    exit 2
fi
if [[ ${#PLATFORMS[@]} -eq 0 ]]; then
    # pip matches a manylinux_2_X tag literally, so list every glibc level the target runs.
    for minor in $(seq 28 -1 17); do PLATFORMS+=("manylinux_2_${minor}_x86_64"); done
    PLATFORMS+=("manylinux2014_x86_64")  # pip adds manylinux2010 and manylinux1
fi

run() {
    if [[ $DRY_RUN -eq 1 ]]; then
        printf '%q ' "$@"
        echo
    else
        "$@"
    fi
}

echo "target: Python $PY, platforms ${PLATFORMS[*]}"
if [[ $WITH_TORCH -eq 1 ]]; then
    echo "torch: downloaded (with its CUDA libraries)"
else
    echo "torch: not downloaded; resolved against the target's torch $TORCH"
fi

run mkdir -p "$OUT"
if [[ -z "$PACKAGE" ]]; then
    run "$PYTHON" -m pip wheel . --no-deps --quiet -w "$OUT"
    PACKAGE="$OUT/arc_ttft-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)-py3-none-any.whl"
fi
if [[ $DRY_RUN -eq 0 && ! -f "$PACKAGE" ]]; then
    echo "build_wheels.sh: $PACKAGE: no such wheel" >&2
    exit 2
fi

TARGET=(--python-version "$PY" --only-binary=:all:)
for p in "${PLATFORMS[@]}"; do TARGET+=(--platform "$p"); done
EXTRA=()
if [[ -n "$REQ" ]]; then EXTRA+=(-r "$REQ"); fi

STUB_ARGS=()
STUB_DIR=""
if [[ $WITH_TORCH -eq 0 ]]; then
    STUB_VERSION="$TORCH+preinstalled"
    if [[ $DRY_RUN -eq 1 ]]; then
        STUB_DIR="${TMPDIR:-/tmp}/torch-stub"
        echo "# stand-in: $STUB_DIR/torch-$STUB_VERSION-py3-none-any.whl, constraint torch==$STUB_VERSION"
    else
        STUB_DIR="$(mktemp -d)"
        trap 'rm -rf "$STUB_DIR"' EXIT
        echo "torch==$STUB_VERSION" >"$STUB_DIR/constraints.txt"
        "$PYTHON" - "$STUB_DIR" "$STUB_VERSION" <<'EOF'
import sys
import zipfile

folder, version = sys.argv[1], sys.argv[2]
info = f"torch-{version}.dist-info"
with zipfile.ZipFile(f"{folder}/torch-{version}-py3-none-any.whl", "w") as z:
    z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr(f"{info}/RECORD", "")
EOF
    fi
    STUB_ARGS=(--find-links "$STUB_DIR" -c "$STUB_DIR/constraints.txt")
fi

run "$PYTHON" -m pip download --dest "$OUT" "${TARGET[@]}" "${STUB_ARGS[@]}" "$PACKAGE" "${EXTRA[@]}"

if [[ $WITH_TORCH -eq 0 ]]; then
    run rm -f "$OUT/torch-$STUB_VERSION-py3-none-any.whl"
fi

# What install_offline_wheels asks pip for on Kaggle: the package, plus the extras.
if [[ $DRY_RUN -eq 1 ]]; then
    echo "# $OUT/requirements.txt: arc-ttft${REQ:+ + the requirements of $REQ}"
else
    echo "arc-ttft" >"$OUT/requirements.txt"
    if [[ -n "$REQ" ]]; then
        grep -v '^[[:space:]]*\(#\|$\)' "$REQ" >>"$OUT/requirements.txt" || true
    fi
    echo "$(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1) in $OUT:" \
        "attach the folder as a Kaggle dataset named like *wheels* (e.g. arc-ttft-wheels)"
fi
