#!/usr/bin/env bash
# Schema changes on a table of ROWS rows (1,000,000 by default) in a real MariaDB and a real
# PostgreSQL, each started here on a scratch data folder: what each algorithm costs (the plan's
# lock words), the dumps upkeep takes before an update, and the closed window of a real
# `upkeep update` whose additive changes run before the close, against the same changes made
# with the site closed. Needs mariadb-server, mariadb-client, postgresql; run as root.
# Usage: bash bench/db_servers.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
T=$(mktemp -d /tmp/upkeep-dbbench.XXXXXX)
chmod 755 "$T"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
ms() { local t0; t0=$(date +%s%N); "$@" >/dev/null; echo $((($(date +%s%N) - t0) / 1000000)); }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $*" >&2; exit 1; }

cargo build --release --bin upkeep >/dev/null 2>&1
UPKEEP=$PWD/target/release/upkeep
echo "| what | $ROWS rows | |"
echo "|---|---|---|"

# --- MariaDB -----------------------------------------------------------------------------
M=$T/mariadb; mkdir -p "$M/data"
mariadb-install-db --no-defaults --user=root --skip-test-db --auth-root-authentication-method=normal \
  --datadir="$M/data" --tmpdir="$M" >/dev/null 2>&1
MPORT=$(free_port)
/usr/sbin/mariadbd --no-defaults --user=root --bind-address=127.0.0.1 --datadir="$M/data" \
  --socket="$M/sock" --tmpdir="$M" --port="$MPORT" --pid-file="$M/pid" \
  --innodb-buffer-pool-size=512M >/dev/null 2>&1 &
PIDS+=($!)
wait_for mariadb --socket="$M/sock" -u root -e 'SELECT 1'
my() { mariadb --socket="$M/sock" -u root -N -B "$@"; }
fill_my() {
  my -e "DROP DATABASE IF EXISTS $1; CREATE DATABASE $1; USE $1;
    CREATE TABLE posts (id INT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(100) NOT NULL, body TEXT) ENGINE=InnoDB;
    INSERT INTO posts(title, body) SELECT CONCAT('post ', seq), REPEAT(MD5(seq), 4) FROM seq_1_to_$ROWS;"
}
fill_my bench
my bench -e "ANALYZE TABLE posts" >/dev/null
SIZE=$(my -e "SELECT ROUND((DATA_LENGTH+INDEX_LENGTH)/1e6) FROM information_schema.TABLES WHERE TABLE_SCHEMA='bench' AND TABLE_NAME='posts'")
echo "| MariaDB $(my -e 'SELECT VERSION()' | cut -d- -f1): table posts | $SIZE MB | |"
a=$(ms my bench -e "ALTER TABLE posts ADD COLUMN slug VARCHAR(100) NULL, ALGORITHM=INSTANT")
b=$(ms my bench -e "ALTER TABLE posts ADD COLUMN slug2 VARCHAR(100) NULL, ALGORITHM=COPY")
echo "| ADD COLUMN, ALGORITHM=INSTANT (before the close) | $a ms | against ALGORITHM=COPY: $b ms, writes blocked |"
a=$(ms my bench -e "ALTER TABLE posts ADD KEY posts_title (title), ALGORITHM=INPLACE, LOCK=NONE")
b=$(ms my bench -e "ALTER TABLE posts ADD KEY posts_title2 (title), ALGORITHM=COPY")
echo "| ADD KEY, ALGORITHM=INPLACE, LOCK=NONE (before the close) | $a ms | against ALGORITHM=COPY: $b ms, writes blocked |"
d=$(ms sh -c "mariadb-dump --socket='$M/sock' -u root --single-transaction --routines --triggers bench > '$T/bench.sql'")
echo "| mariadb-dump --single-transaction (upkeep's copy) | $d ms | $(($(stat -c %s "$T/bench.sql") / 1000000)) MB |"

