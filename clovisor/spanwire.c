/* The exchange's part of a Clovisor span, serialized straight from a ring buffer record.
 *
 * clovisor/spans.py defines what a span holds (_exchange_part); this module writes the same
 * Span protobuf fields and tags without building Python objects per field, which is where the
 * agent spent most of its time per span. tests/unit/test_clovisor_spanwire.py checks that both
 * give the same message for every kind of record, trace header and plugin tag.
 *
 * The record layout is struct exchange of bpf/session_tracking.c, as clovisor/records.py
 * describes it; spans.py compares records.py's sizes with FIXED_SIZE and SLOT_SIZES at import,
 * and the unit tests build their records with records.py's layout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>

enum {
    OFF_KIND = 0, OFF_METHOD = 1, OFF_REQ_VERSION = 2, OFF_RESP_VERSION = 3, OFF_STATUS = 4,
    OFF_FLAGS = 6, OFF_TIMES = 8, OFF_COUNTS = 40, OFF_SERVER_PORT = 86, OFF_REQ_SIZE = 92,
    OFF_RESP_SIZE = 100, OFF_LENGTHS = 108, FIXED_SIZE = 132,
};
enum { REC_EXCHANGE = 1, REC_TCP = 3 };
enum { XF_URL_TRUNC = 2, XF_TP_IS_B3 = 4, XF_CHUNKED = 16 };

enum slot {
    S_HOST, S_REASON, S_CONTENT_TYPE, S_URL, S_USER_AGENT, S_REQUEST_ID, S_TRACE_CONTEXT,
    S_B3_TRACE_ID, S_B3_SPAN_ID, S_B3_PARENT_SPAN_ID, S_ENVOY_DECORATOR, N_SLOTS
};
static const int slot_sizes[N_SLOTS] = {64, 32, 64, 256, 128, 64, 80, 32, 16, 16, 64};

/* Span field numbers (protos/records.proto). */
enum {
    F_TRACE_ID = 1, F_SPAN_ID = 2, F_PARENT_SPAN_ID = 3, F_OPERATION_NAME = 5, F_START_TIME_US = 6,
    F_DURATION_US = 7, F_HTTP_METHOD = 8, F_HTTP_URL = 9, F_HTTP_STATUS_CODE = 10, F_USER_AGENT = 11,
    F_REQUEST_SIZE = 12, F_RESPONSE_SIZE = 13, F_TAGS = 21, F_HTTP_HOST = 25,
};

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
    put_varint(o, (uint64_t)F_TAGS << 3 | 2);
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
    text tc = slots[S_TRACE_CONTEXT], a, b;
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
    if (!have_ids && slots[S_B3_TRACE_ID].n) {
        a = slots[S_B3_TRACE_ID];
        b = slots[S_B3_SPAN_ID];
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

static int read_slots(const Py_buffer *rec, text *slots, Py_ssize_t *text_bytes) {
    const uint8_t *p = rec->buf;
    Py_ssize_t offset = FIXED_SIZE;
    *text_bytes = 0;
    for (int i = 0; i < N_SLOTS; i++) {
        Py_ssize_t n = u16_at(p + OFF_LENGTHS + 2 * i);
        if (n > slot_sizes[i] || (n && offset + n > rec->len)) {
            PyErr_Format(PyExc_ValueError, "exchange record of %zd bytes: string slot %d says %zd bytes", rec->len,
                         i, n);
            return -1;
        }
        slots[i] = (text){p + offset, n, 1};
        *text_bytes += n;
        offset += slot_sizes[i];
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
    if (rec.len < FIXED_SIZE) {
        PyErr_Format(PyExc_ValueError, "exchange record of %zd bytes, shorter than its %d-byte header", rec.len,
                     FIXED_SIZE);
        goto done;
    }
    const uint8_t *p = rec.buf;
    text slots[N_SLOTS];
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

    uint8_t kind = p[OFF_KIND], flags = p[OFF_FLAGS];
    int http = kind != REC_TCP;
    uint64_t t0 = u64_at(p + OFF_TIMES), t1 = u64_at(p + OFF_TIMES + 8);
    uint64_t t2 = u64_at(p + OFF_TIMES + 16), t3 = u64_at(p + OFF_TIMES + 24);
    int64_t duration_ns = (int64_t)(t3 - t0);
    int64_t duration_us = duration_ns < 0 ? 0 : duration_ns / 1000;
    const char *method = p[OFF_METHOD] < sizeof methods / sizeof *methods ? methods[p[OFF_METHOD]] : "";
    uint16_t status = u16_at(p + OFF_STATUS);

    char trace[33], parent[17], span_id[17];
    int traced = trace_context(slots, flags, trace, parent);
    if (!traced && random_hex(trace, 16) < 0) goto done;
    if (random_hex(span_id, 8) < 0) goto done;

    /* Every string of the record appears at most three times (the URL), as UTF-8 at most twice
     * its latin-1 size; the rest is fixed text and numbers. */
    value = PyBytes_FromStringAndSize(NULL, 1024 + 6 * text_bytes + extra_bytes);
    if (!value) goto done;
    out o = {(uint8_t *)PyBytes_AS_STRING(value)};

    put_string(&o, F_TRACE_ID, ascii(trace));
    put_string(&o, F_SPAN_ID, ascii(span_id));
    put_string(&o, F_PARENT_SPAN_ID, ascii(parent));
    if (http) {
        text url = slots[S_URL], path = url;
        for (Py_ssize_t i = 0; i < url.n; i++)
            if (url.p[i] == '?') { path.n = i; break; }
        if (!path.n) path = ascii("/");
        text m = ascii(method);
        put_varint(&o, F_OPERATION_NAME << 3 | 2);
        put_varint(&o, (uint64_t)(m.n + 1 + utf8_size(path)));
        put_bytes(&o, m);
        *o.p++ = ' ';
        put_bytes(&o, path);
    } else {
        char name[32] = "tcp ";
        decimal(name + 4, u16_at(p + OFF_SERVER_PORT));
        put_string(&o, F_OPERATION_NAME, ascii(name));
    }
    put_int(&o, F_START_TIME_US, floor_div((int64_t)t0 + offset_ns, 1000));
    put_int(&o, F_DURATION_US, duration_us);
    if (http) {
        put_string(&o, F_HTTP_METHOD, ascii(method));
        put_string(&o, F_HTTP_URL, slots[S_URL]);
        if (kind == REC_EXCHANGE) put_int(&o, F_HTTP_STATUS_CODE, status);
        put_string(&o, F_USER_AGENT, slots[S_USER_AGENT]);
        put_string(&o, F_HTTP_HOST, slots[S_HOST]);
    }
    put_int(&o, F_REQUEST_SIZE, u32_at(p + OFF_REQ_SIZE));
    put_int(&o, F_RESPONSE_SIZE, u32_at(p + OFF_RESP_SIZE));

    char num[4][24], duration[32];
    strcat(decimal(duration, (uint64_t)duration_us), " usec");
    if (put_tag(&o, extra, "reqpakcount", ascii(decimal(num[0], u64_at(p + OFF_COUNTS)))) < 0 ||
        put_tag(&o, extra, "reqbytecount", ascii(decimal(num[1], u64_at(p + OFF_COUNTS + 16)))) < 0 ||
        put_tag(&o, extra, "resppakcount", ascii(decimal(num[2], u64_at(p + OFF_COUNTS + 8)))) < 0 ||
        put_tag(&o, extra, "respbytecount", ascii(decimal(num[3], u64_at(p + OFF_COUNTS + 24)))) < 0 ||
        put_tag(&o, extra, "duration", ascii(duration)) < 0)
        goto done;
    if (http) {
        if (put_tag(&o, extra, "reqmethod", ascii(method)) < 0 || put_tag(&o, extra, "requrl", slots[S_URL]) < 0 ||
            put_tag(&o, extra, "reqproto", ascii(version(p[OFF_REQ_VERSION]))) < 0 ||
            put_tag(&o, extra, "useragent", slots[S_USER_AGENT]) < 0 ||
            put_tag(&o, extra, "host", slots[S_HOST]) < 0 ||
            put_tag(&o, extra, "requestid", slots[S_REQUEST_ID]) < 0 ||
            put_tag(&o, extra, "envoydecorator", slots[S_ENVOY_DECORATOR]) < 0 ||
            (traced && put_tag(&o, extra, "traceid", ascii(trace)) < 0))
            goto done;
        if (kind == REC_EXCHANGE) {
            char code[24], latency[24];
            if (put_tag(&o, extra, "respstatus", slots[S_REASON]) < 0 ||
                put_tag(&o, extra, "respstatuscode", ascii(decimal(code, status))) < 0 ||
                put_tag(&o, extra, "respproto", ascii(version(p[OFF_RESP_VERSION]))) < 0)
                goto done;
            if (t2 && t1) {
                int64_t server_ns = (int64_t)(t2 - t1);
                if (put_tag(&o, extra, "server.latency_us", ascii(decimal(latency, server_ns < 0 ? 0 : (uint64_t)server_ns / 1000))) < 0)
                    goto done;
            }
            if (put_tag(&o, extra, "content-type", slots[S_CONTENT_TYPE]) < 0 ||
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

static PyMethodDef methods_table[] = {
    {"encode_exchange", encode_exchange, METH_VARARGS,
     "encode_exchange(record, clock_offset_ns, extra_tags=None) -> (kafka key, serialized exchange part)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "clovisor._spanwire", .m_size = -1, .m_methods = methods_table,
};

PyMODINIT_FUNC PyInit__spanwire(void) {
    PyObject *m = PyModule_Create(&module), *sizes = PyTuple_New(N_SLOTS);
    if (!m || !sizes) goto fail;
    for (int i = 0; i < N_SLOTS; i++) PyTuple_SET_ITEM(sizes, i, PyLong_FromLong(slot_sizes[i]));
    if (PyModule_AddIntConstant(m, "FIXED_SIZE", FIXED_SIZE) < 0 || PyModule_AddObject(m, "SLOT_SIZES", sizes) < 0)
        goto fail;
    return m;
fail:
    Py_XDECREF(sizes);
    Py_XDECREF(m);
    return NULL;
}
