/* The exchange's part of a Clovisor span, serialized straight from a ring buffer record.
 *
 * clovisor/spans.py defines what a span holds (_exchange_part); this module writes the same
 * Span protobuf fields and tags without building Python objects per field, which is where the
 * agent spent most of its time per span. tests/unit/test_clovisor_spanwire.py checks that both
 * give the same message for every kind of record, trace header and plugin tag.
 *
 * The record layout is struct exchange of bpf/exchange.h. This module also exports that layout
 * (offsets, sizes, string slots, counter names, record kinds and flags), which is how
 * clovisor/records.py and clovisor/datapath.py know it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>

#include "bpf/exchange.h"

/* The Span fields written here, by their names in protos/records.proto; the unit tests compare
 * each number with the generated descriptor. */
#define SPAN_FIELDS(X)                                                                             \
    X(trace_id, 1) X(span_id, 2) X(parent_span_id, 3) X(operation_name, 5) X(start_time_us, 6)     \
    X(duration_us, 7) X(http_method, 8) X(http_url, 9) X(http_status_code, 10) X(user_agent, 11)   \
    X(request_size, 12) X(response_size, 13) X(tags, 21) X(http_host, 25)
#define SPAN_FIELD_NUMBER(name, number) F_##name = number,
enum { SPAN_FIELDS(SPAN_FIELD_NUMBER) };

static const char *const methods[] = {"", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH",
                                      "CONNECT", "TRACE"};

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
    int latin1; /* record bytes (latin-1 text, written as UTF-8) rather than ASCII or UTF-8 */
} text;

static text ascii(const char *s) { return (text){(const uint8_t *)s, (Py_ssize_t)strlen(s), 0}; }

static uint64_t u64_at(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static uint32_t u32_at(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint16_t u16_at(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* The address of a field of the exchange record at p. */
#define AT(field) (p + offsetof(struct exchange, field))

/* Python's // on the nanosecond values involved (they fit in int64). */
static int64_t floor_div(int64_t a, int64_t b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }

/* --- protobuf output ------------------------------------------------------------------------ */

typedef struct { uint8_t *p; } out;

static void put_varint(out *o, uint64_t v) {
    while (v >= 0x80) { *o->p++ = (uint8_t)(v | 0x80); v >>= 7; }
    *o->p++ = (uint8_t)v;
}

static Py_ssize_t utf8_size(text t) {
    Py_ssize_t n = t.n;
    if (t.latin1)
        for (Py_ssize_t i = 0; i < t.n; i++) n += t.p[i] >> 7;
    return n;
}

static void put_bytes(out *o, text t) {
    if (!t.latin1) { memcpy(o->p, t.p, (size_t)t.n); o->p += t.n; return; }
    for (Py_ssize_t i = 0; i < t.n; i++) {
        uint8_t c = t.p[i];
        if (c < 0x80) { *o->p++ = c; continue; }
        *o->p++ = (uint8_t)(0xc0 | c >> 6);
        *o->p++ = (uint8_t)(0x80 | (c & 0x3f));
    }
}

static void put_string(out *o, int field, text t) {
    if (!t.n) return; /* proto3: an empty string is not written */
    put_varint(o, (uint64_t)field << 3 | 2);
    put_varint(o, (uint64_t)utf8_size(t));
    put_bytes(o, t);
}

static void put_int(out *o, int field, int64_t v) {
    put_varint(o, (uint64_t)field << 3);
    put_varint(o, (uint64_t)v);
}

static int varint_size(uint64_t v) { int n = 1; while (v >= 0x80) { v >>= 7; n++; } return n; }

static void put_map_entry(out *o, text key, text value) {
    Py_ssize_t k = utf8_size(key), v = utf8_size(value);
    put_varint(o, (uint64_t)F_tags << 3 | 2);
    put_varint(o, (uint64_t)(2 + varint_size((uint64_t)k) + k + varint_size((uint64_t)v) + v));
    put_varint(o, 1 << 3 | 2); put_varint(o, (uint64_t)k); put_bytes(o, key);
    put_varint(o, 2 << 3 | 2); put_varint(o, (uint64_t)v); put_bytes(o, value);
}

/* A tag computed from the record; empty values are left out, and a plugin's tag of the same
 * name replaces it (the plugin tags are written after these). Returns -1 on a Python error. */
static int put_tag(out *o, PyObject *extra, const char *key, text value) {
    if (!value.n) return 0;
    if (extra) {
        PyObject *found = PyDict_GetItemString(extra, key);
        if (found) return 0;
        if (PyErr_Occurred()) return -1;
    }
    put_map_entry(o, ascii(key), value);
    return 0;
}

static char *decimal(char *buf, uint64_t v) { /* buf: 24 bytes */
    char tmp[24];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    char *p = buf;
    while (n) *p++ = tmp[--n];
    *p = 0;
    return buf;
}

/* --- trace context -------------------------------------------------------------------------- */

static int is_space(uint8_t c) { /* str.isspace() among latin-1 characters */
    return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f) || c == 0x85 || c == 0xa0;
}

/* spans._hex_id: a non-zero hex id, lower case, left-padded with zeros to `width` digits. */
static int hex_id(const uint8_t *s, Py_ssize_t n, int width, char *id) {
    while (n && is_space(s[0])) { s++; n--; }
    while (n && is_space(s[n - 1])) n--;
    if (!n || n > width) return 0;
    int nonzero = 0;
    char *digits = id + (width - n);
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c >= 'A' && c <= 'F') c = (uint8_t)(c + 32);
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return 0;
        nonzero |= c != '0';
        digits[i] = (char)c;
    }
    memset(id, '0', (size_t)(width - n));
    id[width] = 0;
    return nonzero;
}

