// Clovisor data plane: per-session HTTP/1.x tracing on the host side of a pod's veth.
//
// Two direct-action tc programs share these maps: cv_to_pod on clsact egress of the host veth
// (packets delivered into the pod) and cv_from_pod on clsact ingress (packets leaving it).
// A connection is tracked from the client's point of view (client -> server); the pod is the
// server for its service ports and the client for egress-matched destinations.
//
// HTTP is parsed here: request and status lines, the headers Clovisor reports, and the message
// framing (Content-Length, chunked, no-body responses, read-until-close), so that pipelined and
// keep-alive exchanges pair exactly. Each exchange is kept in `exchanges` from its request head
// until its response ends, then copied once to the `events` ring buffer. Only the parsed
// fields reach user space; payload bytes are copied only for ports that have a user plugin.
//
// Parsing one segment may take several steps (pipelined heads, chunks, long heads): the parser
// is a tail-called program that handles one step and calls itself while bytes remain.
// Nothing is ever dropped: every program returns TC_ACT_OK.

#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/in.h>

#include "exchange.h"

// bpf_probe_read_kernel through a pointer of our own: BCC rewrites calls by that name to the
// legacy bpf_probe_read (which tc programs may not call) when /proc/kallsyms hides addresses,
// i.e. without CAP_SYSLOG. So the programs load with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN
// alone (the DaemonSet's). The ring buffer already needs kernel 5.8, which has this helper.
static long (*read_kernel)(void *dst, __u32 size, const void *src) = (void *)BPF_FUNC_probe_read_kernel;

#ifndef CONN_MAX
#define CONN_MAX 16384
#endif
#ifndef EXCH_MAX
#define EXCH_MAX 8192
#endif
#ifndef RING_PAGES
#define RING_PAGES 2048
#endif
#ifndef PORT_MAX
#define PORT_MAX 4096
#endif

#define HEAD_WIN 512          // bytes of a message head looked at per step
#define WIN_MASK 511
#define SCRATCH 1024
#ifndef MAX_LINES
#define MAX_LINES 16          // header lines handled per step (more: next step)
#endif
#define CHUNKS_PER_STEP 4

#define PORT_PAYLOAD 1        // port_cfg.flags: copy payload for plugins

// Parser states of one direction of a connection.
#define ST_IDLE 0             // expecting a message head
#define ST_HEAD 1
#define ST_BODY 2             // Content-Length body
#define ST_CHUNK 3            // chunked body
#define ST_UNTIL_CLOSE 4
#define ST_OPAQUE 5           // after an upgrade / CONNECT: no more parsing
#define ST_LOST 6             // lost framing: resynchronise at a message start

#define CH_SIZE 0
#define CH_DATA 1
#define CH_TRAILER 2

#define DIR_REQ 0
#define DIR_RESP 1

struct port_key {
    u32 ifindex;
    u16 port;
    u16 pad;
};

struct egress_key {
    u32 ifindex;
    u32 ip;                   // network order; 0 = any
    u16 port;
    u16 pad;
};

struct port_cfg {
    u8 proto;
    u8 flags;
    u16 pad;
};

struct dir_state {
    u32 next_seq;             // next TCP sequence number expected in this direction
    u32 remaining;            // body or chunk bytes still to come
    u32 msg_seq;              // exchange number of the message being parsed
    u32 msg_bytes;            // bytes of that message so far
    u64 clen;                 // Content-Length of the current head (~0 = none)
    u32 chunk_val;
    u8 state;
    u8 synced;
    u8 first_line;            // the next line is the request/status line
    u8 frag;                  // the next segment starts inside a line
    u8 cr_only;               // ...and that line so far is a lone CR
    u8 chunked;
    u8 ch_state;
    u8 ch_phase;              // 0: size digits, 1: extension/CR
    u16 trailer_len;
    u8 orphan;                // the response being parsed matched no request
    u8 fresh;                 // a response head begun in this packet: not paired with its request yet
};

struct exch_key {
    struct conn_key c;
    u32 seq;
};

#define EXCH_WIRE sizeof(struct exchange)
#define F_B3 N_STRINGS        // a single `b3` header: goes to the trace context slot (L_TP)
#define F_NONE 0xff
_Static_assert(F_B3 < 16, "a header field indexes scratch.value_start and line_end (field & 15)");

#define BARRIER_VAR(v) asm volatile("" : "+r"(v))

// size = the string's end if it is not empty, without a branch (each branch here would
// double the paths the verifier walks through every emission).
#define STR_END(l, f)                                                                           \
    {                                                                                           \
        u32 len = rec->lens[l];                                                                 \
        u32 nonempty = (len + 0xffff) >> 16;                                                    \
        BARRIER_VAR(nonempty);                                                                  \
        size += (0 - nonempty) & (offsetof(struct exchange, f) + len - size);                   \
    }

// Bytes of a record up to the end of its last non-empty string.
static __always_inline u32 wire_size(struct exchange *rec) {
    u32 size = EXCH_FIXED;
#define STRING_END(index, field, capacity) STR_END(index, field)
    EXCHANGE_STRINGS(STRING_END)
#undef STRING_END
    return size;
}

// A tracked connection. The exchange of a request that starts while no other one is in flight
// (all of them without pipelining) lives in `x`, so the usual exchange costs no map update or
// delete; the others go to `exchanges`.
struct conn {
    struct dir_state d[2];
    u64 pkts[2];
    u64 bytes[2];
    u64 start_ns;
    u64 last_ns;
    u32 next_req;             // exchange number of the next request
    u32 next_resp;            // exchange number the next response answers
    u8 proto;
    u8 flags;                 // XF_EGRESS
    u8 fin;                   // bit0: client FIN, bit1: server FIN
    u8 payload;               // copy payload for plugins
    u8 x_used;                // `x` holds exchange number `x_seq`
    u8 pad[3];
    u32 x_seq;
    u32 pad2;
    struct exchange x;
};

// Context handed from the entry programs to the parser across tail calls (per CPU: a tc
// program and its tail calls run on one CPU without migration).
struct pctx {
    struct conn_key key;
    u64 now;
    u32 off;                  // next payload byte to parse (offset in the skb)
    u32 end;                  // end of the payload
    u32 segs;                 // this packet's segments and IP bytes (already counted)
    u32 ipbytes;
    u8 dir;
    u8 tcp_flags;             // FIN/RST handled after the payload
    u8 pad[2];
};

struct scratch {
    u8 buf[SCRATCH];
    u16 nl[MAX_LINES];
    // Loop state of the head parser, kept in memory so that the verifier does not track
    // (and multiply) its exact values from one line to the next.
    u32 nlines;
    u32 n;
    u32 ls;
    u32 consumed;
    u32 done;
    u32 field;
    u32 vs;
    u32 cl_pos;               // Content-Length value in the window (0: none)
    u32 cl_end;
    u16 value_start[16];      // per header field (L_* or F_B3): where its value starts
    u16 line_end[16];         // ...and its line ends (0: not in this window)
    u32 mlen;
    struct exchange rec;
    struct payload_ev pev;
    struct conn conn;         // a new connection's value, before it goes into `conns`
};

