#!/bin/bash
# run.sh SCRIPT CLIENTS LIFECYCLES [PGOPTIONS] — PostgreSQL's CPU (ms) and WAL syncs per saga lifecycle.
# Against a scratch server of its own (never the stack's): PGHOST, PGPORT and PGUSER as for psql,
# a superuser, the server running as the user `postgres` on this machine (its CPU is read from
# /proc: every process of that user, children reaped included). `psql -f setup.sql` first.
set -eu
pgcpu() { local t=0; for p in $(pgrep -u postgres); do s=($(cut -d')' -f2 /proc/$p/stat 2>/dev/null)) || continue; t=$((t + ${s[11]:-0} + ${s[12]:-0} + ${s[13]:-0} + ${s[14]:-0})); done; echo $t; }
syncs() { psql -Atc "SELECT wal_sync FROM pg_stat_wal"; }
n=$(( $2 * $3 ))
w1=$(syncs); c1=$(pgcpu)
PGOPTIONS="${4:-}" pgbench -n -M prepared -c "$2" -t "$3" -f "$1" > pgbench.out 2>&1
c2=$(pgcpu); w2=$(syncs)
python3 -c "import sys; c, w, n = map(int, sys.argv[1:]); print(f'{c * 10 / n:.3f} ms of CPU and {w / n:.2f} WAL syncs per lifecycle')" $((c2 - c1)) $((w2 - w1)) $n
grep -m1 tps pgbench.out
