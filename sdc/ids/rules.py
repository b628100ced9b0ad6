"""Snort rules: parsing (idstools), compiling, and matching HTTP requests and packets.

Supported (Snort 2 syntax): header ``action proto src sport -> dst dport`` with ``any``,
CIDRs, ``$VARS``, ``[lists]``, ``!`` negation and port ranges; ``<>`` for either direction.
Detection options: ``content`` (``|hex|``, ``!``) with ``nocase``, ``offset``, ``depth``,
``distance``, ``within`` and the buffer modifiers ``http_uri``, ``http_raw_uri``,
``http_header``, ``http_raw_header``, ``http_method``, ``http_cookie``, ``http_raw_cookie``,
``http_client_body``, ``http_user_agent`` and ``http_host``; ``pcre`` (flags i s m x, buffers
U I H D M C P, R relative, A anchored); ``flow``; ``itype``, ``icode``, ``dsize``, ``flags``.
A ``pcre`` runs on RE2 (linear time in the buffer, whatever the pattern, so no request can stall
the engine); one that needs backtracking (backreferences, lookaround, ``\\Z``, atomic or
possessive groups) makes the rule invalid. Unlike PCRE, ``$`` without ``m`` matches only at the
very end, not before a final newline.
Metadata: ``msg``, ``sid``, ``gid``, ``rev``, ``classtype``, ``priority``, ``reference``,
``metadata``; ``fast_pattern`` and ``rawbytes`` are accepted and have no effect. Any other option
makes the rule invalid (AddRules refuses it; a rules file skips it with a warning).

An HTTP request copied by the proxy is inspected as one unit (the stream of a request): each
rule fires at most once per request. Rules using an ``http_*`` buffer apply to HTTP requests
only; the others (tcp or ip) to requests, with the whole request as payload, and to packets.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import re2
from idstools import rule as idsrule

RULES_DIR = Path(__file__).resolve().parent / "rules"
CLASSIFICATION_FILE = RULES_DIR / "classification.config"
COMMUNITY_FILE = RULES_DIR / "community.rules"

PROTOCOLS = ("tcp", "udp", "icmp", "ip")
PROTO_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1}

DEFAULT_VARS = {
    "HOME_NET": "any",
    "EXTERNAL_NET": "any",
    "HTTP_SERVERS": "$HOME_NET",
    "SMTP_SERVERS": "$HOME_NET",
    "SQL_SERVERS": "$HOME_NET",
    "DNS_SERVERS": "$HOME_NET",
    "TELNET_SERVERS": "$HOME_NET",
    "HTTP_PORTS": "[80,81,8000,8008,8080,8088,8180,8888,9080,9090,9180]",
    "SHELLCODE_PORTS": "!80",
    "ORACLE_PORTS": "1521",
    "SSH_PORTS": "22",
    "FTP_PORTS": "[21,2100,3535]",
}

HTTP_BUFFERS = {
    "http_uri": "uri",
    "http_raw_uri": "raw_uri",
    "http_header": "header",
    "http_raw_header": "raw_header",
    "http_method": "method",
    "http_cookie": "cookie",
    "http_raw_cookie": "raw_cookie",
    "http_client_body": "client_body",
    "http_user_agent": "user_agent",
    "http_host": "host",
}
PCRE_BUFFERS = {"U": "uri", "I": "raw_uri", "H": "header", "D": "raw_header", "M": "method", "C": "cookie",
                "K": "raw_cookie", "P": "client_body"}  # fmt: skip
IGNORED_OPTIONS = {"msg", "sid", "gid", "rev", "classtype", "priority", "reference", "metadata", "fast_pattern",
                   "rawbytes"}  # fmt: skip
TCP_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "2": 0x40, "C": 0x80,
             "1": 0x80}  # fmt: skip
MAX_CANDIDATES = 64


class RuleError(ValueError):
    """A rule that cannot be used; the message says what is wrong."""


# -- classifications ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Classification:
    id: int
    name: str
    description: str
    priority: int


def load_classifications(path: Path = CLASSIFICATION_FILE) -> dict[str, Classification]:
    classes: dict[str, Classification] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line.startswith("config classification:"):
            continue
        name, description, priority = (p.strip() for p in line.split(":", 1)[1].split(","))
        classes[name] = Classification(len(classes) + 1, name, description, int(priority))
    return classes


# -- addresses and ports ------------------------------------------------------------------------


def _expand(text: str, variables: dict[str, str], depth: int = 0) -> str:
    if depth > 8:
        raise RuleError(f"variables nest too deeply in {text!r}")

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in variables:
            raise RuleError(f"unknown variable ${name}")
        return _expand(variables[name], variables, depth + 1)

    return re.sub(r"\$([A-Za-z_][A-Za-z0-9_]*)", sub, text)


def _split_list(text: str) -> list[str]:
    """Top-level items of a ``[a,b,[c,d]]`` list."""
    items, depth, current = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise RuleError(f"unbalanced ']' in {text!r}")
        if ch == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += ch
    if depth:
        raise RuleError(f"unbalanced '[' in {text!r}")
    items.append(current.strip())
    return [i for i in items if i]


def _flatten(text: str, negated: bool = False) -> Iterator[tuple[str, bool]]:
    text = text.strip()
    if text.startswith("!"):
        if negated:
            raise RuleError(f"a negation inside a negated list is not supported: {text!r}")
        yield from _flatten(text[1:], True)
    elif text.startswith("["):
        if not text.endswith("]"):
            raise RuleError(f"unbalanced list {text!r}")
        for item in _split_list(text[1:-1]):
            yield from _flatten(item, negated)
    else:
        yield text, negated


@dataclass(frozen=True)
class AddressSet:
    any: bool
    include: tuple[ipaddress.IPv4Network, ...] = ()
    exclude: tuple[ipaddress.IPv4Network, ...] = ()

    @classmethod
    def parse(cls, text: str, variables: dict[str, str], where: str) -> AddressSet:
        include: list[ipaddress.IPv4Network] = []
        exclude: list[ipaddress.IPv4Network] = []
        any_ = False
        for item, negated in _flatten(_expand(text, variables)):
            if item == "any":
                if negated:
                    raise RuleError(f"{where} '!any' matches nothing")
                any_ = True
                continue
            try:
                net = ipaddress.IPv4Network(item, strict=False)
            except ValueError:
                raise RuleError(f"{where} {item!r} is not an IPv4 address, CIDR, list or variable") from None
            (exclude if negated else include).append(net)
        return cls(any_ or not include, tuple(include), tuple(exclude))

    def match(self, ip: ipaddress.IPv4Address) -> bool:
        if any(ip in net for net in self.exclude):
            return False
        return self.any or any(ip in net for net in self.include)


@dataclass(frozen=True)
class PortSet:
    any: bool
    include: tuple[tuple[int, int], ...] = ()
    exclude: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, text: str, variables: dict[str, str], where: str) -> PortSet:
        include: list[tuple[int, int]] = []
        exclude: list[tuple[int, int]] = []
        any_ = False
        for item, negated in _flatten(_expand(text, variables)):
            if item == "any":
                any_ = True
                continue
            m = re.fullmatch(r"(\d*)(:?)(\d*)", item)
            if not m or not (m.group(1) or m.group(3)) or (not m.group(2) and m.group(3)):
                raise RuleError(f"{where} {item!r} is not a port, range, list or variable")
            low = int(m.group(1)) if m.group(1) else 0
            high = int(m.group(3)) if m.group(3) else (65535 if m.group(2) else low)
            if not 0 <= low <= high <= 65535:
                raise RuleError(f"{where} {item!r} is not within 0..65535")
            (exclude if negated else include).append((low, high))
        return cls(any_ or not include, tuple(include), tuple(exclude))

    def match(self, port: int) -> bool:
        if any(lo <= port <= hi for lo, hi in self.exclude):
            return False
        return self.any or any(lo <= port <= hi for lo, hi in self.include)


# -- detection options -------------------------------------------------------------------------


def parse_content(value: str) -> tuple[bytes, bool]:
    """A content value (``"abc|0D 0A|"``, ``!"x"``) -> (bytes, negated)."""
    text = value.strip()
    negated = text.startswith("!")
    if negated:
        text = text[1:].strip()
    if len(text) < 2 or not text.startswith('"') or not text.endswith('"'):
        raise RuleError(f"content {value!r} must be a quoted string")
    text = text[1:-1]
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text) or text[i + 1] not in '"\\;:|':
                raise RuleError(f"content {value!r}: bad escape at position {i + 1}")
            out += text[i + 1].encode("latin-1")
            i += 2
        elif ch == "|":
            end = text.find("|", i + 1)
            if end < 0:
                raise RuleError(f"content {value!r}: unterminated |hex| section")
            digits = text[i + 1 : end].replace(" ", "")
            if len(digits) % 2 or not re.fullmatch(r"[0-9A-Fa-f]*", digits):
                raise RuleError(f"content {value!r}: bad hex bytes {text[i + 1 : end]!r}")
            out += bytes.fromhex(digits)
            i = end + 1
        elif ch == '"':
            raise RuleError(f'content {value!r}: an inner quote must be escaped as \\"')
        else:
            out += ch.encode("latin-1")
            i += 1
    if not out:
        raise RuleError(f"content {value!r} is empty")
    return bytes(out), negated


@dataclass
class Match:
    """One content or pcre option, evaluated against one buffer."""

    kind: str
    buffer: str = "raw"
    negated: bool = False
    pattern: bytes = b""
    nocase: bool = False
    offset: int | None = None
    depth: int | None = None
    distance: int | None = None
    within: int | None = None
    regex: Any = None  # an RE2 pattern (re2._Regexp): linear time, whatever the input
    relative: bool = False
    anchored: bool = False

    def ends(self, buf: bytes, lowered: bytes, previous: int) -> Iterator[int]:
        """End positions where this option matches (a negated one yields ``previous`` once)."""
        found = self._positive(buf, lowered, previous)
        if self.negated:
            if next(found, None) is None:
                yield previous
            return
        yield from found

    def _positive(self, buf: bytes, lowered: bytes, previous: int) -> Iterator[int]:
        if self.kind == "pcre":
            assert self.regex is not None
            # A relative pcre sees the buffer from the previous match on (its ^ anchors there).
            start = previous if self.relative else 0
            view = buf[start:] if start else buf
            if self.anchored:
                m = self.regex.match(view)
                if m:
                    yield start + m.end()
                return
            for n, m in enumerate(self.regex.finditer(view)):
                if n >= MAX_CANDIDATES:
                    return
                yield start + m.end()
            return
        haystack = lowered if self.nocase else buf
        pattern = self.pattern.lower() if self.nocase else self.pattern
        if self.relative:
            start = max(0, previous + (self.distance or 0))
            limit = start + self.within if self.within is not None else len(haystack)
        else:
            start = self.offset or 0
            limit = start + self.depth if self.depth is not None else len(haystack)
        limit = min(limit, len(haystack))
        pos = haystack.find(pattern, start, limit)
        n = 0
        while pos >= 0 and n < MAX_CANDIDATES:
            yield pos + len(pattern)
            n += 1
            pos = haystack.find(pattern, pos + 1, limit)


def parse_pcre(value: str) -> Match:
    text = value.strip()
    negated = text.startswith("!")
    if negated:
        text = text[1:].strip()
    if len(text) < 2 or not text.startswith('"') or not text.endswith('"'):
        raise RuleError(f"pcre {value!r} must be a quoted /regex/flags")
    body = text[1:-1].replace('\\"', '"').replace("\\;", ";")
    m = re.fullmatch(r"/(.*)/([A-Za-z]*)", body, re.S)
    if not m:
        raise RuleError(f'pcre {value!r} must look like "/regex/flags"')
    pattern, flags = m.group(1), m.group(2)
    inline = ""
    match = Match("pcre", negated=negated)
    for flag in flags:
        if flag in "ism":
            inline += flag if flag not in inline else ""
        elif flag == "x":
            pattern = _unextended(pattern)
        elif flag in PCRE_BUFFERS:
            match.buffer = PCRE_BUFFERS[flag]
        elif flag == "R":
            match.relative = True
        elif flag == "A":
            match.anchored = True
        elif flag in "BOE":
            pass
        else:
            raise RuleError(f"pcre {value!r}: flag {flag!r} is not supported")
    try:
        source = pattern.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise RuleError(f"pcre {value!r} does not compile: {exc}") from None
    try:
        match.regex = re2.compile(b"(?" + inline.encode() + b")" + source if inline else source, _RE2_OPTIONS)
    except re2.error as exc:
        raise _pcre_refused(value, source, exc) from None
    return match


def _pcre_refused(value: str, source: bytes, exc: re2.error) -> RuleError:
    """Why RE2 cannot take a pattern: a pattern that is not a regex at all, or one that needs
    backtracking (which is what lets one request stall the engine)."""
    reason = exc.args[0].decode("latin-1", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(source)
    except re.error as bad:
        return RuleError(f"pcre {value!r} does not compile: {bad} (RE2: {reason})")
    return RuleError(
        f"pcre {value!r} cannot run on the IDS's linear-time regex engine (RE2: {reason}); backreferences, "
        "lookaround, \\Z, atomic groups and possessive or recursive patterns are not supported"
    )


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1  # a buffer's bytes are its characters, as in Snort
    options.log_errors = False
    return options


_RE2_OPTIONS = _re2_options()


def _unextended(pattern: str) -> str:
    """A pattern written with PCRE's ``x`` flag, without its layout (RE2 has no ``x``): white space
    outside a class and not escaped is dropped, and ``#`` starts a comment to the end of line."""
    out: list[str] = []
    escaped = comment = False
    class_from = -1  # where the open class's members start in ``out`` (a "]" first is a member)
    for ch in pattern:
        if comment:
            comment = ch != "\n"
        elif escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif class_from >= 0:
            if ch == "^" and len(out) == class_from:
                class_from += 1
            elif ch == "]" and len(out) > class_from:
                class_from = -1
            out.append(ch)
        elif ch == "[":
            out.append(ch)
            class_from = len(out)
        elif ch == "#":
            comment = True
        elif not ch.isspace():
            out.append(ch)
    return "".join(out)