BPF_HASH(svc_ports, struct port_key, struct port_cfg, PORT_MAX);
BPF_HASH(egress, struct egress_key, struct port_cfg, PORT_MAX);
BPF_HASH(conns, struct conn_key, struct conn, CONN_MAX);
BPF_HASH(exchanges, struct exch_key, struct exchange, EXCH_MAX);
BPF_RINGBUF_OUTPUT(events, RING_PAGES);
BPF_PERCPU_ARRAY(stats, u64, S_NSTATS);
BPF_PERCPU_ARRAY(ctxs, struct pctx, 1);
BPF_PERCPU_ARRAY(scratches, struct scratch, 1);
BPF_PROG_ARRAY(parsers, 4);

// At most `per_second` records are emitted per second (0: no limit), so that the agent's work
// stays bounded on an overloaded node; the others are counted, not emitted.
struct budget {
    u64 per_second;
    u64 second;
    u64 used;
};
BPF_ARRAY(budgets, struct budget, 1);

#define PARSE_STEP 0
#define PARSE_CHUNK 1
#define PARSE_HEAD 2
#define PARSE_LINES 3

#define C8(a, b, c, d, e, f, g, h)                                                             \
    ((u64)(a) | ((u64)(b) << 8) | ((u64)(c) << 16) | ((u64)(d) << 24) | ((u64)(e) << 32) |   \
     ((u64)(f) << 40) | ((u64)(g) << 48) | ((u64)(h) << 56))
#define BMASK(n) ((n) >= 8 ? ~0ULL : ((1ULL << ((n) * 8)) - 1))
#define LOWER 0x2020202020202020ULL
#define VOL(x) (*(volatile typeof(x) *)&(x))
#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_ACK 0x10

static __always_inline void count(u32 idx) {
    u64 *v = stats.lookup(&idx);
    if (v)
        *v += 1;
}

// The span budget, NULL when there is no limit.
static __always_inline struct budget *span_budget(void) {
    u32 zero = 0;
    struct budget *b = budgets.lookup(&zero);
    return b && b->per_second ? b : 0;
}

// Whether the budget of the second `now` is in is spent already.
static __always_inline int budget_spent(u64 now) {
    struct budget *b = span_budget();
    return b && VOL(b->second) == now / 1000000000ULL && VOL(b->used) >= b->per_second;
}

// Emits one record to the ring if the second's budget allows; 1 when it was emitted.
static __always_inline int emit_record(struct exchange *rec, u32 size, u64 now) {
    if (rec->flags & XF_UNSAMPLED) {
        count(S_OVER_BUDGET);
        return 0;
    }
    struct budget *b = span_budget();
    if (b) {
        u64 second = now / 1000000000ULL;
        if (VOL(b->second) != second) {
            VOL(b->second) = second;
            VOL(b->used) = 0;
        }
        lock_xadd(&b->used, 1);
        if (VOL(b->used) > b->per_second) {
            count(S_OVER_BUDGET);
            return 0;
        }
    }
    u64 bytes = size;
    BARRIER_VAR(bytes);  // bounded here, where the verifier needs it
    if (bytes > EXCH_WIRE)
        bytes = EXCH_WIRE;
    if (events.ringbuf_output(rec, bytes, 0) < 0) {
        count(S_RING_FULL);
        return 0;
    }
    return 1;
}

static __always_inline u64 load64(u8 *buf, u32 idx) {
    return *(u64 *)&buf[idx & WIN_MASK];
}

// Method code and the length of "METHOD " from the first 8 bytes of a request.
static __always_inline u32 match_method(u64 w, u8 *method) {
    if ((w & BMASK(4)) == C8('G', 'E', 'T', ' ', 0, 0, 0, 0)) { *method = 1; return 4; }
    if ((w & BMASK(5)) == C8('P', 'O', 'S', 'T', ' ', 0, 0, 0)) { *method = 2; return 5; }
    if ((w & BMASK(4)) == C8('P', 'U', 'T', ' ', 0, 0, 0, 0)) { *method = 3; return 4; }
    if ((w & BMASK(7)) == C8('D', 'E', 'L', 'E', 'T', 'E', ' ', 0)) { *method = 4; return 7; }
    if ((w & BMASK(5)) == C8('H', 'E', 'A', 'D', ' ', 0, 0, 0)) { *method = 5; return 5; }
    if (w == C8('O', 'P', 'T', 'I', 'O', 'N', 'S', ' ')) { *method = 6; return 8; }
    if ((w & BMASK(6)) == C8('P', 'A', 'T', 'C', 'H', ' ', 0, 0)) { *method = 7; return 6; }
    if (w == C8('C', 'O', 'N', 'N', 'E', 'C', 'T', ' ')) { *method = 8; return 8; }
    if ((w & BMASK(6)) == C8('T', 'R', 'A', 'C', 'E', ' ', 0, 0)) { *method = 9; return 6; }
    return 0;
}

#define HTTP1 C8('H', 'T', 'T', 'P', '/', '1', '.', 0)

static __always_inline void put_str(char *dst, u32 max, u8 *buf, u32 start, u32 len, u16 *lenp,
                                    struct exchange *rec, u8 trunc_flag) {
    if (rec->flags & XF_UNSAMPLED)
        return;
    if (len > max) {
        len = max;
        rec->flags |= trunc_flag;
    }
    u64 l = len;
    BARRIER_VAR(l);
    if (l > max)
        return;
    read_kernel(dst, l, &buf[start & WIN_MASK]);
    *lenp = l;
}

static __always_inline struct dir_state *dstate(struct conn *c, u8 dir) {
    return dir ? &c->d[DIR_RESP] : &c->d[DIR_REQ];
}

// A tail-called step's context and the connection it works on (NULL when either is gone).
static __always_inline struct conn *step_conn(struct pctx **x) {
    u32 zero = 0;
    *x = ctxs.lookup(&zero);
    if (!*x)
        return NULL;
    return conns.lookup(&(*x)->key);
}

// The per-CPU scratch space (head window, record being built, payload event).
static __always_inline struct scratch *step_scratch(void) {
    u32 zero = 0;
    return scratches.lookup(&zero);
}

// The record of exchange `seq` of a connection (NULL: none, e.g. evicted or the map was full).
static __always_inline struct exchange *find_exchange(struct conn *c, struct conn_key *key, u32 seq) {
    if (c->x_used && c->x_seq == seq)
        return &c->x;
    struct exch_key ek = {};
    ek.c = *key;
    ek.seq = seq;
    return exchanges.lookup(&ek);
}

static __always_inline void drop_exchange(struct conn *c, struct conn_key *key, u32 seq) {
    if (c->x_used && c->x_seq == seq) {
        c->x_used = 0;
        return;
    }
    struct exch_key ek = {};
    ek.c = *key;
    ek.seq = seq;
    exchanges.delete(&ek);
}

