"""What the service writes, and how: private folders and files, atomic records, redacted logs.

Everything the service writes under ``$EDGETUNE_HOME/service`` is the operator's alone: folders
0700, files 0600 (``edgetune serve`` also sets the umask to 077, so the SQLite storage and
whatever its children write are private too). Records are written to a temporary file, synced
and renamed into place, so a crash leaves the old record or the new one, never half of one.

A storage URL may carry a database password. It reaches child processes through the
environment (never a command line), and every line a child prints goes through
:func:`redact_text` before it is written to a log, so neither ``ps``, the logs nor the API's
log tail show it.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from search.errors import EdgetuneError

DIR_MODE = 0o700
FILE_MODE = 0o600
_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@\s]*@")


def redact(url: str) -> str:
    """A storage URL without its password."""
    if "@" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: hide whatever looks like a password
        return _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", url)


def _password(url: str) -> str | None:
    if "@" not in url:
        return None
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:
        return None
    return str(password) if password else None


def redact_text(text: str, urls: Iterable[str] = ()) -> str:
    """``text`` with the password of every URL in it hidden, and the passwords of ``urls``
    hidden wherever they appear (an error message may quote one on its own)."""
    text = _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)
    for url in urls:
        password = _password(url)
        if password and len(password) >= 3:
            text = text.replace(password, "***")
    return text


@contextlib.contextmanager
def redacted_errors(*urls: str | None) -> Iterator[None]:
    """Re-raise an edgetune error with the passwords of ``urls`` (and of any URL) hidden."""
    try:
        yield
    except EdgetuneError as exc:
        message = redact_text(str(exc), [u for u in urls if u])
        if message == str(exc):
            raise
        raise type(exc)(message) from None


def private_dir(path: Path) -> Path:
    """``path`` as a folder only its owner can open (made if missing, tightened if not)."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if path.stat().st_mode & 0o077:
        path.chmod(DIR_MODE)
    return path


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``path`` (mode 0600) through a synced temporary file renamed into place."""
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def open_private(path: Path, mode: str = "ab") -> IO[bytes]:
    """Open a file for binary writing, created 0600."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    return os.fdopen(fd, mode)


class LogCopier:
    """Copies a child's output, line by line and redacted, into its log file (a thread)."""

    def __init__(self, pipe: IO[bytes], log: IO[bytes], urls: tuple[str, ...]) -> None:
        self.pipe, self.log, self.urls = pipe, log, urls
        self.thread = threading.Thread(target=self._copy, name="edgetune-log", daemon=True)
        self.thread.start()

    def _copy(self) -> None:
        try:
            for line in iter(lambda: self.pipe.readline(65536), b""):
                text = redact_text(line.decode(errors="replace"), self.urls)
                self.log.write(text.encode())
                self.log.flush()
        except (OSError, ValueError):
            pass
        finally:
            for f in (self.pipe, self.log):
                try:
                    f.close()
                except OSError:
                    pass

    def join(self, timeout_s: float = 5.0) -> None:
        self.thread.join(timeout_s)