def _numeric_test(value: str, option: str) -> tuple[str, int, int]:
    text = value.replace(" ", "")
    m = re.fullmatch(r"(\d+)<>(\d+)", text)
    if m:
        return "range", int(m.group(1)), int(m.group(2))
    m = re.fullmatch(r"([<>]?)(\d+)", text)
    if not m:
        raise RuleError(f"{option} {value!r} must be N, <N, >N or N<>M")
    return m.group(1) or "=", int(m.group(2)), 0


def _numeric_ok(test: tuple[str, int, int], value: int) -> bool:
    op, a, b = test
    if op == "range":
        return a < value < b
    return value < a if op == "<" else value > a if op == ">" else value == a


def _parse_flags(value: str) -> tuple[str, int]:
    text = value.split(",", 1)[0].strip()
    modifier = ""
    if text and text[0] in "+*!":
        modifier, text = text[0], text[1:]
    elif text and text[-1] in "+*!":
        modifier, text = text[-1], text[:-1]
    bits = 0
    for ch in text:
        if ch == "0":
            continue
        if ch not in TCP_FLAGS:
            raise RuleError(f"flags {value!r}: {ch!r} is not a TCP flag (F S R P A U C E 1 2 0)")
        bits |= TCP_FLAGS[ch]
    return modifier, bits


