"""The secrets of the local stack: the Redis password and the controller's API token.

``cloverctl local up`` (and so ``make demo`` and the test stack) makes each one on first use,
unless its variable (CLOVER_REDIS_PASSWORD, CLOVER_API_TOKEN) is set, and keeps it in
``<state dir>/secrets/`` (directory 0700, files 0600). Every part then reads it through
``Config.from_env()``: the password inside ``Config.redis_url``, the token as ``Config.api_token``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from clover.config import API_TOKEN_FILE, REDIS_PASSWORD_FILE, Config, secret_file, state_dir_of

# What each secret file stands in for: the variable that, when set, is used instead.
VARIABLES = {REDIS_PASSWORD_FILE: "CLOVER_REDIS_PASSWORD", API_TOKEN_FILE: "CLOVER_API_TOKEN"}


def write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only (0600 from the start, never wider), atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    draft.replace(path)


def ensure(state_dir: Path, env: Mapping[str, str] | None = None) -> list[Path]:
    """Make the secrets that are neither configured nor kept yet; returns the files made."""
    env = os.environ if env is None else env
    made = []
    for name, variable in VARIABLES.items():
        path = secret_file(state_dir, name)
        if env.get(variable) or path.exists():
            continue
        if name == REDIS_PASSWORD_FILE and urlsplit(env.get("CLOVER_REDIS_URL", "")).password:
            continue  # the configured URL carries its own
        write_private(path, secrets.token_urlsafe(32) + "\n")
        made.append(path)
    return made


def local_config(env: Mapping[str, str] | None = None) -> Config:
    """The configuration of a local stack about to start: its secrets made first, so that the
    configuration (and every part that reads it) carries them."""
    env = os.environ if env is None else env
    ensure(state_dir_of(env), env)
    return Config.from_env(env)
