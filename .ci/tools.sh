#!/usr/bin/env bash
# Installs the external tools the test suite needs, idempotently (a second run takes
# about a second), and prints `export NAME=/abs/path` lines for them on stdout.
# All progress goes to stderr, so callers can do:
#
#     eval "$(bash .ci/tools.sh)"
#
# Tools:
#   - a Python venv at ${KAFKA_REPLICATOR_CACHE:-$HOME/.cache/kafka-replicator}/venv
#     with the pins of .ci/requirements.txt (moto[server], schemathesis, cfn-lint,
#     kubernetes-validate, hadolint); pip re-runs only when that file's sha256 changed.
#   - Debian's chromium (headless browser), via apt-get when not on PATH.
#   - kubectl (for its built-in kustomize), via apt-get when not on PATH.
#   - Debian's redis-server (shared rate-limit counts), via apt-get when not on PATH.
#   - newman (the Postman collection runner) pinned at 6.2.2, installed with npm under
#     ${KAFKA_REPLICATOR_CACHE:-$HOME/.cache/kafka-replicator}/node; npm runs only
#     when that version is not already there (Debian's nodejs and npm via apt-get when
#     node is not on PATH).
#   - cargo-machete (unused Cargo dependencies) pinned at 0.9.2, built with `cargo install
#     --locked` under ${KAFKA_REPLICATOR_CACHE:-$HOME/.cache/kafka-replicator}/cargo-tools
#     when that version is not already there.
#   - actionlint (GitHub Actions workflows) pinned at 1.7.12, built with `go install` under
#     ${KAFKA_REPLICATOR_CACHE:-$HOME/.cache/kafka-replicator}/go-tools when that version is
#     not already there.
#   - toxiproxy-server (a TCP proxy that adds latency and caps bandwidth, for the
#     benchmark's shaped link) pinned at 2.12.0, built with `go install` under the same
#     folder when that version is not already there.
#
# Exports: MOTO_SERVER, SCHEMATHESIS, CFN_LINT, KUBERNETES_VALIDATE, HADOLINT, CHROMIUM,
# NEWMAN, KUBECTL, CARGO_MACHETE, ACTIONLINT, TOXIPROXY_SERVER, REDIS_SERVER.
set -euo pipefail

# Keep stdout (fd 3) for the export lines only; everything else goes to stderr.
exec 3>&1 1>&2

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
requirements="$here/requirements.txt"
cache="${KAFKA_REPLICATOR_CACHE:-$HOME/.cache/kafka-replicator}"
venv="$cache/venv"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"
node_prefix="$cache/node"
newman_version="6.2.2"
cargo_tools="$cache/cargo-tools"
machete_version="0.9.2"
go_tools="$cache/go-tools"
actionlint_version="1.7.12"
toxiproxy_version="2.12.0"

log() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$cache"

# Two concurrent runs must not build the same venv at once.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/.tools.lock"
    flock 9
fi

# ---------------------------------------------------------------- Python venv
[[ -f "$requirements" ]] || die "missing $requirements"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

# A venv whose interpreter no longer runs (python upgraded or moved) is rebuilt.
if [[ -d "$venv" ]] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "venv at $venv is broken; recreating"
    rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
    log "creating venv $venv"
    "$python" -m venv "$venv"
    rm -f "$stamp"
fi

have="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$have" != "$want" ]]; then
    log "installing Python tools from $requirements (pip)"
    rm -f "$stamp"
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
        --quiet --requirement "$requirements"
    printf '%s\n' "$want" >"$stamp"
    log "Python tools installed"
else
    log "Python tools up to date ($venv)"
fi

tool() {
    local path="$venv/bin/$1"
    [[ -x "$path" ]] || die "$path missing after install (delete $venv and retry)"
    printf '%s' "$path"
}
moto_server="$(tool moto_server)"
schemathesis="$(tool schemathesis)"
cfn_lint="$(tool cfn-lint)"
kubernetes_validate="$(tool kubernetes-validate)"
hadolint="$(tool hadolint)"

# ---------------------------------------------------------------- chromium
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# A browser already given (CHROMIUM, e.g. a CI image's Chrome) is used as it is.
if [[ -n "${CHROMIUM:-}" && -x "${CHROMIUM}" ]]; then
    chromium="$CHROMIUM"
    log "chromium given ($chromium)"
elif ! chromium="$(command -v chromium)"; then
    log "installing chromium (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends chromium >/dev/null
    chromium="$(command -v chromium)" || die "chromium not on PATH after apt-get install"
    log "chromium installed"
else
    log "chromium present ($chromium)"
fi

# ---------------------------------------------------------------- kubectl
# Renders the kustomize overlays (kustomize is built into kubectl); no cluster is used.
if ! kubectl="$(command -v kubectl)"; then
    log "installing kubectl (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends kubectl >/dev/null \
        || die "kubectl is not installable from the configured apt sources"
    kubectl="$(command -v kubectl)" || die "kubectl not on PATH after apt-get install"
else
    log "kubectl present ($kubectl)"
fi

