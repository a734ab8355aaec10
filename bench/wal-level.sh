#!/usr/bin/env bash
# What wal_level = minimal gains an environment's server: two throwaway PostgreSQL clusters, the
# same except wal_level=replica (the default) and wal_level=minimal (max_wal_senders=0), each loaded
# by db-fanout with `scripts/bench.js --only fanout`, alternating between them, then medians over all
# rounds. Nothing touches the PostgreSQL at DEMO_PG_URL; the clusters live in a temp dir and are
# removed at the end. Needs `npm run build` first and PostgreSQL's server binaries (PGBIN).
#
#   SCALE=10 ROUNDS=3 REPEATS=2 bench/wal-level.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-10}
ROUNDS=${ROUNDS:-3}
REPEATS=${REPEATS:-2}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
PORT_REPLICA=${PORT_REPLICA:-54615}
PORT_MINIMAL=${PORT_MINIMAL:-54616}
[ -x "$PGBIN/initdb" ] || { echo "no initdb in PGBIN=$PGBIN (install postgresql, or set PGBIN)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/db-fanout-wal-level-XXXXXX)
# initdb refuses to run as root: run the server as postgres then.
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
stop() {
  for c in replica minimal; do as_owner "$PGBIN/pg_ctl" -D "$WORK/$c" -m fast stop >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap stop EXIT

for c in replica minimal; do
  as_owner "$PGBIN/initdb" -D "$WORK/$c" -A trust -U postgres >/dev/null
  if [ $c = replica ]; then port=$PORT_REPLICA; wal="-c wal_level=replica"; else port=$PORT_MINIMAL; wal="-c wal_level=minimal -c max_wal_senders=0"; fi
  as_owner "$PGBIN/pg_ctl" -D "$WORK/$c" -l "$WORK/$c.log" -w \
    -o "-p $port -k $WORK -c listen_addresses=127.0.0.1 -c autovacuum=off $wal" start >/dev/null
done

for repeat in $(seq "$REPEATS"); do
  for c in replica minimal; do
    port=$([ $c = replica ] && echo $PORT_REPLICA || echo $PORT_MINIMAL)
    echo "== repeat $repeat: wal_level=$c"
    DEMO_PG_URL="postgresql://postgres@127.0.0.1:$port/postgres" node scripts/bench.js --only fanout --scale "$SCALE" --rounds "$ROUNDS" --label "wal-$c" | grep -E '^round|^\| db-fanout|^\| (dev|staging|qa)|^WAL per load'
  done
done

node - "$SCALE" "$REPEATS" <<'EOF'
const { readdirSync, readFileSync } = require('node:fs');
const [scale, repeats] = process.argv.slice(2).map(Number);
const median = (v) => { const s = [...v].sort((a, b) => a - b); const m = Math.floor(s.length / 2); return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const summary = {};
for (const level of ['replica', 'minimal']) {
  const files = readdirSync('bench/results').filter((f) => f.startsWith(`scale${scale}-wal-${level}-`)).sort().slice(-repeats);
  const runs = files.flatMap((f) => JSON.parse(readFileSync(`bench/results/${f}`, 'utf8')).raw.fanout);
  const copies = runs.flatMap((r) => Object.values(r.phases).map((p) => p.copy));
  const indexes = runs.flatMap((r) => Object.values(r.phases).map((p) => p.indexes));
  const loads = runs.flatMap((r) => Object.values(r.loads));
  const totals = runs.map((r) => r.total);
  summary[level] = { rounds: runs.length, total: median(totals), min: Math.min(...totals), max: Math.max(...totals), load: median(loads), copy: median(copies), indexes: median(indexes), walPerLoadMb: median(runs.map((r) => r.walBytes)) / 3 / 1e6 };
}
console.log('\n| wal_level | rounds | trigger to last load, median s (range) | load s | copy s | indexes s | WAL per load MB |');
console.log('|---|---|---|---|---|---|---|');
for (const [level, x] of Object.entries(summary)) {
  console.log(`| ${level} | ${x.rounds} | ${x.total.toFixed(2)} (${x.min.toFixed(2)}-${x.max.toFixed(2)}) | ${x.load.toFixed(2)} | ${x.copy.toFixed(2)} | ${x.indexes.toFixed(2)} | ${x.walPerLoadMb.toFixed(0)} |`);
}
console.log(`\nminimal / replica, trigger to last load (medians): ${(summary.minimal.total / summary.replica.total).toFixed(2)}`);
EOF