static __always_inline void emit_incomplete(struct conn *c, struct conn_key *key, u64 now) {
    // Requests still unanswered when the connection closes: reported once, then forgotten.
#pragma unroll
    for (int i = 0; i < 8; i++) {
        if (c->next_resp >= c->next_req)
            break;
        struct exchange *rec = find_exchange(c, key, c->next_resp);
        if (rec) {
            rec->kind = REC_INCOMPLETE;
            rec->resp_end_ns = now;
            rec->pkts[0] = c->pkts[0] - rec->pkts[0];
            rec->pkts[1] = c->pkts[1] - rec->pkts[1];
            rec->bytes[0] = c->bytes[0] - rec->bytes[0];
            rec->bytes[1] = c->bytes[1] - rec->bytes[1];
            emit_record(rec, wire_size(rec), now);
            drop_exchange(c, key, c->next_resp);
            count(S_CLOSED_INCOMPLETE);
        }
        c->next_resp++;
    }
}

static __always_inline void emit_tcp(struct conn *c, struct conn_key *key, u64 now) {
    struct scratch *s = step_scratch();
    if (!s)
        return;
    struct exchange *rec = &s->rec;
    __builtin_memset(rec, 0, EXCH_FIXED);
    rec->kind = REC_TCP;
    rec->proto = c->proto;
    rec->flags = c->flags;
    rec->req_start_ns = c->start_ns;
    rec->resp_end_ns = now;
    rec->pkts[0] = c->pkts[0];
    rec->pkts[1] = c->pkts[1];
    rec->bytes[0] = c->bytes[0];
    rec->bytes[1] = c->bytes[1];
    rec->ifindex = key->ifindex;
    rec->cip = key->cip;
    rec->sip = key->sip;
    rec->cport = key->cport;
    rec->sport = key->sport;
    rec->req_size = c->d[DIR_REQ].msg_bytes;
    rec->resp_size = c->d[DIR_RESP].msg_bytes;
    emit_record(rec, EXCH_FIXED, now);
    count(S_TCP_CONNS);
}

// The response of exchange `c->next_resp` has ended: emit it. `rec` is its record (NULL: none).
static __always_inline void finish_response_rec(struct conn *c, struct conn_key *key, struct dir_state *ds,
                                                u64 now, struct exchange *rec) {
    if (rec && !ds->orphan) {
        rec->kind = REC_EXCHANGE;
        rec->resp_end_ns = now;
        rec->resp_size = ds->msg_bytes;
        rec->pkts[0] = c->pkts[0] - rec->pkts[0];
        rec->pkts[1] = c->pkts[1] - rec->pkts[1];
        rec->bytes[0] = c->bytes[0] - rec->bytes[0];
        rec->bytes[1] = c->bytes[1] - rec->bytes[1];
        if (c->d[DIR_REQ].msg_seq == c->next_resp && c->d[DIR_REQ].state != ST_IDLE)
            rec->flags |= XF_REQ_INCOMPLETE;
        if (emit_record(rec, wire_size(rec), now))
            count(S_EXCHANGES);
        drop_exchange(c, key, c->next_resp);
    }
    if (!ds->orphan)
        c->next_resp++;
    ds->orphan = 0;
    ds->state = ST_IDLE;
    ds->msg_bytes = 0;
}

static __always_inline void finish_response(struct conn *c, struct conn_key *key, struct dir_state *ds,
                                            u64 now) {
    finish_response_rec(c, key, ds, now, find_exchange(c, key, c->next_resp));
}

static __always_inline void finish_request_rec(struct dir_state *ds, u64 now, struct exchange *rec) {
    if (rec) {
        rec->req_end_ns = now;
        rec->req_size = ds->msg_bytes;
    }
    ds->state = ST_IDLE;
    ds->msg_bytes = 0;
}

static __always_inline void finish_message_rec(struct conn *c, struct conn_key *key, struct dir_state *ds,
                                               u8 dir, u64 now, struct exchange *rec) {
    if (dir == DIR_REQ)
        finish_request_rec(ds, now, rec);
    else
        finish_response_rec(c, key, ds, now, rec);
}

static __always_inline void finish_message(struct conn *c, struct conn_key *key, struct dir_state *ds,
                                           u8 dir, u64 now) {
    u32 seq = dir == DIR_REQ ? ds->msg_seq : c->next_resp;
    finish_message_rec(c, key, ds, dir, now, find_exchange(c, key, seq));
}

// The bytes of a known-length body in [*off, end). Returns 1 when the body has ended.
static __always_inline int take_body(struct dir_state *ds, u32 *off, u32 end) {
    u32 k = end - *off;
    if (k > ds->remaining)
        k = ds->remaining;
    ds->remaining -= k;
    ds->msg_bytes += k;
    *off += k;
    return ds->remaining == 0;
}

// FIN/RST, after the segment's payload was parsed. Returns 1 when the connection is gone.
static __always_inline int handle_close(struct conn *c, struct conn_key *key, u8 dir, u8 tcp_flags, u64 now) {
    if (!(tcp_flags & (TCPF_FIN | TCPF_RST)))
        return 0;
    if (c->proto == PROTO_HTTP) {
        struct dir_state *resp = &c->d[DIR_RESP];
        if (dir == DIR_RESP && resp->state == ST_UNTIL_CLOSE) {
            c->fin |= 2;
            finish_response(c, key, resp, now);
        }
    }
    c->fin |= dir == DIR_REQ ? 1 : 2;
    if ((tcp_flags & TCPF_RST) || c->fin == 3) {
        if (c->proto == PROTO_HTTP)
            emit_incomplete(c, key, now);
        else
            emit_tcp(c, key, now);
        conns.delete(key);
        return 1;
    }
    return 0;
}

// Head of a new message in the window at `off`. Returns 0 when the bytes are no message start.
static __always_inline int begin_message(struct __sk_buff *skb, struct conn *c, struct pctx *x,
                                         struct dir_state *ds, u8 dir, u32 off, u32 end, u64 now,
                                         struct scratch *s) {
    struct conn_key *key = &x->key;
    u64 w = 0;
    if (end - off < 8 || bpf_skb_load_bytes(skb, off, &w, 8) < 0)
        return 0;
    ds->first_line = 1;
    ds->frag = 0;
    ds->cr_only = 0;
    ds->chunked = 0;
    ds->clen = ~0ULL;
    ds->msg_bytes = 0;
    if (dir == DIR_REQ) {
        u8 method = 0;
        if (!match_method(w, &method))
            return 0;
        // Inline when no other exchange is, else built in the scratch and stored in `exchanges`.
        int in_conn = !c->x_used;
        struct exchange *rec = in_conn ? &c->x : &s->rec;
        __builtin_memset(rec, 0, EXCH_FIXED);
        rec->method = method;
        rec->proto = PROTO_HTTP;
        rec->flags = c->flags;
        // Once the second's budget is spent, the exchange is only framed: no values copied.
        if (budget_spent(now))
            rec->flags |= XF_UNSAMPLED;
        rec->req_start_ns = now;
        // Counters before the packet that carries the request's first byte.
        rec->pkts[0] = c->pkts[0] - x->segs;
        rec->pkts[1] = c->pkts[1];
        rec->bytes[0] = c->bytes[0] - x->ipbytes;
        rec->bytes[1] = c->bytes[1];
        rec->ifindex = key->ifindex;
        rec->cip = key->cip;
        rec->sip = key->sip;
        rec->cport = key->cport;
        rec->sport = key->sport;
        rec->seq = c->next_req;
        ds->msg_seq = c->next_req;
        if (in_conn) {
            c->x_used = 1;
            c->x_seq = c->next_req;
        } else {
            struct exch_key ek = {};
            ek.c = *key;
            ek.seq = c->next_req;
            if (exchanges.update(&ek, rec) < 0)
                count(S_EXCH_FULL);
        }
        c->next_req++;
        count(S_REQUESTS);
    } else {
        if ((w & BMASK(7)) != HTTP1)
            return 0;
        ds->orphan = 0;
        ds->msg_seq = c->next_resp;
        ds->fresh = 1;
    }
    ds->state = ST_HEAD;
    return 1;
}

