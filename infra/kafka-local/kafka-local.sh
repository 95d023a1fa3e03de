#!/usr/bin/env bash
# kafka-local.sh - run single-node Apache Kafka (KRaft, broker+controller)
# instances from Maven Central jars with the local `java`. No Docker needed.
#
#   kafka-local.sh fetch           resolve the jars (see pom.xml) into $LIBS
#   kafka-local.sh start NAME      fresh broker NAME; prints 127.0.0.1:PORT
#   kafka-local.sh start-cluster NAME N
#                                  fresh cluster of N brokers NAME-1..NAME-N (each also a
#                                  controller; replication factor min(N,3), min.insync
#                                  min(N-1,2)); prints their bootstrap list, comma-separated
#   kafka-local.sh restart NAME    stop + start NAME again, same ports and data
#   kafka-local.sh stop NAME       stop broker NAME (ok if not running)
#   kafka-local.sh kill NAME       SIGKILL broker NAME at once, as a crash would
#   kafka-local.sh remove NAME     stop broker NAME and delete its data and ports
#   kafka-local.sh stop-all        stop every broker under $KAFKA_LOCAL_HOME
#   kafka-local.sh status          NAME, pid, bootstrap, running/stopped
#   kafka-local.sh link NAME       print LISTENER=ADVERTISED of NAME's LINK listener, when
#                                  it was started with KAFKA_LOCAL_LINK_PORT
#   kafka-local.sh run CLASS ARGS  run a Kafka main class (CLI tool, MirrorMaker)
#                                  on the fetched classpath, logging WARN to stderr
#   kafka-local.sh classpath       print the classpath ("$LIBS/*")
#
# Only the bootstrap address of start/restart and the status table go to
# stdout; progress and errors go to stderr. See README.md for env vars.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")" && pwd)
KAFKA_LOCAL_HOME=${KAFKA_LOCAL_HOME:-${HOME:?HOME is not set}/.cache/kafka-replicator/kafka-local}
LIBS=${KAFKA_LOCAL_LIBS:-$KAFKA_LOCAL_HOME/libs}
JAVA=${JAVA:-java}
MVN=${MVN:-mvn}
START_TIMEOUT=${KAFKA_LOCAL_START_TIMEOUT:-90}
STOP_TIMEOUT=${KAFKA_LOCAL_STOP_TIMEOUT:-30}
PORT_WAIT=${KAFKA_LOCAL_PORT_WAIT:-30}
HEAP_OPTS=${KAFKA_LOCAL_HEAP_OPTS:--Xmx512m}
JVM_OPTS=${KAFKA_LOCAL_JVM_OPTS:-}
LOG4J_CONFIG=${KAFKA_LOCAL_LOG4J_CONFIG:-$SCRIPT_DIR/log4j2.yaml}
TOOLS_LOG4J_CONFIG=${KAFKA_LOCAL_TOOLS_LOG4J_CONFIG:-$SCRIPT_DIR/log4j2-tools.yaml}
# Logged once by kafka.server.KafkaRaftServer when broker and controller are up.
READY_LINE='Kafka Server started'

log() { printf 'kafka-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The waits are whole seconds; anything else would fail later as a bash arithmetic error.
for var in KAFKA_LOCAL_START_TIMEOUT KAFKA_LOCAL_STOP_TIMEOUT KAFKA_LOCAL_PORT_WAIT; do
  [[ ${!var:-0} =~ ^[0-9]+$ ]] || die "$var='${!var}' is not a whole number of seconds (e.g. $var=30)"
done

usage() {
  sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
  exit "${1:-2}"
}

# ---------------------------------------------------------------- helpers

# Broker names become directory names under $KAFKA_LOCAL_HOME.
check_name() {
  [[ ${1:-} =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "invalid broker name '${1:-}' (use [A-Za-z0-9._-])"
  [[ $1 != libs* ]] || die "broker name '$1' is reserved"
}

broker_dir() { printf '%s/%s' "$KAFKA_LOCAL_HOME" "$1"; }

# Take / release an exclusive lock on fd 8 (no-op where flock is missing).
lock() {
  mkdir -p "$KAFKA_LOCAL_HOME"
  exec 8>"$KAFKA_LOCAL_HOME/.$1.lock"
  if command -v flock >/dev/null; then flock 8; fi
}
unlock() { exec 8>&-; }

# True if pid is alive (zombies count as dead).
alive() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n $st && $st != Z* ]]
}

