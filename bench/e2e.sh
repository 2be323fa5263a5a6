#!/usr/bin/env bash
# End-to-end benchmark: loadgen -> relay -> sink over loopback TCP, for
# tsrelay and carbon-c-relay. See bench/README.md for what it measures.
#
#   bash bench/e2e.sh                 # 5,000,000 points over 4 connections
#   POINTS=1000000 CONNECTIONS=2 bash bench/e2e.sh
#   SCENARIOS=c KAIROS_BATCH=5000 KAIROS_CONCURRENCY=4 bash bench/e2e.sh
#   SCENARIOS=d bash bench/e2e.sh     # through RabbitMQ on 127.0.0.1:5672
#
# Every process it starts listens on or connects to 127.0.0.1 only, and is
# killed on exit. Each run is bounded by SCENARIO_TIMEOUT seconds.
set -euo pipefail

POINTS=${POINTS:-5000000}
CONNECTIONS=${CONNECTIONS:-4}
SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-120} # seconds, per relay run
IDLE_TIMEOUT=${IDLE_TIMEOUT:-10}          # sink gives up after this long without data
CCR_WORKERS=${CCR_WORKERS:-$(nproc)}      # carbon-c-relay -w (its default: one per core)
CCR_QUEUE=${CCR_QUEUE:-$((POINTS + POINTS / 10 + 25000))} # carbon-c-relay -q: the whole run fits
RUNS=${RUNS:-1}                           # repetitions; ratios then use medians
BUSY_WARN=${BUSY_WARN:-10}                # note a run if the machine was busier (%) just before
KEEP_LOGS=${KEEP_LOGS:-0}
SCENARIOS=${SCENARIOS:-abcde}             # which scenarios run: any of a, b, c, d, e
KAIROS_BATCH=${KAIROS_BATCH:-500 5000}    # c, d: batch max_points, one run per value...
KAIROS_CONCURRENCY=${KAIROS_CONCURRENCY:-1 4} # ...and per requests in flight ("default": key left out)
AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f} # e: the broker both relays use
for var in POINTS CONNECTIONS RUNS SCENARIO_TIMEOUT IDLE_TIMEOUT CCR_WORKERS CCR_QUEUE BUSY_WARN; do
    [[ ${!var} =~ ^[0-9]+$ ]] || { echo "e2e: $var must be a whole number, not '${!var}'" >&2; exit 2; }
done
[[ $KAIROS_BATCH =~ ^\ *[1-9][0-9]*(\ +[1-9][0-9]*)*\ *$ ]] ||
    { echo "e2e: KAIROS_BATCH must be positive whole numbers separated by spaces, not '$KAIROS_BATCH'" >&2; exit 2; }
[[ $KAIROS_CONCURRENCY =~ ^\ *([1-9][0-9]*|default)(\ +([1-9][0-9]*|default))*\ *$ ]] ||
    { echo "e2e: KAIROS_CONCURRENCY must be positive whole numbers or 'default', separated by spaces, not '$KAIROS_CONCURRENCY'" >&2; exit 2; }