# -- rules --------------------------------------------------------------------------------------


@dataclass
class Subject:
    """What a rule is matched against: the addresses and the buffers."""

    proto: str
    src: ipaddress.IPv4Address
    sport: int
    dst: ipaddress.IPv4Address
    dport: int
    buffers: dict[str, bytes]
    http: bool = False
    tcp_flags: int = 0
    icmp_type: int = -1
    icmp_code: int = -1
    payload_size: int = 0
    _lowered: dict[str, bytes] = field(default_factory=dict)

    def lowered(self, name: str) -> bytes:
        value = self._lowered.get(name)
        if value is None:
            value = self._lowered[name] = self.buffers.get(name, b"").lower()
        return value


@dataclass
class Rule:
    """A compiled rule."""

    text: str
    action: str
    proto: str
    src: AddressSet
    sport: PortSet
    bidirectional: bool
    dst: AddressSet
    dport: PortSet
    sid: int
    gid: int
    rev: int
    msg: str
    classtype: str
    classification_id: int
    priority: int
    matches: list[Match] = field(default_factory=list)
    flow: frozenset[str] = frozenset()
    itype: tuple[str, int, int] | None = None
    icode: tuple[str, int, int] | None = None
    dsize: tuple[str, int, int] | None = None
    flags: tuple[str, int] | None = None
    _http: bool = True
    _packets: bool = True
    # (buffer, pattern, nocase) of each positive content: the rule cannot match a subject
    # whose buffer lacks one of them (Snort's fast-pattern prefilter, checked before the rest).
    _required: tuple[tuple[str, bytes, bool], ...] = ()

    @property
    def http_only(self) -> bool:
        return any(m.buffer != "raw" for m in self.matches)

    def applies_to_http(self) -> bool:
        return self.proto in ("tcp", "ip") and self.itype is None and self.icode is None and self.flags is None

    def applies_to_packets(self) -> bool:
        return not self.http_only

    def freeze(self) -> None:
        """Fix what the rule applies to, once compiled (checked for every request and packet)."""
        self._http = self.applies_to_http()
        self._packets = self.applies_to_packets()
        self._required = tuple(
            (m.buffer, m.pattern.lower() if m.nocase else m.pattern, m.nocase)
            for m in self.matches
            if m.kind == "content" and not m.negated
        )

    def _header_ok(self, s: Subject) -> bool:
        if self.proto != "ip" and self.proto != s.proto:
            return False
        ports = s.proto in ("tcp", "udp")
        forward = (
            self.src.match(s.src)
            and self.dst.match(s.dst)
            and (not ports or (self.sport.match(s.sport) and self.dport.match(s.dport)))
        )
        if forward:
            return True
        if not self.bidirectional:
            return False
        return (
            self.src.match(s.dst)
            and self.dst.match(s.src)
            and (not ports or (self.sport.match(s.dport) and self.dport.match(s.sport)))
        )

    def _flow_ok(self, s: Subject) -> bool:
        if not self.flow:
            return True
        if s.http:
            return not (self.flow & {"to_client", "from_server", "not_established"})
        established = bool(s.tcp_flags & TCP_FLAGS["A"]) and not s.tcp_flags & TCP_FLAGS["S"]
        if "established" in self.flow and (s.proto != "tcp" or not established):
            return False
        return not ("not_established" in self.flow and established)

    def _options_ok(self, s: Subject) -> bool:
        if self.itype is not None and (s.proto != "icmp" or not _numeric_ok(self.itype, s.icmp_type)):
            return False
        if self.icode is not None and (s.proto != "icmp" or not _numeric_ok(self.icode, s.icmp_code)):
            return False
        if self.dsize is not None and not _numeric_ok(self.dsize, s.payload_size):
            return False
        if self.flags is not None:
            if s.proto != "tcp" or s.http:
                return False
            modifier, bits = self.flags
            got = s.tcp_flags & 0xFF
            ok = {"+": got & bits == bits, "*": bool(got & bits), "!": not got & bits}.get(modifier, got == bits)
            if not ok:
                return False
        return True

    def matches_subject(self, s: Subject) -> bool:
        if not (self._http if s.http else self._packets):
            return False
        for buffer, pattern, nocase in self._required:
            if pattern not in (s.lowered(buffer) if nocase else s.buffers.get(buffer, b"")):
                return False
        if not (self._header_ok(s) and self._flow_ok(s) and self._options_ok(s)):
            return False
        return self._match_from(0, s, {})

    def _match_from(self, i: int, s: Subject, positions: dict[str, int]) -> bool:
        if i == len(self.matches):
            return True
        m = self.matches[i]
        if m.buffer not in s.buffers:
            return False
        previous = positions.get(m.buffer, 0)
        for end in m.ends(s.buffers[m.buffer], s.lowered(m.buffer) if m.nocase else b"", previous):
            saved = positions.get(m.buffer)
            positions[m.buffer] = end
            if self._match_from(i + 1, s, positions):
                return True
            if saved is None:
                positions.pop(m.buffer, None)
            else:
                positions[m.buffer] = saved
        return False


