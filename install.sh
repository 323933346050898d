#!/usr/bin/env bash
# sohoa set-up: a developer machine (--dev), a device (--device) or a warehouse
# (--warehouse). Re-runnable: every step checks before it changes anything, and a
# failing step says which one and why.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: install.sh --dev | --device [--id DEVICE_ID] [--broker URL] [--warehouse-pub FILE]
                  | --warehouse [--broker URL]

  --dev        system packages, then .venv with sohoa and its test tools (this checkout)
  --device     provision an appliance: packages, user sohoa (group scanner),
               /etc/sohoa/sohoa.toml, /var/lib/sohoa, device keys, services
  --warehouse  provision a provincial warehouse: packages, user, keys, service
USAGE
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODE=""
DEVICE_ID=""
BROKER_URL=""
WAREHOUSE_PUB=""

while [ $# -gt 0 ]; do
    case "$1" in
        --dev) MODE=dev ;;
        --device) MODE=device ;;
        --warehouse) MODE=warehouse ;;
        --id) DEVICE_ID="${2:?--id needs a value}"; shift ;;
        --broker) BROKER_URL="${2:?--broker needs a value}"; shift ;;
        --warehouse-pub) WAREHOUSE_PUB="${2:?--warehouse-pub needs a file}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown option $1 — see install.sh --help" >&2; exit 1 ;;
    esac
    shift
done
[ -n "$MODE" ] || { usage >&2; exit 1; }

step() { printf '==> %s\n' "$*"; }
fail() { printf 'error: step "%s" failed — %s\n' "$1" "$2" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        fail "root" "run install.sh as root or install sudo"
    fi
}

SYSTEM_PACKAGES=(
    python3 python3-venv python3-dev build-essential pkg-config
    libsane1 libsane-dev sane-utils
    libzbar0 libzbar-dev
    mosquitto mosquitto-clients
    fonts-dejavu-core ca-certificates
)

install_packages() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        step "system packages already installed"
        return
    fi
    step "installing system packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        || fail "apt-get update" "check the network and /etc/apt/sources.list"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        || fail "apt-get install" "a package could not be installed; read apt's message above"
}

make_venv() {
    # $3 = "editable" for a developer checkout; a device or warehouse gets a real install,
    # so that deleting or moving the clone never breaks the services
    local venv="$1" extras="$2" editable="${3:-}"
    local py
    py="$(command -v python3.11 || command -v python3)" || fail "python" "python3 is not installed"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || fail "python" "Python 3.11 or newer is required, found $("$py" --version)"
    if [ ! -x "$venv/bin/python" ]; then
        step "creating virtual environment $venv"
        "$py" -m venv "$venv" || fail "venv" "python3-venv is missing or $venv is not writable"
    fi
    step "installing sohoa into $venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null \
        || fail "pip upgrade" "PyPI unreachable? check the network"
    local spec=("$REPO$extras") run=(as_root)
    [ "$editable" = editable ] && spec=(-e "$REPO$extras") && run=()
    "${run[@]}" "$venv/bin/python" -m pip install -q --upgrade "${spec[@]}" \
        || fail "pip install" "a Python package failed to build; read pip's message above"
}

dev() {
    install_packages "${SYSTEM_PACKAGES[@]}" shellcheck systemd postgresql
    make_venv "$REPO/.venv" "[test]" editable
    step "checking the real parts"
    "$REPO/.venv/bin/python" -c 'import sane, zbar, paho.mqtt, cryptography.hazmat.primitives.hpke' \
        || fail "imports" "a native library is missing; re-run install.sh --dev"
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] \
        || fail "mosquitto" "mosquitto is not installed"
    step "ready: .venv/bin/sohoa demo   |   .venv/bin/pytest"
}

provision_common() {
    install_packages "${SYSTEM_PACKAGES[@]}"
    getent group scanner >/dev/null || as_root groupadd --system scanner
    if ! id sohoa >/dev/null 2>&1; then
        step "creating user sohoa"
        as_root useradd --system --home-dir /var/lib/sohoa --shell /usr/sbin/nologin \
            --groups scanner sohoa || fail "useradd" "could not create the sohoa user"
    fi
    as_root install -d -m 0755 /opt/sohoa /etc/sohoa
    as_root install -d -m 0700 -o sohoa -g sohoa /var/lib/sohoa /var/lib/sohoa/keys
    make_venv /opt/sohoa/venv ""
    as_root ln -sf /opt/sohoa/venv/bin/sohoa /usr/local/bin/sohoa
    /opt/sohoa/venv/bin/sohoa --version | as_root tee /opt/sohoa/VERSION >/dev/null
}