[[ $SCENARIOS =~ ^[abcde,\ ]+$ ]] || { echo "e2e: SCENARIOS takes the letters a, b, c, d and e, not '$SCENARIOS'" >&2; exit 2; }
((POINTS > 0 && CONNECTIONS > 0 && RUNS > 0)) || { echo "e2e: POINTS, CONNECTIONS and RUNS must be positive" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
REL=$ROOT/target/release
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tsrelay-e2e.XXXXXX")
CLK_TCK=$(getconf CLK_TCK)
PIDS=()
AMQP_QUEUES=() # durable queues of scenario d, deleted on exit

log() { printf '[e2e] %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# --- process bookkeeping -------------------------------------------------

alive() { kill -0 "$1" 2>/dev/null; }

# stop PID [GRACE_SECONDS]: SIGTERM, then SIGKILL after the grace period.
stop() {
    local pid=$1 grace=${2:-10} i
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 20; i++)); do
        alive "$pid" || break
        sleep 0.05
    done
    if alive "$pid"; then
        log "pid $pid ignored SIGTERM for ${grace}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid queue
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    sleep 0.3
    for pid in "${PIDS[@]}"; do
        if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    wait 2>/dev/null || true
    for queue in "${AMQP_QUEUES[@]}"; do
        rabbitmqctl delete_queue "$queue" >/dev/null 2>&1 || log "could not delete AMQP queue $queue"
    done
    if [[ $rc -ne 0 || $KEEP_LOGS == 1 ]]; then
        log "logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_exit PID DEADLINE_EPOCH_SECONDS: reaps PID; returns its status, or
# 124 when the deadline passes first (the process is then left running).
wait_exit() {
    local pid=$1 deadline=$2
    while alive "$pid"; do
        (($(date +%s) < deadline)) || return 124
        sleep 0.02
    done
    local rc=0
    wait "$pid" || rc=$?
    return "$rc"
}

# --- ports -----------------------------------------------------------------

CHOSEN_PORTS=" "
port_in_use() {
    local port=$1
    if command -v ss >/dev/null; then
        ss -Htan "sport = :$port" 2>/dev/null | grep -q . && return 0
        return 1
    fi
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

free_port() {
    local port i
    for ((i = 0; i < 200; i++)); do
        port=$((20000 + RANDOM % 30000))
        [[ $CHOSEN_PORTS == *" $port "* ]] && continue
        port_in_use "$port" && continue
        CHOSEN_PORTS+="$port "
        echo "$port"
        return 0
    done
    die "no free port found"
}

# wait_listening PORT PID WHAT: until something listens on 127.0.0.1:PORT.
wait_listening() {
    local port=$1 pid=$2 what=$3 i
    for ((i = 0; i < 300; i++)); do
        alive "$pid" || die "$what exited during startup (see $WORK)"
        if command -v ss >/dev/null; then
            ss -Htln "sport = :$port" 2>/dev/null | grep -q . && return 0
        elif (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    die "$what did not listen on port $port within 15 s"
}

# --- /proc readings ----------------------------------------------------------

# utime + stime of PID (all its threads), in clock ticks.
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) } # drop "pid (comm) ": field 3 (state) is now $1
    # shellcheck disable=SC2086
    set -- $stat
    echo $((${12} + ${13}))
}

# Percentage of all cores busy over the next second (whole machine).
machine_busy_pct() {
    local t0 i0 t1 i1
    read -r t0 i0 < <(awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $5 + $6; exit }' /proc/stat)
    sleep 1
    read -r t1 i1 < <(awk '/^cpu / { print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $5 + $6; exit }' /proc/stat)
    awk -v t=$((t1 - t0)) -v i=$((i1 - i0)) 'BEGIN { printf "%.0f", (t > 0 ? 100 * (t - i) / t : 0) }'
}

peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# Sums over several processes (scenario d runs two relays).
cpu_ticks_sum() {
    local pid total=0
    for pid in "$@"; do total=$((total + $(cpu_ticks "$pid"))); done
    echo "$total"
}
peak_rss_kib_sum() {
    local pid total=0
    for pid in "$@"; do total=$((total + $(peak_rss_kib "$pid"))); done
    echo "$total"
}

# field KEY FILE: value of KEY=... on the first line of FILE holding it.
field() { grep -o "\b$1=[^ ]*" "$2" | head -n1 | cut -d= -f2; }

# --- setup -----------------------------------------------------------------------

HAVE_CCR=1
if [[ $SCENARIOS != *a* ]]; then
    HAVE_CCR=0 # only scenario a runs carbon-c-relay
elif ! command -v carbon-c-relay >/dev/null; then
    log "carbon-c-relay not found; installing the Debian package"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq carbon-c-relay; } >"$WORK/apt.log" 2>&1; then
        log "WARNING: could not install carbon-c-relay (see $WORK/apt.log); its runs are skipped"
        HAVE_CCR=0
    fi
    command -v carbon-c-relay >/dev/null || HAVE_CCR=0
fi
HAVE_BROKER=0
if [[ $SCENARIOS == *e* ]]; then
    if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
        HAVE_BROKER=1
    else
        log "WARNING: no AMQP broker on 127.0.0.1:5672 (rabbitmq-server -detached starts one); scenario e is skipped"
    fi
fi

log "building (cargo build --release --bin tsrelay --examples)"
cargo build --release --quiet --bin tsrelay --examples
for bin in "$REL/tsrelay" "$REL/examples/loadgen" "$REL/examples/sink"; do
    [[ -x $bin ]] || die "missing $bin after the build"
done

