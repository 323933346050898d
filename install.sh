#!/usr/bin/env bash
# sohoa set-up: a developer machine (--dev), a device (--device) or a warehouse
# (--warehouse). Re-runnable: every step checks before it changes anything, and a
# failing step says which one and why.
set -Eeuo pipefail

usage() {
    cat <<'USAGE'
usage: install.sh --dev
       install.sh --device [--id DEVICE_ID] [--broker URL] [--warehouse-pub FILE]
                  [--bundle FILE --release-pub FILE]
       install.sh --warehouse [--id WAREHOUSE_ID] [--broker mqtts://HOST:PORT] [--index URL]

  --dev        system packages, then .venv with sohoa and its test tools (this checkout)
  --device     provision an appliance: packages, user sohoa (group scanner),
               /etc/sohoa/sohoa.toml, /var/lib/sohoa, device keys, services
  --warehouse  provision a provincial warehouse: packages, user, keys, CA, the
               warehouse's broker certificate, mosquitto's configuration, services
  --index URL  (warehouse) [warehouse] index, e.g. postgresql://user:password@host/db
  --bundle FILE       (device) install sohoa from a signed release bundle, with no
                      network (a USB stick); the system packages must be there already
  --release-pub FILE  (device) the province's keys/release.pub, pinned on the device
USAGE
}

step() { printf '==> %s\n' "$*"; }
fail() { printf 'error: step "%s" failed — %s\n' "$1" "$2" >&2; exit 1; }
on_error() {
    # anything that fails without its own message still ends with one error line, naming
    # the step (function) and the line it failed on
    local rc=$? i=1 line
    while [ "$i" -lt "${#FUNCNAME[@]}" ]; do
        case "${FUNCNAME[$i]}" in as_root|as_sohoa|has) i=$((i + 1)) ;; *) break ;; esac
    done
    line="${BASH_LINENO[$((i - 1))]}"
    fail "${FUNCNAME[$i]:-install.sh}" "line $line \`$(sed -n "${line}s/^ *//p" "${BASH_SOURCE[0]}")\` exited with $rc; fix what it printed above and run install.sh again"
}
trap on_error ERR

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONFIG=/etc/sohoa/sohoa.toml
HOME_DIR=/var/lib/sohoa
BROKER_DIR=/etc/sohoa/broker
MODE=""
DEVICE_ID=""
BROKER_URL=""
WAREHOUSE_PUB=""
INDEX_URL=""
BUNDLE=""
BUNDLE_VERSION=""
RELEASE_PUB=""
PREFIX=/opt/sohoa

value() {
    if [ $# -lt 2 ] || [ -z "$2" ]; then fail "arguments" "$1 needs a value; see install.sh --help"; fi
}

while [ $# -gt 0 ]; do
    case "$1" in
        --dev) MODE=dev ;;
        --device) MODE=device ;;
        --warehouse) MODE=warehouse ;;
        --id) value "$@"; DEVICE_ID="$2"; shift ;;
        --broker) value "$@"; BROKER_URL="$2"; shift ;;
        --warehouse-pub) value "$@"; WAREHOUSE_PUB="$2"; shift ;;
        --index) value "$@"; INDEX_URL="$2"; shift ;;
        --bundle) value "$@"; BUNDLE="$2"; shift ;;
        --release-pub) value "$@"; RELEASE_PUB="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) fail "arguments" "unknown option $1; see install.sh --help" ;;
    esac
    shift
done