# Pid of broker NAME if it is running (and really is that broker), else empty.
running_pid() {
  local dir pid args
  dir=$(broker_dir "$1")
  [[ -s $dir/pid ]] || return 0
  pid=$(<"$dir/pid")
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 0
  # Guard against pid reuse: the command line must name this broker's config.
  args=$(ps -o args= -p "$pid" 2>/dev/null) || return 0
  [[ $args == *"$dir/server.properties"* ]] && printf '%s' "$pid"
  return 0
}

# True if something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# What listens on 127.0.0.1:PORT, as "pid N (command)"; empty when unknown.
port_holder() {
  command -v ss >/dev/null || return 0
  ss -Hltnp "sport = :$1" 2>/dev/null \
    | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/pid \2 (\1)/p' | head -n 1
}

# Wait until nothing listens on NAME's ports ($2...) or PORT_WAIT seconds pass; then fail
# naming the holder. A JVM killed a moment ago holds its listeners until its last thread
# is gone, a while after ps already shows it dead.
await_ports_free() {
  local name=$1 p deadline holder
  shift
  deadline=$((SECONDS + PORT_WAIT))
  for p in "$@"; do
    while port_open "$p"; do
      if ((SECONDS >= deadline)); then
        holder=$(port_holder "$p")
        die "port $p needed by '$name' is still in use by ${holder:-another process} after ${PORT_WAIT}s; stop that process, or give '$name' new ports with: $0 remove $name, then start $name"
      fi
      sleep 0.2
    done
  done
}

# Wait until NAME's own listeners (broker, controller, LINK) are closed; see above.
await_listeners_closed() {
  local port cport lport
  read -r port cport lport _ <"$(broker_dir "$1")/ports"
  # shellcheck disable=SC2086  # lport is empty without a LINK listener
  await_ports_free "$1" "$port" "$cport" $lport
}