// The request or status line at the start of the window.
static __always_inline void parse_first_line(struct dir_state *ds, u8 dir, u8 *buf, u32 le, struct exchange *rec,
                                             struct scratch *s) {
    if (dir == DIR_REQ) {
        u8 method = 0;
        VOL(s->mlen) = match_method(load64(buf, 0), &method);
        u32 mlen = VOL(s->mlen) & 15;
        u32 uend = le;
        if (le >= mlen + 10 && (load64(buf, le - 8) & BMASK(7)) == HTTP1) {
            rec->req_ver = buf[(le - 1) & WIN_MASK] == '0' ? 10 : 11;
            uend = le - 9;
        }
        if (uend > mlen)
            put_str(rec->url, sizeof(rec->url), buf, mlen, uend - mlen, &rec->lens[L_URL], rec, XF_URL_TRUNC);
    } else {
        // A response's reason and type are its own: not an interim response's, nor the request's type.
        rec->lens[L_REASON] = 0;
        rec->lens[L_CTYPE] = 0;
        if (le < 12)
            return;
        rec->resp_ver = buf[7] == '0' ? 10 : 11;
        u32 d0 = buf[9] - '0';
        u32 d1 = buf[10] - '0';
        u32 d2 = buf[11] - '0';
        if (d0 < 10 && d1 < 10 && d2 < 10)
            rec->status = d0 * 100 + d1 * 10 + d2;
        if (le > 13)
            put_str(rec->reason, sizeof(rec->reason), buf, 13, le - 13, &rec->lens[L_REASON], rec, 0);
    }
}

// Which reported header a line holds: sets s->field (F_NONE: none) and s->vs (value start).
static __always_inline void match_header(struct dir_state *ds, u8 *buf, u32 ls, u32 le, struct scratch *s) {
    u64 w0 = load64(buf, ls) | LOWER;
    u64 w1 = load64(buf, ls + 8) | LOWER;
    u32 field = F_NONE;
    u32 vs = 0;
    if ((w0 & BMASK(5)) == C8('h', 'o', 's', 't', ':', 0, 0, 0)) {
        field = L_HOST; vs = 5;
    } else if (w0 == C8('u', 's', 'e', 'r', '-', 'a', 'g', 'e') && (w1 & BMASK(3)) == C8('n', 't', ':', 0, 0, 0, 0, 0)) {
        field = L_UA; vs = 11;
    } else if (w0 == C8('c', 'o', 'n', 't', 'e', 'n', 't', '-')) {
        if ((w1 & BMASK(7)) == C8('l', 'e', 'n', 'g', 't', 'h', ':', 0)) {
            VOL(s->cl_pos) = ls + 15;  // parsed once the loop is over
            VOL(s->cl_end) = le;
        } else if ((w1 & BMASK(5)) == C8('t', 'y', 'p', 'e', ':', 0, 0, 0)) {
            field = L_CTYPE; vs = 13;
        }
    } else if (w0 == C8('t', 'r', 'a', 'n', 's', 'f', 'e', 'r') && w1 == C8('-', 'e', 'n', 'c', 'o', 'd', 'i', 'n')) {
        if (le >= ls + 25 && ((load64(buf, le - 8) | LOWER) & ~BMASK(1)) == C8(0, 'c', 'h', 'u', 'n', 'k', 'e', 'd'))
            ds->chunked = 1;
    } else if (w0 == C8('x', '-', 'r', 'e', 'q', 'u', 'e', 's') && (w1 & BMASK(5)) == C8('t', '-', 'i', 'd', ':', 0, 0, 0)) {
        field = L_RID; vs = 13;
    } else if (w0 == C8('t', 'r', 'a', 'c', 'e', 'p', 'a', 'r') && (w1 & BMASK(4)) == C8('e', 'n', 't', ':', 0, 0, 0, 0)) {
        field = L_TP; vs = 12;
    } else if ((w0 & BMASK(3)) == C8('b', '3', ':', 0, 0, 0, 0, 0)) {
        field = F_B3; vs = 3;
    } else if (w0 == C8('x', '-', 'b', '3', '-', 't', 'r', 'a') && (w1 & BMASK(5)) == C8('c', 'e', 'i', 'd', ':', 0, 0, 0)) {
        field = L_B3T; vs = 13;
    } else if (w0 == C8('x', '-', 'b', '3', '-', 's', 'p', 'a') && (w1 & BMASK(4)) == C8('n', 'i', 'd', ':', 0, 0, 0, 0)) {
        field = L_B3S; vs = 12;
    } else if (w0 == C8('x', '-', 'b', '3', '-', 'p', 'a', 'r') && w1 == C8('e', 'n', 't', 's', 'p', 'a', 'n', 'i')) {
        field = L_B3P; vs = 18;
    } else if (w0 == C8('x', '-', 'e', 'n', 'v', 'o', 'y', '-') && w1 == C8('d', 'e', 'c', 'o', 'r', 'a', 't', 'o')) {
        field = L_DECO; vs = 28;
    }
    VOL(s->field) = field;
    VOL(s->vs) = ls + vs;
}

