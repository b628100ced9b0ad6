"""The controller's services, composed: the three domains over one configuration and one pair of
Redis connections."""

from __future__ import annotations

from dataclasses import dataclass

from clover.config import Config
from controller.services.chain import ChainService
from controller.services.graph import GraphService
from controller.services.store import RedisStore
from controller.services.validation import ValidationService
from controller.services.visibility import VisibilityService
from controller.services.waf import WafService


@dataclass(frozen=True)
class Services:
    """The controller's services over one configuration and one pair of Redis connections."""

    cfg: Config
    redis: RedisStore
    visibility: VisibilityService
    chain: ChainService
    validation: ValidationService
    waf: WafService
    graph: GraphService

    @classmethod
    def open(cls, cfg: Config) -> Services:
        redis = RedisStore.connect(cfg.redis_url)
        return cls(cfg, redis, VisibilityService(cfg, redis.text), ChainService(cfg, redis), ValidationService(cfg),
                   WafService(redis), GraphService(redis.text))  # fmt: skip

    def close(self) -> None:
        self.redis.close()
