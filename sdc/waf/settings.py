"""The WAF's settings as the chain's pods receive them (``CLOVER_WAF*``, clover/config.py)."""

from __future__ import annotations

from clover.config import Config


def waf_env(cfg: Config) -> dict[str, str]:
    return {
        "CLOVER_WAF": "on" if cfg.waf_check else "off",
        "CLOVER_WAF_FAILURE_MODE": cfg.waf_failure_mode,
        "CLOVER_WAF_BODY_LIMIT": str(cfg.waf_body_limit),
        "CLOVER_WAF_CRS_MODE": cfg.waf_crs_mode,
        "CLOVER_WAF_PARANOIA_LEVEL": str(cfg.waf_paranoia_level),
        "CLOVER_WAF_ADDRESS": cfg.waf_address,
    }