def compile_rule(
    text: str,
    classifications: dict[str, Classification],
    variables: dict[str, str] | None = None,
) -> Rule:
    """Parse and compile one rule; raises RuleError naming what is wrong."""
    variables = {**DEFAULT_VARS, **(variables or {})}
    text = text.strip()
    parsed = idsrule.parse(text)
    if parsed is None:
        raise RuleError(f"not a Snort rule (expected `action proto src sport -> dst dport (options)`): {text[:120]!r}")
    header = parsed["header"].split()
    if len(header) != 7:
        raise RuleError(
            f"the rule header {parsed['header']!r} must have 7 fields: action proto src sport dir dst dport"
        )
    action, proto, src, sport, direction, dst, dport = header
    if action not in ("alert", "log", "pass", "drop", "reject", "sdrop"):
        raise RuleError(f"action {action!r} is not a Snort action")
    proto = proto.lower()
    if proto not in PROTOCOLS:
        raise RuleError(f"protocol {proto!r} must be one of {', '.join(PROTOCOLS)}")
    if direction not in ("->", "<>"):
        raise RuleError(f"direction {direction!r} must be -> or <>")
    sid_text = str(parsed.get("sid") or "")
    if not parsed.get("sid"):
        raise RuleError("the rule has no sid")
    msg = parsed.get("msg") or ""
    classtype = parsed.get("classtype") or ""
    classification = classifications.get(classtype) if classtype else None
    if classtype and classification is None:
        raise RuleError(f"classtype {classtype!r} is not in classification.config")
    priority_text = next((o["value"] for o in parsed["options"] if o["name"] == "priority"), None)
    if priority_text is not None and not str(priority_text).strip().isdigit():
        raise RuleError(f"priority {priority_text!r} must be a number")
    rule = Rule(
        text=text,
        action=action,
        proto=proto,
        src=AddressSet.parse(src, variables, "source address"),
        sport=PortSet.parse(sport, variables, "source port"),
        bidirectional=direction == "<>",
        dst=AddressSet.parse(dst, variables, "destination address"),
        dport=PortSet.parse(dport, variables, "destination port"),
        sid=int(sid_text),
        gid=int(parsed.get("gid") or 1),
        rev=int(parsed.get("rev") or 1),
        msg=msg,
        classtype=classtype,
        classification_id=classification.id if classification else 0,
        priority=int(priority_text)
        if priority_text is not None
        else (classification.priority if classification else 0),
    )
    flow: set[str] = set()
    for option in parsed["options"]:
        name, value = option["name"], option["value"]
        value = value if value is None else str(value)
        last = rule.matches[-1] if rule.matches else None
        if name in IGNORED_OPTIONS:
            continue
        if name == "content":
            if value is None:
                raise RuleError("content needs a value")
            pattern, negated = parse_content(value)
            rule.matches.append(Match("content", pattern=pattern, negated=negated))
        elif name == "pcre":
            if value is None:
                raise RuleError("pcre needs a value")
            rule.matches.append(parse_pcre(value))
        elif name in HTTP_BUFFERS or name in ("nocase", "offset", "depth", "distance", "within"):
            if last is None or last.kind != "content":
                raise RuleError(f"{name} must follow a content option")
            if name in HTTP_BUFFERS:
                last.buffer = HTTP_BUFFERS[name]
            elif name == "nocase":
                last.nocase = True
            else:
                if value is None or not re.fullmatch(r"-?\d+", value.strip()):
                    raise RuleError(f"{name} needs a whole number, got {value!r}")
                setattr(last, name, int(value))
                if name in ("distance", "within"):
                    last.relative = True
        elif name == "flow":
            tokens = {t.strip() for t in (value or "").split(",") if t.strip()}
            known = {"to_server", "from_client", "to_client", "from_server", "established", "not_established",
                     "stateless", "no_stream", "only_stream"}  # fmt: skip
            if not tokens or tokens - known:
                raise RuleError(f"flow {value!r}: use {', '.join(sorted(known))}")
            flow |= {"to_client" if t == "from_server" else "to_server" if t == "from_client" else t for t in tokens}
        elif name in ("itype", "icode", "dsize"):
            setattr(rule, name, _numeric_test(value or "", name))
        elif name == "flags":
            rule.flags = _parse_flags(value or "")
        else:
            raise RuleError(f"option {name!r} is not supported by this IDS")
    rule.flow = frozenset(flow)
    if rule.http_only and proto not in ("tcp", "ip"):
        raise RuleError(f"http_* buffers need a tcp rule, not {proto}")
    if (rule.itype or rule.icode) and proto not in ("icmp", "ip"):
        raise RuleError("itype/icode need an icmp rule")
    rule.freeze()
    return rule


