#!/usr/bin/env bash
# falconet executor image installer. Run as root on the image being baked
# (Packer runs it), or with ROOT=/some/dir (alias DESTDIR) to write the files
# into a throwaway root without touching the host: then package installation,
# user creation, npm and systemctl are skipped and printed instead.
#
# Environment (all optional):
#   ROOT / DESTDIR      throwaway root; unset, empty or "/" = this machine
#   FALCONET_PACKAGE    what `npm install -g` gets: a name, name@version, a
#                       tarball path or URL                  (default: falconet)
#   NODE_SOURCE         tarball | nodesource | debian | none (default: tarball)
#                         tarball:    official nodejs.org linux tarball, checked
#                                     against SHASUMS256.txt, unpacked in NODE_PREFIX
#                         nodesource: deb.nodesource.com node_${NODE_MAJOR}.x apt repo
#                         debian:     the distribution's nodejs+npm (Debian 12 has
#                                     Node 18: refused; Debian 13 has Node 20)
#                         none:       use the node already on PATH
#   NODE_MAJOR          required Node major version               (default: 20)
#   NODE_VERSION        tarball release directory, e.g. v20.20.2  (default: latest-v20.x)
#   NODE_DIST_URL       tarball mirror                 (default: https://nodejs.org/dist)
#   NODE_PREFIX         tarball install prefix                    (default: /usr/local)
#   NODE_REINSTALL=1    install Node even if a suitable node is already present
set -euo pipefail

SRC_DIR=$(cd "$(dirname "$0")" && pwd)
UNIT=falconet-executor.service
USER_NAME=falconet
STATE_DIR=/var/lib/falconet

FALCONET_PACKAGE=${FALCONET_PACKAGE:-falconet}
NODE_SOURCE=${NODE_SOURCE:-tarball}
NODE_MAJOR=${NODE_MAJOR:-20}
NODE_VERSION=${NODE_VERSION:-latest-v${NODE_MAJOR}.x}
NODE_DIST_URL=${NODE_DIST_URL:-https://nodejs.org/dist}
NODE_PREFIX=${NODE_PREFIX:-/usr/local}
NODE_REINSTALL=${NODE_REINSTALL:-0}

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

# --- throwaway-root mode -------------------------------------------------
ROOT=${ROOT:-}
DESTDIR=${DESTDIR:-}
if [ -n "$ROOT" ] && [ -n "$DESTDIR" ] && [ "$ROOT" != "$DESTDIR" ]; then
    die "ROOT ($ROOT) and DESTDIR ($DESTDIR) differ; set one of them"
fi
ROOT=${ROOT:-$DESTDIR}
ROOT=${ROOT%/}            # "/" becomes "", i.e. this machine
DRY=0
if [ -n "$ROOT" ]; then
    DRY=1
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
    say "ROOT=$ROOT: writing files under it; skipping packages, user, npm and systemctl"
elif [ "$(id -u)" -ne 0 ]; then
    die "must run as root (or set ROOT=/tmp/dir to install into a throwaway root)"
fi

# run CMD...: execute, or in ROOT mode only print.
run() {
    if [ "$DRY" = 1 ]; then
        say "would run: $*"
    else
        say "run: $*"
        "$@"
    fi
}

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        run apt-get update
        APT_UPDATED=1
    fi
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# node_major PATH-TO-NODE: prints the major version, or nothing.
node_major() {
    local v
    v=$("$1" --version 2>/dev/null) || return 0
    v=${v#v}
    printf '%s\n' "${v%%.*}"
}

# --- Node.js ---------------------------------------------------------------
install_node_tarball() {
    local arch tmp base line file dir
    case "$(uname -m)" in
        x86_64 | amd64) arch=x64 ;;
        aarch64 | arm64) arch=arm64 ;;
        *) die "no official Node tarball for $(uname -m); use NODE_SOURCE=nodesource" ;;
    esac
    base="$NODE_DIST_URL/$NODE_VERSION"
    if [ "$DRY" = 1 ]; then
        say "would download $base/SHASUMS256.txt, pick node-v${NODE_MAJOR}.*-linux-${arch}.tar.xz, verify its sha256 and unpack bin/ include/ lib/ share/ into $NODE_PREFIX"
        return 0
    fi
    local missing=()
    command -v curl >/dev/null || missing+=(curl ca-certificates)
    command -v xz >/dev/null || missing+=(xz-utils)
    if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064 # expand $tmp now
    trap "rm -rf '$tmp'" EXIT
    say "fetching $base/SHASUMS256.txt"
    curl -fsSL --retry 5 -o "$tmp/SHASUMS256.txt" "$base/SHASUMS256.txt"
    line=$(grep -E "  node-v${NODE_MAJOR}\.[0-9]+\.[0-9]+-linux-${arch}\.tar\.xz\$" "$tmp/SHASUMS256.txt" | head -n 1) ||
        die "no node-v${NODE_MAJOR} linux-${arch} tarball listed in $base/SHASUMS256.txt"
    file=${line##* }
    dir=${file%.tar.xz}
    say "fetching $base/$file"
    curl -fsSL --retry 5 -o "$tmp/$file" "$base/$file"
    (cd "$tmp" && printf '%s\n' "$line" | sha256sum -c -) || die "checksum mismatch for $file"
    mkdir -p "$tmp/x" "$NODE_PREFIX"
    tar -xJf "$tmp/$file" -C "$tmp/x" --no-same-owner
    cp -RPf "$tmp/x/$dir/bin" "$tmp/x/$dir/include" "$tmp/x/$dir/lib" "$tmp/x/$dir/share" "$NODE_PREFIX/"
    rm -rf "$tmp"
    trap - EXIT
    case ":$PATH:" in
        *":$NODE_PREFIX/bin:"*) ;;
        *) export PATH="$NODE_PREFIX/bin:$PATH" ;;
    esac
    say "installed $dir into $NODE_PREFIX"
}

