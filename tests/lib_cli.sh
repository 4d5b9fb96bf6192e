# Shared pieces of the CLI test scripts (tests/cli_*.sh source this file):
# pass/fail counters, a runner that checks the exit status and the absence
# of sanitizer reports, a line matcher, and a learnable CSV generator.
# Expects $T (a scratch directory) to be set by the caller.

passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() {
    failed=$((failed + 1))
    echo "FAIL: $*"
}
# expect CODE NAME COMMAND...: exit status CODE, no sanitizer report (a
# sanitizer build reports memory errors on stderr); output in $T/out, $T/err.
expect() {
    local code=$1 name=$2
    shift 2
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    if [ "$rc" -eq "$code" ] && ! grep -qE "Sanitizer|runtime error:" "$T/err"; then
        ok
    else
        bad "$name (exit $rc, wanted $code)"
        sed 's/^/    stderr: /' "$T/err" | head -5
    fi
}
# run NAME COMMAND...: expect exit 0.
run() { expect 0 "$@"; }
has() { # has NAME FILE PATTERN (extended regex)
    if grep -qE -- "$3" "$2"; then ok; else bad "$1: no line matching '$3' in $(basename "$2")"; fi
}
# Learnable data: class c lights up every 10th of 784 pixels starting at c.
make_csv() { # FILE N SEED
    awk -v n="$2" -v seed="$3" 'BEGIN {
        srand(seed)
        for (i = 0; i < n; i++) {
            c = i % 10
            line = c
            for (j = 0; j < 784; j++)
                line = line "," sprintf("%.3f", (j % 10 == c ? 0.6 : 0) + 0.4 * rand())
            print line
        }
    }' >"$1"
}
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