// One window of a message head, copied to the scratch buffer: the positions of its line
// ends. Loop state lives in the per-CPU scratch (VOL) so that the verifier's paths join.
static __always_inline u32 scan_window(struct __sk_buff *skb, struct pctx *x, struct scratch *s) {
    u32 n = x->end - x->off;
    VOL(s->nlines) = 0;
    VOL(s->n) = 1;
    if (n > HEAD_WIN)
        n = HEAD_WIN;
    if (n < 1)
        return 0;
    n = ((n - 1) & WIN_MASK) + 1;
    if (bpf_skb_load_bytes(skb, x->off, s->buf, n) < 0)
        return 0;
    u8 *buf = s->buf;

    // Pass 1: positions of '\n' in the window, a word at a time.
    VOL(s->nlines) = 0;
    VOL(s->n) = n;
    for (u32 i = 0; i < HEAD_WIN / 8; i++) {
        u32 base = i * 8;
        if (base >= VOL(s->n))
            break;
        u64 w = load64(buf, base) ^ 0x0a0a0a0a0a0a0a0aULL;
        if (!((w - 0x0101010101010101ULL) & ~w & 0x8080808080808080ULL))
            continue;
#pragma unroll
        for (u32 j = 0; j < 8; j++) {
            u32 p = base + j;
            u32 k = VOL(s->nlines);
            if (p < VOL(s->n) && buf[p & WIN_MASK] == '\n' && k < MAX_LINES) {
                s->nl[k & (MAX_LINES - 1)] = p;
                VOL(s->nlines) = k + 1;
            }
        }
    }

    return n;
}

// The value of header field `field` found in this window, into `dst` (lens[`slot`]).
static __always_inline void copy_field(struct scratch *s, struct exchange *rec, u32 field, u32 slot, char *dst,
                                       u32 max) {
    u32 le = VOL(s->line_end[field]) & WIN_MASK;
    if (!le)
        return;
    u32 vs = VOL(s->value_start[field]) & WIN_MASK;
    if (vs < le && s->buf[vs] == ' ')
        vs++;
    if (vs < le)
        put_str(dst, max, s->buf, vs, le - vs, &rec->lens[slot], rec, 0);
    else
        rec->lens[slot] = 0;
}

// The header values of a window; a `traceparent` wins over a `b3` header, in any order.
static __always_inline void copy_fields(struct scratch *s, struct exchange *rec) {
    copy_field(s, rec, L_HOST, L_HOST, rec->host, sizeof(rec->host));
    copy_field(s, rec, L_UA, L_UA, rec->user_agent, sizeof(rec->user_agent));
    copy_field(s, rec, L_RID, L_RID, rec->request_id, sizeof(rec->request_id));
    copy_field(s, rec, L_CTYPE, L_CTYPE, rec->content_type, sizeof(rec->content_type));
    copy_field(s, rec, L_B3T, L_B3T, rec->b3_trace_id, sizeof(rec->b3_trace_id));
    copy_field(s, rec, L_B3S, L_B3S, rec->b3_span_id, sizeof(rec->b3_span_id));
    copy_field(s, rec, L_B3P, L_B3P, rec->b3_parent_span_id, sizeof(rec->b3_parent_span_id));
    copy_field(s, rec, L_DECO, L_DECO, rec->envoy_decorator, sizeof(rec->envoy_decorator));
    if (VOL(s->line_end[L_TP])) {
        copy_field(s, rec, L_TP, L_TP, rec->trace_context, sizeof(rec->trace_context));
        rec->flags &= ~XF_TP_IS_B3;
    } else if (VOL(s->line_end[F_B3]) && (!rec->lens[L_TP] || (rec->flags & XF_TP_IS_B3))) {
        copy_field(s, rec, F_B3, L_TP, rec->trace_context, sizeof(rec->trace_context));
        rec->flags |= XF_TP_IS_B3;
    }
}

// The lines of the window that scan_window() found: parse those Clovisor reports, find the
// head's end. Returns the number of bytes consumed; sets *done when the head ended.
static __always_inline u32 parse_lines(struct conn *c, struct pctx *x, struct scratch *s, struct exchange *rec,
                                       int *done) {
    u32 off = x->off;
    u32 end = x->end;
    u8 dir = x->dir & 1;
    struct dir_state *ds = dstate(c, dir);
    u8 *buf = s->buf;
    u32 n = ((VOL(s->n) - 1) & WIN_MASK) + 1;

    VOL(s->ls) = 0;
    VOL(s->consumed) = 0;
    VOL(s->done) = 0;
    VOL(s->cl_pos) = 0;
    __builtin_memset(s->line_end, 0, sizeof(s->line_end));
    u32 first = 0;
    if (VOL(s->nlines) > 0) {
        u32 nlp = VOL(s->nl[0]) & WIN_MASK;
        u32 le = nlp;
        if (le > 0 && buf[(le - 1) & WIN_MASK] == '\r')
            le--;
        if (ds->frag) {
            // The rest of a line that began in the previous segment: an empty rest after a
            // lone CR ends the head.
            if (ds->cr_only && nlp == 0 && !ds->first_line)
                VOL(s->done) = 1;
            ds->frag = 0;
            ds->cr_only = 0;
            first = 1;
        } else if (ds->first_line) {
            ds->first_line = 0;
            parse_first_line(ds, dir, buf, le, rec, s);
            first = 1;
        }
        if (first) {
            VOL(s->ls) = nlp + 1;
            VOL(s->consumed) = nlp + 1;
        }
    }

    // Pass 2: header lines.
    for (u32 i = 0; i < MAX_LINES; i++) {
        // No break: every path leaves the loop at its one exit, where the verifier joins them.
        if (VOL(s->done) || i + first >= VOL(s->nlines))
            continue;
        u32 nlp = VOL(s->nl[(i + first) & (MAX_LINES - 1)]) & WIN_MASK;
        u32 ls = VOL(s->ls) & WIN_MASK;
        u32 le = nlp;  // line end without CR
        if (le > ls && buf[(le - 1) & WIN_MASK] == '\r')
            le--;
        VOL(s->consumed) = nlp + 1;
        VOL(s->ls) = nlp + 1;
        if (le <= ls) {
            VOL(s->done) = 1;
            continue;
        }
        match_header(ds, buf, ls, le, s);
        u32 field = VOL(s->field);
        if (field > F_B3)
            continue;
        // Positions only: the values are copied after the loop, whose paths then do not depend
        // on the record (the verifier walks every path of every iteration).
        VOL(s->value_start[field & 15]) = VOL(s->vs);
        VOL(s->line_end[field & 15]) = le;
    }
    if (!(rec->flags & XF_UNSAMPLED))
        copy_fields(s, rec);

    u32 cl = VOL(s->cl_pos);
    if (cl) {
        u32 cle = VOL(s->cl_end);
        u64 v = 0;
#pragma unroll
        for (int k = 0; k < 16; k++) {
            u32 p = cl + k;
            u32 ch = buf[p & WIN_MASK];
            if (p >= cle)
                break;
            if (ch == ' ' || ch == '\t')
                continue;
            if (ch - '0' >= 10)
                break;
            v = v * 10 + (ch - '0');
        }
        ds->clen = v;
    }

    u32 consumed = VOL(s->consumed) & 0x3ff;
    *done = VOL(s->done);
    if (*done)
        return consumed;
    if (VOL(s->nlines) >= MAX_LINES)
        return consumed;  // more lines in this window: the next step goes on from there
    if (consumed == n)
        return n;         // the window ended at a line end
    if (off + n < end && consumed > 0)
        return consumed;  // re-read the unfinished line in the next step
    // The window ends inside a line: in the next segment, or a line longer than the window.
    ds->frag = 1;
    ds->cr_only = (n - consumed == 1 && buf[(n - 1) & WIN_MASK] == '\r') ? 1 : 0;
    if (!ds->cr_only) {
        rec->flags |= XF_HEAD_TRUNC;
        count(S_HEAD_TRUNC);
        if (ds->first_line) {
            // The request line itself is longer than the window: keep what the URL fits.
            ds->first_line = 0;
            if (dir == DIR_REQ) {
                u8 method = 0;
                u32 mlen = match_method(load64(buf, 0), &method);
                put_str(rec->url, sizeof(rec->url), buf, mlen, n - mlen, &rec->lens[L_URL], rec, XF_URL_TRUNC);
            }
        }
    }
    return n;
}