# --- one run ----------------------------------------------------------------------

RESULTS=() # "scenario|relay|run|sent|delivered|lost|pps|wall|cpu|cpu_per_m|rss_mib|note"
SINK_CPU=() # "scenario|relay|run|delivered|sink_cpu_s"

# run_one SCENARIO RELAY OUT_FORMAT RUN [BATCH [CONCURRENCY]]
# OUT_FORMAT is the sink's --format: plaintext, pickle or kairosdb_rest.
# BATCH (default 500) is tsrelay's batch max_points; CONCURRENCY (HTTP only)
# its requests in flight. A non-default BATCH or any CONCURRENCY is shown
# in the relay column, e.g. "tsrelay b5000 c4".
run_one() {
    local scenario=$1 relay=$2 out_format=$3 run=$4 batch=${5:-500} concurrency=${6:-}
    local label=$relay
    if [[ $batch != 500 || -n $concurrency ]]; then label+=" b$batch"; fi
    if [[ -n $concurrency ]]; then label+=" c$concurrency"; fi
    local tag=${scenario}-${label// /-}-${run}
    local in_port sink_port admin_port relay_pid sink_pid gen_pid busy
    local relay_pids=() admin_ports=() # every relay process of the run (two for tsrelay-amqp)
    busy=$(machine_busy_pct)
    # The sink gives up by itself after SCENARIO_TIMEOUT (and still reports);
    # the script's own deadline is a few seconds later.
    local deadline=$(($(date +%s) + SCENARIO_TIMEOUT + 5))
    in_port=$(free_port)
    sink_port=$(free_port)
    admin_port=$(free_port)

    log "[$tag] sink ($out_format) on 127.0.0.1:$sink_port"
    "$REL/examples/sink" --listen "127.0.0.1:$sink_port" --format "$out_format" \
        --expect "$POINTS" --idle-timeout "$IDLE_TIMEOUT" \
        --start-timeout "$SCENARIO_TIMEOUT" --max-seconds "$SCENARIO_TIMEOUT" \
        >"$WORK/$tag.sink.out" 2>"$WORK/$tag.sink.err" &
    sink_pid=$!
    PIDS+=("$sink_pid")
    wait_listening "$sink_port" "$sink_pid" sink

    case $relay in
    tsrelay)
        local target
        case $out_format in
        plaintext | pickle)
            target="protocol: graphite_$out_format
    address: 127.0.0.1:$sink_port"
            ;;
        kairosdb_rest)
            # KairosDB REST needs a tag on every point: the template lifts
            # the host out of servers.HOST.*, the default tag covers the
            # rest (without it they would be dropped as missing_tags).
            target="protocol: kairosdb_rest
    url: http://127.0.0.1:$sink_port/api/v1/datapoints${concurrency:+
    concurrency: $concurrency}
    templates: [\"servers.host.measurement*\"]
    default_tag: source=graphite"
            ;;
        irondb)
            # Graphite to IRONdb: FlatBuffer MetricLists (legacy CIML, as
            # gosnowth sends) under one configured check identity.
            target="protocol: irondb_flatbuffer
    url: http://127.0.0.1:$sink_port/raw${concurrency:+
    concurrency: $concurrency}
    check: {account_id: 1, check_uuid: 1b988fd7-d1e1-48ec-848e-55709511d43f, check_name: relay, target: 127.0.0.1, module: graphite}"
            ;;
        *) die "tsrelay has no upstream for sink format $out_format" ;;
        esac
        cat >"$WORK/$tag.yaml" <<EOF
listeners:
  - {name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:$in_port}
upstreams:
  - name: sink
    $target
    batch: {max_points: $batch, max_delay: 50ms}
    queue: {max_points: 1000000, when_full: block}
routes:
  - {match: {prefix: ""}, to: [sink]}
admin: {listen: 127.0.0.1:$admin_port}
EOF
        # A key this build does not know (concurrency, say) fails here, clearly.
        if ! "$REL/tsrelay" check -c "$WORK/$tag.yaml" >"$WORK/$tag.check.log" 2>&1; then
            cat "$WORK/$tag.check.log" >&2
            die "[$tag] tsrelay rejects the generated configuration $WORK/$tag.yaml"
        fi
        RUST_LOG=${RUST_LOG:-warn} "$REL/tsrelay" -c "$WORK/$tag.yaml" \
            >"$WORK/$tag.relay.log" 2>&1 &
        relay_pid=$!
        admin_ports=("$admin_port")
        ;;
    tsrelay-amqp)
        start_amqp_relays "$tag" "$in_port" "$sink_port" "$admin_port" "$batch" "$run"
        ;;
    carbon-c-relay)
        cat >"$WORK/$tag.conf" <<EOF