# --- PostgreSQL --------------------------------------------------------------------------
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
P=$T/pg; mkdir -p "$P"; chown postgres "$P"
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- env HOME=/tmp "$@"; }
as_pg "$PGBIN/initdb" -D "$P/data" -A trust -U postgres >/dev/null
PPORT=$(free_port)
as_pg "$PGBIN/postgres" -D "$P/data" -p "$PPORT" -k "$P" -c listen_addresses=127.0.0.1 -c shared_buffers=256MB >/dev/null 2>&1 &
PIDS+=($!)
wait_for as_pg "$PGBIN/psql" -h "$P" -p "$PPORT" -U postgres -c 'SELECT 1'
pg() { as_pg "$PGBIN/psql" -h "$P" -p "$PPORT" -U postgres -qAt "$@"; }
pg -c "CREATE TABLE posts (id serial PRIMARY KEY, title text NOT NULL, body text);
  INSERT INTO posts(title, body) SELECT 'post ' || i, repeat(md5(i::text), 4) FROM generate_series(1, $ROWS) i;"
pg -c "VACUUM ANALYZE posts"
echo "| PostgreSQL $(pg -c 'SHOW server_version' | cut -d' ' -f1): table posts | $(pg -c "SELECT pg_total_relation_size('posts') / 1000000") MB | |"
a=$(ms pg -c "ALTER TABLE posts ADD COLUMN slug text NOT NULL DEFAULT ''")
b=$(ms pg -c "ALTER TABLE posts ADD COLUMN hits bigint DEFAULT (random() * 10)::bigint")
echo "| ADD COLUMN with a constant default (before the close) | $a ms | with a volatile default: $b ms, rewrites the table, reads and writes blocked |"
a=$(ms pg -c "CREATE INDEX CONCURRENTLY posts_title ON posts(title)")
b=$(ms pg -c "CREATE INDEX posts_title2 ON posts(title)")
echo "| CREATE INDEX CONCURRENTLY (before the close) | $a ms | plain CREATE INDEX: $b ms, writes blocked |"
d=$(ms as_pg "$PGBIN/pg_dump" -h "$P" -p "$PPORT" -U postgres -Fc -f "$P/bench.pgdump" postgres)
echo "| pg_dump -Fc (upkeep's copy) | $d ms | $(($(stat -c %s "$P/bench.pgdump") / 1000000)) MB |"

# --- A real update on MariaDB: the closed window --------------------------------------------
W=$T/world; mkdir -p "$W/r1" "$W/r2"
"$UPKEEP" keygen --out "$W/key" >/dev/null
echo v1 > "$W/r1/index.html"
echo "CREATE TABLE posts (id INT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(100) NOT NULL, body TEXT) ENGINE=InnoDB;" > "$W/r1/schema.mysql.sql"
echo "CREATE TABLE posts (id serial PRIMARY KEY, title text NOT NULL, body text);" > "$W/r1/schema.postgresql.sql"
echo v2 > "$W/r2/index.html"
echo "CREATE TABLE posts (id serial PRIMARY KEY, title text NOT NULL, body text, slug text NOT NULL DEFAULT '');
CREATE INDEX posts_title ON posts(title);
CREATE TABLE tags (id serial PRIMARY KEY, name text NOT NULL);" > "$W/r2/schema.postgresql.sql"
echo "CREATE TABLE posts (id INT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(100) NOT NULL, body TEXT, slug VARCHAR(100) NULL, KEY posts_title (title)) ENGINE=InnoDB;
CREATE TABLE tags (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50) NOT NULL) ENGINE=InnoDB;" > "$W/r2/schema.mysql.sql"
"$UPKEEP" publish "$W/r1" --version 1.0.0 --repo "$W/repo" --key "$W/key" >/dev/null
"$UPKEEP" publish "$W/r2" --version 1.1.0 --repo "$W/repo" --key "$W/key" >/dev/null
RPORT=$(free_port)
"$UPKEEP" reference --repo "$W/repo" --listen "127.0.0.1:$RPORT" >/dev/null 2>&1 &
PIDS+=($!)
wait_for curl -sf "http://127.0.0.1:$RPORT/"
fill_my site
my -e "CREATE USER 'site'@'127.0.0.1' IDENTIFIED BY 'bench'; GRANT ALL ON site.* TO 'site'@'127.0.0.1'; GRANT PROCESS ON *.* TO 'site'@'127.0.0.1'; GRANT ALL ON \`upkeep\\_scratch\\_%\`.* TO 'site'@'127.0.0.1';"
printf bench > "$W/pass"; chmod 600 "$W/pass"
mkdir -p "$W/site" && cp -r "$W/r1/." "$W/site/"
"$UPKEEP" init --root "$W/site" --reference "http://127.0.0.1:$RPORT/" --public-key "$W/key.pub" --installed 1.0.0 \
  --database "mysql://site@127.0.0.1:$MPORT/site" --database-password-file "$W/pass" >/dev/null
