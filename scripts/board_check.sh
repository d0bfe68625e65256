#!/usr/bin/env bash
# The README's board recipe ("Profiling on a board") on a real board architecture: an arm64
# (aarch64) Debian userland run under qemu-user emulation on this machine.
#
#   on the host (the full install):  build hapi's wheel, train a tiny run, export its
#       segments (and, when 'hapi calibrate' exists, its reference kit)
#   in the arm64 chroot (the wheel's base install: no torch, no optuna):  a fresh venv,
#       pip install the wheel, hapi calibrate --measure, hapi profile --onnx-dir,
#       hapi devices
#   back on the host:  hapi import-profile of the board's table, loaded and checked; hapi
#       search with it and hapi export of the design it picks
#   in the chroot again:  hapi eval of that design
#
# Functional only: timings under emulation mean nothing and nothing here reads them.
#
# Needs root (apt-get, debootstrap, chroot, mounts) and a Debian host that reaches its own
# package mirror (taken from /etc/apt/sources.list*) and the Python package index.
#
# Environment:
#   BOARD_ROOT    cache: the arm64 rootfs, with the wheels pip fetched in it
#                 [$HOME/.cache/hapi-board-arm64]
#   BOARD_WORK    work directory, kept afterwards  [a temporary one, removed on exit]
#   BOARD_MIRROR  Debian mirror for debootstrap  [the host's, from /etc/apt/sources.list*]
#   PYTHON        the host's Python with hapi's full install  [REPO/.venv/bin/python]
#
# Prints "board-check: ok (aarch64)" last on success; any failure exits non-zero with a line
# "board-check: FAILED ...".
set -Eeuo pipefail

STEP="start"
fail() {
    echo "board-check: FAILED ($STEP): $*" >&2
    exit 1
}
on_err() {
    local cmd="${BASH_COMMAND%%$'\n'*}"
    echo "board-check: FAILED ($STEP): exit status $1: $cmd" >&2
}
trap 'on_err $?' ERR
step() {
    STEP="$1"
    echo "board-check: [${SECONDS}s] $1" >&2
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BOARD_ROOT="${BOARD_ROOT:-$HOME/.cache/hapi-board-arm64}"
ROOTFS="$BOARD_ROOT/rootfs"
STAMP="$ROOTFS/.hapi-board-ready"
DEVICE="arm64-board"
EVAL_LIMIT=40

[ "$(id -u)" -eq 0 ] || fail "needs root (apt-get, debootstrap, chroot and mounts)"
[ -r /etc/os-release ] || fail "no /etc/os-release: not a Debian host"
# shellcheck disable=SC1091
. /etc/os-release
[ "${ID:-}" = debian ] || fail "needs a Debian host (this one is ${ID:-unknown})"
CODENAME="${VERSION_CODENAME:-}"
[ -n "$CODENAME" ] || fail "/etc/os-release names no VERSION_CODENAME"

if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    [ ! -x "$REPO/.venv/bin/python" ] || PYTHON="$REPO/.venv/bin/python"
fi
unset HAPI_PROFILES PYTHONPATH
export HAPI_NO_PROGRESS=1
hapi() { "$PYTHON" -m hapi_dse "$@"; }

# -- host packages: qemu-user-static, debootstrap, binfmt-support --------------------------
step "host packages"
missing=()
for pkg in qemu-user-static debootstrap binfmt-support; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "board-check: installing ${missing[*]}" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
QEMU=/usr/bin/qemu-aarch64-static
[ -x "$QEMU" ] || fail "$QEMU missing after installing qemu-user-static"

# -- binfmt_misc: run aarch64 ELF files through qemu (F: the interpreter is opened now, so
# the chroot does not need its own copy) ----------------------------------------------------
step "binfmt_misc"
BINFMT=/proc/sys/fs/binfmt_misc
if [ ! -e "$BINFMT/register" ]; then
    mount -t binfmt_misc binfmt_misc "$BINFMT" ||
        fail "cannot mount binfmt_misc (a container without the privilege?)"
fi
if [ ! -e "$BINFMT/qemu-aarch64" ]; then
    if command -v update-binfmts >/dev/null; then
        update-binfmts --enable qemu-aarch64 || true
    fi
fi
if [ ! -e "$BINFMT/qemu-aarch64" ] && [ -r /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
    grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf >"$BINFMT/register"
fi
[ -e "$BINFMT/qemu-aarch64" ] || fail "could not register qemu-aarch64 with binfmt_misc"
grep -qx enabled "$BINFMT/qemu-aarch64" || echo 1 >"$BINFMT/qemu-aarch64"

# -- the arm64 rootfs, cached under BOARD_ROOT ----------------------------------------------
# The host's own mirror, read from its apt sources: the first one serving the release itself.
host_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        awk -v want="$CODENAME" '
            function flush() {
                if (uris != "" && enabled != "no" && (" " types " ") ~ / deb / &&
                    (" " suites " ") ~ (" " want " ")) {
                    split(uris, u, " "); print u[1]; done = 1; exit
                }
                uris = ""; suites = ""; types = ""; enabled = ""
            }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { flush(); next }
            tolower($1) == "uris:" { $1 = ""; uris = $0 }
            tolower($1) == "suites:" { $1 = ""; suites = $0 }
            tolower($1) == "types:" { $1 = ""; types = $0 }
            tolower($1) == "enabled:" { enabled = tolower($2) }
            END { if (!done) flush() }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -e "$f" ] || continue
        awk -v want="$CODENAME" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == want) { print $i; exit }
            }' "$f"
    done
}