# ---------------------------------------------------------------- redis-server
# The rate-limit tests start their own, on a free port, with nothing saved to disk.
if ! redis_server="$(command -v redis-server)"; then
    log "installing redis-server (apt-get)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends redis-server >/dev/null \
        || die "redis-server is not installable from the configured apt sources"
    redis_server="$(command -v redis-server)" || die "redis-server not on PATH after apt-get install"
    log "redis-server installed"
else
    log "redis-server present ($redis_server)"
fi

# Debian's /usr/bin/chromium is a shell wrapper that prints noise; the binary it runs
# takes the same flags.
if [[ -x /usr/lib/chromium/chromium ]]; then
    chromium=/usr/lib/chromium/chromium
fi

# ---------------------------------------------------------------- newman
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    log "installing nodejs and npm (apt-get)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    command -v node >/dev/null 2>&1 || die "node not on PATH after apt-get install"
    command -v npm >/dev/null 2>&1 || die "npm not on PATH after apt-get install"
    log "nodejs and npm installed"
fi

newman="$node_prefix/node_modules/.bin/newman"
newman_package="$node_prefix/node_modules/newman/package.json"
# The installed version, or nothing when newman is absent or its package.json unreadable.
installed_newman() {
    [[ -f "$newman_package" ]] || return 0
    node -e 'process.stdout.write(String(require(process.argv[1]).version || ""))' \
        "$newman_package" 2>/dev/null || true
}
if [[ "$(installed_newman)" != "$newman_version" || ! -x "$newman" ]]; then
    log "installing newman $newman_version (npm) under $node_prefix"
    mkdir -p "$node_prefix"
    npm install --prefix "$node_prefix" --no-audit --no-fund --no-update-notifier \
        --loglevel=error "newman@$newman_version" >/dev/null
    [[ "$(installed_newman)" == "$newman_version" && -x "$newman" ]] \
        || die "newman $newman_version missing after npm install (delete $node_prefix and retry)"
    log "newman $newman_version installed"
else
    log "newman $newman_version up to date ($node_prefix)"
fi

# ---------------------------------------------------------------- cargo-machete
cargo_machete="$cargo_tools/bin/cargo-machete"
if [[ "$("$cargo_machete" --version 2>/dev/null || true)" != *"$machete_version"* ]]; then
    log "installing cargo-machete $machete_version (cargo install) under $cargo_tools"
    cargo install --locked --quiet --version "$machete_version" --root "$cargo_tools" \
        cargo-machete >&2
    [[ -x "$cargo_machete" ]] || die "cargo-machete missing after cargo install"
else
    log "cargo-machete $machete_version up to date ($cargo_tools)"
fi

# ---------------------------------------------------------------- actionlint
actionlint="$go_tools/bin/actionlint"
if [[ "$("$actionlint" -version 2>/dev/null | head -1 || true)" != "v$actionlint_version" ]]; then
    command -v go >/dev/null 2>&1 || die "go is needed to build actionlint (apt-get install golang-go)"
    log "installing actionlint $actionlint_version (go install) under $go_tools"
    GOBIN="$go_tools/bin" GOFLAGS=-mod=mod go install \
        "github.com/rhysd/actionlint/cmd/actionlint@v$actionlint_version" >&2
    [[ -x "$actionlint" ]] || die "actionlint missing after go install"
else
    log "actionlint $actionlint_version up to date ($go_tools)"
fi

# ---------------------------------------------------------------- toxiproxy
# `go install` names the binary after its package folder (cmd/server), and a module build
# reports its version as "git": a folder per version, and the binary must run.
toxiproxy_bin="$go_tools/toxiproxy-$toxiproxy_version"
toxiproxy_server="$toxiproxy_bin/toxiproxy-server"
if ! "$toxiproxy_server" -version >/dev/null 2>&1; then
    command -v go >/dev/null 2>&1 || die "go is needed to build toxiproxy (apt-get install golang-go)"
    log "installing toxiproxy $toxiproxy_version (go install) under $toxiproxy_bin"
    GOBIN="$toxiproxy_bin" GOFLAGS=-mod=mod go install \
        "github.com/Shopify/toxiproxy/v2/cmd/server@v$toxiproxy_version" >&2
    mv -f "$toxiproxy_bin/server" "$toxiproxy_server"
    [[ -x "$toxiproxy_server" ]] || die "toxiproxy-server missing after go install"
else
    log "toxiproxy $toxiproxy_version up to date ($toxiproxy_bin)"
fi

# ---------------------------------------------------------------- exports
{
    printf 'export MOTO_SERVER=%q\n' "$moto_server"
    printf 'export SCHEMATHESIS=%q\n' "$schemathesis"
    printf 'export CFN_LINT=%q\n' "$cfn_lint"
    printf 'export KUBERNETES_VALIDATE=%q\n' "$kubernetes_validate"
    printf 'export HADOLINT=%q\n' "$hadolint"
    printf 'export KUBECTL=%q\n' "$kubectl"
    printf 'export CHROMIUM=%q\n' "$chromium"
    printf 'export NEWMAN=%q\n' "$newman"
    printf 'export CARGO_MACHETE=%q\n' "$cargo_machete"
    printf 'export ACTIONLINT=%q\n' "$actionlint"
    printf 'export TOXIPROXY_SERVER=%q\n' "$toxiproxy_server"
    printf 'export REDIS_SERVER=%q\n' "$redis_server"
} >&3