/* The n-th '-'-separated part of s (n from 0); returns 0 when s has fewer parts. */
static int dash_part(text s, int n, text *part) {
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i <= s.n; i++) {
        if (i < s.n && s.p[i] != '-') continue;
        if (n-- == 0) { *part = (text){s.p + start, i - start, 1}; return 1; }
        start = i + 1;
    }
    return 0;
}

/* spans.trace_context: fills trace (33 bytes) and parent (17 bytes) from the request's headers;
 * returns whether the trace id was found (the parent is "" when absent or invalid). */
static int trace_context(const text *slots, uint8_t flags, char *trace, char *parent) {
    text tc = slots[L_TP], a, b;
    int have_ids = 0;
    parent[0] = 0;
    if (tc.n) {
        if (flags & XF_TP_IS_B3) {
            have_ids = dash_part(tc, 1, &b) && dash_part(tc, 0, &a);
        } else {
            text unused;
            have_ids = dash_part(tc, 3, &unused) && dash_part(tc, 1, &a) && dash_part(tc, 2, &b) && a.n == 32 &&
                       b.n == 16;
        }
    }
    if (!have_ids && slots[L_B3T].n) {
        a = slots[L_B3T];
        b = slots[L_B3S];
        have_ids = 1;
    }
    if (!have_ids || !hex_id(a.p, a.n, 32, trace)) return 0;
    if (b.n && !hex_id(b.p, b.n, 16, parent)) parent[0] = 0;
    return 1;
}

/* --- random ids ----------------------------------------------------------------------------- */

static uint8_t random_pool[4096];
static size_t random_used = sizeof random_pool;

static int random_hex(char *hex, size_t nbytes) {
    static const char digits[] = "0123456789abcdef";
    if (random_used + nbytes > sizeof random_pool) {
        size_t got = 0;
        while (got < sizeof random_pool) {
            ssize_t n = getrandom(random_pool + got, sizeof random_pool - got, 0);
            if (n < 0) { PyErr_SetFromErrno(PyExc_OSError); return -1; }
            got += (size_t)n;
        }
        random_used = 0;
    }
    for (size_t i = 0; i < nbytes; i++) {
        uint8_t byte = random_pool[random_used + i];
        hex[2 * i] = digits[byte >> 4];
        hex[2 * i + 1] = digits[byte & 15];
    }
    random_used += nbytes;
    hex[2 * nbytes] = 0;
    return 0;
}