listen type linemode 127.0.0.1:$in_port proto tcp;
cluster sink forward 127.0.0.1:$sink_port;
match * send to sink stop;
EOF
        # -s: submission mode, no internal statistics in the stream (they
        # would be counted by the sink); drops are reported in the log.
        carbon-c-relay -f "$WORK/$tag.conf" -s -H e2e -w "$CCR_WORKERS" \
            -q "$CCR_QUEUE" -l "$WORK/$tag.relay.log" >/dev/null 2>&1 &
        relay_pid=$!
        ;;
    *) die "unknown relay $relay" ;;
    esac
    PIDS+=("$relay_pid")
    relay_pids+=("$relay_pid")
    wait_listening "$in_port" "$relay_pid" "$relay"
    sleep 0.2 # let upstream connections settle

    local cpu0
    cpu0=$(cpu_ticks_sum "${relay_pids[@]}")
    log "[$tag] loadgen: $POINTS points over $CONNECTIONS connections to 127.0.0.1:$in_port"
    "$REL/examples/loadgen" --addr "127.0.0.1:$in_port" --points "$POINTS" \
        --connections "$CONNECTIONS" >"$WORK/$tag.loadgen.out" 2>"$WORK/$tag.loadgen.err" &
    gen_pid=$!
    PIDS+=("$gen_pid")

    local note="" rc=0
    if ((busy > BUSY_WARN)); then
        note="machine ${busy}% busy just before"
        log "[$tag] WARNING: the machine was ${busy}% busy before this run: other work skews it"
    fi
    wait_exit "$gen_pid" "$deadline" || rc=$?
    if [[ $rc -eq 124 ]]; then
        note="${note:+$note; }loadgen timed out"
        stop "$gen_pid" 1
    elif [[ $rc -ne 0 ]]; then
        cat "$WORK/$tag.loadgen.err" >&2
        die "[$tag] loadgen failed (exit $rc)"
    fi
    rc=0
    wait_exit "$sink_pid" "$deadline" || rc=$?
    if [[ $rc -eq 124 ]]; then
        note="${note:+$note; }sink hung past the deadline"
        kill -TERM "$sink_pid" 2>/dev/null || true # it prints nothing then
        wait "$sink_pid" 2>/dev/null || true
    elif [[ $rc -ne 0 ]]; then
        cat "$WORK/$tag.sink.err" >&2
        die "[$tag] sink failed (exit $rc)"
    fi
    local cpu1 rss_kib pid port
    for pid in "${relay_pids[@]}"; do
        alive "$pid" || die "[$tag] $relay died during the run (see $WORK/$tag.*relay.log)"
    done
    cpu1=$(cpu_ticks_sum "${relay_pids[@]}")
    rss_kib=$(peak_rss_kib_sum "${relay_pids[@]}")

    for port in "${admin_ports[@]}"; do
        curl -fsS --max-time 5 "http://127.0.0.1:$port/metrics" \
            >"$WORK/$tag.$port.metrics" 2>/dev/null || true
    done
    # Drops carbon-c-relay logged while running, then at shutdown (what
    # was still queued when it got SIGTERM, after an incomplete run).
    local log_lines=0 drops_running=0 drops_at_stop=0
    if [[ $relay == carbon-c-relay && -f $WORK/$tag.relay.log ]]; then
        log_lines=$(wc -l <"$WORK/$tag.relay.log")
        drops_running=$(grep -ci 'drop' "$WORK/$tag.relay.log" || true)
    fi
    for pid in "${relay_pids[@]}"; do stop "$pid" 10; done
    if [[ $relay == carbon-c-relay && -f $WORK/$tag.relay.log ]]; then
        drops_at_stop=$(tail -n +"$((log_lines + 1))" "$WORK/$tag.relay.log" | awk '
            match($0, /dropping [0-9]+ metrics/) { split(substr($0, RSTART, RLENGTH), w, " "); n += w[2] }
            END { print n + 0 }')
    fi

    local sent delivered start_ns last_ns complete
    sent=$(field points "$WORK/$tag.loadgen.out")
    sent=${sent:-0}
    delivered=$(field points "$WORK/$tag.sink.out")
    delivered=${delivered:-0}
    complete=$(field complete "$WORK/$tag.sink.out")
    start_ns=$(field start_unix_ns "$WORK/$tag.loadgen.out")
    last_ns=$(field last_point_unix_ns "$WORK/$tag.sink.out")
    if [[ ${complete:-false} != true ]]; then
        note="${note:+$note; }incomplete: sink went idle ${IDLE_TIMEOUT}s or hit ${SCENARIO_TIMEOUT}s"
    fi
    local rejects
    rejects=$(field rejects "$WORK/$tag.sink.out")
    if [[ ${rejects:-0} != 0 ]]; then
        note="${note:+$note; }sink rejects=$rejects"
    fi
    if ((drops_running > 0)); then
        note="${note:+$note; }relay logged drops during the run"
    fi
    if ((drops_at_stop > 0)); then
        note="${note:+$note; }$drops_at_stop still queued in the relay when stopped"
    fi

    RESULTS+=("$(awk -v s="$scenario" -v r="$label" -v run="$run" -v sent="$sent" -v got="$delivered" \
        -v t0="${start_ns:-0}" -v t1="${last_ns:-0}" -v c0="$cpu0" -v c1="$cpu1" \
        -v tck="$CLK_TCK" -v rss="$rss_kib" -v note="$note" 'BEGIN {
            wall = (t1 > t0 && t0 > 0) ? (t1 - t0) / 1e9 : 0
            pps = wall > 0 ? got / wall : 0
            cpu = (c1 - c0) / tck
            cpm = got > 0 ? cpu / (got / 1e6) : 0
            printf "%s|%s|%d|%d|%d|%d|%.0f|%.3f|%.2f|%.3f|%.1f|%s", s, r, run, sent, got, sent - got, pps, wall, cpu, cpm, rss / 1024, note
        }')")
    log "[$tag] $(cat "$WORK/$tag.loadgen.out" 2>/dev/null || echo 'loadgen printed nothing')"
    log "[$tag] $(cat "$WORK/$tag.sink.out" 2>/dev/null || echo 'sink printed nothing')"
    local sink_ticks sink_cpu
    sink_ticks=$(field cpu_ticks "$WORK/$tag.sink.out")
    sink_cpu=$(awk -v t="${sink_ticks:-0}" -v h="$CLK_TCK" 'BEGIN { printf "%.2f", t / h }')
    SINK_CPU+=("$scenario|$label|$run|$delivered|$sink_cpu")
    log "[$tag] CPU seconds: relay $(awk -v t=$((cpu1 - cpu0)) -v h="$CLK_TCK" 'BEGIN { printf "%.2f", t / h }'), sink $sink_cpu"
    for port in "${admin_ports[@]}"; do
        [[ -s $WORK/$tag.$port.metrics ]] || continue
        log "[$tag] tsrelay's own counters (admin $port): $(awk '
            /^tsrelay_upstream_points_sent_total/ { sent += $NF }
            /^tsrelay_upstream_points_dropped_total/ { dropped += $NF }
            /^tsrelay_upstream_points_retried_total/ { retried += $NF }
            /^tsrelay_upstream_send_errors_total/ { errors += $NF }
            /^tsrelay_points_unrouted_total/ { unrouted += $NF }
            END { printf "upstream sent=%d dropped=%d retried=%d send_errors=%d unrouted=%d", sent, dropped, retried, errors, unrouted }
        ' "$WORK/$tag.$port.metrics")"
    done
}

