"""Per-receiver broker logins: the Mosquitto password file the controller keeps.

With ``MQTT_PASSWORD_FILE`` set, issuing a receiver's bundle writes its login
(username = receiver id) into that file and retiring it removes the line, then
``MQTT_RELOAD_COMMAND`` (e.g. ``systemctl reload mosquitto``) makes the broker
re-read it. Without it the bundle still carries a fresh password and the
district's IT adds it with ``mosquitto_passwd``.

Lines are Mosquitto 2's ``$7$`` format (PBKDF2-SHA512), so ``mosquitto_passwd``
and the broker read them; lines for other users (the controller's own login)
are kept as they are.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import secrets
import shlex
import subprocess
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

ITERATIONS = 1000  # Mosquitto's default is 101; the broker reads the count from each line


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """A Mosquitto ``$7$`` password hash (what ``mosquitto_passwd`` writes after the colon)."""
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(line_hash: str, password: str) -> bool:
    """True when ``password`` matches a ``$7$`` hash (to check a line the file holds)."""
    try:
        _, kind, iterations, salt, _digest = line_hash.split("$")
    except ValueError:
        return False
    if kind != "7":
        return False
    return secrets.compare_digest(hash_password(password, iterations=int(iterations), salt=base64.b64decode(salt)),
                                  line_hash)


class PasswordFile:
    """One Mosquitto password file, changed atomically under a lock (two controller workers may write)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def entries(self) -> dict[str, str]:
        """username -> hash, in file order."""
        if not self.path.exists():
            return {}
        out: dict[str, str] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            user, sep, hashed = line.partition(":")
            if sep and user and not line.startswith("#"):
                out[user] = hashed
        return out

    def set(self, username: str, password: str) -> None:
        """Add or replace ``username``'s login."""
        self._rewrite(lambda e: e | {username: hash_password(password)})

    def remove(self, username: str) -> bool:
        """Delete ``username``'s login; True if it was there."""
        removed = False

        def change(entries: dict[str, str]) -> dict[str, str]:
            nonlocal removed
            removed = entries.pop(username, None) is not None
            return entries

        self._rewrite(change)
        return removed

    def _rewrite(self, change) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = change(self.entries())
            mode = self.path.stat().st_mode & 0o777 if self.path.exists() else 0o640
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.writelines(f"{user}:{hashed}\n" for user, hashed in entries.items())
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, mode)
                if self.path.exists():
                    st = self.path.stat()
                    try:
                        os.chown(tmp, st.st_uid, st.st_gid)  # keep the broker's group able to read it
                    except PermissionError:
                        pass
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise


def reload_broker(command: str | None) -> bool:
    """Run ``MQTT_RELOAD_COMMAND`` so the broker re-reads its password file; False (logged) on failure."""
    if not command:
        return True
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.error("broker reload command %r failed: %s", command, exc)
        return False
    if done.returncode != 0:
        logger.error("broker reload command %r exited %d: %s", command, done.returncode, done.stderr.strip()[:500])
        return False
    return True
