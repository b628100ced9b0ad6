"""The web application firewall in front of the sample chain: the ``modsecurity-crs`` pod.

The pod runs Debian's Apache with ModSecurity 2 and the OWASP Core Rule Set (configuration
rendered from ``stack/conf/modsecurity-*``) in its own network namespace. ``proxy-access-control``
asks it about every incoming request, as the original's ingress gateway did with Envoy's
``ext_authz`` (``check.py``): the method, URL, headers and the body's first bytes; a 2xx lets
the request in, 401/403 become the client's 403.

Alerts reach Redis through the pod's own process: it tails Apache's JSON audit log
(``SecAuditLogFormat JSON``, one line per request a rule matched) and writes each entry to the
capped ``waf_audit_log`` list and, as an alert, to a ``waf_event:<id>`` hash (``audit.py``,
``service.py``). The audit log is what ModSecurity itself records, with every matched rule and
the trace context the proxy's check carried, so nothing depends on the check's answer.
"""