# start_amqp_relays TAG IN_PORT SINK_PORT ADMIN_PORT BATCH RUN (scenario d):
# a consumer (amqp in, plaintext out to the sink) on a durable queue of its
# own, then a publisher (plaintext in, amqp out as plaintext_lines). The
# exchange tsrelay_bench is shared; a routing key per run keeps runs apart.
# Sets relay_pid (the publisher, which takes the load), relay_pids, admin_ports.
start_amqp_relays() {
    local tag=$1 in_port=$2 sink_port=$3 admin_port=$4 batch=$5 run=$6
    local queue="tsrelay_bench_$$_$run" exchange=tsrelay_bench key="bench.$$.$run"
    local consumer_admin consumer_pid config i
    consumer_admin=$(free_port)
    AMQP_QUEUES+=("$queue")
    cat >"$WORK/$tag.consumer.yaml" <<EOF
listeners:
  - {name: bus, protocol: amqp, url: "$AMQP_URL", exchange: $exchange, queue: $queue,
     bind_patterns: ["$key"], metric_name_in_body: true, prefetch: 1000}
upstreams:
  - name: sink
    protocol: graphite_plaintext
    address: 127.0.0.1:$sink_port
    batch: {max_points: $batch, max_delay: 50ms}
    queue: {max_points: 1000000, when_full: block}
routes:
  - {match: {prefix: ""}, to: [sink]}
admin: {listen: 127.0.0.1:$consumer_admin}
EOF
    cat >"$WORK/$tag.yaml" <<EOF
listeners:
  - {name: plain, protocol: graphite_plaintext, listen: 127.0.0.1:$in_port}
upstreams:
  - name: bus
    protocol: amqp
    url: "$AMQP_URL"
    exchange: $exchange
    body: plaintext_lines
    routing_key: $key
    batch: {max_points: $batch, max_delay: 50ms}
    queue: {max_points: 1000000, when_full: block}
routes:
  - {match: {prefix: ""}, to: [bus]}
admin: {listen: 127.0.0.1:$admin_port}
EOF
    for config in "$WORK/$tag.consumer.yaml" "$WORK/$tag.yaml"; do
        if ! "$REL/tsrelay" check -c "$config" >"$WORK/$tag.check.log" 2>&1; then
            cat "$WORK/$tag.check.log" >&2
            die "[$tag] tsrelay rejects the generated configuration $config"
        fi
    done
    RUST_LOG=${RUST_LOG:-warn} "$REL/tsrelay" -c "$WORK/$tag.consumer.yaml" \
        >"$WORK/$tag.consumer.relay.log" 2>&1 &
    consumer_pid=$!
    PIDS+=("$consumer_pid")
    # The queue and its binding exist once the consumer consumes.
    for ((i = 0; i < 300; i++)); do
        alive "$consumer_pid" || die "[$tag] the consuming tsrelay exited during startup (see $WORK)"
        curl -fsS --max-time 1 "http://127.0.0.1:$consumer_admin/metrics" 2>/dev/null |
            grep -q '^tsrelay_listener_connections_active{listener="bus"} 1$' && break
        sleep 0.05
    done
    ((i < 300)) || die "[$tag] the consuming tsrelay did not connect to the broker within 15 s"
    RUST_LOG=${RUST_LOG:-warn} "$REL/tsrelay" -c "$WORK/$tag.yaml" \
        >"$WORK/$tag.relay.log" 2>&1 &
    relay_pid=$!
    relay_pids=("$consumer_pid")
    admin_ports=("$admin_port" "$consumer_admin")
}