// What follows a head (head_done's result).
#define HEAD_BODY 0           // a body, or (informational responses) another head
#define HEAD_END 1            // the message ended with its head
#define HEAD_END_OPAQUE 2     // ...and a tunnel or another protocol follows (CONNECT, 101)

// Framing after a head ended. The caller finishes the message (one place, so that the
// program inlines the emission once).
static __always_inline int head_done(struct conn *c, struct dir_state *ds, u8 dir, struct exchange *rec) {
    if (dir == DIR_REQ) {
        if (rec)
            rec->req_head = ds->msg_bytes;
        if (ds->chunked) {
            ds->state = ST_CHUNK;
            ds->ch_state = CH_SIZE;
            ds->ch_phase = 0;
            ds->chunk_val = 0;
        } else if (ds->clen != ~0ULL && ds->clen > 0) {
            ds->state = ST_BODY;
            ds->remaining = ds->clen;
        } else {
            return rec && rec->method == 8 ? HEAD_END_OPAQUE : HEAD_END;
        }
        return HEAD_BODY;
    }
    u16 status = 0;
    u8 method = 0;
    if (rec && !ds->orphan) {
        rec->resp_head = ds->msg_bytes;
        status = rec->status;
        method = rec->method;
        if (ds->chunked)
            rec->flags |= XF_CHUNKED;
    }
    if (status >= 100 && status < 200 && status != 101) {
        // Informational: the final response is still to come.
        ds->state = ST_IDLE;
        ds->msg_bytes = 0;
        return HEAD_BODY;
    }
    if (status == 101 || (method == 8 && status >= 200 && status < 300))
        return HEAD_END_OPAQUE;
    if (method == 5 || status == 204 || status == 304)
        return HEAD_END;
    if (ds->chunked) {
        ds->state = ST_CHUNK;
        ds->ch_state = CH_SIZE;
        ds->ch_phase = 0;
        ds->chunk_val = 0;
    } else if (ds->clen != ~0ULL) {
        if (ds->clen == 0)
            return HEAD_END;
        ds->state = ST_BODY;
        ds->remaining = ds->clen;
    } else {
        ds->state = ST_UNTIL_CLOSE;
        if (rec && !ds->orphan)
            rec->flags |= XF_CLOSE_DELIMITED;
    }
    return HEAD_BODY;
}

static __always_inline void emit_payload(struct scratch *s, struct conn_key *key, u8 dir, u32 seq, u32 len) {
    struct payload_ev *ev = &s->pev;
    ev->kind = REC_PAYLOAD;
    ev->dir = dir;
    ev->seq = seq;
    ev->c = *key;
    if (len > PAYLOAD_MAX)
        len = PAYLOAD_MAX;
    u64 l = len;
    BARRIER_VAR(l);
    if (l > PAYLOAD_MAX)
        return;
    ev->len = l;
    read_kernel(ev->data, l, s->buf);
    u64 size = sizeof(*ev) - PAYLOAD_MAX + l;
    BARRIER_VAR(size);
    if (size > sizeof(*ev))
        return;
    if (events.ringbuf_output(ev, size, 0) < 0)
        count(S_RING_FULL);
    else
        count(S_PAYLOAD_EVENTS);
}

// Tail call to the program for the parser's next state; returns only when the per-packet
// tail call limit was reached (then the rest of the segment cannot be parsed).
static __always_inline void next_step(struct __sk_buff *skb, struct dir_state *ds) {
    u8 st = ds->state;
    if (st == ST_IDLE || st == ST_HEAD || st == ST_LOST)
        parsers.call(skb, PARSE_HEAD);
    else if (st == ST_CHUNK)
        parsers.call(skb, PARSE_CHUNK);
    else
        parsers.call(skb, PARSE_STEP);
    count(S_STEPS_EXHAUSTED);
    ds->state = ST_LOST;
}

// Bodies with a known length, read-until-close and opaque streams; routes the other states.
int cv_parse(struct __sk_buff *skb) {
    struct pctx *x;
    struct conn *c = step_conn(&x);
    if (!c)
        return TC_ACT_OK;
    u8 dir = x->dir;
    struct dir_state *ds = dstate(c, dir);
    u32 off = x->off;
    u32 end = x->end;
    u64 now = x->now;

    if (off < end) {
        switch (ds->state) {
        case ST_BODY:
            if (take_body(ds, &off, end))
                finish_message(c, &x->key, ds, dir, now);
            break;
        case ST_UNTIL_CLOSE:
            ds->msg_bytes += end - off;
            off = end;
            break;
        case ST_OPAQUE:
            off = end;
            break;
        default:
            break;  // heads and chunks have programs of their own
        }
    }
    x->off = off;
    if (off < end) {
        next_step(skb, ds);
        off = end;
    }
    handle_close(c, &x->key, dir, x->tcp_flags, now);
    return TC_ACT_OK;
}

// Message heads, first half: start a message if none is open, then find the window's lines.
static __always_inline void head_step(struct __sk_buff *skb, struct conn *c, struct pctx *x, struct scratch *s) {
    u8 dir = x->dir;
    struct dir_state *ds = dstate(c, dir);
    u32 off = x->off;
    u32 end = x->end;
    u64 now = x->now;

    if (off < end && (ds->state == ST_IDLE || ds->state == ST_LOST)) {
        if (!begin_message(skb, c, x, ds, dir, off, end, now, s)) {
            if (ds->state != ST_LOST)
                count(S_LOST_SYNC);
            ds->state = ST_LOST;
            off = end;
        }
    }
    if (off < end && ds->state == ST_HEAD) {
        if (scan_window(skb, x, s) > 0) {
            parsers.call(skb, PARSE_LINES);
            count(S_STEPS_EXHAUSTED);
        }
        ds->fresh = 0;
        ds->state = ST_LOST;
        off = end;
    }
    x->off = off;
    if (off < end)
        next_step(skb, ds);
}

int cv_head(struct __sk_buff *skb) {
    struct pctx *x;
    struct conn *c = step_conn(&x);
    struct scratch *s = step_scratch();
    if (!c || !s)
        return TC_ACT_OK;
    head_step(skb, c, x, s);
    handle_close(c, &x->key, x->dir, x->tcp_flags, x->now);
    return TC_ACT_OK;
}