@dataclass
class RuleFileEntry:
    """A rule as written in a file, compiled or with the reason it cannot be."""

    text: str
    file: str
    rule: Rule | None
    error: str = ""


def read_rules_file(path: Path, classifications: dict[str, Classification]) -> list[RuleFileEntry]:
    """Every rule line of a file (comments and blank lines skipped; ``\\`` continues a line)."""
    if not path.exists():
        return []
    entries = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if pending:
            line = pending + " " + line
            pending = ""
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        if not line or line.startswith("#"):
            continue
        try:
            entries.append(RuleFileEntry(line, path.name, compile_rule(line, classifications)))
        except RuleError as exc:
            entries.append(RuleFileEntry(line, path.name, None, str(exc)))
    return entries


def build_rule(fields: dict[str, str]) -> str:
    """The original's AddRules template: ``alert <protocol> <src_ip> <src_port> -> <dest_ip>
    <dest_port> (msg:"<msg>"; content:<content>; sid:<sid>; rev:<rev>;)`` (content clause left out
    when empty; a bare content is quoted)."""

    def get(name: str, default: str = "") -> str:
        return (fields.get(name) or "").strip() or default

    protocol = get("protocol").lower()
    if not protocol:
        raise RuleError("protocol is required (tcp, udp, icmp or ip)")
    if protocol not in PROTOCOLS:
        raise RuleError(f"protocol {protocol!r} must be one of {', '.join(PROTOCOLS)}")
    sid = get("sid")
    if not sid.isdigit() or int(sid) == 0:
        raise RuleError(f"sid {fields.get('sid')!r} must be a positive number")
    rev = get("rev", "1")
    if not rev.isdigit():
        raise RuleError(f"rev {fields.get('rev')!r} must be a number")
    msg = get("msg")
    if not msg:
        raise RuleError("msg is required")
    msg = msg.replace("\\", "\\\\").replace('"', '\\"').replace(";", "\\;")
    for name in ("src_ip", "src_port", "dest_ip", "dest_port"):
        if " " in get(name, "any"):
            raise RuleError(f"{name} {fields.get(name)!r} must not contain spaces")
    options = [f'msg:"{msg}"']
    content = get("content")
    if content:
        if not (content.startswith('"') or content.startswith('!"')):
            content = '"' + content.replace("\\", "\\\\").replace('"', '\\"').replace(";", "\\;") + '"'
        options.append(f"content:{content}")
    options += [f"sid:{sid}", f"rev:{rev}"]
    header = (
        f"alert {protocol} {get('src_ip', 'any')} {get('src_port', 'any')} -> "
        f"{get('dest_ip', 'any')} {get('dest_port', 'any')}"
    )
    return f"{header} ({'; '.join(options)};)"


