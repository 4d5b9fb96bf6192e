#!/usr/bin/env bash
# A full disk while saving: on a small tmpfs, a checkpoint save, a spool
# conversion and a prediction that run out of space fail with exit 1 and a
# message naming the file and "No space left on device" (no crash: HDF5 used
# to die with SIGSEGV at exit after its failed close), the previous
# checkpoint stays byte for byte what it was and still resumes, and no
# temporary is left behind.
# Needs to mount a tmpfs (root, or CAP_SYS_ADMIN); skipped (77) otherwise.
set -u

CLI=${KD_CLI:?KD_CLI must name the kindling binary}
T=$(mktemp -d "${TMPDIR:-/tmp}/kd_cli_disk_full.XXXXXX")
SMALL="$T/small"
mkdir -p "$SMALL"
cleanup() {
    umount "$SMALL" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

source "$(dirname "$0")/lib_cli.sh"

# mount_small BYTES: a fresh tmpfs of that size on $SMALL.
mount_small() {
    umount "$SMALL" 2>/dev/null
    mount -t tmpfs -o "size=$1" kd_disk_full "$SMALL" 2>"$T/mount.err"
}
if ! mount_small 64k; then
    echo "SKIPPED: cannot mount a tmpfs to fill ($(head -1 "$T/mount.err")); needs root or CAP_SYS_ADMIN"
    exit 77
fi
no_temporaries() { # NAME: nothing but the listed files in $SMALL
    local left
    left=$(find "$SMALL" -name '*.tmp*' | head -3)
    if [ -z "$left" ]; then ok; else bad "$1: temporaries left: $left"; fi
}

make_csv "$T/train.csv" 100 1
TRAIN=(train --net mlp --batch-size 20 --quiet --train-csv "$T/train.csv")
run "first checkpoint" "$CLI" "${TRAIN[@]}" --epochs 1 --checkpoint "$T/ck.h5"
size=$(stat -c %s "$T/ck.h5")

# Room for the old checkpoint but not for a second copy beside it.
mount_small $((size * 3 / 2)) || { bad "mounting ${size}x1.5 bytes"; finish; exit; }
cp "$T/ck.h5" "$SMALL/ck.h5"
expect 1 "resume saving onto a full disk" "$CLI" "${TRAIN[@]}" --epochs 2 --resume "$SMALL/ck.h5"
has "message names the checkpoint" "$T/err" "$SMALL/ck.h5"
has "message names the reason" "$T/err" "No space left on device"
cmp -s "$T/ck.h5" "$SMALL/ck.h5" && ok || bad "the old checkpoint changed"
no_temporaries "failed save"
run "the old checkpoint still loads" "$CLI" inspect "$SMALL/ck.h5"
expect 1 "a new checkpoint path on a full disk" "$CLI" "${TRAIN[@]}" --epochs 1 --checkpoint "$SMALL/new.h5"
[ ! -e "$SMALL/new.h5" ] && ok || bad "a failed first save left $SMALL/new.h5"
no_temporaries "failed first save"

# Spool conversion and prediction output into the same full disk.
for i in 1 2 3 4 5 6 7 8; do cat "$T/train.csv"; done >"$T/many.csv" # 2.5 MB as a spool
expect 1 "convert onto a full disk" "$CLI" convert --csv "$T/many.csv" -o "$SMALL/train.spool" -q
has "convert names the reason" "$T/err" "No space left on device"
[ ! -e "$SMALL/train.spool" ] && ok || bad "convert left a partial spool"
no_temporaries "failed convert"
fill=$(( $(stat -f -c '%a*%S' "$SMALL") ))
head -c $((fill - 4096)) /dev/zero >"$SMALL/filler" 2>/dev/null
expect 1 "predict onto a full disk" "$CLI" predict --model "$T/ck.h5" --csv "$T/many.csv" --output "$SMALL/p.csv"
has "predict names the reason" "$T/err" "No space left on device"
[ ! -e "$SMALL/p.csv" ] && ok || bad "predict left a partial output"
no_temporaries "failed predict"
rm -f "$SMALL/filler"

# With room again the same resume succeeds from the untouched checkpoint.
mount_small $((size * 4)) || { bad "remounting"; finish; exit; }
cp "$T/ck.h5" "$SMALL/ck.h5"
run "resume with room" "$CLI" "${TRAIN[@]}" --epochs 2 --resume "$SMALL/ck.h5"
no_temporaries "successful save"

finish
