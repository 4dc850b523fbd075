"""The secret behind pseudonyms: given, read from a file or the environment, or generated.

Pseudonyms are HMAC-SHA256 of the original under this key (:mod:`.pseudonyms`): without
it nobody can recompute a pseudonym from a guessed ID (a 7-digit MRN is 10**7 guesses), and
with the same key the same original gets the same pseudonym in every run.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ..errors import DeidentificationError, DeidentificationKeyWarning, warn_data_problem

#: The environment variable that may hold the key (its text, at least 16 bytes of UTF-8).
KEY_ENV = "DICOMARRAY_DEID_KEY"
#: Fewer bytes than this make a key that can be guessed.
MIN_KEY_BYTES = 16
#: Bytes of a generated key.
GENERATED_KEY_BYTES = 32


def default_key_path() -> Path:
    """Where a generated key is saved: ``$XDG_CONFIG_HOME/dicomarray/deid.key`` (by default
    ``~/.config/dicomarray/deid.key``), outside any output, readable by its owner only."""
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "dicomarray" / "deid.key"


def key_path(
    key: bytes | str | None = None, key_file: str | os.PathLike[str] | None = None
) -> Path | None:
    """The file :func:`resolve_key` reads the key from (or generates it at) for these
    arguments; None for a key given or taken from :data:`KEY_ENV`."""
    if key is not None:
        return None
    if key_file is not None:
        return Path(key_file)
    return None if os.environ.get(KEY_ENV) else default_key_path()


def resolve_key(
    key: bytes | str | None = None, key_file: str | os.PathLike[str] | None = None
) -> bytes:
    """The key to de-identify with: ``key``, else ``key_file``'s content, else the
    :data:`KEY_ENV` variable, else the key saved at :func:`default_key_path` (generated
    and saved there the first time, with a :class:`DeidentificationKeyWarning` that says
    where).

    Raises
    ------
    DeidentificationError
        A key shorter than :data:`MIN_KEY_BYTES`, both ``key`` and ``key_file``, or a key
        file that cannot be read (named).
    """
    if key is not None and key_file is not None:
        raise DeidentificationError("pass key= or key_file=, not both")
    if key is not None:
        return _checked(key.encode() if isinstance(key, str) else bytes(key), "key=")
    if key_file is not None:
        return _checked(_read(Path(key_file)), str(key_file))
    if os.environ.get(KEY_ENV):
        return _checked(os.environ[KEY_ENV].encode(), f"${KEY_ENV}")
    path = default_key_path()
    if path.exists():
        return _checked(_read(path), str(path))
    return _generated(path)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except OSError as error:
        raise DeidentificationError(f"{path}: cannot read the key file ({error})") from error


def _checked(key: bytes, source: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise DeidentificationError(
            f"{source}: a de-identification key of {len(key)} bytes can be guessed; "
            f'use at least {MIN_KEY_BYTES} (e.g. python -c "import secrets; '
            f'print(secrets.token_hex(32))")'
        )
    return key


def _generated(path: Path) -> bytes:
    """A new random key, saved at ``path`` for the owner only (the same key links runs)."""
    key = secrets.token_hex(GENERATED_KEY_BYTES).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(key + b"\n")
    warn_data_problem(
        f"generated a de-identification key and saved it at {path}: keep it secret, and keep "
        f"it to give the same pseudonyms in later runs (or pass key=, --key-file, ${KEY_ENV})",
        DeidentificationKeyWarning,
    )
    return key