/* --- the span ------------------------------------------------------------------------------- */

static const char *version(uint8_t v) { return v == 10 ? "HTTP/1.0" : v == 11 ? "HTTP/1.1" : ""; }

/* Each string slot of a record, in record order: its name, offset and capacity. */
static const struct slot { const char *name; Py_ssize_t offset, capacity; } string_slots[N_STRINGS] = {
#define STRING_SLOT(index, field, capacity) [index] = {#field, offsetof(struct exchange, field), capacity},
    EXCHANGE_STRINGS(STRING_SLOT)
#undef STRING_SLOT
};

static int read_slots(const Py_buffer *rec, text *slots, Py_ssize_t *text_bytes) {
    const uint8_t *p = rec->buf;
    *text_bytes = 0;
    for (int i = 0; i < N_STRINGS; i++) {
        Py_ssize_t n = u16_at(AT(lens) + 2 * i), offset = string_slots[i].offset;
        if (n > string_slots[i].capacity || (n && offset + n > rec->len)) {
            PyErr_Format(PyExc_ValueError, "exchange record of %zd bytes: string slot %d says %zd bytes", rec->len,
                         i, n);
            return -1;
        }
        slots[i] = (text){p + offset, n, 1};
        *text_bytes += n;
    }
    return 0;
}