set_key() {
    # set_key FILE SECTION KEY VALUE: replace KEY's line inside [SECTION], keep the rest
    as_root sed -i "/^\[$2\]/,/^\[/ s|^$3 = .*|$3 = \"$4\"|" "$1"
}

current_key() {
    sed -n "/^\[$2\]/,/^\[/ s|^$3 = \"\(.*\)\"|\1|p" "$1" | head -n 1
}

write_config() {
    local target=/etc/sohoa/sohoa.toml
    if [ ! -f "$target" ]; then
        step "writing $target"
        as_root install -m 0644 "$REPO/config/sohoa.toml" "$target"
        set_key "$target" device id "${DEVICE_ID:-$(default_id)}"
        set_key "$target" broker url "${BROKER_URL:-mqtt://127.0.0.1:1883}"
        tls_paths "$target"
    else
        step "keeping $target; updating only what was given"
        local was
        if [ -n "$DEVICE_ID" ] && [ "$(current_key "$target" device id)" != "$DEVICE_ID" ]; then
            was="$(current_key "$target" device id)"
            set_key "$target" device id "$DEVICE_ID"
            step "device id changed from $was to $DEVICE_ID: enrol the device again at the province"
        fi
        if [ -n "$BROKER_URL" ] && [ "$(current_key "$target" broker url)" != "$BROKER_URL" ]; then
            set_key "$target" broker url "$BROKER_URL"
            tls_paths "$target"
            step "broker url set to $BROKER_URL"
        fi
    fi
    [ "$MODE" = device ] && detect_scanner "$target"
    return 0
}

default_id() {
    if [ "$MODE" = warehouse ]; then echo wh-1; else hostname -s; fi
}

tls_paths() {
    # an mqtts:// broker: the files enrolment (device) or `sohoa pki issue` (warehouse) writes
    local target="$1" name
    case "$(current_key "$target" broker url)" in mqtts://*) ;; *) return 0 ;; esac
    [ -z "$(current_key "$target" broker ca)" ] || return 0
    name="broker"
    [ "$MODE" = warehouse ] && name="$(current_key "$target" device id)"
    set_key "$target" broker ca "keys/ca.crt"
    set_key "$target" broker cert "keys/$name.crt"
    set_key "$target" broker key "keys/$name.key"
}

detect_scanner() {
    local target="$1" found
    [ -z "$(current_key "$target" capture scanner_device)" ] || return 0
    command -v scanimage >/dev/null || return 0
    found="$(scanimage -f '%d%n' 2>/dev/null | grep -v '^test:' | head -n 1 || true)"
    if [ -n "$found" ]; then
        set_key "$target" capture scanner_device "$found"
        step "scanner found: $found ([capture] scanner_device)"
    else
        step "no scanner found: plug it in, then set [capture] scanner_device (scanimage -L lists it)"
    fi
}

install_units() {
    local unit
    for unit in "$@"; do
        as_root install -m 0644 "$REPO/systemd/$unit" "/etc/systemd/system/$unit"
    done
    if [ -d /run/systemd/system ]; then
        as_root systemctl daemon-reload
        as_root systemctl enable --now "$@" || fail "systemctl" "a service did not start; see journalctl -u ${1%.service}"
    else
        step "systemd is not running here: units installed, not started"
    fi
}

device() {
    provision_common
    write_config
    if [ ! -f /var/lib/sohoa/keys/device.key ]; then
        step "creating device keys"
        as_root runuser -u sohoa -- env SOHOA_HOME=/var/lib/sohoa /usr/local/bin/sohoa keys init \
            || fail "keys init" "could not create /var/lib/sohoa/keys/device.key"
    fi
    if [ -n "$WAREHOUSE_PUB" ]; then
        [ -f "$WAREHOUSE_PUB" ] || fail "warehouse-pub" "$WAREHOUSE_PUB does not exist; copy keys/warehouse.pub from the warehouse (USB stick) and give its path"
        as_root install -m 0644 -o sohoa -g sohoa "$WAREHOUSE_PUB" /var/lib/sohoa/keys/warehouse.pub
    fi
    [ -f /var/lib/sohoa/keys/warehouse.pub ] || step "copy the warehouse's warehouse.pub to /var/lib/sohoa/keys/ (or pass --warehouse-pub FILE), then enrol keys/device.pub at the warehouse"
    install_units sohoa-agent.service sohoa-sync.service
    /usr/local/bin/sohoa doctor || true
}

warehouse() {
    provision_common
    write_config
    if [ ! -f /var/lib/sohoa/keys/warehouse.key ]; then
        step "creating warehouse keys"
        as_root runuser -u sohoa -- env SOHOA_HOME=/var/lib/sohoa /usr/local/bin/sohoa keys init --warehouse \
            || fail "keys init --warehouse" "could not create the warehouse keys"
    fi
    install_units sohoa-warehouse.service
}

"$MODE"
