"""The Icecast 2 server that carries live audio (relay now, live voice, the station mixer).

The controller encodes a live source into an Icecast mount (:mod:`audio.live`)
and receivers play that mount with their relay engine. When no Icecast is
configured, :class:`EmbeddedIcecast` runs Debian's ``icecast2`` on a free
loopback port, the way :mod:`controller.broker` runs Mosquitto: the binary is
``LOAXA_ICECAST``, else ``icecast2`` or ``icecast`` on PATH or in /usr/bin,
/usr/sbin. It writes its own configuration into a work directory with fresh
random source and admin passwords, so nothing but this process can feed or
administer it.

Latency (measured with ``bench/live_voice.py``): Icecast sends every new listener
a burst of audio it already holds, 64 KiB by default (11 s at 48 kbps), and a
receiver then plays that far behind live for the whole session. The burst cannot
simply be made tiny for MP3, though. Icecast 2.4 stores an MP3 stream in blocks
of 1,400 bytes, so a listener that joins after the first block starts in the
middle of an MP3 frame, and ffmpeg (the receiver's decoder) then recognises MP3
only after reading 200 frames: 32 KiB at 48 kbps (5.5 s of audio; 64 KiB at
higher bitrates). With a smaller burst such a receiver waits for the rest in real
time, about 5 s with 4 KiB, which is as long as its relay engine waits before it
restarts the stream, so it may never play; and once it plays it is 5.5 s behind
live whatever the burst. An MP3 mount's burst is therefore
:data:`MP3_LIVE_BURST` (32 KiB: a late receiver starts at once, 5.5 s behind,
half of Icecast's default); it can drop to about 4 KiB once receivers name the
MP3 demuxer for live mounts. An Ogg mount (``*.ogg``, ``*.opus``) needs no such
margin: Icecast starts each listener on a page boundary after the stream's
headers, and its burst is :data:`OGG_LIVE_BURST`. ``<burst-on-connect>`` is not
written: it only sets the burst to 0 when it comes after ``<burst-size>``, and
Icecast 2.5 calls it obsolete.

Root: ``icecast2`` refuses to run as root ("You should not run icecast2 as
root") unless ``<security><changeowner>`` names a user to become; it binds its
socket and writes its pid file first, then drops to that user and only then
opens its log files. Run as root (CI, a container) the configuration therefore
names the ``icecast2`` user of Debian's package when it exists, else
``nobody``, each with its own primary group, and logs go to stderr (``-``),
which is a file this process opened, so the work directory (often private to
root, such as a pytest temporary directory) needs no change of permissions.
(A reload, SIGHUP, would re-read the configuration as that user; none is sent.)
Run as any other user, no ``changeowner`` is written and Icecast stays that
user. The same stderr logging is used in both cases: ``icecast.log`` in the
work directory holds the error and access log, and its tail is the message of
:class:`IcecastUnavailable` when the server does not come up.
"""

from __future__ import annotations

import base64
import grp
import logging
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from controller.broker import free_port, wait_for_port

logger = logging.getLogger(__name__)

MP3_LIVE_BURST = 32 * 1024
"""Burst for an MP3 mount: what ffmpeg reads before it recognises MP3 joined mid-frame (5.5 s at 48 kbps)."""
OGG_LIVE_BURST = 4096
"""Burst for an Ogg mount (Opus or Vorbis): 0.7 s at 48 kbps."""
LIVE_MOUNTS = ("/live", "/live.ogg")
"""Mounts configured explicitly; any other mount gets the default mount's settings (the MP3 burst)."""
DEBIAN_WEB = Path("/usr/share/icecast2/web")
DEBIAN_ADMIN = Path("/usr/share/icecast2/admin")
START_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 8


class IcecastUnavailable(RuntimeError):
    """Icecast cannot run here: no binary, or it did not start listening (the message has its log's tail)."""


def icecast_binary() -> str | None:
    """The Icecast 2 binary: ``LOAXA_ICECAST``, else ``icecast2`` / ``icecast`` on PATH, /usr/bin or /usr/sbin."""
    env = os.environ.get("LOAXA_ICECAST")
    if env:
        return env
    for name in ("icecast2", "icecast"):
        found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin")
        if found:
            return found
    return None