install_node_nodesource() {
    local keyring=/etc/apt/keyrings/nodesource.gpg
    apt_install ca-certificates curl gnupg
    run install -d -m 0755 /etc/apt/keyrings
    if [ "$DRY" = 1 ]; then
        say "would write $keyring from https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key"
        say "would write /etc/apt/sources.list.d/nodesource.list (node_${NODE_MAJOR}.x nodistro main)"
    else
        curl -fsSL --retry 5 https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key |
            gpg --dearmor --yes -o "$keyring"
        chmod 0644 "$keyring"
        printf 'deb [signed-by=%s] https://deb.nodesource.com/node_%s.x nodistro main\n' \
            "$keyring" "$NODE_MAJOR" >/etc/apt/sources.list.d/nodesource.list
    fi
    APT_UPDATED=0
    apt_install nodejs
}

install_node() {
    local have=""
    if [ "$DRY" = 0 ] && [ "$NODE_REINSTALL" != 1 ] && command -v node >/dev/null; then
        have=$(node_major "$(command -v node)")
        if [ "$have" = "$NODE_MAJOR" ] && command -v npm >/dev/null; then
            say "node $(node --version) already installed at $(command -v node); skipping (NODE_REINSTALL=1 to force)"
            return 0
        fi
    fi
    say "installing Node.js ${NODE_MAJOR} (NODE_SOURCE=$NODE_SOURCE)"
    case "$NODE_SOURCE" in
        tarball) install_node_tarball ;;
        nodesource) install_node_nodesource ;;
        debian) apt_install nodejs npm ;;
        none) say "NODE_SOURCE=none: using the node already on PATH" ;;
        *) die "unknown NODE_SOURCE=$NODE_SOURCE (tarball, nodesource, debian, none)" ;;
    esac
    if [ "$DRY" = 0 ]; then
        hash -r
        command -v node >/dev/null || die "node is not on PATH ($PATH) after installation"
        have=$(node_major "$(command -v node)")
        [ "$have" = "$NODE_MAJOR" ] ||
            die "node $(node --version) at $(command -v node) is not Node ${NODE_MAJOR} (Debian 12 ships Node 18: use NODE_SOURCE=tarball or nodesource)"
        say "node $(node --version), npm $(npm --version)"
    fi
}