check_args() {
    # refused before anything on the machine changes
    [ -n "$MODE" ] || { usage >&2; fail "arguments" "give --dev, --device or --warehouse"; }
    if [ -n "$DEVICE_ID" ] && ! [[ "$DEVICE_ID" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]]; then
        fail "arguments" "--id $DEVICE_ID is not a valid id; use letters, digits, '.', '_' or '-'"
    fi
    if [ -n "$BROKER_URL" ] && ! [[ "$BROKER_URL" =~ ^mqtts?://[^/[:space:]\"]+$ ]]; then
        fail "arguments" "--broker $BROKER_URL is not an MQTT URL; write mqtts://host:port"
    fi
    if [ -n "$WAREHOUSE_PUB" ]; then
        [ "$MODE" = device ] || fail "arguments" "--warehouse-pub is for --device"
        [ -f "$WAREHOUSE_PUB" ] || fail "warehouse-pub" "$WAREHOUSE_PUB does not exist; copy keys/warehouse.pub from the warehouse (USB stick) and give its path"
    fi
    if [ -n "$BUNDLE$RELEASE_PUB" ]; then
        [ "$MODE" = device ] || fail "arguments" "--bundle and --release-pub are for --device"
    fi
    if [ -n "$BUNDLE" ]; then
        [ -n "$RELEASE_PUB" ] || fail "arguments" "--bundle needs --release-pub FILE (the province's keys/release.pub) to check its signature"
        [ -f "$BUNDLE" ] || fail "bundle" "$BUNDLE does not exist; copy sohoa-<version>.bundle from the province (USB stick) and give its path"
    fi
    if [ -n "$RELEASE_PUB" ]; then
        [ -f "$RELEASE_PUB" ] || fail "release-pub" "$RELEASE_PUB does not exist; copy keys/release.pub from the province and give its path"
    fi
    if [ -n "$INDEX_URL" ]; then
        [ "$MODE" = warehouse ] || fail "arguments" "--index is for --warehouse"
        [[ "$INDEX_URL" =~ ^[[:print:]]+$ ]] || fail "arguments" "--index must be one printable line"
    fi
    return 0
}
check_args

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

as_root() {
    # a failure returns, so that an unexpected one is reported with the caller's command line
    if [ "$(id -u)" -eq 0 ]; then "$@" || return $?
    elif command -v sudo >/dev/null; then sudo "$@" || return $?
    else fail "root" "run install.sh as root or install sudo"
    fi
}

as_sohoa() {
    # every sohoa command of a device or warehouse runs as the service user, from /
    as_root runuser -u sohoa -- env -C / SOHOA_HOME="$HOME_DIR" SOHOA_CONFIG="$CONFIG" \
        /usr/local/bin/sohoa "$@"
}

has() { as_root test -e "$1"; }

SYSTEM_PACKAGES=(
    python3 python3-venv python3-dev build-essential pkg-config
    libsane1 libsane-dev sane-utils
    libzbar0 libzbar-dev
    libtiff6
    python3-cryptography
    mosquitto mosquitto-clients
    fonts-dejavu-core ca-certificates
)
# the warehouse's OCR stage: OCRmyPDF drives Tesseract with Vietnamese, Ghostscript rasterizes
OCR_PACKAGES=(tesseract-ocr tesseract-ocr-vie ghostscript)

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
    # Another apt (unattended-upgrades on a fresh Pi, a second install) may hold
    # the lock: wait for it rather than fail.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq \
        || fail "apt-get update" "check the network and /etc/apt/sources.list"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" \
        || fail "apt-get install" "a package could not be installed; read apt's message above"
}

make_venv() {
    # $3 = "editable" for a developer checkout; a device or warehouse gets a real install,
    # so that deleting or moving the clone never breaks the services
    local venv="$1" extras="$2" editable="${3:-}"
    local py run=()
    if [ "$editable" = editable ]; then
        py="$(command -v python3.11 || command -v python3)" || fail "python" "python3 is not installed"
    else
        # Debian's python3: the sohoa user must be able to run it (not pyenv's under /root)
        py=/usr/bin/python3 run=(as_root)
        if has "$venv/pyvenv.cfg" && ! grep -qx 'home = /usr/bin' "$venv/pyvenv.cfg"; then
            step "replacing $venv (made with another Python than /usr/bin/python3)"
            as_root rm -rf "$venv"
        fi
    fi
    [ -x "$py" ] || fail "python" "$py is missing; install python3"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || fail "python" "Python 3.11 or newer is required, found $("$py" --version)"
    if [ ! -x "$venv/bin/python" ]; then
        step "creating virtual environment $venv"
        "${run[@]}" "$py" -m venv "$venv" || fail "venv" "python3-venv is missing or $venv is not writable"
    fi
    step "installing sohoa into $venv"
    if [ -n "$BUNDLE" ]; then
        install_bundle "$venv"
        return
    fi
    "${run[@]}" "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null \
        || fail "pip upgrade" "PyPI unreachable? check the network"
    if [ "$editable" = editable ]; then
        "$venv/bin/python" -m pip install -q --upgrade -e "$REPO$extras" \
            || fail "pip install" "a Python package failed to build; read pip's message above"
    else
        install_wheel "$venv" "$extras"
    fi
}

install_wheel() {
    # a wheel built from a clean copy of the sources: nothing in the venv points at this
    # checkout, no stale build/ folder leaks old modules in, the checkout stays unchanged
    local venv="$1" extras="$2" wheels
    mkdir -p "$WORK/src" "$WORK/dist"
    tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
        --exclude=./tests --exclude='*.egg-info' --exclude=__pycache__ --exclude='./.*_cache' \
        -cf - . | tar -C "$WORK/src" -xf - || fail "copy sources" "cannot read $REPO"
    "$venv/bin/python" -m pip wheel -q --no-deps -w "$WORK/dist" "$WORK/src" >"$WORK/wheel.log" 2>&1 \
        || { cat "$WORK/wheel.log" >&2; fail "build wheel" "read the build log above"; }
    wheels=("$WORK"/dist/sohoa-*.whl)
    as_root "$venv/bin/python" -m pip install -q "${wheels[0]}$extras" \
        || fail "pip install" "a Python package failed to build; read pip's message above"
    # the same version number may carry new code: replace sohoa's own files every time
    as_root "$venv/bin/python" -m pip install -q --no-deps --force-reinstall "${wheels[0]}" \
        || fail "pip install" "could not replace sohoa in $venv"
}

check_bundle() {
    # a signed release bundle (sohoa release build), checked by Debian's python3 and
    # python3-cryptography before anything from it runs: the release key's signature over
    # the manifest, then every wheel's SHA-256 against it; sets BUNDLE_VERSION
    [ -z "$BUNDLE_VERSION" ] || return 0
    mkdir -p "$WORK/bundle"
    tar -C "$WORK/bundle" -xf "$BUNDLE" manifest.json manifest.sig wheels 2>/dev/null \
        || fail "bundle" "$BUNDLE is not a sohoa release bundle; copy it again from the province"
    BUNDLE_VERSION="$(/usr/bin/python3 - "$WORK/bundle" "$RELEASE_PUB" 2>"$WORK/bundle.err" <<'PY'
import base64, hashlib, json, pathlib, sys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
root, pub = pathlib.Path(sys.argv[1]), json.loads(pathlib.Path(sys.argv[2]).read_text())
if pub.get("format") != "sohoa-release-pub/1":
    sys.exit(f"{sys.argv[2]} is not a release public key (keys/release.pub)")
data = (root / "manifest.json").read_bytes()
sig = json.loads((root / "manifest.sig").read_text())
if sig.get("kid") != pub.get("kid"):
    sys.exit(f"bad signature: the bundle is signed by release key {str(sig.get('kid'))[:16]}, this device pins {pub.get('kid')}")
try:
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(pub["public"]))
    key.verify(base64.b64decode(sig["sig"], validate=True), data)
except (InvalidSignature, KeyError, ValueError):
    sys.exit("bad signature: the manifest is not signed by the pinned release key")
manifest = json.loads(data)
for entry in manifest["files"]:
    body = (root / entry["name"]).read_bytes()
    if hashlib.sha256(body).hexdigest() != entry["sha256"]:
        sys.exit(f"tampered wheel: {entry['name']} does not match its hash")
print(manifest["version"])
PY
)" || fail "bundle" "$(tail -n 1 "$WORK/bundle.err"): get the bundle again from the province; never install an unsigned release"
    [[ "$BUNDLE_VERSION" =~ ^[0-9]+(\.[0-9]+){0,3}$ ]] || fail "bundle" "the bundle names no release version"
}