"$UPKEEP" stage --root "$W/site" --network >/dev/null
# The closed window, and the close and reopen steps, which take the marks a rollback compares.
report() {
  "$UPKEEP" status --root "$1" --json | python3 -c '
import json, sys
r = json.load(sys.stdin)["history"][0]
steps = {s["step"]: s["duration_ms"] for s in r.get("steps", [])}
print(r["closed_ms"], steps.get("close", "?"), steps.get("reopen", "?"))'
}
total=$(ms sh -c "'$UPKEEP' update --root '$W/site' --yes 2>/dev/null")
read -r closed close reopen < <(report "$W/site")
fill_my naive
naive=$(ms my naive -e "ALTER TABLE posts ADD COLUMN slug VARCHAR(100) NULL, ADD KEY posts_title (title), ALGORITHM=COPY; CREATE TABLE tags (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50) NOT NULL) ENGINE=InnoDB;")
echo "| MariaDB: upkeep update (dump, column and index before the close): closed window | $closed ms (whole update $total ms; close step with its mark $close ms, reopen $reopen ms) | the same changes made closed, as a table copy: $naive ms |"

pg -c "CREATE DATABASE site"
pg -d site -c "CREATE TABLE posts (id serial PRIMARY KEY, title text NOT NULL, body text);
  INSERT INTO posts(title, body) SELECT 'post ' || i, repeat(md5(i::text), 4) FROM generate_series(1, $ROWS) i;"
mkdir -p "$W/pgsite" && cp -r "$W/r1/." "$W/pgsite/"
UPKEEP_DATABASE_PASSWORD=trusted "$UPKEEP" init --root "$W/pgsite" --reference "http://127.0.0.1:$RPORT/" \
  --public-key "$W/key.pub" --installed 1.0.0 --database "postgresql://postgres@127.0.0.1:$PPORT/site" >/dev/null
"$UPKEEP" stage --root "$W/pgsite" --network >/dev/null
total=$(ms sh -c "UPKEEP_DATABASE_PASSWORD=trusted '$UPKEEP' update --root '$W/pgsite' --yes 2>/dev/null")
read -r closed close reopen < <(report "$W/pgsite")
pg -c "CREATE DATABASE naive"
pg -d naive -c "CREATE TABLE posts (id serial PRIMARY KEY, title text NOT NULL, body text);
  INSERT INTO posts(title, body) SELECT 'post ' || i, repeat(md5(i::text), 4) FROM generate_series(1, $ROWS) i;"
naive=$(ms pg -d naive -c "BEGIN; ALTER TABLE posts ADD COLUMN slug text NOT NULL DEFAULT ''; CREATE INDEX posts_title ON posts(title); CREATE TABLE tags (id serial PRIMARY KEY, name text NOT NULL); COMMIT;")
echo "| PostgreSQL: upkeep update (dump, column, index CONCURRENTLY before the close): closed window | $closed ms (whole update $total ms; close step with its mark $close ms, reopen $reopen ms) | the same changes made closed in one transaction: $naive ms |"