// Message heads, second half: the lines of the window, then the framing of what follows.
int cv_lines(struct __sk_buff *skb) {
    struct pctx *x;
    struct conn *c = step_conn(&x);
    struct scratch *s = step_scratch();
    if (!c || !s)
        return TC_ACT_OK;
    u8 dir = x->dir;
    struct dir_state *ds = dstate(c, dir);
    u32 off = x->off;
    u32 end = x->end;
    u64 now = x->now;

    // The exchange the head belongs to (NULL: none). One kept in `exchanges` (pipelined) is
    // parsed in a copy in the scratch and stored back, so that the head parser writes to one
    // kind of record besides the inline one: the verifier's paths would triple otherwise.
    struct exchange *rec = 0;
    int in_map = 0;
    if (c->x_used && c->x_seq == ds->msg_seq) {
        rec = &c->x;
    } else {
        struct exch_key ek = {};
        ek.c = x->key;
        ek.seq = ds->msg_seq;
        struct exchange *stored = exchanges.lookup(&ek);
        if (stored && read_kernel(&s->rec, sizeof(s->rec), stored) == 0) {
            rec = &s->rec;
            in_map = 1;
        }
    }
    if (ds->fresh && dir == DIR_RESP) {
        ds->fresh = 0;
        // No request to answer: an orphan. A request without a record (evicted, or the map was
        // full) is still answered, so that the responses after it pair with their requests.
        if (c->next_resp >= c->next_req) {
            ds->orphan = 1;
            count(S_ORPHAN_RESP);
        } else if (rec && !rec->resp_start_ns) {
            rec->resp_start_ns = now;
        }
    }
    if (dir == DIR_RESP && ds->orphan)
        rec = 0;

    int done = 0;
    u32 used = parse_lines(c, x, s, rec ? rec : &s->rec, &done);
    if (c->payload)
        emit_payload(s, &x->key, dir, ds->msg_seq, used);
    if (used == 0)
        used = end - off;
    off += used;
    ds->msg_bytes += used;
    if (done) {
        int ended = head_done(c, ds, dir, rec);
        // A body that follows in the same segment (often all of it): no step of its own.
        if (ended == HEAD_BODY && ds->state == ST_BODY && off < end && take_body(ds, &off, end))
            ended = HEAD_END;
        if (ended != HEAD_BODY)
            finish_message_rec(c, &x->key, ds, dir, now, rec);
        if (ended == HEAD_END_OPAQUE) {
            ds->state = ST_OPAQUE;
            c->d[DIR_REQ].state = ST_OPAQUE;
        }
        if (ended != HEAD_BODY && dir == DIR_RESP)
            in_map = 0;  // emitted and deleted
    }
    if (in_map) {
        struct exch_key ek = {};
        ek.c = x->key;
        ek.seq = s->rec.seq;
        exchanges.update(&ek, &s->rec);
    }
    x->off = off;
    if (off < end)
        next_step(skb, ds);
    handle_close(c, &x->key, dir, x->tcp_flags, now);
    return TC_ACT_OK;
}

// Chunked bodies: up to CHUNKS_PER_STEP chunks per invocation.
int cv_chunk(struct __sk_buff *skb) {
    struct pctx *x;
    struct conn *c = step_conn(&x);
    if (!c)
        return TC_ACT_OK;
    u8 dir = x->dir;
    struct dir_state *ds = dstate(c, dir);
    u32 off = x->off;
    u32 end = x->end;
    u64 now = x->now;

    for (int j = 0; j < CHUNKS_PER_STEP; j++) {
        if (off >= end || ds->state != ST_CHUNK)
            break;
        if (ds->ch_state == CH_DATA) {
            u32 k = end - off;
            if (k > ds->remaining)
                k = ds->remaining;
            ds->remaining -= k;
            ds->msg_bytes += k;
            off += k;
            if (ds->remaining == 0)
                ds->ch_state = CH_SIZE;
            continue;
        }
        // A size line or a trailer line, a byte at a time.
        u8 line[32] = {};
        u32 w = end - off;
        if (w > 32)
            w = 32;
        if (w >= 1)
            w = ((w - 1) & 31) + 1;
        if (w < 1 || bpf_skb_load_bytes(skb, off, line, w) < 0) {
            off = end;
            break;
        }
        u32 used = w;
        int line_done = 0;
        for (u32 k = 0; k < 32; k++) {
            if (k >= w)
                break;
            u8 ch = line[k];
            if (ch == '\n') {
                used = k + 1;
                line_done = 1;
                break;
            }
            if (ds->ch_state == CH_SIZE && ds->ch_phase == 0) {
                u32 v;
                if (ch >= '0' && ch <= '9')
                    v = ch - '0';
                else if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f')
                    v = (ch | 0x20) - 'a' + 10;
                else {
                    ds->ch_phase = 1;
                    continue;
                }
                ds->chunk_val = (ds->chunk_val << 4) | v;
            } else if (ds->ch_state == CH_TRAILER && ch != '\r') {
                ds->trailer_len++;
            }
        }
        off += used;
        ds->msg_bytes += used;
        if (!line_done)
            continue;
        if (ds->ch_state == CH_SIZE) {
            if (ds->chunk_val == 0) {
                ds->ch_state = CH_TRAILER;
                ds->trailer_len = 0;
            } else {
                ds->ch_state = CH_DATA;
                ds->remaining = ds->chunk_val + 2;
            }
            ds->chunk_val = 0;
            ds->ch_phase = 0;
        } else if (ds->trailer_len == 0) {
            finish_message(c, &x->key, ds, dir, now);
        } else {
            ds->trailer_len = 0;
        }
    }
    x->off = off;
    if (off < end)
        next_step(skb, ds);
    handle_close(c, &x->key, dir, x->tcp_flags, now);
    return TC_ACT_OK;
}

static __always_inline struct port_cfg *egress_match(u32 ifindex, u32 ip, u16 port) {
    struct egress_key k = {};
    k.ifindex = ifindex;
    k.ip = ip;
    k.port = port;
    struct port_cfg *cfg = egress.lookup(&k);
    if (cfg)
        return cfg;
    k.ip = 0;
    return egress.lookup(&k);
}

// The connection's key from the client's point of view.
static __always_inline void set_key(struct conn_key *key, struct iphdr *ip, u16 sport, u16 dport, u8 dir) {
    if (dir == DIR_REQ) {
        key->cip = ip->saddr; key->sip = ip->daddr; key->cport = sport; key->sport = dport;
    } else {
        key->cip = ip->daddr; key->sip = ip->saddr; key->cport = dport; key->sport = sport;
    }
}

// `len` (a constant) bytes at `off` (< 128) of the packet: read in place when they are in its
// linear part (the usual case, and cheaper than the helper), else copied by the helper.
static __always_inline int load_header(struct __sk_buff *skb, u32 off, void *to, u32 len) {
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    off &= 127;
    if (data + off + len <= data_end) {
        __builtin_memcpy(to, data + off, len);
        return 0;
    }
    return bpf_skb_load_bytes(skb, off, to, len);
}

