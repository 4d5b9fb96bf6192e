#!/bin/bash
# Across hosts: two network namespaces joined by a veth pair, each with its
# own host name (UTS namespace), address (10.201.x.0/24) and TMPDIR, so
# Open MPI sees two hosts and must use TCP. mpirun runs in the first and
# starts its daemons through a plm_rsh_agent script instead of ssh. Sync
# and async (staleness 0) training both match one process exactly, with the
# parameter server's two-sided protocol (what it picks across hosts) and
# with one-sided RMA (osc/pt2pt); an unbounded async run learns; a rank
# killed on either host ends the job with no process left in either
# namespace, and --resume from its checkpoint finishes the run. Skips
# (exit 77) where `ip netns` is not permitted. Only the namespaces' own
# addresses are used.
source "$(dirname "$0")/lib_mpi.sh"

A="kd-a-$$"
B="kd-b-$$"
VA="kdva$$"
VB="kdvb$$"
SUBNET="10.201.$(($$ % 250))"

cleanup() {
    local ns pid
    for ns in "$A" "$B"; do
        # Only processes inside our own namespaces.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v unshare > /dev/null; then
    echo "SKIP: unshare (util-linux) is missing"
    exit 77
fi
if ! ip netns add "$A" 2>/dev/null; then
    echo "SKIP: 'ip netns add' is not permitted here (needs root / CAP_SYS_ADMIN)"
    exit 77
fi
ip netns add "$B" && ip link add "$VA" type veth peer name "$VB" && ip link set "$VA" netns "$A" &&
    ip link set "$VB" netns "$B" && ip -n "$A" addr add "$SUBNET.1/24" dev "$VA" &&
    ip -n "$B" addr add "$SUBNET.2/24" dev "$VB" && ip -n "$A" link set "$VA" up && ip -n "$B" link set "$VB" up &&
    ip -n "$A" link set lo up && ip -n "$B" link set lo up || { echo "FAIL: setting up the namespaces" >&2; exit 1; }

# The "ssh" of this cluster: run the daemon command in the namespace named by
# the host, under that host name and with its own TMPDIR.
cat > "$WORK/agent.sh" <<AGENT
#!/bin/bash
host=\$1; shift
cmd="\$*"
mkdir -p "$WORK/tmp-\$host"
exec ip netns exec "\$host" unshare --uts /bin/bash -c "hostname \$host && export TMPDIR=$WORK/tmp-\$host && \${cmd//--daemonize/}"
AGENT
chmod +x "$WORK/agent.sh"

make_blobs "$WORK/d.csv" 300 4
make_spec "$WORK/spec.json"
COMMON=(--net "$WORK/spec.json" --train-csv "$WORK/d.csv" --optimizer momentum --lr 0.1 --seed 5 --epochs 2)

# Ranks 0, 1 on host A and 2, 3 on host B: `on_hosts SECONDS train-args...`
# (output in $WORK/out.txt), `cluster train-args...` adds the common ones.
on_hosts() {
    local limit=$1; shift
    timeout "$limit" ip netns exec "$A" "$KD_MPIEXEC" -np 4 --host "$A:2,$B:2" \
        --mca plm_rsh_agent "$WORK/agent.sh" --mca plm_rsh_no_tree_spawn 1 \
        --mca btl self,vader,tcp --mca btl_tcp_if_include "$SUBNET.0/24" --mca oob_tcp_if_include "$SUBNET.0/24" \
        -x OPENBLAS_NUM_THREADS=1 "$KD_CLI" train "$@"
}
cluster() {
    on_hosts 120 "${COMMON[@]}" "$@" > "$WORK/out.txt" 2>&1 || { sed 's/^/    /' "$WORK/out.txt" >&2; return 1; }
}

# The launcher really spreads the ranks over two hosts.
timeout 60 ip netns exec "$A" "$KD_MPIEXEC" -np 4 --host "$A:2,$B:2" --mca plm_rsh_agent "$WORK/agent.sh" \
    --mca plm_rsh_no_tree_spawn 1 --mca oob_tcp_if_include "$SUBNET.0/24" hostname > "$WORK/hosts.txt" 2> "$WORK/hosts.err"
# stdout only: Open MPI may warn on stderr (plm:rsh setpgid) in a namespace.
check "ranks run on hosts $A and $B ($(sort "$WORK/hosts.txt" | uniq -c | xargs))" \
    test "$(sort -u "$WORK/hosts.txt" | xargs)" = "$A $B"

check "one process, batch 24" "$KD_CLI" train "${COMMON[@]}" --batch-size 24 --checkpoint "$WORK/single.h5" > /dev/null

check "sync across 2 hosts (4 workers x 6)" cluster --dist sync --batch-size 6 --checkpoint "$WORK/sync.h5"
d=$(ckpt_diff "$WORK/sync.h5" "$WORK/single.h5")
check "sync across hosts equals one process (max diff $d)" less_than "$d" 1e-5

# Servers (ranks 0, 1) on host A, workers (2, 3) on host B: every message crosses the veth.
check "async staleness 0 across 2 hosts (2 servers, 2 workers x 12)" \
    cluster --dist async --servers 2 --max-staleness 0 --batch-size 12 --checkpoint "$WORK/ps.h5"
check "across hosts the parameter server picks its two-sided protocol" \
    grep -q "by two-sided messages (ranks on several hosts); 4 ranks on 2 hosts" "$WORK/out.txt"
d=$(ckpt_diff "$WORK/ps.h5" "$WORK/single.h5")
check "async staleness 0 across hosts equals one process (max diff $d)" less_than "$d" 1e-5

# The same with one-sided RMA forced: windows across hosts over TCP (osc/pt2pt).
check "async staleness 0 across 2 hosts, one-sided RMA" \
    cluster --dist async --servers 2 --max-staleness 0 --batch-size 12 --ps-protocol rma --checkpoint "$WORK/rma.h5"
check "one-sided RMA across hosts reports itself" grep -q "by one-sided RMA across hosts" "$WORK/out.txt"
d=$(ckpt_diff "$WORK/rma.h5" "$WORK/single.h5")
check "async staleness 0 across hosts with RMA equals one process (max diff $d)" less_than "$d" 1e-5

# Control: with Debian's own one-sided components (no pt2pt) windows cannot
# span hosts over TCP, so the program's default OMPI_MCA_osc is what makes
# the RMA run above work. A user's setting wins, so this one must fail, quickly.
if OMPI_MCA_osc=sm,rdma cluster --dist async --servers 1 --batch-size 8 --ps-protocol rma 2> /dev/null; then
    fail "control: RMA across hosts with OMPI_MCA_osc=sm,rdma should fail to create its windows"
else
    pass "control: RMA across hosts with OMPI_MCA_osc=sm,rdma fails ($(grep -m1 -o 'MPI_ERR_[A-Z]*' "$WORK/out.txt"))"
fi

check "unbounded async across 2 hosts (1 server, 3 workers)" \
    cluster --dist async --servers 1 --batch-size 8 --checkpoint "$WORK/async.h5"
acc=$(grep -o 'final train accuracy [0-9.]*' "$WORK/out.txt" | awk '{print $4}')
check "unbounded async across hosts learns (train accuracy ${acc:-none})" less_than 0.9 "${acc:-0}"

# A rank killed on either host: the job ends (mpirun names the rank), no
# process is left in either namespace, and --resume finishes the run.
"$KD_PYTHON" - "$WORK/long.csv" <<'PY'
import sys
import numpy as np
rng = np.random.default_rng(3)
n = 20000
y = np.arange(n) % 3
x = rng.uniform(-0.5, 0.5, (n, 10)) + (np.arange(10)[None, :] % 3 == y[:, None]) * 1.0
np.savetxt(sys.argv[1], np.column_stack([y, x]), fmt=["%d"] + ["%.4f"] * 10, delimiter=",")
PY
rank_pid() { # world rank $1 of the run on $WORK/long.csv
    local pid
    for pid in $(pgrep -f -- "--train-csv $WORK/long.csv"); do
        if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1"; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}
kill_and_resume() { # NAME RANK train-flags...
    local name=$1 victim=$2 ck="$WORK/kill_$2.h5"; shift 2
    local flags=(--net "$WORK/spec.json" --train-csv "$WORK/long.csv" --batch-size 8 --checkpoint "$ck"
                 --checkpoint-every 50 -q "$@")
    on_hosts 120 "${flags[@]}" --epochs 1000 > "$WORK/kill.txt" 2>&1 &
    local job=$! waited=0 pid rc=0
    while [ ! -e "$ck" ] && [ $waited -lt 600 ] && kill -0 $job 2>/dev/null; do sleep 0.1; waited=$((waited + 1)); done
    pid=$(rank_pid "$victim") || { fail "$name: rank $victim not found"; wait $job; sed 's/^/    /' "$WORK/kill.txt" >&2; return; }
    kill -9 "$pid"
    wait $job || rc=$?
    if [ $rc -ne 0 ] && [ $rc -ne 124 ]; then pass "$name: mpirun exited $rc"; else fail "$name: mpirun exit $rc"; fi
    check "$name: the message names rank $victim" grep -q "rank $victim " "$WORK/kill.txt"
    sleep 1
    local left
    left=$(ip netns pids "$A"; ip netns pids "$B")
    if [ -z "$left" ]; then pass "$name: no process left in either namespace"; else
        fail "$name: processes left: $(echo $left)"; kill -9 $left 2>/dev/null; fi
    local step
    step=$(ckpt_attr step "$ck")
    if on_hosts 300 "${flags[@]}" --resume "$ck" --epochs 2 > "$WORK/out.txt" 2>&1; then
        pass "$name: resume from step $step finishes"
    else
        fail "$name: resume from step $step failed"; sed 's/^/    /' "$WORK/out.txt" >&2
    fi
    acc=$(grep -o 'final train accuracy [0-9.]*' "$WORK/out.txt" | awk '{print $4}')
    check "$name: the resumed run learns (train accuracy ${acc:-none})" less_than 0.9 "${acc:-0}"
}
kill_and_resume "async, worker on host B killed" 3 --dist async --servers 1 --max-staleness 2
kill_and_resume "async, server on host A killed" 0 --dist async --servers 1
kill_and_resume "sync, worker on host B killed" 2 --dist sync
finish