# Ports recorded by every broker dir (kept reserved even while stopped, so a
# later `restart` of that broker finds its ports free).
reserved_ports() { cat "$KAFKA_LOCAL_HOME"/*/ports 2>/dev/null || true; }

# Print one free loopback port not in the space-separated list $1. It is drawn from
# below the kernel's ephemeral range: a port from that range can be handed to a client's
# outgoing connection between this pick and the broker's bind, and the broker then exits
# with "Address already in use".
free_port() {
  local avoid=" $1 " p i low=32768
  [[ -r /proc/sys/net/ipv4/ip_local_port_range ]] \
    && read -r low _ </proc/sys/net/ipv4/ip_local_port_range
  ((low > 11024)) || low=32768
  for i in $(seq 1 50); do
    p=$((10000 + RANDOM % (low - 10000)))
    if [[ $avoid != *" $p "* ]] && ! port_open "$p"; then
      printf '%s' "$p"
      return 0
    fi
  done
  die "could not find a free port (tried $i times)"
}

# Port from env override ($2 = variable name) or a fresh free one.
choose_port() {
  local val=$1 var=$2 avoid=$3
  if [[ -n $val ]]; then
    if ! [[ $val =~ ^[0-9]+$ ]] || ((val < 1 || val > 65535)); then
      die "$var='$val' is not a port number"
    fi
    ! port_open "$val" || die "$var=$val is already in use"
    printf '%s' "$val"
  else
    free_port "$avoid"
  fi
}

# Random Kafka cluster id: 16 random bytes, base64url without padding
# (what `kafka-storage.sh random-uuid` prints), never starting with '-'.
new_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ $id == -* ]] || break
  done
  printf '%s' "$id"
}

libs_present() { [[ -f $LIBS/.pom.sha256 ]] && compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null; }

# ---------------------------------------------------------------- fetch

# Resolve pom.xml's dependencies into $LIBS. Skipped when $LIBS holds a
# stamp equal to the pom's checksum. $1=quiet suppresses the "up to date" note.
cmd_fetch() {
  local sum stamp="$LIBS/.pom.sha256" tmp
  command -v "$MVN" >/dev/null || die "maven ('$MVN') not found on PATH"
  sum=$(sha256sum "$SCRIPT_DIR/pom.xml" | cut -d' ' -f1)
  if libs_present && [[ $(<"$stamp") == "$sum" ]]; then
    [[ ${1:-} == quiet ]] || log "jars up to date in $LIBS"
    return 0
  fi
  mkdir -p "$(dirname "$LIBS")"
  exec 9>"$LIBS.lock"            # serialize concurrent fetches
  if command -v flock >/dev/null; then flock 9; fi
  if libs_present && [[ $(<"$stamp") == "$sum" ]]; then exec 9>&-; return 0; fi
  tmp="$LIBS.tmp.$$"
  rm -rf "$tmp"
  log "resolving Kafka jars with Maven into $LIBS ..."
  # Some Maven builds emit bare ANSI reset codes even with -q -B: strip them.
  if ! "$MVN" -q -B -f "$SCRIPT_DIR/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^$/d' >&2; then
    rm -rf "$tmp"
    die "maven could not resolve $SCRIPT_DIR/pom.xml"
  fi
  printf '%s\n' "$sum" >"$tmp/.pom.sha256"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  exec 9>&-
  log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars into $LIBS"
}

# ---------------------------------------------------------------- start

# $6: the controller quorum of a cluster (`1@host:port,2@…`) and $7 this node's id; empty: a
# single node that is its own quorum.
write_properties() {
  local dir=$1 port=$2 cport=$3 lport=${4:-} link=${5:-} voters=${6:-} node=${7:-1}
  local quorum="controller.quorum.bootstrap.servers=127.0.0.1:$cport" rf=1 isr=1 nodes
  if [[ -n $voters ]]; then
    quorum="controller.quorum.voters=$voters"
    nodes=$(tr ',' '\n' <<<"$voters" | wc -l)
    rf=$((nodes < 3 ? nodes : 3))
    isr=$((nodes - 1 < 2 ? nodes - 1 : 2))
    ((isr >= 1)) || isr=1
  fi
  local listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
  local advertised="PLAINTEXT://127.0.0.1:$port" map="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [[ -n $lport ]]; then
    # A listener whose clients are told to reach it at $link: a proxy (a shaped link)
    # that forwards to $lport, so that every connection of theirs crosses that proxy.
    listeners+=",LINK://127.0.0.1:$lport"
    advertised+=",LINK://127.0.0.1:$link"
    map+=",LINK:PLAINTEXT"
  fi
  cat >"$dir/server.properties" <<EOF
# Written by kafka-local.sh: KRaft broker + controller.
process.roles=broker,controller
node.id=$node
$quorum
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$map
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=true
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
# Records keep the timestamps they were produced with, and tests produce some years old:
# time-based retention would delete them at its next check (every 5 min), mid-test.
log.retention.ms=-1
EOF
  if [[ -n ${KAFKA_LOCAL_EXTRA_PROPS:-} ]]; then
    printf '# KAFKA_LOCAL_EXTRA_PROPS (later keys win)\n%s\n' "$KAFKA_LOCAL_EXTRA_PROPS" >>"$dir/server.properties"
  fi
}

# Start the broker of an already formatted dir in the background, without waiting.
spawn_broker() {
  local name=$1 dir port logf
  local -a heap jvm
  dir=$(broker_dir "$name")
  logf=$dir/server.log
  read -r port _ <"$dir/ports"
  await_listeners_closed "$name"
  read -r -a heap <<<"$HEAP_OPTS"
  read -r -a jvm <<<"$JVM_OPTS"

  # server.log is appended across restarts; readiness only looks past this offset.
  touch "$logf"
  printf '=== kafka-local: launching %s on 127.0.0.1:%s at %s ===\n' "$name" "$port" "$(date '+%F %T')" >>"$logf"
  wc -c <"$logf" >"$dir/ready-offset"
  rm -f "$dir/pid"

  local -a detach=(nohup)
  if command -v setsid >/dev/null; then detach=(setsid nohup); fi
  # The inner bash records its own pid, then exec's java (same pid).
  # shellcheck disable=SC2016  # $$ and $@ are for the inner bash
  (
    cd "$dir"
    exec "${detach[@]}" bash -c 'echo $$ >"$0"; exec "$@"' "$dir/pid" \
      "$JAVA" "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
      -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$LOG4J_CONFIG" -Dkafka.logs.dir="$dir" \
      "${jvm[@]}" -cp "$LIBS/*" kafka.Kafka "$dir/server.properties"
  ) >>"$logf" 2>&1 </dev/null 8>&- 9>&- &
}

# Wait until the broker spawn_broker started is ready; print its bootstrap address on stdout.
await_ready() {
  local name=$1 dir port logf off pid deadline
  dir=$(broker_dir "$name")
  logf=$dir/server.log
  read -r port _ <"$dir/ports"
  off=$(<"$dir/ready-offset")
  log "waiting for '$name' on 127.0.0.1:$port (timeout ${START_TIMEOUT}s) ..."
  deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    pid=$(cat "$dir/pid" 2>/dev/null || true)
    if [[ -n $pid ]] && ! alive "$pid"; then
      log "broker '$name' exited during startup; its errors before the last 50 lines of $logf, then those:"
      awk -v last="$(wc -l <"$logf")" 'NR <= last - 50 && /^\[[^]]*\] (ERROR|FATAL) /' "$logf" \
        | tail -n 10 >&2
      tail -n 50 "$logf" >&2
      return 1
    fi
    if [[ -n $pid ]] && grep -qF -- "$READY_LINE" < <(tail -c "+$((off + 1))" "$logf") \
        && port_open "$port"; then
      break
    fi
    if ((SECONDS >= deadline)); then
      log "broker '$name' not ready after ${START_TIMEOUT}s; last 50 lines of $logf:"
      tail -n 50 "$logf" >&2
      cmd_stop "$name" || true
      return 1
    fi
    sleep 0.5
  done
  printf '127.0.0.1:%s\n' "$port" >"$dir/bootstrap"
  log "'$name' ready (pid $pid) after $((SECONDS + START_TIMEOUT - deadline))s"
  printf '127.0.0.1:%s\n' "$port"
}

# Launch the broker of an already formatted dir and wait until it is ready; print its
# bootstrap address on stdout.
launch() {
  spawn_broker "$1"
  await_ready "$1"
}

# Wipe NAME's dir, pick and record its ports, write its properties ($2: the cluster's
# voters, $3: its node id; empty for a single node). Prints the controller port.
prepare() {
  local name=$1 voters=${2:-} node=${3:-} dir port cport lport="" link=${KAFKA_LOCAL_LINK_PORT:-}
  dir=$(broker_dir "$name")
  if [[ -n $(running_pid "$name") ]]; then
    log "'$name' is already running; stopping it for a fresh start"
    cmd_stop "$name"
  fi

  # Pick ports and record them under a lock so concurrent starts don't collide.
  lock ports
  rm -rf "$dir"
  port=$(choose_port "${KAFKA_LOCAL_PORT:-}" KAFKA_LOCAL_PORT "$(reserved_ports)")
  cport=$(choose_port "${KAFKA_LOCAL_CONTROLLER_PORT:-}" KAFKA_LOCAL_CONTROLLER_PORT "$(reserved_ports) $port")
  if [[ -n $link ]]; then
    [[ $link =~ ^[0-9]+$ ]] && ((link > 0 && link < 65536)) \
      || die "KAFKA_LOCAL_LINK_PORT='$link' is not a port number"
    [[ " $(reserved_ports) $port $cport " != *" $link "* ]] && ! port_open "$link" \
      || die "KAFKA_LOCAL_LINK_PORT=$link is already in use"
    lport=$(free_port "$(reserved_ports) $port $cport $link")
  fi
  mkdir -p "$dir/data"
  printf '%s %s %s %s\n' "$port" "$cport" "$lport" "$link" >"$dir/ports"
  if [[ -n $lport ]]; then
    printf '127.0.0.1:%s=127.0.0.1:%s\n' "$lport" "$link" >"$dir/link"
  fi
  unlock
  printf '%s' "$cport"
}

# Format NAME's storage for cluster $2 ($3: --standalone for a node that is its own quorum).
format_storage() {
  local name=$1 cid=$2 dir
  local -a standalone=()
  [[ -z ${3:-} ]] || standalone=("$3")
  dir=$(broker_dir "$name")
  printf '%s\n' "$cid" >"$dir/cluster.id"
  log "formatting $dir/data (cluster id $cid)"
  if ! "$JAVA" -cp "$LIBS/*" -Dlog4j2.configurationFile="$TOOLS_LOG4J_CONFIG" kafka.tools.StorageTool \
      format "${standalone[@]}" -t "$cid" -c "$dir/server.properties" >"$dir/format.log" 2>&1; then
    cat "$dir/format.log" >&2
    die "formatting storage for '$name' failed"
  fi
}

cmd_start() {
  local name=${1:-} dir port cport lport link
  check_name "$name"
  dir=$(broker_dir "$name")
  command -v "$JAVA" >/dev/null || die "java ('$JAVA') not found on PATH"
  cmd_fetch quiet
  cport=$(prepare "$name")
  read -r port cport lport link <"$dir/ports"
  write_properties "$dir" "$port" "$cport" "$lport" "$link"
  format_storage "$name" "$(new_cluster_id)" --standalone
  launch "$name"
}

# N nodes NAME-1..NAME-N, each broker and controller, one static quorum of them all: a
# broker killed leaves the others a majority, so leaders move and the cluster serves on.
cmd_start_cluster() {
  local name=${1:-} count=${2:-} i node cid voters="" bootstrap="" port cport lport link
  [[ $count =~ ^[0-9]+$ ]] && ((count >= 1 && count <= 9)) \
    || die "start-cluster NAME N: N='$count' must be a number from 1 to 9"
  check_name "$name"
  command -v "$JAVA" >/dev/null || die "java ('$JAVA') not found on PATH"
  cmd_fetch quiet
  [[ -z ${KAFKA_LOCAL_PORT:-}${KAFKA_LOCAL_CONTROLLER_PORT:-}${KAFKA_LOCAL_LINK_PORT:-} ]] \
    || die "start-cluster picks each node's ports: unset KAFKA_LOCAL_PORT, KAFKA_LOCAL_CONTROLLER_PORT and KAFKA_LOCAL_LINK_PORT"
  for ((i = 1; i <= count; i++)); do
    cport=$(prepare "$name-$i")
    voters+="${voters:+,}$i@127.0.0.1:$cport"
  done
  cid=$(new_cluster_id)
  for ((i = 1; i <= count; i++)); do
    node=$name-$i
    read -r port cport lport link <"$(broker_dir "$node")/ports"
    write_properties "$(broker_dir "$node")" "$port" "$cport" "" "" "$voters" "$i"
    format_storage "$node" "$cid"
  done
  # A node is ready only once a quorum is: start them all, then wait for each.
  for ((i = 1; i <= count; i++)); do spawn_broker "$name-$i"; done
  for ((i = 1; i <= count; i++)); do
    bootstrap+="${bootstrap:+,}$(await_ready "$name-$i")" || die "cluster '$name' did not start"
  done
  printf '%s\n' "$bootstrap"
}

# ---------------------------------------------------------------- restart / stop / status

cmd_restart() {
  local name=${1:-} dir
  check_name "$name"
  dir=$(broker_dir "$name")
  [[ -f $dir/server.properties && -f $dir/ports && -f $dir/data/meta.properties ]] \
    || die "'$name' was never started (no formatted data in $dir); use: start $name"
  cmd_stop "$name"
  launch "$name"
}

# Stops NAME and deletes its directory (data, logs, reserved ports).
cmd_remove() {
  local name=${1:-}
  cmd_stop "$name"
  rm -rf -- "$(broker_dir "$name")"
  log "'$name' removed"
}

cmd_stop() {
  local name=${1:-} dir pid deadline
  check_name "$name"
  dir=$(broker_dir "$name")
  pid=$(running_pid "$name")
  if [[ -z $pid ]]; then
    log "'$name' is not running"
    rm -f "$dir/pid"
    return 0
  fi
  log "stopping '$name' (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while alive "$pid"; do
    if ((SECONDS >= deadline)); then
      log "'$name' still running after ${STOP_TIMEOUT}s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 10))
      while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
      break
    fi
    sleep 0.5
  done
  alive "$pid" && die "could not stop '$name' (pid $pid)"
  rm -f "$dir/pid"
  await_listeners_closed "$name"
  log "'$name' stopped"
}

# SIGKILL NAME at once (a crash); `restart NAME` brings it back with its data.
cmd_kill() {
  local name=${1:-} dir pid
  check_name "$name"
  dir=$(broker_dir "$name")
  pid=$(running_pid "$name")
  if [[ -z $pid ]]; then
    log "'$name' is not running"
    return 0
  fi
  kill -KILL "$pid" 2>/dev/null || true
  while alive "$pid"; do sleep 0.1; done
  rm -f "$dir/pid"
  await_listeners_closed "$name"
  log "'$name' killed (pid $pid)"
}

# Names of all broker dirs (those with a server.properties).
broker_names() {
  local d
  for d in "$KAFKA_LOCAL_HOME"/*/server.properties; do
    [[ -e $d ]] || continue
    d=${d%/server.properties}
    printf '%s\n' "${d##*/}"
  done
}