# --- scenarios ----------------------------------------------------------------------

log "points=$POINTS connections=$CONNECTIONS runs=$RUNS cores=$(nproc) timeout=${SCENARIO_TIMEOUT}s"
for ((run = 1; run <= RUNS; run++)); do
    if [[ $SCENARIOS == *a* ]]; then
        run_one "a:plain->plain" tsrelay plaintext "$run"
        if [[ $HAVE_CCR == 1 ]]; then
            run_one "a:plain->plain" carbon-c-relay plaintext "$run"
        fi
    fi
    if [[ $SCENARIOS == *b* ]]; then
        run_one "b:plain->pickle" tsrelay pickle "$run"
    fi
    if [[ $SCENARIOS == *e* && $HAVE_BROKER == 1 ]]; then
        run_one "e:plain->amqp->plain" tsrelay-amqp plaintext "$run"
    fi
    if [[ $SCENARIOS == *c* ]]; then
        for batch in $KAIROS_BATCH; do
            for concurrency in $KAIROS_CONCURRENCY; do
                [[ $concurrency == default ]] && concurrency=""
                run_one "c:plain->kairos_rest" tsrelay kairosdb_rest "$run" "$batch" "$concurrency"
            done
        done
    fi
    if [[ $SCENARIOS == *d* ]]; then
        for batch in $KAIROS_BATCH; do
            for concurrency in $KAIROS_CONCURRENCY; do
                [[ $concurrency == default ]] && concurrency=""
                run_one "d:plain->irondb_fb" tsrelay irondb "$run" "$batch" "$concurrency"
            done
        done
    fi
