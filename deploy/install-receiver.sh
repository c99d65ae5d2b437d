#!/bin/sh
# Install the loaxa receiver agent on Raspberry Pi OS / Debian from a provisioning bundle.
#
#   sudo deploy/install-receiver.sh BUNDLE [SOURCE]
#
# BUNDLE: directory (or .tar.gz of one) written by `loaxa-controller provision RX --bundle DIR`
#         (receiver.toml, controller.pub, mqtt-credentials, optional ca.crt).
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
cleanup() { [ -n "$WORK" ] && rm -rf "$WORK"; }
trap cleanup EXIT
if [ -f "$BUNDLE" ]; then
    WORK=$(mktemp -d)
    tar -xzf "$BUNDLE" -C "$WORK"
    BUNDLE=$(dirname "$(find "$WORK" -name receiver.toml | head -n 1)")
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
[ -f "$BUNDLE/ca.crt" ] && install -m 0644 -o root -g root "$BUNDLE/ca.crt" "$ETC/ca.crt"
install -d -m 0750 -o loaxa -g loaxa /var/lib/loaxa-receiver

# Refuse a config the agent would refuse, before systemd keeps restarting it.
"$PREFIX/venv/bin/python" -c "from receiver.config import load_config; load_config('$ETC/receiver.toml')"

install -m 0644 "$HERE/systemd/loaxa-receiver.service" /etc/systemd/system/loaxa-receiver.service
if [ -z "${LOAXA_SKIP_SYSTEMD:-}" ]; then
    systemctl daemon-reload
    systemctl enable chrony >/dev/null 2>&1 || true
    systemctl enable loaxa-receiver
    systemctl restart loaxa-receiver
    echo "loaxa-receiver installed and started: journalctl -u loaxa-receiver -f"
fi