static PyObject *encode_exchange(PyObject *self, PyObject *args) {
    Py_buffer rec;
    long long offset_ns;
    PyObject *extra = Py_None, *result = NULL, *value = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*L|O:encode_exchange", &rec, &offset_ns, &extra)) return NULL;
    if (extra == Py_None) extra = NULL;
    if (extra && !PyDict_Check(extra)) { PyErr_SetString(PyExc_TypeError, "extra tags must be a dict"); goto done; }
    if (rec.len < (Py_ssize_t)EXCH_FIXED) {
        PyErr_Format(PyExc_ValueError, "exchange record of %zd bytes, shorter than its %zu-byte header", rec.len,
                     EXCH_FIXED);
        goto done;
    }
    const uint8_t *p = rec.buf;
    text slots[N_STRINGS];
    Py_ssize_t text_bytes, extra_bytes = 0;
    if (read_slots(&rec, slots, &text_bytes) < 0) goto done;
    if (extra) {
        PyObject *k, *v;
        Py_ssize_t pos = 0, kn, vn;
        while (PyDict_Next(extra, &pos, &k, &v)) {
            if (!PyUnicode_Check(k) || !PyUnicode_Check(v)) {
                PyErr_SetString(PyExc_TypeError, "extra tags must map str to str");
                goto done;
            }
            if (!PyUnicode_AsUTF8AndSize(k, &kn) || !PyUnicode_AsUTF8AndSize(v, &vn)) goto done;
            extra_bytes += kn + vn + 24;
        }
    }

    uint8_t kind = *AT(kind), flags = *AT(flags);
    int http = kind != REC_TCP;
    uint64_t t0 = u64_at(AT(req_start_ns)), t1 = u64_at(AT(req_end_ns));
    uint64_t t2 = u64_at(AT(resp_start_ns)), t3 = u64_at(AT(resp_end_ns));
    int64_t duration_ns = (int64_t)(t3 - t0);
    int64_t duration_us = duration_ns < 0 ? 0 : duration_ns / 1000;
    const char *method = *AT(method) < sizeof methods / sizeof *methods ? methods[*AT(method)] : "";
    uint16_t status = u16_at(AT(status));

    char trace[33], parent[17], span_id[17];
    int traced = trace_context(slots, flags, trace, parent);
    if (!traced && random_hex(trace, 16) < 0) goto done;
    if (random_hex(span_id, 8) < 0) goto done;

    /* Every string of the record appears at most three times (the URL), as UTF-8 at most twice
     * its latin-1 size; the rest is fixed text and numbers. */
    value = PyBytes_FromStringAndSize(NULL, 1024 + 6 * text_bytes + extra_bytes);
    if (!value) goto done;
    out o = {(uint8_t *)PyBytes_AS_STRING(value)};

    put_string(&o, F_trace_id, ascii(trace));
    put_string(&o, F_span_id, ascii(span_id));
    put_string(&o, F_parent_span_id, ascii(parent));
    if (http) {
        text url = slots[L_URL], path = url;
        for (Py_ssize_t i = 0; i < url.n; i++)
            if (url.p[i] == '?') { path.n = i; break; }
        if (!path.n) path = ascii("/");
        text m = ascii(method);
        put_varint(&o, F_operation_name << 3 | 2);
        put_varint(&o, (uint64_t)(m.n + 1 + utf8_size(path)));
        put_bytes(&o, m);
        *o.p++ = ' ';
        put_bytes(&o, path);
    } else {
        char name[32] = "tcp ";
        decimal(name + 4, u16_at(AT(sport)));
        put_string(&o, F_operation_name, ascii(name));
    }
    put_int(&o, F_start_time_us, floor_div((int64_t)t0 + offset_ns, 1000));
    put_int(&o, F_duration_us, duration_us);
    if (http) {
        put_string(&o, F_http_method, ascii(method));
        put_string(&o, F_http_url, slots[L_URL]);
        if (kind == REC_EXCHANGE) put_int(&o, F_http_status_code, status);
        put_string(&o, F_user_agent, slots[L_UA]);
        put_string(&o, F_http_host, slots[L_HOST]);
    }
    put_int(&o, F_request_size, u32_at(AT(req_size)));
    put_int(&o, F_response_size, u32_at(AT(resp_size)));

    char num[4][24], duration[32];
    strcat(decimal(duration, (uint64_t)duration_us), " usec");
    if (put_tag(&o, extra, "reqpakcount", ascii(decimal(num[0], u64_at(AT(pkts[0]))))) < 0 ||
        put_tag(&o, extra, "reqbytecount", ascii(decimal(num[1], u64_at(AT(bytes[0]))))) < 0 ||
        put_tag(&o, extra, "resppakcount", ascii(decimal(num[2], u64_at(AT(pkts[1]))))) < 0 ||
        put_tag(&o, extra, "respbytecount", ascii(decimal(num[3], u64_at(AT(bytes[1]))))) < 0 ||
        put_tag(&o, extra, "duration", ascii(duration)) < 0)
        goto done;
    if (http) {
        if (put_tag(&o, extra, "reqmethod", ascii(method)) < 0 || put_tag(&o, extra, "requrl", slots[L_URL]) < 0 ||
            put_tag(&o, extra, "reqproto", ascii(version(*AT(req_ver)))) < 0 ||
            put_tag(&o, extra, "useragent", slots[L_UA]) < 0 ||
            put_tag(&o, extra, "host", slots[L_HOST]) < 0 ||
            put_tag(&o, extra, "requestid", slots[L_RID]) < 0 ||
            put_tag(&o, extra, "envoydecorator", slots[L_DECO]) < 0 ||
            (traced && put_tag(&o, extra, "traceid", ascii(trace)) < 0))
            goto done;
        if (kind == REC_EXCHANGE) {
            char code[24], latency[24];
            if (put_tag(&o, extra, "respstatus", slots[L_REASON]) < 0 ||
                put_tag(&o, extra, "respstatuscode", ascii(decimal(code, status))) < 0 ||
                put_tag(&o, extra, "respproto", ascii(version(*AT(resp_ver)))) < 0)
                goto done;
            if (t2 && t1) {
                int64_t server_ns = (int64_t)(t2 - t1);
                if (put_tag(&o, extra, "server.latency_us", ascii(decimal(latency, server_ns < 0 ? 0 : (uint64_t)server_ns / 1000))) < 0)
                    goto done;
            }
            if (put_tag(&o, extra, "content-type", slots[L_CTYPE]) < 0 ||
                (status >= 500 && put_tag(&o, extra, "error", ascii("true")) < 0))
                goto done;
        } else if (put_tag(&o, extra, "error", ascii("true")) < 0 ||
                   put_tag(&o, extra, "clovisor.incomplete", ascii("connection closed before the response ended")) < 0) {
            goto done;
        }
        if (((flags & XF_URL_TRUNC) && put_tag(&o, extra, "clovisor.url_truncated", ascii("true")) < 0) ||
            ((flags & XF_CHUNKED) && put_tag(&o, extra, "http.chunked", ascii("true")) < 0))
            goto done;
    }
    if (extra) {
        PyObject *k, *v;
        Py_ssize_t pos = 0, kn, vn;
        while (PyDict_Next(extra, &pos, &k, &v)) {
            const char *ks = PyUnicode_AsUTF8AndSize(k, &kn), *vs = PyUnicode_AsUTF8AndSize(v, &vn);
            if (vn) put_map_entry(&o, (text){(const uint8_t *)ks, kn, 0}, (text){(const uint8_t *)vs, vn, 0});
        }
    }
    if (_PyBytes_Resize(&value, (Py_ssize_t)(o.p - (uint8_t *)PyBytes_AS_STRING(value))) < 0) goto done;
    result = Py_BuildValue("(y#N)", trace, (Py_ssize_t)32, value);
    value = NULL;
done:
    Py_XDECREF(value);
    PyBuffer_Release(&rec);
    return result;
}