def _drop_to() -> tuple[str, str] | None:
    """The (user, group) Icecast must change to when we run as root, else None."""
    if os.geteuid() != 0:
        return None
    for user in ("icecast2", "nobody"):
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            continue
        try:
            group = grp.getgrgid(entry.pw_gid).gr_name
        except KeyError:
            continue
        return user, group
    raise IcecastUnavailable("running as root, icecast2 must change to another user, "
                             "and neither 'icecast2' nor 'nobody' exists here")


def burst_for(mount: str) -> int:
    """The burst a live mount gets: :data:`OGG_LIVE_BURST` for ``*.ogg`` / ``*.opus``, else :data:`MP3_LIVE_BURST`."""
    return OGG_LIVE_BURST if mount.lower().endswith((".ogg", ".opus", ".oga")) else MP3_LIVE_BURST


def config_xml(*, port: int, source_password: str, admin_password: str, workdir: Path,
               mounts: Sequence[str] = LIVE_MOUNTS, burst_size: int | None = None,
               change_owner: tuple[str, str] | None = None) -> str:
    """An Icecast 2.4 configuration for loopback: the passwords given, small bursts, logs to stderr.

    ``burst_size`` sets every burst; None gives each mount :func:`burst_for` it and the rest the MP3 burst.
    """
    default_burst = MP3_LIVE_BURST if burst_size is None else burst_size
    web = (f"<webroot>{DEBIAN_WEB}</webroot><adminroot>{DEBIAN_ADMIN}</adminroot>"
           if DEBIAN_WEB.is_dir() and DEBIAN_ADMIN.is_dir() else "")
    mount_blocks = "".join(
        f"""
  <mount type="normal">
    <mount-name>{name}</mount-name>
    <burst-size>{burst_for(name) if burst_size is None else burst_size}</burst-size>
    <public>0</public>
  </mount>"""
        for name in mounts
    )
    security = ""
    if change_owner is not None:
        user, group = change_owner
        security = f"""
  <security>
    <chroot>0</chroot>
    <changeowner><user>{user}</user><group>{group}</group></changeowner>
  </security>"""
    return f"""<icecast>
  <location>loaxa</location>
  <admin>root@localhost</admin>
  <hostname>127.0.0.1</hostname>
  <limits>
    <clients>1000</clients>
    <sources>16</sources>
    <queue-size>524288</queue-size>
    <client-timeout>30</client-timeout>
    <header-timeout>15</header-timeout>
    <source-timeout>10</source-timeout>
    <burst-size>{default_burst}</burst-size>
  </limits>
  <authentication>
    <source-password>{source_password}</source-password>
    <relay-password>{admin_password}</relay-password>
    <admin-user>admin</admin-user>
    <admin-password>{admin_password}</admin-password>
  </authentication>
  <listen-socket>
    <port>{port}</port>
    <bind-address>127.0.0.1</bind-address>
  </listen-socket>
  <mount type="default">
    <burst-size>{default_burst}</burst-size>
    <public>0</public>
  </mount>{mount_blocks}
  <fileserve>1</fileserve>
  <paths>
    <basedir>{workdir}</basedir>
    <logdir>{workdir}</logdir>
    <pidfile>{workdir / "icecast.pid"}</pidfile>
    {web}
  </paths>
  <logging>
    <accesslog>-</accesslog>
    <errorlog>-</errorlog>
    <loglevel>3</loglevel>
    <logsize>10000</logsize>
  </logging>{security}
</icecast>
"""


