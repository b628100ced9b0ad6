// The records Clovisor's BPF programs write to the ring buffer, and their counters: the one
// declaration shared by the programs (session_tracking.c, compiled by BCC) and by user space
// (spanwire.c, which exports the layout to clovisor/records.py and clovisor/datapath.py).
#ifndef CLOVISOR_EXCHANGE_H
#define CLOVISOR_EXCHANGE_H

#if !defined(__BPF__) && !defined(__KERNEL__)
#include <stddef.h>
#include <stdint.h>
typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
#endif

// Record kinds (first byte of every ring buffer record).
#define REC_EXCHANGE 1        // a request paired with its complete response
#define REC_INCOMPLETE 2      // a request whose connection closed before the response ended
#define REC_TCP 3             // a TCP connection on a port whose protocol is not HTTP
#define REC_PAYLOAD 4         // payload bytes for a user plugin

// Protocols of a traced port.
#define PROTO_HTTP 1
#define PROTO_TCP 3

// Exchange flags.
#define XF_EGRESS 1           // the pod is the client (egress match)
#define XF_URL_TRUNC 2
#define XF_TP_IS_B3 4         // trace context slot holds a single `b3` header
#define XF_HEAD_TRUNC 8       // a header line was longer than the window or split by a segment
#define XF_CHUNKED 16         // response used chunked transfer coding
#define XF_CLOSE_DELIMITED 32 // response ended with the connection
#define XF_REQ_INCOMPLETE 64  // request body had not ended
#define XF_UNSAMPLED 128      // began when the second's budget was spent: framed, never emitted

// Counters (index into `stats`, and the name Clovisor reports).
#define COUNTERS(X)                                                                             \
    X(S_PACKETS, packets)                                                                       \
    X(S_CONNS, connections)                                                                     \
    X(S_CONN_FULL, connection_map_full)                                                         \
    X(S_EXCH_FULL, exchange_map_full)                                                           \
    X(S_RING_FULL, ring_buffer_full)                                                            \
    X(S_LOST_SYNC, lost_sync)                                                                   \
    X(S_ORPHAN_RESP, orphan_responses)                                                          \
    X(S_RETRANS, retransmissions)                                                               \
    X(S_STEPS_EXHAUSTED, parse_steps_exhausted)                                                 \
    X(S_HEAD_TRUNC, head_truncated)                                                             \
    X(S_CLOSED_INCOMPLETE, closed_incomplete)                                                   \
    X(S_EXCHANGES, exchanges)                                                                   \
    X(S_PAYLOAD_EVENTS, payload_events)                                                         \
    X(S_GAPS, sequence_gaps)                                                                    \
    X(S_REQUESTS, requests)                                                                     \
    X(S_TCP_CONNS, tcp_connections)                                                             \
    X(S_OVER_BUDGET, over_budget)

#define COUNTER_INDEX(index, name) index,
enum { COUNTERS(COUNTER_INDEX) S_NSTATS };
#undef COUNTER_INDEX

// The string slots of an exchange, in record order (the strings most often present first):
// index into `lens`, field, capacity in bytes.
#define EXCHANGE_STRINGS(X)                                                                     \
    X(L_HOST, host, 64)                                                                         \
    X(L_REASON, reason, 32)                                                                     \
    X(L_CTYPE, content_type, 64)                                                                \
    X(L_URL, url, 256)                                                                          \
    X(L_UA, user_agent, 128)                                                                    \
    X(L_RID, request_id, 64)                                                                    \
    X(L_TP, trace_context, 80)                                                                  \
    X(L_B3T, b3_trace_id, 32)                                                                   \
    X(L_B3S, b3_span_id, 16)                                                                    \
    X(L_B3P, b3_parent_span_id, 16)                                                             \
    X(L_DECO, envoy_decorator, 64)

#define STRING_INDEX(index, field, capacity) index,
enum { EXCHANGE_STRINGS(STRING_INDEX) N_STRINGS };
#undef STRING_INDEX

struct conn_key {
    u32 ifindex;
    u32 cip;                  // network order
    u32 sip;
    u16 cport;                // host order
    u16 sport;
};

// One exchange; also the ring buffer record of kinds 1-3. Strings are not NUL-terminated:
// `lens` gives each one's length, in the order of the string slots; bytes past a string's
// length are undefined. A record ends after its last non-empty string (wire_size).
struct exchange {
    u8 kind;
    u8 method;
    u8 req_ver;               // 10 = HTTP/1.0, 11 = HTTP/1.1, 0 = unknown
    u8 resp_ver;
    u16 status;
    u8 flags;
    u8 proto;
    u64 req_start_ns;
    u64 req_end_ns;
    u64 resp_start_ns;
    u64 resp_end_ns;
    u64 pkts[2];              // at the request's start; deltas when emitted
    u64 bytes[2];
    u32 ifindex;
    u32 cip;
    u32 sip;
    u16 cport;
    u16 sport;
    u32 seq;
    u32 req_size;
    u32 req_head;
    u32 resp_size;
    u32 resp_head;
    u16 lens[N_STRINGS];
    u16 pad;
#define STRING_FIELD(index, field, capacity) char field[capacity];
    EXCHANGE_STRINGS(STRING_FIELD)
#undef STRING_FIELD
};

// Bytes of a record before its strings (the first slot's offset).
#define EXCH_FIXED offsetof(struct exchange, host)

#define PAYLOAD_MAX 512       // bytes copied per payload event (plugin ports only)

// A record of kind 4: the first bytes of one message head (HTTP) or segment (TCP).
struct payload_ev {
    u8 kind;
    u8 dir;                   // 0: request, 1: response
    u16 len;
    u32 seq;
    struct conn_key c;
    u8 data[PAYLOAD_MAX];
};

#endif