lock_fd() {
    mkdir -p "$BOARD_ROOT"
    exec 9>"$BOARD_ROOT/.lock"
    flock -n 9 || {
        echo "board-check: waiting for another board check using $BOARD_ROOT" >&2
        flock 9
    }
}
mounted_under() { awk -v p="$1/" 'index($2 "/", p) == 1 { print $2 }' /proc/self/mounts; }

step "arm64 rootfs"
lock_fd
if [ ! -e "$STAMP" ]; then
    if [ -e "$ROOTFS" ]; then
        [ -z "$(mounted_under "$ROOTFS")" ] ||
            fail "$ROOTFS is incomplete and has mounts inside: $(mounted_under "$ROOTFS" | xargs)"
        echo "board-check: removing an incomplete rootfs in $ROOTFS" >&2
        rm -rf --one-file-system "$ROOTFS"
    fi
    MIRROR="${BOARD_MIRROR:-$(host_mirror | grep -E '^(https?|file)://' | head -n1 || true)}"
    [ -n "$MIRROR" ] ||
        fail "no Debian mirror for '$CODENAME' in /etc/apt/sources.list*: set BOARD_MIRROR"
    MIRROR="${MIRROR%/}"
    echo "board-check: debootstrap $CODENAME arm64 from $MIRROR (slow under emulation)" >&2
    debootstrap --arch=arm64 --foreign --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates \
        "$CODENAME" "$ROOTFS" "$MIRROR"
    install -m 0755 "$QEMU" "$ROOTFS/usr/bin/qemu-aarch64-static"
    chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        /debootstrap/debootstrap --second-stage
    [ "$(chroot "$ROOTFS" /usr/bin/uname -m)" = aarch64 ] ||
        fail "the rootfs does not run as aarch64"
    chroot "$ROOTFS" /usr/bin/python3 -c 'import ensurepip, venv' ||
        fail "python3 or python3-venv did not install in the rootfs"
    date -u +%FT%TZ >"$STAMP"
else
    echo "board-check: reusing $ROOTFS (made $(cat "$STAMP"))" >&2
fi
[ -x "$ROOTFS/usr/bin/qemu-aarch64-static" ] || install -m 0755 "$QEMU" "$ROOTFS/usr/bin/"
cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
# The host's trust store, for pip in the chroot: a network that re-signs TLS on its way out
# (the host trusts its CA in /usr/local/share/ca-certificates) reaches the index from there too.
HOST_CA=/etc/ssl/certs/ca-certificates.crt
BOARD_CA=
if [ -r "$HOST_CA" ]; then
    cp -L "$HOST_CA" "$ROOTFS/etc/ssl/certs/hapi-host-ca.crt"
    BOARD_CA=/etc/ssl/certs/hapi-host-ca.crt