install_bundle() {
    # the checked bundle's wheels, with pip and no network
    local venv="$1"
    check_bundle
    as_root "$venv/bin/python" -m pip install -q --no-index --find-links "$WORK/bundle/wheels" \
        "sohoa==$BUNDLE_VERSION" || fail "pip install" "the bundle lacks a wheel for this machine; build it for this platform"
}

checkout_version() {
    sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml" | head -n 1
}

install_release() {
    # a device runs releases/<version> through /opt/sohoa/current (README, "Releases"):
    # the release this install brings, unless the device already runs a newer one (an
    # update over MQTT): a re-run to change the configuration never downgrades it
    local version current venv
    if [ -n "$BUNDLE" ]; then check_bundle; version="$BUNDLE_VERSION"; else version="$(checkout_version)"; fi
    [ -n "$version" ] || fail "version" "cannot read the version from $REPO/pyproject.toml"
    current="$(readlink "$PREFIX/current" 2>/dev/null || true)"
    current="${current##*/}"
    if [ -n "$current" ] && [ "$current" != "$version" ] \
        && [ "$(printf '%s\n%s\n' "$current" "$version" | sort -V | tail -n 1)" = "$current" ]; then
        step "keeping release $current (newer than $version); install an older one with sohoa release install --allow-downgrade"
        return 0
    fi
    venv="$PREFIX/releases/$version"
    as_root install -d -m 0755 "$PREFIX/releases"
    make_venv "$venv" ""
    as_root env -C / SOHOA_HOME="$HOME_DIR" "$venv/bin/sohoa" release adopt --prefix "$PREFIX" >/dev/null \
        || fail "release adopt" "cannot switch $PREFIX/current to $version; read the message above"
    if has "$PREFIX/venv"; then
        step "removing $PREFIX/venv (the device runs $PREFIX/current now)"
        as_root rm -rf "$PREFIX/venv"
    fi
}

