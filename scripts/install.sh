#!/usr/bin/env bash
# Installs Tsunagu as a systemd service on Debian / Raspberry Pi OS. Run as root, again to upgrade:
#
#   sudo scripts/install.sh [BINARY]
#   sudo SERVER_NAME=chat.example.org scripts/install.sh [BINARY]
#
# BINARY defaults to ./tsunagu beside this script, else the output of scripts/build-pi.
# SERVER_NAME (the domain in user IDs; it cannot change later) is used only when the config is
# created; it defaults to this machine's host name.
#
# Creates the `tsunagu` system user, /var/lib/tsunagu and /etc/tsunagu/tsunagu.toml (from
# config/pi.toml; an existing config is never overwritten), installs the binary to
# /usr/local/bin and the unit to /etc/systemd/system, and starts the service.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# A file shipped either beside this script (copied bundle) or in the repository's config/.
find_file() {
    for f in "$here/$1" "$here/../config/$1"; do
        [[ -f "$f" ]] && { echo "$f"; return; }
    done
    echo "install.sh: cannot find $1 beside the script or in config/" >&2
    exit 1
}

if [[ -n "${1:-}" ]]; then
    binary=$1
elif [[ -f "$here/tsunagu" ]]; then
    binary="$here/tsunagu"
else
    binary="$(cd "$here/.." && realpath -m "${CARGO_TARGET_DIR:-target}")/aarch64-unknown-linux-gnu/release/tsunagu"
fi
[[ -f "$binary" ]] || { echo "install.sh: no binary at $binary" >&2; exit 1; }
[[ $EUID -eq 0 ]] || { echo "install.sh: run as root (sudo)" >&2; exit 1; }
"$binary" --version >/dev/null || { echo "install.sh: $binary does not run on this machine ($(uname -m))" >&2; exit 1; }
profile=$(find_file pi.toml)
unit=$(find_file tsunagu.service)

# User and directories.
if ! id -u tsunagu >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/tsunagu --no-create-home \
        --shell /usr/sbin/nologin tsunagu
fi
install -d -o tsunagu -g tsunagu -m 0750 /var/lib/tsunagu
install -d -m 0755 /etc/tsunagu

# Config: only when there is none yet.
if [[ -e /etc/tsunagu/tsunagu.toml ]]; then
    echo "keeping existing /etc/tsunagu/tsunagu.toml"
else
    server_name=${SERVER_NAME:-$(hostname -f 2>/dev/null || hostname)}
    sed "s/^server_name = .*/server_name = \"$server_name\"/" "$profile" >/etc/tsunagu/tsunagu.toml
    chown root:tsunagu /etc/tsunagu/tsunagu.toml
    chmod 0640 /etc/tsunagu/tsunagu.toml
    echo "wrote /etc/tsunagu/tsunagu.toml (server_name = \"$server_name\")"
fi

# Binary and unit; remember whether the binary changed, to restart a running service.
changed=yes
cmp -s "$binary" /usr/local/bin/tsunagu && changed=no
install -m 0755 "$binary" /usr/local/bin/tsunagu
install -m 0644 "$unit" /etc/systemd/system/tsunagu.service
echo "installed $(/usr/local/bin/tsunagu --version) to /usr/local/bin/tsunagu"

if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
    if [[ $changed == yes ]] && systemctl is-active --quiet tsunagu; then
        systemctl restart tsunagu                      # upgrade: run the new binary
    fi
    systemctl enable --now tsunagu
    echo "tsunagu is running: systemctl status tsunagu"
else
    echo "systemd is not running here (container?): not starting the service."
    echo "Start it by hand: runuser -u tsunagu -- /usr/local/bin/tsunagu serve --config /etc/tsunagu/tsunagu.toml"
fi
cat <<'MSG'

The first start prints a single-use registration token for the first account:
  sudo journalctl -u tsunagu | grep 'registration token'
More tokens (stop the server first, it holds the database):
  sudo systemctl stop tsunagu
  sudo -u tsunagu tsunagu --config /etc/tsunagu/tsunagu.toml admin token new --uses 5
  sudo systemctl start tsunagu
MSG