class EmbeddedIcecast:
    """A loopback Icecast 2 owned by this process; :meth:`source_url` is where an encoder sends a mount."""

    def __init__(self, workdir: Path | None = None, port: int | None = None, *,
                 mounts: Sequence[str] = LIVE_MOUNTS, burst_size: int | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="loaxa-icecast-"))
        self.port = port or 0
        self._fixed_port = port is not None
        self.mounts = tuple(mounts)
        self.burst_size = burst_size
        self.source_password = ""
        self.admin_password = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    # ----------------------------------------------------------- addresses

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def source_url(self, mount: str) -> str:
        """Where ffmpeg sends ``mount``: ``icecast://source:<password>@127.0.0.1:<port>/<mount>``."""
        return f"icecast://source:{self.source_password}@127.0.0.1:{self.port}{_path(mount)}"

    def listen_url(self, mount: str) -> str:
        """Where a listener (a receiver) plays ``mount``."""
        return f"{self.base_url}{_path(mount)}"

    @property
    def log_path(self) -> Path:
        """Icecast's error and access log (its stderr)."""
        return self.workdir / "icecast.log"

    @property
    def pid(self) -> int | None:
        """Process id of the running Icecast, or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the Icecast started here runs."""
        return self._proc is not None and self._proc.poll() is None

    # ----------------------------------------------------------- life cycle

    def start(self) -> EmbeddedIcecast:
        """Write the configuration and start Icecast; raises :class:`IcecastUnavailable` when it cannot listen."""
        binary = icecast_binary()
        if binary is None:
            raise IcecastUnavailable("icecast2 not found: install Debian's icecast2 package or set LOAXA_ICECAST")
        if self._proc is not None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        owner = _drop_to()
        self.source_password = secrets.token_urlsafe(18)
        self.admin_password = secrets.token_urlsafe(18)
        tail = ""
        for _ in range(1 if self._fixed_port else 5):
            if not self._fixed_port:
                self.port = free_port()
            conf = self.workdir / "icecast.xml"
            conf.write_text(config_xml(port=self.port, source_password=self.source_password,
                                       admin_password=self.admin_password, workdir=self.workdir,
                                       mounts=self.mounts, burst_size=self.burst_size, change_owner=owner))
            conf.chmod(0o600)  # the passwords; Icecast reads it before it drops root
            self._log = open(self.log_path, "ab")
            try:
                self._proc = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                              stdout=self._log, stderr=subprocess.STDOUT)
            except OSError as exc:
                self._close_log()
                raise IcecastUnavailable(f"cannot run {binary}: {exc}") from exc
            if self._wait_listening():
                logger.info("embedded icecast listening on %s (pid %d%s)", self.base_url, self._proc.pid,
                            f", as {owner[0]}" if owner else "")
                return self
            tail = self.log_tail()
            self.stop()
        raise IcecastUnavailable(f"icecast ({binary}) did not start listening on 127.0.0.1:{self.port}; "
                                 f"its log ({self.log_path}) ends: {tail}")

    def _wait_listening(self) -> bool:
        """True once Icecast itself answers on the port (something else may hold it: then Icecast exits)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            if wait_for_port(self.port, 0.2) and self._admin_get("/admin/stats", 0.5) is not None:
                return self._proc.poll() is None
        return False

    def stop(self) -> None:
        """Stop Icecast and wait for it; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    logger.warning("icecast (pid %d) ignored SIGTERM; killing it", proc.pid)
                    proc.kill()
                    proc.wait()
            logger.info("embedded icecast on port %d stopped (status %s)", self.port, proc.returncode)
        self._close_log()
        # Dropped from root, Icecast cannot delete the pid file it wrote before: this process can.
        (self.workdir / "icecast.pid").unlink(missing_ok=True)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedIcecast:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------- state

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of Icecast's log, joined by `` | `` (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def active_mounts(self, timeout: float = 2.0) -> list[str]:
        """The mounts a source is feeding now (from ``/admin/stats``); empty when Icecast does not answer."""
        body = self._admin_get("/admin/stats", timeout)
        if body is None:
            return []
        root = ET.fromstring(body)  # our own server's answer on loopback
        return [mount for source in root.iter("source") if (mount := source.get("mount"))]

    def _admin_get(self, path: str, timeout: float) -> bytes | None:
        """The body of an admin request to this Icecast, or None when it does not answer 200."""
        request = urllib.request.Request(f"{self.base_url}{path}")
        token = base64.b64encode(f"admin:{self.admin_password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body: bytes = response.read()
                return body
        except (OSError, urllib.error.URLError) as exc:  # refused, timed out, 401/404 (HTTPError)
            logger.debug("icecast on port %d: %s %s", self.port, path, exc)
            return None


def _path(mount: str) -> str:
    return mount if mount.startswith("/") else "/" + mount