dev() {
    # softhsm2 and opensc: a real PKCS#11 token for the signing tests; poppler-utils: pdfsig,
    # the second, independent signature validator
    install_packages "${SYSTEM_PACKAGES[@]}" "${OCR_PACKAGES[@]}" \
        shellcheck systemd postgresql chromium chromium-driver prometheus \
        softhsm2 opensc poppler-utils
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
    if [ "$MODE" = warehouse ]; then install_packages "${OCR_PACKAGES[@]}"; fi
    getent group scanner >/dev/null || as_root groupadd --system scanner \
        || fail "groupadd" "could not create the scanner group"
    if ! id sohoa >/dev/null 2>&1; then
        step "creating user sohoa"
        as_root useradd --system --home-dir "$HOME_DIR" --shell /usr/sbin/nologin \
            --groups scanner sohoa || fail "useradd" "could not create the sohoa user"
    fi
    as_root install -d -m 0755 /opt/sohoa /etc/sohoa
    as_root install -d -m 0700 -o sohoa -g sohoa "$HOME_DIR" "$HOME_DIR/keys" "$HOME_DIR/release"
    local sohoa=/opt/sohoa/venv/bin/sohoa version
    if [ "$MODE" = device ]; then
        install_release
        sohoa="$PREFIX/current/bin/sohoa"
    else
        make_venv /opt/sohoa/venv "$(extras)"
    fi
    as_root ln -sfn "$sohoa" /usr/local/bin/sohoa
    version="$(env -C / "$sohoa" --version)" \
        || fail "sohoa --version" "the installed sohoa does not start; read its message above"
    printf '%s\n' "$version" | as_root tee /opt/sohoa/VERSION >/dev/null
    step "installed $version (/opt/sohoa/VERSION)"
}

