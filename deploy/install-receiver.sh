#!/bin/sh
# Install the loaxa receiver agent on Raspberry Pi OS / Debian from a provisioning bundle.
#
#   sudo deploy/install-receiver.sh BUNDLE [SOURCE]
#
# BUNDLE: directory (or .tar.gz of one) written by `loaxa-controller provision RX --bundle DIR`
#         (receiver.toml, controller.pub, mosquitto-passwd, optional ca.crt). The broker password is in
#         receiver.toml only; it is installed once, as /etc/loaxa/receiver.toml (0640 root:loaxa), and the
#         hashed mosquitto-passwd line is for the broker, not for this box.
# SOURCE: what pip installs, default "loaxa[receiver]" (a wheel file or a source checkout also work).
#
# Installs apt packages (ffmpeg, alsa-utils, chrony, python3-venv), a venv in /opt/loaxa/venv, the user
# loaxa (groups audio, gpio), /etc/loaxa/ (config, mode 0640 root:loaxa), and the systemd unit; then
# enables and (re)starts loaxa-receiver. Safe to run again, e.g. to re-provision or upgrade.
set -eu

BUNDLE=${1:?usage: install-receiver.sh BUNDLE [SOURCE]}
SOURCE=${2:-loaxa[receiver]}
PREFIX=${LOAXA_PREFIX:-/opt/loaxa}
ETC=${LOAXA_ETC:-/etc/loaxa}
HERE=$(cd "$(dirname "$0")" && pwd)

[ "$(id -u)" -eq 0 ] || { echo "run as root (sudo)" >&2; exit 1; }

WORK=""
# An `if`, not `[ ] && rm`: the trap's last status would become the script's (exit 1 after a good install).
cleanup() { if [ -n "$WORK" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT
if [ -f "$BUNDLE" ]; then
    WORK=$(mktemp -d)
    tar -xzf "$BUNDLE" -C "$WORK"
    FOUND=$(find "$WORK" -name receiver.toml | head -n 1)
    # Without this check an archive lacking receiver.toml would make BUNDLE "." (the current directory).
    [ -n "$FOUND" ] || { echo "$1 holds no receiver.toml: not a provisioning bundle" >&2; exit 1; }
    BUNDLE=$(dirname "$FOUND")
fi
[ -f "$BUNDLE/receiver.toml" ] || { echo "$BUNDLE has no receiver.toml: not a provisioning bundle" >&2; exit 1; }

if [ -z "${LOAXA_SKIP_APT:-}" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends ffmpeg alsa-utils chrony python3-venv python3-pip ca-certificates
fi

getent group gpio >/dev/null || groupadd --system gpio
id loaxa >/dev/null 2>&1 || useradd --system --home-dir /var/lib/loaxa-receiver --shell /usr/sbin/nologin loaxa
usermod -a -G audio,gpio loaxa

[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/venv/bin/pip" install --quiet --upgrade "$SOURCE"

install -d -m 0750 -o root -g loaxa "$ETC"
install -m 0640 -o root -g loaxa "$BUNDLE/receiver.toml" "$ETC/receiver.toml"
install -m 0644 -o root -g root "$BUNDLE/controller.pub" "$ETC/controller.pub"
if [ -f "$BUNDLE/ca.crt" ]; then
    install -m 0644 -o root -g root "$BUNDLE/ca.crt" "$ETC/ca.crt"
fi
install -d -m 0750 -o loaxa -g loaxa /var/lib/loaxa-receiver

# Refuse a config the agent would refuse, before systemd keeps restarting it (the path is an argument, not
# code: a quote in LOAXA_ETC cannot break the Python).
SINK=$("$PREFIX/venv/bin/python" -c '
import sys
from receiver.config import load_config
print(load_config(sys.argv[1]).sink)
' "$ETC/receiver.toml")
if [ "$SINK" != "alsa" ]; then
    echo "warning: $ETC/receiver.toml has sink = \"$SINK\": this box will not play to its speakers" \
         "(set sink = \"alsa\" for a Raspberry Pi with an amplifier)" >&2
fi

# The unit names /opt/loaxa and /etc/loaxa: follow LOAXA_PREFIX and LOAXA_ETC when they say otherwise.
sed -e "s#/opt/loaxa/#$PREFIX/#g" -e "s#/etc/loaxa#$ETC#g" "$HERE/systemd/loaxa-receiver.service" \
    > /etc/systemd/system/loaxa-receiver.service
chmod 0644 /etc/systemd/system/loaxa-receiver.service
if [ -z "${LOAXA_SKIP_SYSTEMD:-}" ]; then
    systemctl daemon-reload
    systemctl enable chrony >/dev/null 2>&1 || true
    systemctl enable loaxa-receiver
    systemctl restart loaxa-receiver
    echo "loaxa-receiver installed and started: journalctl -u loaxa-receiver -f"
fi