done

# --- report ---------------------------------------------------------------------------

echo
echo "End-to-end relay benchmark: $POINTS points over $CONNECTIONS connections, 127.0.0.1, $(nproc) cores"
echo "tsrelay $("$REL/tsrelay" --version 2>/dev/null | awk '{print $2}') (tokio multi-thread runtime, batch 500 / 50ms unless the relay column says bN, queue 1,000,000 block)"
if [[ $HAVE_CCR == 1 ]]; then
    echo "carbon-c-relay $(carbon-c-relay -v 2>/dev/null | head -n1 | awk '{print $2}') (-w $CCR_WORKERS -q $CCR_QUEUE -b 2500 (default) -s, forward cluster)"
fi
echo
printf '%s\n' "${RESULTS[@]}" | awk -F'|' -v runs="$RUNS" -v have_ccr="$HAVE_CCR" -v scenarios="$SCENARIOS" '
    function median(list,    n, v, i, j, x) {
        n = split(list, v, " ")
        for (i = 2; i <= n; i++) {
            x = v[i] + 0
            for (j = i - 1; j >= 1 && v[j] + 0 > x; j--) v[j + 1] = v[j]
            v[j + 1] = x
        }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    BEGIN {
        fmt = "%-20s %-16s %4s %10s %10s %8s %11s %8s %8s %10s %9s  %s\n"
        printf fmt, "scenario", "relay", "run", "sent", "delivered", "lost", "points/s", "wall_s", "cpu_s", "cpu_s/Mpt", "rss_MiB", "note"
    }
    {
        printf fmt, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
        key = $1 "|" $2
        if (!(key in pps)) order[++nkeys] = key
        pps[key] = pps[key] " " $7
        cpm[key] = cpm[key] " " $10
    }
    END {
        if (runs > 1) {
            print ""
            printf "medians over %d runs:\n", runs
            for (i = 1; i <= nkeys; i++) {
                split(order[i], k, "|")
                printf "  %-20s %-16s points/s %11.0f   cpu_s/Mpt %.3f\n", k[1], k[2], median(pps[order[i]]), median(cpm[order[i]])
            }
        }
        if (scenarios ~ /b/) print "b:plain->pickle: carbon-c-relay has no pickle output (it writes linemode only), so it is not run."
        if (scenarios ~ /c/) print "c:plain->kairos_rest: carbon-c-relay cannot write KairosDB REST (nor any HTTP), so it is not run; bN = batch max_points, cN = requests in flight."
        if (scenarios ~ /d/) print "d:plain->irondb_fb: Graphite plaintext to IRONdb /raw as Circonus FlatBuffer (CIML); carbon-c-relay cannot write it."
        if (scenarios ~ /e/) print "e:plain->amqp->plain: two tsrelays through RabbitMQ (durable queue, publisher confirms, consumer acks); cpu_s and rss_MiB add up both relays."
        if (scenarios !~ /a/) exit
        ts = "a:plain->plain|tsrelay"; cc = "a:plain->plain|carbon-c-relay"
        print ""
        if (have_ccr != 1 || !(cc in pps)) { print "carbon-c-relay unavailable: no ratios."; exit }
        label = runs > 1 ? " (medians)" : ""
        printf "plain->plain, tsrelay / carbon-c-relay%s:\n", label
        t = median(pps[ts]); c = median(pps[cc])
        if (c > 0) printf "  points/s ratio:       %.2f  (>1: tsrelay faster)\n", t / c
        else print "  points/s ratio:       n/a"
        t = median(cpm[ts]); c = median(cpm[cc])
        if (c > 0) printf "  CPU s per Mpt ratio:  %.2f  (<1: tsrelay cheaper)\n", t / c
        else print "  CPU s per Mpt ratio:  n/a"
    }'
echo
echo "sink CPU (user + system; it shares the cores with the relay and the loadgen):"
printf '%s\n' "${SINK_CPU[@]}" | awk -F'|' '{
    printf "  %-20s %-16s run %d: %6.2f s  (%.3f s/Mpt)\n", $1, $2, $3, $5, ($4 > 0 ? $5 / ($4 / 1e6) : 0)
}'
