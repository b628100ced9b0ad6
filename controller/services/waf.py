"""The WAF service: the alerts modsecurity-crs's pod stored in Redis (``waf_event:<id>``), the
newest entries of its audit log (``waf_audit_log``), its settings and the proxy's check counts."""

from __future__ import annotations

import json
from typing import Any

from clover import keys
from controller.services.store import RedisStore


class WafService:
    def __init__(self, redis: RedisStore):
        self.redis = redis

    def alerts(self, limit: int = 20) -> dict[str, Any]:
        """The number of alerts and the ``limit`` newest, newest first."""
        members: set[str] = self.redis.text.smembers(keys.WAF_EVENTS)  # type: ignore[assignment]  # decoded
        newest = sorted(members, key=lambda i: int(i) if i.isdigit() else -1, reverse=True)[: max(0, limit)]
        with self.redis.text.pipeline(transaction=False) as pipe:
            for event_id in newest:
                pipe.hgetall(keys.waf_event(event_id))
            rows: list[dict[str, str]] = pipe.execute()
        return {"total": len(members), "alerts": [row for row in rows if row]}

    def audit_log(self, limit: int = 20) -> dict[str, Any]:
        """The ``limit`` newest audit log entries (ModSecurity's JSON), newest first, and how many are kept."""
        with self.redis.text.pipeline(transaction=False) as pipe:
            pipe.llen(keys.WAF_AUDIT_LOG)
            pipe.lrange(keys.WAF_AUDIT_LOG, 0, max(0, limit) - 1)
            kept, raw = pipe.execute()
        entries = [json.loads(entry) for entry in raw] if limit > 0 else []
        return {"kept": kept, "kept_at_most": keys.WAF_AUDIT_LOG_LENGTH, "entries": entries}

    def status(self) -> dict[str, Any]:
        """The WAF pod's settings and counts, and the proxy's check settings and counts
        (empty when neither has reported)."""
        waf: dict[str, str] = self.redis.text.hgetall(keys.WAF_STATUS)  # type: ignore[assignment]  # decoded
        check: dict[str, str] = self.redis.text.hgetall(keys.WAF_CHECK)  # type: ignore[assignment]  # decoded
        return {"waf": waf, "check": check}