extras() {
    # a warehouse runs OCR (OCRmyPDF, pikepdf) and, when its index is PostgreSQL, needs psycopg
    local index="$INDEX_URL"
    [ "$MODE" = warehouse ] || return 0
    if [ -z "$index" ] && has "$CONFIG"; then index="$(as_root cat "$CONFIG" | current_key - warehouse index)"; fi
    case "$index" in
        postgresql://*|postgres://*) printf '[ocr,postgresql]' ;;
        *) printf '[ocr]' ;;
    esac
}

toml_string() {
    # a TOML basic string's contents: backslash and double quote escaped
    local text="${1//\\/\\\\}"
    printf '%s' "${text//\"/\\\"}"
}

set_key() {
    # set_key FILE SECTION KEY VALUE: KEY's line inside [SECTION] (added at the end of the
    # section when missing); every other line, comment and hand edit stays as it is.
    # awk takes the value from the environment, so '|', '&', '\' or '/' in it are plain text.
    local file="$1" tmp="$WORK/set_key.toml"
    SECTION="$2" KEY="$3" VALUE="$(toml_string "$4")" awk '
        BEGIN { line = ENVIRON["KEY"] " = \"" ENVIRON["VALUE"] "\""; head = "[" ENVIRON["SECTION"] "]" }
        function flush() { for (; blank > 0; blank--) print "" }
        /^\[/ { if (inside && !done) { print line; done = 1 } flush(); inside = ($0 == head) }
        inside && /^[[:space:]]*$/ { blank++; next }
        inside && $0 ~ ("^" ENVIRON["KEY"] "[[:space:]]*=") { flush(); if (!done) print line; done = 1; next }
        { flush(); print }
        END { if (!done) { if (!inside) print "\n" head; print line } flush() }
    ' "$file" >"$tmp" || fail "set $2.$3" "cannot read $file"
    # same mode and owner, swapped in whole
    if ! { as_root cp "$tmp" "$file.new" && as_root chmod --reference="$file" "$file.new" \
        && as_root chown --reference="$file" "$file.new" && as_root mv -f "$file.new" "$file"; }; then
        fail "set $2.$3" "cannot write $file"
    fi
}

current_key() {
    sed -n "/^\[$2\]/,/^\[/ s|^$3[[:space:]]*=[[:space:]]*\"\(.*\)\".*|\1|p" "$1" | head -n 1
}

write_config() {
    local target="$CONFIG"
    if [ ! -f "$target" ]; then
        step "writing $target"
        as_root install -m 0644 "$REPO/config/sohoa.toml" "$target"
        set_key "$target" device id "${DEVICE_ID:-$(default_id)}"
        set_key "$target" broker url "${BROKER_URL:-mqtt://127.0.0.1:1883}"
        tls_paths "$target"
    else
        step "keeping $target; updating only what was given"
        [ -z "$DEVICE_ID" ] || change_id "$target"
        if [ -n "$BROKER_URL" ] && [ "$(current_key "$target" broker url)" != "$BROKER_URL" ]; then
            set_key "$target" broker url "$BROKER_URL"
            tls_paths "$target"
            step "broker url set to $BROKER_URL"
        fi
    fi
    [ -z "$INDEX_URL" ] || index_url "$target"
    [ "$MODE" = device ] || return 0
    detect_scanner "$target"
    hot_folder "$target"
}

change_id() {
    local target="$1" was
    was="$(current_key "$target" device id)"
    [ "$was" != "$DEVICE_ID" ] || return 0
    set_key "$target" device id "$DEVICE_ID"
    if [ "$MODE" != warehouse ]; then
        step "device id changed from $was to $DEVICE_ID: enrol the device again at the province (sohoa enroll request)"
        return 0
    fi
    if [ "$(current_key "$target" broker cert)" = "keys/$was.crt" ]; then
        set_key "$target" broker cert "keys/$DEVICE_ID.crt"
        set_key "$target" broker key "keys/$DEVICE_ID.key"
    fi
    step "warehouse id changed from $was to $DEVICE_ID: its broker certificate is issued next"
}

index_url() {
    # the URL may carry the database password: the file stops being world-readable
    local target="$1"
    [ "$(current_key "$target" warehouse index)" != "$(toml_string "$INDEX_URL")" ] || return 0
    set_key "$target" warehouse index "$INDEX_URL"
    as_root chown root:sohoa "$target"
    as_root chmod 0640 "$target"
    step "[warehouse] index set; $target is now mode 0640 root:sohoa (the URL may hold a password)"
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

hot_folder() {
    # owner-only: the files are page images in clear. A network scanner's share (Samba,
    # FTP) writes there as sohoa (e.g. Samba's "force user = sohoa"), not through a group.
    local dir
    dir="$(current_key "$1" capture hot_folder)"
    [ -n "$dir" ] || return 0
    case "$dir" in /*) ;; *) dir="$HOME_DIR/$dir" ;; esac
    if ! has "$dir"; then
        as_root install -d -m 0700 -o sohoa -g sohoa "$dir" || fail "hot folder" "cannot create $dir"
        step "hot folder $dir created (owner sohoa, mode 0700)"
    elif [ "$(as_root stat -c %U "$dir")" != sohoa ]; then
        step "hot folder $dir is not owned by sohoa: sohoa-agent cannot take files from it (chown sohoa $dir)"
    fi
    case "$dir/" in
        "$HOME_DIR"/*) ;;
        *) step "hot folder $dir is outside $HOME_DIR: give sohoa-agent ReadWritePaths=$dir (systemctl edit sohoa-agent)" ;;
    esac
}

install_units() {
    # every unit is copied; those with an [Install] section are enabled and started
    local unit enable=()
    for unit in "$@"; do
        as_root install -m 0644 "$REPO/systemd/$unit" "/etc/systemd/system/$unit" \
            || fail "install units" "cannot copy $REPO/systemd/$unit to /etc/systemd/system"
        if grep -q '^\[Install\]' "$REPO/systemd/$unit"; then enable+=("$unit"); fi
    done
    if [ -d /run/systemd/system ]; then
        as_root systemctl daemon-reload || fail "systemctl daemon-reload" "see the message above"
        as_root systemctl enable --now "${enable[@]}" \
            || fail "systemctl" "a unit did not start; see journalctl -u ${1%.*}"
    else
        step "systemd is not running here: units installed, not started"
    fi
}

device() {
    provision_common
    write_config
    if ! has "$HOME_DIR/keys/device.key"; then
        step "creating device keys"
        as_sohoa keys init || fail "keys init" "could not create $HOME_DIR/keys/device.key"
    fi
    if [ -n "$WAREHOUSE_PUB" ]; then
        as_root install -m 0644 -o sohoa -g sohoa "$WAREHOUSE_PUB" "$HOME_DIR/keys/warehouse.pub"
    fi
    if [ -n "$RELEASE_PUB" ]; then
        # the sync service's copy (it takes offers only with a pinned key) and root's, which
        # sohoa-release-switch checks bundles against (the sohoa user cannot change it)
        as_root install -m 0644 -o sohoa -g sohoa "$RELEASE_PUB" "$HOME_DIR/keys/release.pub"
        as_root install -m 0644 -o root -g root "$RELEASE_PUB" /etc/sohoa/release.pub
    fi
    has "$HOME_DIR/keys/warehouse.pub" || step "copy the warehouse's warehouse.pub to $HOME_DIR/keys/ (or pass --warehouse-pub FILE), then enrol keys/device.pub at the warehouse"
    install_units sohoa-agent.service sohoa-sync.service sohoa-release-switch.path sohoa-release-switch.service
    /usr/local/bin/sohoa doctor || true
}

warehouse_pki() {
    # the provincial CA (once) and the warehouse's own broker certificate
    local id
    id="$(current_key "$CONFIG" device id)"
    if ! has "$HOME_DIR/keys/ca.crt"; then
        step "creating the provincial CA"
        as_sohoa pki init || fail "pki init" "could not create $HOME_DIR/keys/ca.crt"
    fi
    if ! has "$HOME_DIR/keys/$id.crt"; then
        step "issuing the warehouse's broker certificate keys/$id.crt"
        as_sohoa pki issue "$id" --role warehouse --out "$HOME_DIR/keys" \
            || fail "pki issue $id" "could not issue $HOME_DIR/keys/$id.crt"
    fi
    # the fleet service's own read-only identity (before the broker ACL is written)
    if ! has "$HOME_DIR/keys/fleet-1.crt"; then
        step "issuing the fleet service's broker certificate keys/fleet-1.crt"
        as_sohoa pki issue fleet-1 --role fleet --out "$HOME_DIR/keys" \
            || fail "pki issue fleet-1" "could not issue $HOME_DIR/keys/fleet-1.crt"
    fi
    set_key "$CONFIG" fleet cert "keys/fleet-1.crt"
    set_key "$CONFIG" fleet key "keys/fleet-1.key"
}

broker_config() {
    # mosquitto: Debian's /etc/mosquitto/mosquitto.conf (user, persistence, logs) includes
    # conf.d/sohoa.conf; the files it names live in $BROKER_DIR, which the warehouse
    # service rewrites (enrol.passwd, enrol.acl) and mosquitto reads through its group
    local url hostport host port=8883
    url="$(current_key "$CONFIG" broker url)"
    case "$url" in
        mqtts://*) ;;
        *) step "broker url $url is not mqtts://: no broker configuration installed (--broker mqtts://HOST:8883)"; return 0 ;;
    esac
    hostport="${url#mqtts://}"
    if [[ "$hostport" =~ ^\[([^]]+)\](:([0-9]+))?$ ]] || [[ "$hostport" =~ ^([^:]+)(:([0-9]+))?$ ]]; then
        host="${BASH_REMATCH[1]}"
        port="${BASH_REMATCH[3]:-$port}"
    else
        fail "broker url" "cannot read host and port from $url; write mqtts://host:port"
    fi
    as_root install -d -m 2750 -o sohoa -g mosquitto "$BROKER_DIR" \
        || fail "broker folder" "cannot create $BROKER_DIR (is mosquitto installed?)"
    step "writing the broker configuration ($BROKER_DIR, TLS port $port, enrolment port $((port + 1)))"
    as_sohoa broker config --out "$BROKER_DIR" --port "$port" --host "$host" --system \
        || fail "broker config" "see the message above"
    # a root-owned copy: the sohoa user may change the data mosquitto reads, never its options
    as_root install -m 0644 -o root -g root "$BROKER_DIR/mosquitto.conf" /etc/mosquitto/conf.d/sohoa.conf
    if [ -d /run/systemd/system ]; then
        as_root systemctl restart mosquitto.service \
            || fail "restart mosquitto" "see journalctl -u mosquitto and /etc/mosquitto/conf.d/sohoa.conf"
    else
        step "systemd is not running here: restart mosquitto (mosquitto -c /etc/mosquitto/mosquitto.conf) to use it"
    fi
}

warehouse() {
    provision_common
    write_config
    if ! has "$HOME_DIR/keys/warehouse.key"; then
        step "creating warehouse keys"
        as_sohoa keys init --warehouse || fail "keys init --warehouse" "could not create the warehouse keys"
    fi
    warehouse_pki
    broker_config
    install_units sohoa-warehouse.service sohoa-fleet.service sohoa-broker-reload.path sohoa-broker-reload.service
}

"$MODE"