/* --- the layout, for Python ----------------------------------------------------------------- */

struct field { const char *name; size_t offset, size; };

#define EXCHANGE_FIELD(f) {#f, offsetof(struct exchange, f), sizeof(((struct exchange *)0)->f)}
static const struct field exchange_fields[] = {
    EXCHANGE_FIELD(kind), EXCHANGE_FIELD(method), EXCHANGE_FIELD(req_ver), EXCHANGE_FIELD(resp_ver),
    EXCHANGE_FIELD(status), EXCHANGE_FIELD(flags), EXCHANGE_FIELD(proto), EXCHANGE_FIELD(req_start_ns),
    EXCHANGE_FIELD(req_end_ns), EXCHANGE_FIELD(resp_start_ns), EXCHANGE_FIELD(resp_end_ns), EXCHANGE_FIELD(pkts),
    EXCHANGE_FIELD(bytes), EXCHANGE_FIELD(ifindex), EXCHANGE_FIELD(cip), EXCHANGE_FIELD(sip), EXCHANGE_FIELD(cport),
    EXCHANGE_FIELD(sport), EXCHANGE_FIELD(seq), EXCHANGE_FIELD(req_size), EXCHANGE_FIELD(req_head),
    EXCHANGE_FIELD(resp_size), EXCHANGE_FIELD(resp_head), EXCHANGE_FIELD(lens),
};

#define PAYLOAD_FIELD(name, f) {name, offsetof(struct payload_ev, f), sizeof(((struct payload_ev *)0)->f)}
static const struct field payload_fields[] = {
    PAYLOAD_FIELD("kind", kind), PAYLOAD_FIELD("dir", dir), PAYLOAD_FIELD("len", len), PAYLOAD_FIELD("seq", seq),
    PAYLOAD_FIELD("ifindex", c.ifindex), PAYLOAD_FIELD("cip", c.cip), PAYLOAD_FIELD("sip", c.sip),
    PAYLOAD_FIELD("cport", c.cport), PAYLOAD_FIELD("sport", c.sport), PAYLOAD_FIELD("data", data),
};

#define COUNTER_NAME(index, name) #name,
static const char *const counter_names[S_NSTATS] = {COUNTERS(COUNTER_NAME)};

static const struct { const char *name; int number; } span_fields[] = {
#define SPAN_FIELD(name, number) {#name, number},
    SPAN_FIELDS(SPAN_FIELD)
#undef SPAN_FIELD
};

#define LENGTH(array) (sizeof(array) / sizeof *(array))

