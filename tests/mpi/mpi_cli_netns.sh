#!/bin/bash
# Across hosts: two network namespaces joined by a veth pair, each with its
# own host name (UTS namespace), address (10.201.x.0/24) and TMPDIR, so
# Open MPI sees two hosts and must use TCP. mpirun runs in the first and
# starts its daemons through a plm_rsh_agent script instead of ssh. Sync
# and async (staleness 0) training both match one process exactly, and an
# unbounded async run learns. Skips (exit 77) where `ip netns` is not
# permitted. Only the namespaces' own addresses are used.
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
COMMON=(--net "$WORK/spec.json" --train-csv "$WORK/d.csv" --optimizer momentum --lr 0.1 --seed 5 --epochs 2 -q)

# Ranks 0, 1 on host A and 2, 3 on host B.
cluster() {
    timeout 120 ip netns exec "$A" "$KD_MPIEXEC" -np 4 --host "$A:2,$B:2" \
        --mca plm_rsh_agent "$WORK/agent.sh" --mca plm_rsh_no_tree_spawn 1 \
        --mca btl self,tcp --mca btl_tcp_if_include "$SUBNET.0/24" --mca oob_tcp_if_include "$SUBNET.0/24" \
        -x OPENBLAS_NUM_THREADS=1 \
        "$KD_CLI" train "${COMMON[@]}" "$@" > "$WORK/out.txt" 2>&1 || { sed 's/^/    /' "$WORK/out.txt" >&2; return 1; }
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

# Servers (ranks 0, 1) on host A, workers (2, 3) on host B: every RMA call crosses the veth.
check "async staleness 0 across 2 hosts (2 servers, 2 workers x 12)" \
    cluster --dist async --servers 2 --max-staleness 0 --batch-size 12 --checkpoint "$WORK/ps.h5"
d=$(ckpt_diff "$WORK/ps.h5" "$WORK/single.h5")
check "async staleness 0 across hosts equals one process (max diff $d)" less_than "$d" 1e-5

# Control: with Debian's own one-sided components (no pt2pt) windows cannot
# span hosts over TCP, so the program's default OMPI_MCA_osc is what makes
# the runs above work. A user's setting wins, so this one must fail, quickly.
if OMPI_MCA_osc=sm,rdma cluster --dist async --servers 1 --batch-size 8 2> /dev/null; then
    fail "control: async across hosts with OMPI_MCA_osc=sm,rdma should fail to create its windows"
else
    pass "control: async across hosts with OMPI_MCA_osc=sm,rdma fails ($(grep -m1 -o 'MPI_ERR_[A-Z]*' "$WORK/out.txt"))"
fi

check "unbounded async across 2 hosts (1 server, 3 workers)" \
    cluster --dist async --servers 1 --batch-size 8 --checkpoint "$WORK/async.h5"
acc=$(grep -o 'final train accuracy [0-9.]*' "$WORK/out.txt" | awk '{print $4}')
check "unbounded async across hosts learns (train accuracy ${acc:-none})" less_than 0.9 "${acc:-0}"
finish
