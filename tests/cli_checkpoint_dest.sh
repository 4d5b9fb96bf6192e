#!/usr/bin/env bash
# The checkpoint destination is checked before the first training step: a
# missing directory, a directory given as the file, a file where a directory
# should be and a read-only directory each fail at once (exit 1, a message
# naming the path and the reason, no epoch trained), instead of at the first
# save an epoch later. The read-only case mounts a read-only tmpfs as root
# (root writes through permission bits) or uses chmod otherwise.
set -u

CLI=${KD_CLI:?KD_CLI must name the kindling binary}
T=$(mktemp -d "${TMPDIR:-/tmp}/kd_cli_checkpoint_dest.XXXXXX")
cleanup() {
    umount "$T/ro" 2>/dev/null
    chmod -R u+w "$T" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

source "$(dirname "$0")/lib_cli.sh"

make_csv "$T/train.csv" 100 1
# Progress on stderr: an "epoch 1/2" line would mean training started.
TRAIN=(train --net mlp --epochs 2 --batch-size 20 --train-csv "$T/train.csv")
fails_before_training() { # NAME NEEDLE (extended regex) CHECKPOINT [more flags]
    local name=$1 needle=$2
    shift 2
    expect 1 "$name" "$CLI" "${TRAIN[@]}" --checkpoint "$@"
    has "$name: the reason" "$T/err" "$needle"
    # Found by the check before training, not by a failed save after an epoch.
    has "$name: checked up front" "$T/err" "^kindling: --checkpoint: "
    grep -qE "^epoch 1/|saving checkpoint" "$T/err" && bad "$name: an epoch was trained first" || ok
}

fails_before_training "missing directory" "no_such_dir: No such file or directory" "$T/no_such_dir/model.h5"
fails_before_training "a directory as the file" "is a directory; name a file in it" "$T"
touch "$T/plain"
fails_before_training "a file as the directory" "plain is not a directory" "$T/plain/model.h5"
[ ! -e "$T/no_such_dir" ] && ok || bad "the check created the missing directory"

mkdir -p "$T/ro"
if [ "$(id -u)" -eq 0 ]; then
    mount -t tmpfs -o ro,size=1m kd_ro "$T/ro" 2>/dev/null || { echo "SKIP read-only: cannot mount a tmpfs"; }
else
    chmod 555 "$T/ro"
fi
if [ "$(id -u)" -ne 0 ] || mountpoint -q "$T/ro"; then
    fails_before_training "a read-only directory" "cannot create a file in .*ro: (Read-only file system|Permission denied)" \
        "$T/ro/model.h5"
fi

# --resume saves back to its file unless --checkpoint names another: that destination is checked too.
run "a checkpoint to resume" "$CLI" "${TRAIN[@]}" --epochs 1 --checkpoint "$T/ok.h5" -q
expect 1 "resume into a missing directory" "$CLI" "${TRAIN[@]}" --resume "$T/ok.h5" --checkpoint "$T/gone/x.h5"
has "resume: the reason" "$T/err" "^kindling: --checkpoint: .*gone: No such file or directory"
no_tmp=$(find "$T" -name '*.tmp-*' | head -1)
[ -z "$no_tmp" ] && ok || bad "a temporary was left: $no_tmp"
run "the same destination, fixed" "$CLI" "${TRAIN[@]}" --resume "$T/ok.h5" --checkpoint "$T/ok2.h5" -q

finish