fi

# -- a work directory, mounted at the same path inside the chroot ---------------------------
if [ -n "${BOARD_WORK:-}" ]; then
    mkdir -p "$BOARD_WORK"
    WORK="$(cd "$BOARD_WORK" && pwd)"
    KEEP_WORK=1
else
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/hapi-board.XXXXXX")"
    KEEP_WORK=0
fi
case "$WORK" in "$ROOTFS"/* | "$ROOTFS") fail "BOARD_WORK must lie outside $ROOTFS" ;; esac
MOUNTS=()
cleanup() {
    local i m
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        m="${MOUNTS[i]}"
        umount "$m" 2>/dev/null || umount -l "$m" ||
            echo "board-check: warning: could not unmount $m" >&2
    done
    # the mount point made for WORK, and its parents made with it (rmdir: empty ones only;
    # never a top-level directory of the rootfs)
    local d="$ROOTFS$WORK"
    while [ "$(dirname "$d")" != "$ROOTFS" ] && [ -z "$(mounted_under "$d")" ] &&
        rmdir "$d" 2>/dev/null; do d="$(dirname "$d")"; done
    if [ "$KEEP_WORK" = 0 ] && [ -z "$(mounted_under "$WORK")" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'echo "board-check: FAILED ($STEP): interrupted" >&2; exit 130' INT
trap 'echo "board-check: FAILED ($STEP): terminated" >&2; exit 143' TERM

# -- on the host, with the full install -----------------------------------------------------
step "host: the full install"
"$PYTHON" -c 'import torch, optuna, sklearn, hapi_dse' ||
    fail "$PYTHON lacks hapi's full install (torch, optuna, scikit-learn): set PYTHON, or" \
        "run 'make install'"

# 'hapi calibrate' (a reference kit exported here, measured on the board) is checked when
# this checkout has it; asked before the wheel is built, so that both sides agree.
CALIBRATE=0
if hapi calibrate --help >/dev/null 2>&1; then
    CALIBRATE=1
else
    echo "board-check: hapi calibrate not available, skipped" >&2
fi

step "host: hapi's wheel"
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$REPO"
WHEELS=("$WORK"/dist/hapi_dse-*.whl)
[ "${#WHEELS[@]}" -eq 1 ] && [ -f "${WHEELS[0]}" ] ||
    fail "expected one hapi_dse wheel in $WORK/dist"
WHEEL="${WHEELS[0]}"
if [ "$CALIBRATE" = 1 ]; then
    "$PYTHON" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).getinfo(sys.argv[2])' \
        "$WHEEL" hapi_dse/cli/calibrate_cmd.py 2>/dev/null ||
        fail "the wheel lacks hapi_dse/cli/calibrate_cmd.py, which this checkout runs"
fi

step "host: a tiny run (digits, as a .npz file the board can read without scikit-learn)"
"$PYTHON" - "$WORK/digits.npz" <<'EOF'
import sys

import numpy as np
from sklearn.datasets import load_digits

d = load_digits()
np.savez(sys.argv[1], x=(d.images / 16.0).astype(np.float32), y=d.target.astype(np.int64))
EOF
RUN="$WORK/run"
hapi -q train --dataset "$WORK/digits.npz" --backbone resnet20 --epochs 1 --exit-epochs 1 \
    --batch-size 64 --limit 400 --seed 0 --threads 1 --out "$RUN"

step "host: the run's segments"
SEG="$WORK/segments"
hapi -q profile --model "$RUN" --export-dir "$SEG" --export-only
MODEL_ID="$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["model_id"])' \
    "$SEG/segments.json")"

if [ "$CALIBRATE" = 1 ]; then
    step "host: the calibration kit"
    hapi -q calibrate --export-kit "$WORK/kit"
    compgen -G "$WORK/kit/*.onnx" >/dev/null || fail "hapi calibrate --export-kit wrote no .onnx"
fi

# -- on the board: the wheel's base install, in the arm64 chroot ----------------------------
step "board: mounts"
# No /sys: onnxruntime's cpuinfo would read the host's x86 CPU topology there, which crashes
# it under qemu-user (SIGSEGV on import); without it, it warns and runs.
for d in proc dev; do mkdir -p "$ROOTFS/$d"; done
mount -t proc proc "$ROOTFS/proc"
MOUNTS+=("$ROOTFS/proc")
mount --bind /dev "$ROOTFS/dev"
MOUNTS+=("$ROOTFS/dev")
mkdir -p "$ROOTFS$WORK"
mount --bind "$WORK" "$ROOTFS$WORK"
MOUNTS+=("$ROOTFS$WORK")

# The board's side, in two phases: "profile" (README step 2) and, once the host has searched
# the board's own table and exported a design, "eval" of that design.
cat >"$WORK/board.sh" <<'EOF'
# Runs inside the arm64 chroot, environment cleared (see board_check.sh). $1: profile | eval
set -euo pipefail
fail() { echo "board-check: FAILED (board): $*" >&2; exit 1; }
say() { echo "board-check: board: $*" >&2; }

[ "$(uname -m)" = aarch64 ] || fail "uname -m is $(uname -m), not aarch64"
VENV=/opt/hapi-venv
PY="$VENV/bin/python"
HAPI="$VENV/bin/hapi"

if [ "$1" = eval ]; then
    say "hapi eval of the design searched for $DEVICE"
    "$HAPI" -q eval "$WORK/design.onnx" --device "$DEVICE" --profiles "$WORK/board-out" \
        --limit "$EVAL_LIMIT" --warmup 1 --passes 1 --out "$WORK/eval.json"
    exit 0
fi

say "python3 $(python3 -c 'import platform; print(platform.python_version())') on $(uname -m)"
rm -rf "$VENV"
python3 -m venv "$VENV"
# The wheels pip fetches are kept in a wheelhouse of the cached rootfs: this network serves
# them without caching headers, so pip's own HTTP cache keeps nothing. 'pip download' resolves
# against the index and fetches only what the wheelhouse lacks; the install is then offline.
WH=/var/cache/hapi-wheels
mkdir -p "$WH"
rm -f "$WH"/hapi_dse-*.whl  # never a stale copy of the wheel under the same name
say "pip download the wheel's dependencies (into $WH, kept)"
"$PY" -m pip download -q -d "$WH" "$WHEEL"
rm -f "$WH"/hapi_dse-*.whl
say "pip install the wheel (the base install)"
"$PY" -m pip install -q --no-index --find-links "$WH" "$WHEEL"

"$PY" - "$VENV" <<'PYEOF'
import importlib.util
import platform
import sys

import hapi_dse

assert platform.machine() == "aarch64", platform.machine()
assert hapi_dse.__file__.startswith(sys.argv[1]), hapi_dse.__file__
for name in ("torch", "optuna"):
    assert importlib.util.find_spec(name) is None, f"{name} is installed on the board"
print(f"board-check: board: hapi {hapi_dse.__version__} on {platform.machine()}", file=sys.stderr)
PYEOF
for m in torch optuna; do
    if "$PY" -c "import $m" 2>/dev/null; then fail "import $m succeeded"; fi
done

if [ "$CALIBRATE" = 1 ]; then
    say "hapi calibrate --measure (the fewest runs: timings under emulation mean nothing)"
    "$HAPI" -q calibrate --measure "$WORK/kit" --runs 10 --warmup 1
fi

say "hapi profile --onnx-dir (the fewest runs: timings under emulation mean nothing)"
"$HAPI" -q profile --onnx-dir "$WORK/segments" --device "$DEVICE" --profiles "$WORK/board-out" \
    --runs 50 --warmup 1
say "hapi devices"
"$HAPI" devices --check --profiles "$WORK/board-out" >"$WORK/devices.txt"
cat "$WORK/devices.txt" >&2
grep -Eq "^$DEVICE +measured +$MODEL_ID" "$WORK/devices.txt" ||
    fail "hapi devices does not list $DEVICE measured $MODEL_ID"

say "hapi train names its extra"
mkdir -p "$WORK/board-train" && cd "$WORK/board-train"
rc=0
"$HAPI" train --dataset digits --out run 2>"$WORK/train.err" || rc=$?
[ "$rc" = 2 ] && grep -q "needs torch" "$WORK/train.err" ||
    fail "hapi train on the board: exit $rc, $(cat "$WORK/train.err")"
[ ! -e run ] || fail "hapi train on the board left a run directory"
uname -m >"$WORK/board-machine.txt"
EOF

board() {
    chroot "$ROOTFS" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        PIP_CONFIG_FILE=/dev/null PIP_CACHE_DIR=/var/cache/hapi-pip \
        PIP_DISABLE_PIP_VERSION_CHECK=1 \
        PIP_DEFAULT_TIMEOUT=120 ${BOARD_CA:+PIP_CERT="$BOARD_CA" SSL_CERT_FILE="$BOARD_CA"} \
        HAPI_NO_PROGRESS=1 \
        WORK="$WORK" WHEEL="$WHEEL" DEVICE="$DEVICE" MODEL_ID="$MODEL_ID" CALIBRATE="$CALIBRATE" \
        EVAL_LIMIT="$EVAL_LIMIT" \
        /bin/bash "$WORK/board.sh" "$1"
}

step "board: venv, pip install of the wheel, calibrate, profile, devices (arm64 chroot)"
board profile
[ "$(cat "$WORK/board-machine.txt")" = aarch64 ] || fail "the board did not finish"

# -- back on the host: the board's table comes home; a design searched for the board --------
step "host: hapi import-profile of the board's table"
hapi -q import-profile "$WORK/board-out/$DEVICE" --profiles "$WORK/home-profiles"
"$PYTHON" - "$WORK" "$DEVICE" "$MODEL_ID" "$CALIBRATE" <<'EOF'
import csv
import json
import sys
from pathlib import Path

from hapi_dse.profiling.table import load_table

work, device, model_id, calibrate = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
man = json.loads((work / "segments" / "segments.json").read_text())
table = load_table(device, model_id, work / "home-profiles")
# a row per block, head and final classifier (the manifest's backbone and noop graphs are
# timed for the sidecar)
segs = [s for s in man["segments"] if s["kind"] in ("block", "head", "final")]
assert len(table.rows) == len(segs), f"{len(table.rows)} rows for {len(segs)} segments"
assert table.num_blocks == sum(s["kind"] == "block" for s in segs)
assert set(table.rows["source"]) == {"measured"}, set(table.rows["source"])
assert table.sidecar["deployment"]["source"] == "measured"
msg = f"board-check: {device}/{model_id}: {len(table.rows)} rows, one per segment"
if calibrate == "1":
    kit = sorted((work / "kit").glob("*.onnx"))
    with open(work / "kit" / "measured.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames is not None and {"model", "latency_ms"} <= set(reader.fieldnames)
        rows = list(reader)
    assert len(rows) == len(kit), f"measured.csv: {len(rows)} rows for {len(kit)} graphs"
    assert all(float(r["latency_ms"]) > 0 for r in rows)
    msg += f"; measured.csv: {len(rows)} rows, one per graph of the kit"
print(msg, file=sys.stderr)
EOF

step "host: hapi search with the board's table, hapi export of its design"
hapi -q search --model "$RUN" --device "$DEVICE" --profiles "$WORK/home-profiles" \
    --trials 20 --seed 0 --out "$WORK/search"
hapi -q export "$WORK/search" --model "$RUN" --out "$WORK/design.onnx" --check-samples 64

step "board: hapi eval of the design (arm64 chroot)"
board eval
"$PYTHON" - "$WORK/eval.json" "$EVAL_LIMIT" <<'EOF'
import json
import sys

rep, limit = json.loads(open(sys.argv[1]).read()), int(sys.argv[2])
assert rep["n"] == limit, rep["n"]
assert sum(rep["measured"]["exit_histogram"]) == limit, rep["measured"]["exit_histogram"]
assert 0.0 <= rep["measured"]["accuracy"] <= 1.0
print(f"board-check: eval on the board: {limit} samples", file=sys.stderr)
EOF

STEP="done"
echo "board-check: ok ($(cat "$WORK/board-machine.txt"))"
