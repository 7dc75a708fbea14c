#!/usr/bin/env bash
# Build a folder of wheels for an offline Kaggle run: attach it as a dataset, and
# notebooks/submit.ipynb installs from it (pip --no-index, only what is missing).
#
#   bash scripts/build_wheels.sh [options] [OUT_DIR] [REQUIREMENTS]
#
#   OUT_DIR            where the wheels go (default: wheels)
#   REQUIREMENTS       extras on top of arc-ttft (default: requirements-gpu.txt, i.e. vLLM
#                      and the GPU extras; vLLM pins an exact torch, so --torch-version must
#                      be the image's torch)
#   --no-vllm          no extras: arc-ttft and its dependencies only (the run then uses
#                      transformers for inference)
#   --python X.Y       the target's Python (default $WHEELS_PYTHON, else 3.12: Kaggle's image)
#   --platform TAG     a target platform tag, repeatable (default $WHEELS_PLATFORMS, else
#                      manylinux_2_28_x86_64 down to manylinux_2_17 and manylinux2014_x86_64)
#   --torch-version V  the torch the target already has (default $WHEELS_TORCH, else 2.11.0,
#                      Kaggle's image; a local label such as +cu128 is dropped): dependencies
#                      are resolved against it and no torch is downloaded
#   --with-torch       download torch and its CUDA libraries too (GBs; on Kaggle it then
#                      replaces the preinstalled torch only where a requirement needs it)
#   --package WHEEL    an arc-ttft wheel already built (default: build one from this checkout)
#   --dry-run          print the commands, run nothing
#
# The first cell of notebooks/submit.ipynb prints the image's Python and torch; when the
# folder does not fit them, the notebook stops and prints the command that does.
# OUT_DIR/wheels-target.json records the target (Python, torch, extras) for that check.
# Kaggle's image comes with a CUDA build of torch that fits its driver, so by default the
# folder holds no torch: pip has no "everything but torch" option, so a metadata-only
# stand-in (torch==V+preinstalled) satisfies torch while resolving and is deleted after.
# Run it on Linux x86_64 with internet; pip evaluates environment markers for this machine.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${WHEELS_PYTHON:-3.12}"
read -r -a PLATFORMS <<<"${WHEELS_PLATFORMS:-}"
TORCH="${WHEELS_TORCH:-2.11.0}"
DEFAULT_REQ="requirements-gpu.txt"
NO_VLLM=0
WITH_TORCH=0
DRY_RUN=0
PACKAGE=""
POSITIONAL=()
PYTHON="${PYTHON:-python3}"

usage() {
    # The comment block at the top, up to its first line that is not a comment.
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
    exit "${1:-0}"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --python) PY="${2:?--python needs X.Y}"; shift 2 ;;
        --platform) PLATFORMS+=("${2:?--platform needs a tag}"); shift 2 ;;
        --torch-version) TORCH="${2:?--torch-version needs a version}"; shift 2 ;;
        --with-torch) WITH_TORCH=1; shift ;;
        --no-vllm) NO_VLLM=1; shift ;;
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
if [[ -n "$REQ" && $NO_VLLM -eq 1 ]]; then
    echo "build_wheels.sh: --no-vllm drops the default $DEFAULT_REQ; with your own" \
        "REQUIREMENTS ($REQ) leave --no-vllm out" >&2
    exit 2
fi
if [[ -z "$REQ" && $NO_VLLM -eq 0 ]]; then REQ="$DEFAULT_REQ"; fi
if [[ ! "$PY" =~ ^3\.[0-9]+$ ]]; then
    echo "build_wheels.sh: --python $PY: give the target's X.Y, e.g. 3.12" >&2
    exit 2
fi
# torch.__version__ on Kaggle reads 2.11.0+cu128; the stand-in adds its own local label.
TORCH="${TORCH%%+*}"
if [[ ! "$TORCH" =~ ^[0-9]+\.[0-9]+[0-9A-Za-z.]*$ ]]; then
    echo "build_wheels.sh: --torch-version $TORCH: give the target's torch, e.g. 2.11.0" >&2
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
echo "extras: ${REQ:-none (--no-vllm)}"

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

json_str() {
    local s="${1//\\/\\\\}"
    printf '"%s"' "${s//\"/\\\"}"
}

# What the folder was built for: the notebook compares it with the kernel before pip runs
# (arc_ttft.kaggle.check_wheels_fit).
TARGET_JSON="{\"python\": $(json_str "$PY"), \"torch\": "
if [[ $WITH_TORCH -eq 1 ]]; then TARGET_JSON+="null"; else TARGET_JSON+="$(json_str "$TORCH")"; fi
TARGET_JSON+=", \"with_torch\": $([[ $WITH_TORCH -eq 1 ]] && echo true || echo false)"
TARGET_JSON+=", \"requirements\": $([[ -n "$REQ" ]] && json_str "$REQ" || echo null)"
HAS_VLLM=false
if [[ -n "$REQ" ]] && grep -qi '^[[:space:]]*vllm' "$REQ"; then HAS_VLLM=true; fi
TARGET_JSON+=", \"vllm\": $HAS_VLLM, \"platforms\": ["
for i in "${!PLATFORMS[@]}"; do
    [[ $i -gt 0 ]] && TARGET_JSON+=", "
    TARGET_JSON+="$(json_str "${PLATFORMS[$i]}")"
done
TARGET_JSON+="]}"

# What install_offline_wheels asks pip for on Kaggle: the package, plus the extras.
if [[ $DRY_RUN -eq 1 ]]; then
    echo "# $OUT/requirements.txt: arc-ttft${REQ:+ + the requirements of $REQ}"
    echo "# $OUT/wheels-target.json: $TARGET_JSON"
else
    echo "arc-ttft" >"$OUT/requirements.txt"
    if [[ -n "$REQ" ]]; then
        grep -v '^[[:space:]]*\(#\|$\)' "$REQ" >>"$OUT/requirements.txt" || true
    fi
    echo "$TARGET_JSON" >"$OUT/wheels-target.json"
    echo "$(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1) in $OUT:" \
        "attach the folder as a Kaggle dataset named like *wheels* (e.g. arc-ttft-wheels)"
fi