/* {name: (offset, size)} */
static PyObject *fields_dict(const struct field *fields, size_t n) {
    PyObject *d = PyDict_New();
    for (size_t i = 0; d && i < n; i++) {
        PyObject *where = Py_BuildValue("(nn)", (Py_ssize_t)fields[i].offset, (Py_ssize_t)fields[i].size);
        if (!where || PyDict_SetItemString(d, fields[i].name, where) < 0) Py_CLEAR(d);
        Py_XDECREF(where);
    }
    return d;
}

static PyObject *string_slots_tuple(void) {
    PyObject *t = PyTuple_New(N_STRINGS);
    for (int i = 0; t && i < N_STRINGS; i++) {
        PyObject *slot = Py_BuildValue("(snn)", string_slots[i].name, string_slots[i].offset, string_slots[i].capacity);
        if (!slot) Py_CLEAR(t);
        else PyTuple_SET_ITEM(t, i, slot);
    }
    return t;
}

static PyObject *counter_names_tuple(void) {
    PyObject *t = PyTuple_New(S_NSTATS);
    for (int i = 0; t && i < S_NSTATS; i++) {
        PyObject *name = PyUnicode_FromString(counter_names[i]);
        if (!name) Py_CLEAR(t);
        else PyTuple_SET_ITEM(t, i, name);
    }
    return t;
}

static PyObject *span_fields_dict(void) {
    PyObject *d = PyDict_New();
    for (size_t i = 0; d && i < LENGTH(span_fields); i++) {
        PyObject *number = PyLong_FromLong(span_fields[i].number);
        if (!number || PyDict_SetItemString(d, span_fields[i].name, number) < 0) Py_CLEAR(d);
        Py_XDECREF(number);
    }
    return d;
}

/* Adds value (a new reference, or NULL after an error) as m.name. */
static int add(PyObject *m, const char *name, PyObject *value) {
    int result = value ? PyModule_AddObjectRef(m, name, value) : -1;
    Py_XDECREF(value);
    return result;
}

static PyMethodDef methods_table[] = {
    {"encode_exchange", encode_exchange, METH_VARARGS,
     "encode_exchange(record, clock_offset_ns, extra_tags=None) -> (kafka key, serialized exchange part)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "clovisor._spanwire", .m_size = -1, .m_methods = methods_table,
};

PyMODINIT_FUNC PyInit__spanwire(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (add(m, "EXCHANGE_FIELDS", fields_dict(exchange_fields, LENGTH(exchange_fields))) < 0 ||
        add(m, "PAYLOAD_FIELDS", fields_dict(payload_fields, LENGTH(payload_fields))) < 0 ||
        add(m, "STRING_SLOTS", string_slots_tuple()) < 0 || add(m, "COUNTERS", counter_names_tuple()) < 0 ||
        add(m, "SPAN_FIELDS", span_fields_dict()) < 0 ||
        PyModule_AddIntConstant(m, "EXCHANGE_SIZE", sizeof(struct exchange)) < 0 ||
        PyModule_AddIntConstant(m, "EXCHANGE_FIXED_SIZE", EXCH_FIXED) < 0 ||
        PyModule_AddIntMacro(m, REC_EXCHANGE) < 0 || PyModule_AddIntMacro(m, REC_INCOMPLETE) < 0 ||
        PyModule_AddIntMacro(m, REC_TCP) < 0 || PyModule_AddIntMacro(m, REC_PAYLOAD) < 0 ||
        PyModule_AddIntMacro(m, PROTO_HTTP) < 0 || PyModule_AddIntMacro(m, PROTO_TCP) < 0 ||
        PyModule_AddIntMacro(m, XF_EGRESS) < 0 || PyModule_AddIntMacro(m, XF_URL_TRUNC) < 0 ||
        PyModule_AddIntMacro(m, XF_TP_IS_B3) < 0 || PyModule_AddIntMacro(m, XF_HEAD_TRUNC) < 0 ||
        PyModule_AddIntMacro(m, XF_CHUNKED) < 0 || PyModule_AddIntMacro(m, XF_CLOSE_DELIMITED) < 0 ||
        PyModule_AddIntMacro(m, XF_REQ_INCOMPLETE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
