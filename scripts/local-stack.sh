#!/usr/bin/env bash
# Runs the two services vidworker talks to, for trying the worker locally:
# a PostgreSQL cluster in <repo>/.local/pg and the moto S3/SQS emulator.
# No system service and no docker: both run as plain background processes.
#
#   scripts/local-stack.sh start    # create (once) and start both, wait until they answer
#   eval "$(scripts/local-stack.sh env)"
#   scripts/local-stack.sh status   # exit 0 when both answer, 3 otherwise
#   scripts/local-stack.sh stop
#
# Ports: PGPORT (default 55432) and MOTO_PORT (default 5000). Use the same
# values for every subcommand. Run scripts/install-deps.sh first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"
PGDATA="$LOCAL/pg"
PG_LOG="$LOCAL/pg.log"
MOTO_LOG="$LOCAL/moto.log"
MOTO_PID="$LOCAL/moto.pid"
VENV="${VIDWORKER_VENV:-$ROOT/.venv}"

PGPORT="${PGPORT:-55432}"
MOTO_PORT="${MOTO_PORT:-5000}"
DATABASE=vidworker
S3_BUCKET=vidworker-local
SQS_QUEUE=vidworker-jobs
# moto's fixed default account id; CreateQueue answers with
# http://<host the request was sent to>/<account>/<name>.
AWS_ACCOUNT=123456789012

info() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# --- PostgreSQL -------------------------------------------------------------

# The server binaries: $PG_BIN, else the version the cluster was made with,
# else the highest installed version.
pg_bin() {
    if [[ -n "${PG_BIN:-}" ]]; then
        echo "$PG_BIN"
        return
    fi
    if [[ -f "$PGDATA/PG_VERSION" ]]; then
        local made_with
        made_with="$(<"$PGDATA/PG_VERSION")"
        if [[ -x "/usr/lib/postgresql/$made_with/bin/postgres" ]]; then
            echo "/usr/lib/postgresql/$made_with/bin"
            return
        fi
    fi
    local dir
    dir="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$dir" && -x "$dir/postgres" ]] ||
        die "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (set PG_BIN, or run scripts/install-deps.sh, which installs postgresql-15)"
    echo "$dir"
}