# --- user ------------------------------------------------------------------
create_user() {
    install -d -m 0755 "$ROOT/usr/lib/sysusers.d"
    printf '%s\nu %s - "falconet executor" %s /usr/sbin/nologin\n' \
        "# falconet executor system user (install.sh also creates it with useradd)" \
        "$USER_NAME" "$STATE_DIR" >"$ROOT/usr/lib/sysusers.d/falconet.conf"
    chmod 0644 "$ROOT/usr/lib/sysusers.d/falconet.conf"
    if [ "$DRY" = 1 ]; then
        say "would run: useradd --system --user-group --home-dir $STATE_DIR --no-create-home --shell /usr/sbin/nologin $USER_NAME"
        return 0
    fi
    if id "$USER_NAME" >/dev/null 2>&1; then
        say "user $USER_NAME exists"
    else
        run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "falconet executor" "$USER_NAME"
    fi
}

# --- falconet --------------------------------------------------------------
install_falconet() {
    run npm install -g --no-audit --no-fund --loglevel=warn "$FALCONET_PACKAGE"
    [ "$DRY" = 1 ] && return 0
    hash -r
    local bin
    bin=$(command -v falconet) || die "npm installed $FALCONET_PACKAGE but no falconet command is on PATH"
    case "$(dirname "$bin")" in
        /usr/local/sbin | /usr/local/bin | /usr/sbin | /usr/bin | /sbin | /bin) ;;
        *) die "falconet is at $bin, outside systemd's default PATH; the unit runs /usr/bin/env falconet" ;;
    esac
    say "falconet command: $bin"
}

# --- files -----------------------------------------------------------------
install_files() {
    local f
    for f in "$UNIT" falconet-exit-hook.sh executor.env; do
        [ -f "$SRC_DIR/$f" ] || die "missing $SRC_DIR/$f"
    done
    install -D -m 0644 "$SRC_DIR/$UNIT" "$ROOT/etc/systemd/system/$UNIT"
    install -D -m 0755 "$SRC_DIR/falconet-exit-hook.sh" "$ROOT/usr/local/lib/falconet/exit-hook.sh"
    if [ -f "$SRC_DIR/README.md" ]; then
        install -D -m 0644 "$SRC_DIR/README.md" "$ROOT/usr/local/share/doc/falconet/ami-README.md"
    fi
    say "installed $ROOT/etc/systemd/system/$UNIT and $ROOT/usr/local/lib/falconet/exit-hook.sh"

    install -d -m 0755 "$ROOT/etc/falconet"
    local env="$ROOT/etc/falconet/executor.env"
    if [ -e "$env" ]; then
        say "keeping existing $env"
    else
        install -m 0640 "$SRC_DIR/executor.env" "$env"
        say "installed $env"
    fi
    if [ "$DRY" = 1 ]; then
        say "would run: chown root:$USER_NAME $env"
    else
        chown "root:$USER_NAME" "$env"
        chmod 0640 "$env"
    fi
}

enable_unit() {
    if [ "$DRY" = 1 ]; then
        # What `systemctl enable` does for WantedBy=multi-user.target.
        install -d -m 0755 "$ROOT/etc/systemd/system/multi-user.target.wants"
        ln -sfn "/etc/systemd/system/$UNIT" "$ROOT/etc/systemd/system/multi-user.target.wants/$UNIT"
        say "would run: systemctl enable $UNIT (symlinked multi-user.target.wants/$UNIT under ROOT)"
        return 0
    fi
    if [ -d /run/systemd/system ]; then
        run systemctl daemon-reload
    fi
    run systemctl enable "$UNIT"
    say "not starting $UNIT now: it starts at boot, configured by user-data"
}

install_node
create_user
install_falconet
install_files
enable_unit
say "done"
