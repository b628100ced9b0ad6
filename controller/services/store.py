"""The controller's Redis: one connection that decodes replies to text, one that keeps them raw
(IDS alert fields are bytes)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from controller import stats


@dataclass(frozen=True)
class RedisStore:
    text: redis.Redis
    raw: redis.Redis

    @classmethod
    def connect(cls, url: str) -> RedisStore:
        return cls(stats.connect(url), stats.connect(url, decode=False))

    def reachable(self) -> bool:
        try:
            return bool(self.text.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self.text.close()
        self.raw.close()
