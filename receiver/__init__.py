"""The receiver agent: MQTT session, manifest verification, media cache, playback, outbox.

A receiver box (Raspberry Pi class, under systemd) gets its signed configuration
and the signed manifests of its scopes over MQTT, downloads the media they name,
plays every item at its scheduled second by its own clock and reports what it
did through a durable outbox. This package never imports ``controller``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("loaxa")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
