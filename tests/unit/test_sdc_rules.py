"""IDS rules: the original's AddRules template, Snort syntax checks, and what matches what."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from sdc.ids.packets import capture_filter, decode
from sdc.ids.rules import (
    COMMUNITY_FILE,
    RuleError,
    build_rule,
    compile_rule,
    http_subject,
    load_classifications,
    read_rules_file,
)

CLASSES = load_classifications()

SCAN_YAML = {
    "sid": "10000003",
    "protocol": "tcp",
    "dest_port": "any",
    "dest_ip": "$HOME_NET",
    "src_port": "any",
    "src_ip": "any",
    "msg": "MALWARE-CNC User-Agent ASafaWeb Scan",
    "rev": "001",
    "content": '"asafaweb.com"',
}


def request(target: str = "/", ua: str = "curl/8.0", method: str = "GET", body: bytes = b"", **headers: str):  # type: ignore[no-untyped-def]
    hdrs = [("Host", "10.0.0.10:9180"), ("User-Agent", ua), *headers.items()]
    return http_subject("192.0.2.7", 40000, "10.0.0.10", 9180, method, target, hdrs, body)


def rule(options: str, header: str = "alert tcp any any -> any any") -> object:
    return compile_rule(f"{header} ({options} sid:1000001; rev:1;)", CLASSES)


def fires(options: str, subject: object, header: str = "alert tcp any any -> any any") -> bool:
    return rule(options, header).matches_subject(subject)  # type: ignore[attr-defined, no-any-return]


def test_the_scan_yaml_becomes_the_original_rule_text() -> None:
    assert build_rule(SCAN_YAML) == (
        'alert tcp any any -> $HOME_NET any (msg:"MALWARE-CNC User-Agent ASafaWeb Scan"; '
        'content:"asafaweb.com"; sid:10000003; rev:001;)'
    )


def test_an_empty_content_leaves_the_clause_out_and_a_bare_one_is_quoted() -> None:
    icmp = {**SCAN_YAML, "protocol": "icmp", "sid": "10000001", "msg": "icmp_test", "content": ""}
    assert build_rule(icmp) == 'alert icmp any any -> $HOME_NET any (msg:"icmp_test"; sid:10000001; rev:001;)'
    bare = build_rule({**SCAN_YAML, "content": 'say "hi"; now'})
    assert 'content:"say \\"hi\\"\\; now"' in bare
    assert compile_rule(bare, CLASSES).matches[0].pattern == b'say "hi"; now'


def test_the_scan_rule_matches_the_user_agent_once_and_nothing_else() -> None:
    scan = compile_rule(build_rule(SCAN_YAML), CLASSES)
    assert (scan.sid, scan.rev, scan.msg, scan.priority, scan.classification_id) == (
        10000003, 1, "MALWARE-CNC User-Agent ASafaWeb Scan", 0, 0,
    )  # fmt: skip
    assert scan.matches_subject(request(ua="asafaweb.com"))
    assert not scan.matches_subject(request(ua="curl/8.0"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"protocol": "sctp"}, "protocol 'sctp' must be one of tcp, udp, icmp, ip"),
        ({"sid": "abc"}, "sid 'abc' must be a positive number"),
        ({"msg": ""}, "msg is required"),
        ({"rev": "x1"}, "rev 'x1' must be a number"),
        ({"src_ip": "10.0.0.1 10.0.0.2"}, "src_ip '10.0.0.1 10.0.0.2' must not contain spaces"),
    ],
)
def test_bad_addrule_fields_are_named(fields: dict[str, str], message: str) -> None:
    with pytest.raises(RuleError) as err:
        build_rule({**SCAN_YAML, **fields})
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("garbage", "not a Snort rule"),
        ('alert tcp any any -> any any (msg:"x"; content:"a"; sid:7; byte_jump:4,0;)', "option 'byte_jump'"),
        ('alert tcp any any -> any any (msg:"x"; pcre:"/(unclosed/"; sid:7;)', "does not compile"),
        ('alert tcp any any -> any any (msg:"x"; content:"a|4|"; sid:7;)', "bad hex bytes"),
        ('alert tcp any any -> any any (msg:"x"; nocase; sid:7;)', "nocase must follow a content option"),
        ('alert tcp 10.0.0.300 any -> any any (msg:"x"; sid:7;)', "source address '10.0.0.300'"),
        ('alert tcp any 70000 -> any any (msg:"x"; sid:7;)', "source port '70000' is not within 0..65535"),
        ('alert tcp $NOPE any -> any any (msg:"x"; sid:7;)', "unknown variable $NOPE"),
        ('alert tcp any any -> any any (msg:"x"; classtype:nonsense; sid:7;)', "classtype 'nonsense'"),
        ('alert udp any any -> any any (msg:"x"; content:"a"; http_uri; sid:7;)', "http_* buffers need a tcp rule"),
        ('alert tcp any any -> any any (msg:"x"; content:"a";)', "the rule has no sid"),
    ],
)
def test_a_bad_rule_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(RuleError) as err:
        compile_rule(text, CLASSES)
    assert message in str(err.value)


def test_content_modifiers_pick_the_buffer_and_case() -> None:
    subject = request("/Shop/Cart?item=7", ua="Mozilla/5.0 ScanBot", Cookie="session=abc123")
    assert fires('content:"scanbot"; nocase; http_user_agent;', subject)
    assert not fires('content:"scanbot"; http_user_agent;', subject)
    assert fires('content:"/shop/cart"; nocase; http_uri;', subject)
    assert not fires('content:"Cookie"; http_header;', subject)  # cookies have their own buffer
    assert fires('content:"session=abc"; http_cookie;', subject)
    assert fires('content:"User-Agent|3A| Mozilla"; http_header;', subject)
    assert fires('content:"GET"; http_method;', subject)
    assert fires('content:"GET /Shop/Cart?item=7 HTTP/1.1|0D 0A|";', subject)  # raw request
    assert fires('content:!"sqlmap"; http_user_agent;', subject)
    assert not fires('content:!"Scan"; http_user_agent;', subject)


def test_uri_buffers_decode_and_keep_the_raw_form() -> None:
    subject = request("/a%2e%2e/etc%2fpasswd")
    assert fires('content:"/a../etc/passwd"; http_uri;', subject)
    assert not fires('content:"/a../etc/passwd"; http_raw_uri;', subject)
    assert fires('content:"%2fpasswd"; http_raw_uri;', subject)


def test_positions_offset_depth_distance_within() -> None:
    subject = request("/abcdefghij")
    assert fires('content:"abc"; http_uri; offset:1; depth:4;', subject)
    assert not fires('content:"abc"; http_uri; offset:2;', subject)
    assert fires('content:"b"; http_uri; content:"f"; http_uri; distance:3; within:1;', subject)
    assert not fires('content:"b"; http_uri; content:"f"; http_uri; distance:0; within:2;', subject)


def test_pcre_flags_choose_buffers_and_relative_matching() -> None:
    subject = request("/search?q=1%20UNION%20SELECT%20pw", body=b"name=x", method="POST")
    assert fires('pcre:"/union\\s+select/Ui";', subject)
    assert not fires('pcre:"/union\\s+select/U";', subject)
    assert fires('pcre:"/^name=/P";', subject)
    assert fires('content:"search"; http_uri; pcre:"/^\\?q=/UR";', subject)
    assert fires('pcre:!"/drop\\s+table/Ui";', subject)


@pytest.mark.timeout(60)  # Python's backtracking re took 5.8 s for 24 characters here, x4 per two more
def test_pcre_runs_in_linear_time_whatever_the_request() -> None:
    nested = rule('pcre:"/(a+)+$/U";')
    assert not nested.matches_subject(request("/" + "a" * 4096 + "!"))
    assert nested.matches_subject(request("/" + "a" * 4096))


@pytest.mark.parametrize(
    ("pcre", "reason"),
    [
        ("/(a)\\1/", "invalid escape sequence: \\1"),
        ("/user(?=name)/", "invalid perl operator: (?="),
        ("/(?<!x)y/U", "invalid perl operator: (?<!"),
        ("/a\\Z/", "invalid escape sequence: \\Z"),
    ],
)
def test_a_pcre_that_needs_backtracking_is_refused_with_the_reason(pcre: str, reason: str) -> None:
    with pytest.raises(RuleError) as err:
        rule(f'pcre:"{pcre}";')
    quoted = f'"{pcre}"'
    assert str(err.value).startswith(
        f"pcre {quoted!r} cannot run on the IDS's linear-time regex engine (RE2: {reason}); backreferences, "
    )


def test_pcre_flags_keep_their_meaning_on_the_linear_time_engine() -> None:
    subject = request("/x?q=1%20UNION%20SELECT", body=b"first\nsecond\xff\nthird", method="POST")
    assert fires('pcre:"/first.second/Ps";', subject)
    assert not fires('pcre:"/first.second/P";', subject)
    assert fires('pcre:"/^second\\xff$/Pm";', subject)
    assert not fires('pcre:"/^second/P";', subject)
    assert fires('pcre:"/union \\s+ select  # the attack/Uix";', subject)
    assert fires('pcre:"/[^a-z]{2}/P";', subject)  # "\xff\n": one byte is one character


def test_header_addresses_ports_and_direction() -> None:
    subject = request()
    assert fires('content:"GET";', subject, "alert tcp 192.0.2.0/24 any -> 10.0.0.10 $HTTP_PORTS")
    assert not fires('content:"GET";', subject, "alert tcp !192.0.2.0/24 any -> any any")
    assert not fires('content:"GET";', subject, "alert tcp any any -> any [80,443]")
    assert not fires('content:"GET";', subject, "alert tcp 10.0.0.10 any -> 192.0.2.7 any")
    assert fires('content:"GET";', subject, "alert tcp 10.0.0.10 any <> 192.0.2.7 any")
    assert fires('content:"GET";', subject, "alert tcp any 39000:41000 -> any 9000:")
    assert not fires('content:"GET";', subject, "alert icmp any any -> any any")
    assert fires('flow:to_server,established; content:"GET";', subject)
    assert not fires('flow:to_client; content:"GET";', subject)


def test_the_community_rules_all_compile_and_cover_the_guide_scenario() -> None:
    entries = read_rules_file(COMMUNITY_FILE, CLASSES)
    assert [e.error for e in entries if e.rule is None] == []
    rules = [e.rule for e in entries if e.rule is not None]
    assert [r.sid for r in rules] == list(range(1900001, 1900011))
    fired = [r.sid for r in rules if r.matches_subject(request(ua="asafaweb.com"))]
    assert fired == [1900001]
    scan = rules[0]
    assert (scan.classtype, scan.classification_id, scan.priority) == ("network-scan", 23, 3)
    attack = request("/x/../etc/passwd?q=<script>alert(1)</script>")
    assert [r.sid for r in rules if r.matches_subject(attack)] == [1900004, 1900005, 1900006]


def _frame(proto: int, payload: bytes, src: str = "10.1.0.5", dst: str = "10.1.0.30", l4: bytes = b"") -> bytes:
    total = 20 + len(l4) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, proto, 0,
                     ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)  # fmt: skip
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + l4 + payload


def test_packets_decode_and_match_icmp_and_tcp_rules() -> None:
    echo = _frame(1, b"abcdefgh", l4=struct.pack("!BBHHH", 8, 0, 0, 1, 1))
    decoded = decode(echo)
    assert decoded is not None
    assert (decoded.subject.proto, decoded.subject.icmp_type, decoded.subject.icmp_code) == ("icmp", 8, 0)
    icmp_rule = compile_rule(build_rule({**SCAN_YAML, "protocol": "icmp", "content": "", "sid": "10000001"}), CLASSES)
    assert icmp_rule.matches_subject(decoded.subject)
    assert rule("itype:8; icode:0;", "alert icmp any any -> any any").matches_subject(decoded.subject)  # type: ignore[attr-defined]
    assert not rule("itype:0;", "alert icmp any any -> any any").matches_subject(decoded.subject)  # type: ignore[attr-defined]

    syn = _frame(6, b"", l4=struct.pack("!HHIIBBHHH", 41000, 9, 0, 0, 5 << 4, 0x02, 1024, 0, 0))
    tcp = decode(syn)
    assert tcp is not None and (tcp.subject.sport, tcp.subject.dport, tcp.subject.tcp_flags) == (41000, 9, 0x02)
    tcp_rule = compile_rule(build_rule({**SCAN_YAML, "content": "", "sid": "10000002", "msg": "test"}), CLASSES)
    assert tcp_rule.matches_subject(tcp.subject)
    assert rule("flags:S;").matches_subject(tcp.subject)  # type: ignore[attr-defined]
    assert not rule("flow:established;").matches_subject(tcp.subject)  # type: ignore[attr-defined]
    scan_rule = compile_rule(build_rule(SCAN_YAML), CLASSES)
    assert not scan_rule.matches_subject(tcp.subject)
    with_payload = decode(_frame(6, b"UA: asafaweb.com", l4=struct.pack("!HHIIBBHHH", 41000, 9, 0, 0, 5 << 4, 0x18,
                                                                          1024, 0, 0)))  # fmt: skip
    assert with_payload is not None and scan_rule.matches_subject(with_payload.subject)
    http_only = compile_rule('alert tcp any any -> any any (msg:"x"; content:"asafaweb"; http_user_agent; sid:9;)',
                             CLASSES)  # fmt: skip
    assert not http_only.matches_subject(with_payload.subject)


def test_capture_filter_jumps_land_on_the_accept_and_drop_returns() -> None:
    program = capture_filter((80, 50052), "10.1.0.30")
    returns = [i for i, (code, _, _, _) in enumerate(program) if code == 0x06]
    for i, (code, jt, jf, _) in enumerate(program):
        if code in (0x15, 0x45):
            assert i + 1 + jt < len(program) and i + 1 + jf < len(program)
    assert program[-1] == (0x06, 0, 0, 0)  # drop
    assert program[returns[-2]] == (0x06, 0, 0, 0xFFFF)  # accept
    ports = [k for code, _, _, k in program if code == 0x15 and k in (80, 50052)]
    assert ports == [80, 50052, 80, 50052]
