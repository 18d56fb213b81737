#!/bin/sh
# falconet-executor.service ExecStopPost hook (runs as root via the "+" prefix).
#
# systemd sets EXIT_CODE (exited|killed|dumped) and EXIT_STATUS (the exit
# status, or the signal name) for ExecStopPost. The executor exits with
# status 75 when it wants this instance to go
# away: idle past its timeout, or its dispatcher unreachable for too long.
# Then, and only then, we power off. With
# --instance-initiated-shutdown-behavior terminate, EC2 terminates the instance.
#
# Knobs (from /etc/falconet/executor.env, which the unit also loads for hooks):
#   FALCONET_POWEROFF=0              never power off (debugging an image)
#   FALCONET_POWEROFF_COMMAND="..."  command to run instead of
#                                    "systemctl --no-block poweroff"
# 75 is fixed: it must match RestartPreventExitStatus= in the unit.
set -u

shutdown_status=75
code=${EXIT_CODE:-}
status=${EXIT_STATUS:-}

if [ "$code" != "exited" ] || [ "$status" != "$shutdown_status" ]; then
    # Crash, signal, or an ordinary stop: Restart=always (or the operator) decides.
    exit 0
fi

if [ "${FALCONET_POWEROFF:-1}" = "0" ]; then
    echo "falconet-exit-hook: executor exited $status (shutdown requested) but FALCONET_POWEROFF=0; leaving the instance up"
    exit 0
fi

cmd=${FALCONET_POWEROFF_COMMAND:-systemctl --no-block poweroff}
echo "falconet-exit-hook: executor exited $status (shutdown requested); running: $cmd"
# --no-block: we run inside this unit's stop job; waiting for the poweroff
# job from here would stall until TimeoutStopSec.
# shellcheck disable=SC2086 # the command is deliberately word-split
exec $cmd
