#!/usr/bin/env bash
# Installs HMS Edge on a Debian-family appliance from a built tree.
#
#   cargo build --release -p edge-node -p firmware-config
#   sudo installer/install.sh [--config FILE]
#
# Puts hms-edge and hms-config in /usr/local/bin, the configuration in
# /etc/hms/hospital.toml (checked with hms-config lint first; an existing one is
# kept), creates the hms user and /var/lib/hms, installs and enables the systemd
# unit. Re-running it upgrades the binaries in place.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
config="$root/config/demo-hospital.toml"
if [[ "${1:-}" == "--config" ]]; then
    config="${2:?--config needs a file}"
fi
bin="$root/target/release"
for b in hms-edge hms-config; do
    [[ -x "$bin/$b" ]] || { echo "install: $bin/$b missing; run cargo build --release -p edge-node -p firmware-config" >&2; exit 64; }
done
[[ $EUID -eq 0 ]] || { echo "install: run as root" >&2; exit 64; }

"$bin/hms-config" lint "$config"

id hms >/dev/null 2>&1 || useradd --system --home /var/lib/hms --shell /usr/sbin/nologin hms
install -d -o hms -g hms -m 0750 /var/lib/hms
install -d -m 0755 /etc/hms
install -m 0755 "$bin/hms-edge" "$bin/hms-config" /usr/local/bin/
if [[ ! -e /etc/hms/hospital.toml ]]; then
    # The packaged file points data_dir at the state directory.
    sed 's|^data_dir = .*|data_dir = "/var/lib/hms"|' "$config" > /etc/hms/hospital.toml
    chmod 0644 /etc/hms/hospital.toml
fi
/usr/local/bin/hms-config lint /etc/hms/hospital.toml
install -m 0644 "$root/installer/hms-edge.service" /etc/systemd/system/hms-edge.service
install -d /usr/share/doc/hms-edge
install -m 0644 "$root/README.md" /usr/share/doc/hms-edge/README.md
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
    systemctl enable --now hms-edge.service
    echo "install: hms-edge enabled; create a kiosk token with:"
else
    echo "install: no systemd here; start with: hms-edge run --config /etc/hms/hospital.toml"
fi
echo "  sudo -u hms hms-edge token create --role viewer --name kiosk-1 --config /etc/hms/hospital.toml"
