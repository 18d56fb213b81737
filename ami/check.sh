#!/usr/bin/env bash
# Offline CI check of ami/: packer template, shell scripts, systemd unit,
# cloud-init example, exit hook, and install.sh into a throwaway root.
# Runs as root or not. Missing tools are installed with apt only when running
# as root (CHECK_APT_INSTALL=0 disables that); otherwise they are reported as
# "<tool> not available: skipped". Exits non-zero if any check fails.
set -uo pipefail

AMI_DIR=$(cd "$(dirname "$0")" && pwd)
CHECK_APT_INSTALL=${CHECK_APT_INSTALL:-1}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/falconet-ami-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

SUMMARY=()
FAILED=0
pass() { SUMMARY+=("PASS  $1"); printf '%s: ok\n' "$1"; }
fail() { SUMMARY+=("FAIL  $1: $2"); printf '%s: FAILED: %s\n' "$1" "$2"; FAILED=1; }
skip() { SUMMARY+=("SKIP  $1: $2"); printf '%s: skipped (%s)\n' "$1" "$2"; }
section() { printf '\n== %s\n' "$1"; }

# ensure_tool COMMAND APT-PACKAGE: 0 if COMMAND is (or could be made) available.
APT_READY=""
ensure_tool() {
    command -v "$1" >/dev/null 2>&1 && return 0
    [ "$CHECK_APT_INSTALL" = 1 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
    if [ -z "$APT_READY" ]; then
        echo "apt-get update (to install missing tools)"
        if apt-get -qq -o Acquire::Retries=1 update >"$WORK/apt-update.log" 2>&1; then
            APT_READY=yes
        else
            APT_READY=no
            echo "apt-get update failed; not installing tools"
        fi
    fi
    [ "$APT_READY" = yes ] || return 1
    echo "apt-get install -y $2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" \
        >"$WORK/apt-$2.log" 2>&1 || { tail -n 5 "$WORK/apt-$2.log"; return 1; }
    command -v "$1" >/dev/null 2>&1
}

# ---------------------------------------------------------------- packer
check_packer() {
    section "packer"
    if ! ensure_tool packer packer; then
        echo "packer not available: skipped"
        skip packer "not installed"
        return
    fi
    local version
    version=$(packer version 2>/dev/null | head -n 1)
    echo "$version"
    local tpl="$AMI_DIR/falconet-executor.pkr.hcl" out rc

    # The template file alone: packer 1.6 rejects plugins.pkr.hcl's block.
    out=$(packer validate "$tpl" 2>&1)
    rc=$?
    [ -n "$out" ] && printf '%s\n' "$out"
    if [ $rc -ne 0 ] && printf '%s' "$out" | grep -qiE 'unknown source type|missing plugins|not installed'; then
        echo "packer not available: skipped (the amazon plugin is missing: run 'packer init $AMI_DIR')"
        skip "packer validate" "$version without the amazon plugin"
        return
    fi
    if [ $rc -eq 0 ]; then pass "packer validate (defaults)"; else fail "packer validate (defaults)" "exit $rc"; fi

    # The local-tarball and extra_scripts paths of the template.
    : >"$WORK/falconet-0.0.0.tgz"
    printf '#!/bin/sh\necho extra\n' >"$WORK/extra.sh"
    out=$(packer validate -var "falconet_version=$WORK/falconet-0.0.0.tgz" \
        -var "extra_scripts=[\"$WORK/extra.sh\"]" -var source_ami=ami-0123456789abcdef0 "$tpl" 2>&1)
    rc=$?
    [ -n "$out" ] && printf '%s\n' "$out"
    if [ $rc -eq 0 ]; then pass "packer validate (local tgz, extra script, source_ami)"; else fail "packer validate (local tgz, extra script, source_ami)" "exit $rc"; fi

    # ...and it must reject a missing extra script.
    out=$(packer validate -var 'extra_scripts=["does-not-exist.sh"]' "$tpl" 2>&1)
    rc=$?
    if [ $rc -ne 0 ] && printf '%s' "$out" | grep -q 'does-not-exist.sh'; then
        pass "packer validate rejects a missing extra script"
    else
        fail "packer validate rejects a missing extra script" "exit $rc without naming the script"
    fi

    local f bad=""
    for f in "$AMI_DIR"/*.pkr.hcl; do
        packer fmt -check "$f" >/dev/null 2>&1 || bad="$bad $(basename "$f")"
    done
    if [ -z "$bad" ]; then pass "packer fmt -check"; else fail "packer fmt -check" "not formatted:$bad (run packer fmt)"; fi
}

# ------------------------------------------------------------ shellcheck
check_shellcheck() {
    section "shellcheck"
    if ! ensure_tool shellcheck shellcheck; then
        echo "shellcheck not available: skipped"
        skip shellcheck "not installed"
        return
    fi
    shellcheck --version | sed -n 2p
    if (cd "$AMI_DIR" && shellcheck -x ./*.sh); then
        pass "shellcheck ami/*.sh"
    else
        fail "shellcheck ami/*.sh" "see above"
    fi
}

# -------------------------------------------------------- systemd unit
check_unit() {
    section "systemd-analyze verify"
    if ! ensure_tool systemd-analyze systemd; then
        echo "systemd-analyze not available: skipped"
        skip "systemd-analyze verify" "not installed"
        return
    fi
    systemd-analyze --version | head -n 1
    # verify checks that each Exec*= binary exists. ExecStart is /usr/bin/env
    # (present everywhere; `falconet` itself is checked by install.sh and
    # finalize.sh on the image), but the hook's installed path only exists on
    # the image: point it at this directory's copy. The file name must stay
    # falconet-executor.service.
    local unit="$WORK/unit/falconet-executor.service" out rc
    mkdir -p "$WORK/unit"
    grep -q '^ExecStopPost=+/usr/local/lib/falconet/exit-hook.sh$' "$AMI_DIR/falconet-executor.service" ||
        { fail "systemd-analyze verify" "ExecStopPost line not as expected"; return; }
    sed "s#^ExecStopPost=+/usr/local/lib/falconet/exit-hook.sh\$#ExecStopPost=+$AMI_DIR/falconet-exit-hook.sh#" \
        "$AMI_DIR/falconet-executor.service" >"$unit"
    out=$(systemd-analyze verify "$unit" 2>&1)
    rc=$?
    # verify exits 0 on "Unknown key"/"Failed to parse" warnings: any output fails.
    if [ $rc -eq 0 ] && [ -z "$out" ]; then
        pass "systemd-analyze verify falconet-executor.service"
    else
        printf '%s\n' "$out"
        fail "systemd-analyze verify falconet-executor.service" "exit $rc, $(printf '%s\n' "$out" | grep -c .) line(s) of warnings"
    fi
    # The contract between the unit and the executor/hook.
    local want missing=""
    for want in 'ExecStart=/usr/bin/env falconet executor' 'EnvironmentFile=-/etc/falconet/executor.env' \
        'Restart=always' 'RestartSec=2' 'RestartPreventExitStatus=75' 'SuccessExitStatus=75' \
        'User=falconet' 'KillMode=control-group' 'NoNewPrivileges=yes' 'ProtectSystem=full' 'PrivateTmp=yes'; do
        grep -qxF "$want" "$AMI_DIR/falconet-executor.service" || missing="$missing [$want]"
    done
    if [ -z "$missing" ]; then pass "unit settings"; else fail "unit settings" "missing$missing"; fi
}

# ----------------------------------------------------------- cloud-init
check_cloud_init() {
    section "cloud-init schema"
    if ! ensure_tool cloud-init cloud-init; then
        echo "cloud-init not available: skipped"
        skip "cloud-init schema" "not installed"
        return
    fi
    cloud-init --version 2>&1
    if cloud-init schema --config-file "$AMI_DIR/user-data.example.yaml"; then
        pass "cloud-init schema user-data.example.yaml"
    else
        fail "cloud-init schema user-data.example.yaml" "see above"
    fi
}

# ------------------------------------------------------------ exit hook
check_hook() {
    section "exit hook"
    local bin="$WORK/hookbin" log="$WORK/systemctl.log" ok=1
    mkdir -p "$bin"
    printf '#!/bin/sh\necho "$*" >>"%s"\n' "$log" >"$bin/systemctl"
    chmod +x "$bin/systemctl"
    # hook_case NAME EXPECTED-LOG ENV...
    hook_case() {
        local name=$1 expect=$2 got
        shift 2
        : >"$log"
        env -u FALCONET_POWEROFF -u FALCONET_POWEROFF_COMMAND PATH="$bin:$PATH" "$@" \
            sh "$AMI_DIR/falconet-exit-hook.sh" >/dev/null || { echo "  $name: hook failed"; ok=0; return; }
        got=$(cat "$log")
        if [ "$got" = "$expect" ]; then
            echo "  $name: ok"
        else
            echo "  $name: expected systemctl call '$expect', got '$got'"
            ok=0
        fi
    }
    hook_case "exit 75 powers off" "--no-block poweroff" EXIT_CODE=exited EXIT_STATUS=75
    hook_case "exit 0 does not" "" EXIT_CODE=exited EXIT_STATUS=0
    hook_case "exit 1 does not" "" EXIT_CODE=exited EXIT_STATUS=1
    hook_case "SIGTERM does not" "" EXIT_CODE=killed EXIT_STATUS=TERM
    hook_case "no exit info does not" ""
    hook_case "FALCONET_POWEROFF=0 keeps it up" "" EXIT_CODE=exited EXIT_STATUS=75 FALCONET_POWEROFF=0
    hook_case "FALCONET_POWEROFF_COMMAND" "halt" EXIT_CODE=exited EXIT_STATUS=75 "FALCONET_POWEROFF_COMMAND=systemctl halt"
    if [ $ok = 1 ]; then pass "exit hook (7 cases)"; else fail "exit hook" "see above"; fi
}

# ------------------------------------------------ install.sh into a ROOT
check_install() {
    section "install.sh with ROOT"
    local root="$WORK/root" out ok=1 host_unit_before host_unit_after
    host_unit_before=$(ls -l --time-style=+%s /etc/systemd/system/falconet-executor.service /etc/falconet 2>&1)
    if ! out=$(ROOT="$root" bash "$AMI_DIR/install.sh" 2>&1); then
        printf '%s\n' "$out"
        fail "install.sh ROOT=..." "exit non-zero"
        return
    fi
    printf '%s\n' "$out" | sed 's/^/  | /'
    expect_file() { # PATH MODE
        local p="$root$1" mode
        if [ ! -f "$p" ]; then echo "  missing: $1"; ok=0; return; fi
        mode=$(stat -c %a "$p")
        if [ "$mode" != "$2" ]; then echo "  $1: mode $mode, expected $2"; ok=0; fi
    }
    expect_file /etc/systemd/system/falconet-executor.service 644
    expect_file /usr/local/lib/falconet/exit-hook.sh 755
    expect_file /etc/falconet/executor.env 640
    expect_file /usr/lib/sysusers.d/falconet.conf 644
    expect_file /usr/local/share/doc/falconet/ami-README.md 644
    cmp -s "$AMI_DIR/falconet-executor.service" "$root/etc/systemd/system/falconet-executor.service" ||
        { echo "  installed unit differs from ami/falconet-executor.service"; ok=0; }
    [ "$(readlink "$root/etc/systemd/system/multi-user.target.wants/falconet-executor.service")" = \
        /etc/systemd/system/falconet-executor.service ] || { echo "  unit not enabled under ROOT"; ok=0; }
    local line
    for line in 'would run: useradd --system' 'would run: npm install -g --no-audit --no-fund --loglevel=warn falconet' \
        'would run: systemctl enable falconet-executor.service' 'would download https://nodejs.org/dist/latest-v20.x/SHASUMS256.txt'; do
        printf '%s\n' "$out" | grep -qF "$line" || { echo "  output lacks: $line"; ok=0; }
    done
    # Idempotent, and an existing env file is kept.
    echo "FALCONET_URL=ws://kept.example:7878" >>"$root/etc/falconet/executor.env"
    if ! out=$(DESTDIR="$root" FALCONET_PACKAGE=/tmp/falconet-9.9.9.tgz NODE_SOURCE=nodesource bash "$AMI_DIR/install.sh" 2>&1); then
        printf '%s\n' "$out"; echo "  second run (DESTDIR, nodesource) failed"; ok=0
    else
        grep -q 'kept.example' "$root/etc/falconet/executor.env" || { echo "  env file was overwritten"; ok=0; }
        for line in 'keeping existing' 'would run: env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs' \
            'would run: npm install -g --no-audit --no-fund --loglevel=warn /tmp/falconet-9.9.9.tgz'; do
            printf '%s\n' "$out" | grep -qF "$line" || { echo "  second run output lacks: $line"; ok=0; }
        done
    fi
    # Refusals.
    if NODE_SOURCE=bogus ROOT="$WORK/root2" bash "$AMI_DIR/install.sh" >/dev/null 2>&1; then
        echo "  NODE_SOURCE=bogus was accepted"; ok=0
    fi
    if ROOT="$WORK/a" DESTDIR="$WORK/b" bash "$AMI_DIR/install.sh" >/dev/null 2>&1; then
        echo "  conflicting ROOT/DESTDIR accepted"; ok=0
    fi
    if [ "$(id -u)" -ne 0 ] && env -u ROOT -u DESTDIR bash "$AMI_DIR/install.sh" >/dev/null 2>&1; then
        echo "  non-root run without ROOT was accepted"; ok=0
    fi
    host_unit_after=$(ls -l --time-style=+%s /etc/systemd/system/falconet-executor.service /etc/falconet 2>&1)
    [ "$host_unit_before" = "$host_unit_after" ] || { echo "  the host's /etc was touched"; ok=0; }
    if [ $ok = 1 ]; then pass "install.sh ROOT/DESTDIR (files, modes, enable link, idempotence, refusals)"; else fail "install.sh ROOT/DESTDIR" "see above"; fi
}

check_packer
check_shellcheck
check_unit
check_cloud_init
check_hook
check_install

section "summary ($(id -un), $(date -u +%Y-%m-%dT%H:%M:%SZ))"
printf '%s\n' "${SUMMARY[@]}"
if [ "$FAILED" -ne 0 ]; then
    echo "ami/check.sh: FAILED"
    exit 1
fi
echo "ami/check.sh: all checks passed (skipped tools listed above)"