static __always_inline int handle(struct __sk_buff *skb, int to_pod) {
    if (skb->protocol != htons(ETH_P_IP))
        return TC_ACT_OK;
    struct iphdr ip;
    if (load_header(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
        return TC_ACT_OK;
    if (ip.protocol != IPPROTO_TCP || (ip.frag_off & htons(0x3fff)))
        return TC_ACT_OK;
    u32 ihl = (ip.ihl & 0xf) * 4;
    if (ihl < 20)
        return TC_ACT_OK;
    struct tcphdr tcp;
    if (load_header(skb, ETH_HLEN + ihl, &tcp, sizeof(tcp)) < 0)
        return TC_ACT_OK;
    u16 sport = ntohs(tcp.source);
    u16 dport = ntohs(tcp.dest);
    u32 ifindex = skb->ifindex;

    // Most packets belong to a connection already tracked, with the pod as its server: that
    // lookup comes first, the configuration only for the others.
    struct conn_key key = {};
    key.ifindex = ifindex;
    u8 dir = to_pod ? DIR_REQ : DIR_RESP;
    set_key(&key, &ip, sport, dport, dir);
    struct conn *c = conns.lookup(&key);
    struct port_cfg *cfg = 0;
    u8 xflags = 0;
    if (!c) {
        struct port_key pk = {};
        pk.ifindex = ifindex;
        pk.port = to_pod ? dport : sport;
        cfg = svc_ports.lookup(&pk);
        if (!cfg) {
            cfg = to_pod ? egress_match(ifindex, ip.saddr, sport) : egress_match(ifindex, ip.daddr, dport);
            if (!cfg)
                return TC_ACT_OK;
            dir = to_pod ? DIR_RESP : DIR_REQ;
            xflags = XF_EGRESS;
            set_key(&key, &ip, sport, dport, dir);
            c = conns.lookup(&key);
        }
    }
    count(S_PACKETS);

    u8 tflags = ((u8 *)&tcp)[13];
    u32 doff = tcp.doff * 4;
    u32 tot = ntohs(ip.tot_len);
    if (tot == 0)  // BIG TCP: the length is in the skb only
        tot = skb->len - ETH_HLEN;
    u32 plen = tot > ihl + doff ? tot - ihl - doff : 0;
    u32 poff = ETH_HLEN + ihl + doff;
    u32 seq = ntohl(tcp.seq);
    u64 now = bpf_ktime_get_ns();

    if (!c) {
        if (!cfg)
            return TC_ACT_OK;
        int start = 0;
        if (dir == DIR_REQ && (tflags & (TCPF_SYN | TCPF_ACK)) == TCPF_SYN) {
            start = 1;
        } else if (dir == DIR_REQ && plen >= 8) {
            u64 w = 0;
            u8 m = 0;
            if (cfg->proto != PROTO_HTTP)
                start = 1;  // picked up mid-connection
            else if (bpf_skb_load_bytes(skb, poff, &w, 8) == 0 && match_method(w, &m))
                start = 1;  // a request on a connection older than Clovisor
        }
        if (!start)
            return TC_ACT_OK;
        struct scratch *s = step_scratch();
        if (!s)
            return TC_ACT_OK;
        struct conn *fresh = &s->conn;
        __builtin_memset(fresh, 0, offsetof(struct conn, x));  // `x` is unused until x_used
        fresh->proto = cfg->proto;
        fresh->flags = xflags;
        fresh->payload = cfg->flags & PORT_PAYLOAD;
        fresh->start_ns = now;
        if (tflags & TCPF_SYN) {
            fresh->d[DIR_REQ].next_seq = seq + 1;
            fresh->d[DIR_REQ].synced = 1;
        }
        if (conns.update(&key, fresh) < 0) {
            count(S_CONN_FULL);
            return TC_ACT_OK;
        }
        count(S_CONNS);
        c = conns.lookup(&key);
        if (!c)
            return TC_ACT_OK;
    }

    u32 segs = skb->gso_segs;
    // A GSO packet is `segs` packets on the wire, each with its own IP and TCP headers.
    u32 wire = segs > 1 ? tot + (segs - 1) * (ihl + doff) : tot;
    if (dir == DIR_REQ) {
        c->pkts[DIR_REQ] += segs ? segs : 1;
        c->bytes[DIR_REQ] += wire;
    } else {
        c->pkts[DIR_RESP] += segs ? segs : 1;
        c->bytes[DIR_RESP] += wire;
    }
    c->last_ns = now;
    struct dir_state *ds = dstate(c, dir);
    if (tflags & TCPF_SYN) {
        ds->next_seq = seq + 1;
        ds->synced = 1;
    }

    if (plen > 0) {
        if (!ds->synced) {
            ds->next_seq = seq;
            ds->synced = 1;
        }
        s32 delta = (s32)(ds->next_seq - seq);
        u32 skip = 0;
        if (delta > 0) {
            // Bytes already seen: a retransmission, whole or in part.
            count(S_RETRANS);
            skip = (u32)delta >= plen ? plen : (u32)delta;
        } else if (delta < 0) {
            // Bytes Clovisor never saw: the framing cannot be trusted any more.
            count(S_GAPS);
            if (ds->state != ST_OPAQUE)
                ds->state = ST_LOST;
            ds->next_seq = seq;
        }
        if (skip < plen) {
            ds->next_seq += plen - skip;
            if (c->proto == PROTO_HTTP) {
                u32 zero = 0;
                struct pctx *x = ctxs.lookup(&zero);
                if (x) {
                    x->key = key;
                    x->now = now;
                    x->off = poff + skip;
                    x->end = poff + plen;
                    x->dir = dir;
                    x->tcp_flags = tflags;
                    x->segs = segs ? segs : 1;
                    x->ipbytes = wire;
                    struct scratch *s = step_scratch();
                    u8 st = ds->state;
                    if (s && (st == ST_IDLE || st == ST_HEAD || st == ST_LOST))
                        head_step(skb, c, x, s);  // the usual case, without a tail call
                    else
                        next_step(skb, ds);
                }
            } else {
                ds->msg_bytes += plen - skip;
                if (c->payload) {
                    struct scratch *s = step_scratch();
                    if (s) {
                        u32 n = plen - skip;
                        if (n > PAYLOAD_MAX)
                            n = PAYLOAD_MAX;
                        n = ((n - 1) & (PAYLOAD_MAX - 1)) + 1;
                        if (bpf_skb_load_bytes(skb, poff + skip, s->buf, n) == 0)
                            emit_payload(s, &key, dir, 0, n);
                    }
                }
            }
        }
    }
    handle_close(c, &key, dir, tflags, now);
    return TC_ACT_OK;
}

int cv_to_pod(struct __sk_buff *skb) {
    return handle(skb, 1);
}

int cv_from_pod(struct __sk_buff *skb) {
    return handle(skb, 0);
}