# initdb and postgres refuse to run as root: use the `postgres` system user.
as_pg() {
    if [[ "$(id -u)" -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_running() {
    [[ -f "$PGDATA/postmaster.pid" ]] && as_pg "$(pg_bin)/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

pg_answers() {
    "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PGPORT" -t 1 >/dev/null 2>&1
}

pg_start() {
    local bin
    bin="$(pg_bin)"
    mkdir -p "$LOCAL"
    if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
        info "postgres: creating cluster in $PGDATA"
        rm -rf "$PGDATA"
        mkdir -p "$PGDATA"
        if [[ "$(id -u)" -eq 0 ]]; then
            id postgres >/dev/null 2>&1 || die "no 'postgres' system user (install postgresql-15)"
            chown postgres: "$PGDATA"
            runuser -u postgres -- test -w "$PGDATA" ||
                die "user 'postgres' cannot reach $PGDATA (a parent directory is not world-traversable, e.g. /root); move the repository or set PG_BIN and run as a normal user"
        fi
        chmod 700 "$PGDATA"
        as_pg "$bin/initdb" -D "$PGDATA" -A trust -U postgres -E UTF8 --no-locale >"$LOCAL/initdb.log" 2>&1 ||
            die "initdb failed, see $LOCAL/initdb.log: $(tail -n 5 "$LOCAL/initdb.log")"
        # TCP on loopback only; no Unix socket, so a long repository path
        # cannot exceed the socket path limit.
        cat >>"$PGDATA/postgresql.conf" <<'EOF'

# Added by scripts/local-stack.sh
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
EOF
    fi

    if pg_running; then
        info "postgres: already running (data $PGDATA)"
    else
        touch "$PG_LOG"
        [[ "$(id -u)" -ne 0 ]] || chown postgres: "$PG_LOG"
        info "postgres: starting on 127.0.0.1:$PGPORT (log $PG_LOG)"
        as_pg "$bin/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t 60 -o "-p $PGPORT" start >/dev/null ||
            die "postgres did not start; last lines of $PG_LOG:
$(tail -n 20 "$PG_LOG")"
    fi

    local deadline=$((SECONDS + 30))
    until pg_answers; do
        ((SECONDS < deadline)) ||
            die "postgres runs but does not answer on 127.0.0.1:$PGPORT (started with another PGPORT?); see $PG_LOG"
        sleep 0.1
    done

    local exists
    exists="$("$bin/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -XtAq \
        -c "SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")"
    if [[ "$exists" != "1" ]]; then
        info "postgres: creating database $DATABASE"
        "$bin/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres "$DATABASE"
    fi
    info "postgres: ready at postgres://postgres@127.0.0.1:$PGPORT/$DATABASE"
}

pg_stop() {
    if pg_running; then
        info "postgres: stopping"
        as_pg "$(pg_bin)/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    else
        info "postgres: not running"
    fi
}

pg_status() {
    if pg_running; then
        if pg_answers; then
            echo "postgres: running, answering on 127.0.0.1:$PGPORT (data $PGDATA)"
            return 0
        fi
        echo "postgres: running (data $PGDATA) but not answering on 127.0.0.1:$PGPORT"
    elif [[ -f "$PGDATA/PG_VERSION" ]]; then
        echo "postgres: stopped (data $PGDATA)"
    else
        echo "postgres: not created yet"
    fi
    return 3
}

# --- moto -------------------------------------------------------------------

moto_pid() {
    local pid
    [[ -f "$MOTO_PID" ]] || return 1
    pid="$(<"$MOTO_PID")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    # Guard against a recycled pid belonging to something else.
    grep -q moto_server "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

# A dependency-free HTTP check (a fresh machine may lack curl).
moto_answers() {
    # shellcheck disable=SC2016 # $1 expands in the inner shell
    timeout 2 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3
        IFS= read -r status <&3
        [[ "$status" == "HTTP/1."?" 200"* ]]
    ' _ "$MOTO_PORT" 2>/dev/null
}

moto_start() {
    [[ -x "$VENV/bin/moto_server" ]] || die "$VENV/bin/moto_server not found: run scripts/install-deps.sh"
    mkdir -p "$LOCAL"
    local pid
    if pid="$(moto_pid)"; then
        info "moto: already running (pid $pid)"
    else
        if moto_answers; then
            die "something else already answers on 127.0.0.1:$MOTO_PORT; set MOTO_PORT"
        fi
        info "moto: starting on 127.0.0.1:$MOTO_PORT (log $MOTO_LOG)"
        # setsid + nohup: the server outlives this script and the terminal.
        setsid nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >>"$MOTO_LOG" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >"$MOTO_PID"
    fi

    local deadline=$((SECONDS + 30))
    until moto_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$MOTO_PID"
            die "moto exited during start-up; last lines of $MOTO_LOG:
$(tail -n 20 "$MOTO_LOG")"
        fi
        ((SECONDS < deadline)) ||
            die "moto does not answer on 127.0.0.1:$MOTO_PORT after 30 s (started with another MOTO_PORT?); see $MOTO_LOG"
        sleep 0.1
    done

    # moto keeps its state in memory: after each start, create the bucket and
    # queues again with `vidworker queue-init` (idempotent).
    info "moto: ready at http://127.0.0.1:$MOTO_PORT"
}

moto_stop() {
    local pid
    if pid="$(moto_pid)"; then
        info "moto: stopping (pid $pid)"
        kill "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 10))
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    else
        info "moto: not running"
    fi
    rm -f "$MOTO_PID"
}

moto_status() {
    local pid
    if pid="$(moto_pid)"; then
        if moto_answers; then
            echo "moto: running (pid $pid), answering on 127.0.0.1:$MOTO_PORT"
            return 0
        fi
        echo "moto: running (pid $pid) but not answering on 127.0.0.1:$MOTO_PORT"
    else
        echo "moto: stopped"
    fi
    return 3
}

print_env() {
    cat <<EOF
export DATABASE_URL=postgres://postgres@127.0.0.1:$PGPORT/$DATABASE
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export S3_BUCKET=$S3_BUCKET
export SQS_QUEUE_URL=http://127.0.0.1:$MOTO_PORT/$AWS_ACCOUNT/$SQS_QUEUE
EOF
}

case "${1:-}" in
    start)
        pg_start
        moto_start
        info "done; load the settings with: eval \"\$($0 env)\""
        ;;
    stop)
        moto_stop
        pg_stop
        ;;
    status)
        # Exit status 0 only when both answer, 3 otherwise (as LSB's
        # "program is not running"), so scripts can test it.
        rc=0
        pg_status || rc=$?
        moto_status || rc=$?
        exit "$rc"
        ;;
    env) print_env ;;
    *)
        echo "usage: $0 start|stop|status|env" >&2
        exit 2
        ;;
esac