cmd_stop_all() {
  local name
  for name in $(broker_names); do cmd_stop "$name"; done
}

cmd_status() {
  local name pid bootstrap
  printf '%-16s %-8s %-22s %s\n' NAME PID BOOTSTRAP STATE
  for name in $(broker_names); do
    pid=$(running_pid "$name")
    bootstrap=$(cat "$(broker_dir "$name")/bootstrap" 2>/dev/null || echo -)
    if [[ -n $pid ]]; then
      printf '%-16s %-8s %-22s %s\n' "$name" "$pid" "$bootstrap" running
    else
      printf '%-16s %-8s %-22s %s\n' "$name" - "$bootstrap" stopped
    fi
  done
}

# ---------------------------------------------------------------- tools

# Run a Kafka main class with the fetched jars, e.g.
#   kafka-local.sh run org.apache.kafka.tools.TopicCommand --bootstrap-server ADDR --list
cmd_run() {
  [[ $# -ge 1 ]] || die "usage: run MAIN_CLASS [ARGS...]"
  cmd_fetch quiet
  exec "$JAVA" -Dlog4j2.configurationFile="$TOOLS_LOG4J_CONFIG" -cp "$LIBS/*" "$@"
}

# ---------------------------------------------------------------- main

case ${1:-} in
  fetch) cmd_fetch ;;
  start) cmd_start "${2:-}" ;;
  restart) cmd_restart "${2:-}" ;;
  start-cluster) cmd_start_cluster "${2:-}" "${3:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  kill) cmd_kill "${2:-}" ;;
  remove) cmd_remove "${2:-}" ;;
  stop-all) cmd_stop_all ;;
  status) cmd_status ;;
  link)
    check_name "${2:-}"
    [[ -s $(broker_dir "$2")/link ]] \
      || die "'$2' has no LINK listener: start it with KAFKA_LOCAL_LINK_PORT=<port a proxy will listen on>"
    cat "$(broker_dir "$2")/link"
    ;;
  run) shift; cmd_run "$@" ;;
  classpath) printf '%s/*\n' "$LIBS" ;;
  -h | --help | help) usage 0 ;;
  *) usage ;;
esac