# -- subjects -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def http_subject(
    src: str,
    sport: int,
    dst: str,
    dport: int,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
) -> Subject:
    """An HTTP request as the rules see it."""
    request_line = f"{method} {target} HTTP/1.1\r\n".encode("latin-1")
    header_lines = []
    non_cookie = []
    cookies = []
    found = {"user-agent": b"", "host": b""}
    for k, v in headers:
        line = f"{k}: {v}\r\n".encode("latin-1", "replace")
        header_lines.append(line)
        lname = k.lower()
        if lname == "cookie":
            cookies.append(v)
            continue
        non_cookie.append(line)
        if lname in found and not found[lname]:
            found[lname] = v.encode("latin-1", "replace")
    raw_header = b"".join(header_lines)
    cookie = "; ".join(cookies).encode("latin-1", "replace")
    buffers = {
        "raw": request_line + raw_header + b"\r\n" + body,
        "uri": unquote_to_bytes(target) if "%" in target else target.encode(),
        "raw_uri": target.encode("latin-1", "replace"),
        "header": b"".join(non_cookie),
        "raw_header": raw_header,
        "method": method.encode("latin-1"),
        "cookie": cookie,
        "raw_cookie": cookie,
        "client_body": body,
        "user_agent": found["user-agent"],
        "host": found["host"],
    }
    return Subject(
        "tcp",
        _address(src),
        sport,
        _address(dst),
        dport,
        buffers,
        http=True,
        tcp_flags=TCP_FLAGS["A"] | TCP_FLAGS["P"],
        payload_size=len(buffers["raw"]),
    )
