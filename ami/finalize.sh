#!/bin/sh
# Last provisioning step (runs as root after install.sh and extra_scripts):
# fail the bake if the executor is not in place, then clean up.
set -eu

say() { printf 'finalize.sh: %s\n' "$*"; }

command -v falconet >/dev/null || { say "error: no falconet on PATH"; exit 1; }
say "falconet at $(command -v falconet); node $(node --version)"
systemctl is-enabled --quiet falconet-executor.service ||
    { say "error: falconet-executor.service is not enabled"; exit 1; }
systemd-analyze verify /etc/systemd/system/falconet-executor.service
id falconet >/dev/null

npm cache clean --force >/dev/null 2>&1 || true
apt-get clean
rm -rf /tmp/falconet-ami
# Let cloud-init run again on the instances launched from this image.
if command -v cloud-init >/dev/null; then
    cloud-init clean --logs
fi
say "image ready"
