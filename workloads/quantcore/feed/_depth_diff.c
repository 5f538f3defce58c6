/* binance.python_parse_depth_diff, compiled: a canonical diff frame parsed in one pass.
 *
 * Why: the regex match, its groups and the level parsing were a quarter of a shard's CPU.
 * This accepts exactly the text binance._CANONICAL_DIFF matches, with the same checks after
 * it (the symbol agrees with the stream, U <= u, no zero price, no leading zero), and returns
 * (symbol, U, u, E, bids, asks). Anything else returns None, and the caller decodes the frame
 * the slow way, which says what is wrong with it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_SYMBOL 40
#define MAX_ID_DIGITS 18 /* binance._ID: fits in a signed 64-bit integer */
/* Digit limits of codec.PLAIN_LEVEL: every such number is finite and below MAX_PRICE/MAX_QTY. */
#define PRICE_INT_DIGITS 11
#define QTY_INT_DIGITS 14
#define FRAC_DIGITS 20

/* 10^0 .. 10^22 are exact doubles. */
static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

typedef struct {
    const char *s;
    const char *end;
} Cursor;

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int expect(Cursor *c, const char *literal) {
    size_t n = strlen(literal);
    if ((size_t)(c->end - c->s) < n || memcmp(c->s, literal, n) != 0) return -1;
    c->s += n;
    return 0;
}

/* `0|[1-9][0-9]{0,17}` */
static int take_id(Cursor *c, long long *out) {
    const char *start = c->s;
    long long value = 0;
    while (c->s < c->end && is_digit(*c->s)) {
        value = value * 10 + (*c->s - '0');
        c->s++;
        if (c->s - start > MAX_ID_DIGITS) return -1;
    }
    if (c->s == start || (*start == '0' && c->s - start > 1)) return -1;
    *out = value;
    return 0;
}

/* `[a-z0-9]{1,40}` (lower) or `[A-Z0-9]{1,40}` (upper), copied out upper-cased. */
static int take_symbol(Cursor *c, int lower, char *out, Py_ssize_t *len) {
    Py_ssize_t n = 0;
    while (c->s < c->end) {
        char ch = *c->s;
        if (is_digit(ch))
            out[n] = ch;
        else if (lower && ch >= 'a' && ch <= 'z')
            out[n] = (char)(ch - 'a' + 'A');
        else if (!lower && ch >= 'A' && ch <= 'Z')
            out[n] = ch;
        else
            break;
        if (++n > MAX_SYMBOL) return -1;
        c->s++;
    }
    *len = n;
    return n == 0 ? -1 : 0;
}

/* `"<int>.<frac>"`, at most int_digits before the point and FRAC_DIGITS after it. */
static int take_number(Cursor *c, int int_digits, double *out) {
    const char *s = c->s, *end = c->end;
    if (s >= end || *s != '"') return -1;
    const char *start = ++s;
    unsigned long long mantissa = 0;
    int digits = 0, ints = 0, fracs = 0;
    for (; s < end && is_digit(*s); s++, ints++, digits++)
        if (digits < 19) mantissa = mantissa * 10 + (unsigned)(*s - '0');
    if (ints == 0 || ints > int_digits || (ints > 1 && *start == '0')) return -1;
    if (s >= end || *s != '.') return -1;
    s++;
    for (; s < end && is_digit(*s); s++, fracs++, digits++)
        if (digits < 19) mantissa = mantissa * 10 + (unsigned)(*s - '0');
    if (fracs == 0 || fracs > FRAC_DIGITS || s >= end || *s != '"') return -1;
    if (digits <= 15) {
        /* An exact integer below 2^53 over an exact power of ten: one IEEE division, so the
           result is correctly rounded, as float() and orjson round. */
        *out = (double)mantissa / POW10[fracs];
    } else {
        char buf[64]; /* at most 14 + 1 + 20 characters */
        size_t n = (size_t)(s - start);
        memcpy(buf, start, n);
        buf[n] = '\0';
        *out = PyOS_string_to_double(buf, NULL, NULL);
        if (*out == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return -1;
        }
    }
    c->s = s + 1;
    return 0;
}

static PyObject *pair(double price, double qty) {
    PyObject *p = PyFloat_FromDouble(price), *q = PyFloat_FromDouble(qty);
    PyObject *level = (p && q) ? PyTuple_New(2) : NULL;
    if (level == NULL) {
        Py_XDECREF(p);
        Py_XDECREF(q);
        return NULL;
    }
    PyTuple_SET_ITEM(level, 0, p);
    PyTuple_SET_ITEM(level, 1, q);
    /* Two floats cannot form a reference cycle: keep the collector from ever visiting it. */
    PyObject_GC_UnTrack(level);
    return level;
}

/* `[` levels `]` -> a list of (price, qty). Returns 1 and *out, 0 (not canonical), -1 (error). */
static int take_levels(Cursor *c, PyObject **out) {
    if (expect(c, "[") < 0) return 0;
    PyObject *list = PyList_New(0);
    if (list == NULL) return -1;
    if (c->s < c->end && *c->s == '[') {
        for (;;) {
            double price, qty;
            if (expect(c, "[") < 0 || take_number(c, PRICE_INT_DIGITS, &price) < 0 ||
                expect(c, ",") < 0 || take_number(c, QTY_INT_DIGITS, &qty) < 0 ||
                expect(c, "]") < 0 || price == 0.0) /* the one insane price such text spells */
                goto not_canonical;
            PyObject *level = pair(price, qty);
            if (level == NULL) goto error;
            int rc = PyList_Append(list, level);
            Py_DECREF(level);
            if (rc < 0) goto error;
            if (expect(c, ",") < 0) break;
        }
    }
    if (expect(c, "]") < 0) goto not_canonical;
    /* Likewise a list of float pairs that nothing appends to (a DepthDiff's levels): a shard
       buffers thousands of them while it waits for a snapshot, and collecting the young
       generation would otherwise walk every one, every time. */
    PyObject_GC_UnTrack(list);
    *out = list;
    return 1;
not_canonical:
    Py_DECREF(list);
    return 0;
error:
    Py_DECREF(list);
    return -1;
}

static PyObject *parse(PyObject *module, PyObject *frame) {
    if (!PyBytes_Check(frame)) {
        PyErr_SetString(PyExc_TypeError, "parse(frame: bytes)");
        return NULL;
    }
    Cursor c = {PyBytes_AS_STRING(frame), PyBytes_AS_STRING(frame) + PyBytes_GET_SIZE(frame)};
    char stream_symbol[MAX_SYMBOL + 1], symbol[MAX_SYMBOL + 1];
    Py_ssize_t stream_len, symbol_len;
    long long event_ms, first, final;
    PyObject *bids = NULL, *asks = NULL;
    int got;
    if (expect(&c, "{\"stream\":\"") < 0 || take_symbol(&c, 1, stream_symbol, &stream_len) < 0 ||
        expect(&c, "@depth") < 0)
        Py_RETURN_NONE;
    (void)expect(&c, "@100ms"); /* optional: the 1000 ms stream has no suffix */
    if (expect(&c, "\",\"data\":{\"e\":\"depthUpdate\",\"E\":") < 0 || take_id(&c, &event_ms) < 0 ||
        expect(&c, ",\"s\":\"") < 0 || take_symbol(&c, 0, symbol, &symbol_len) < 0 ||
        expect(&c, "\",\"U\":") < 0 || take_id(&c, &first) < 0 || expect(&c, ",\"u\":") < 0 ||
        take_id(&c, &final) < 0 || expect(&c, ",\"b\":") < 0)
        Py_RETURN_NONE;
    if (symbol_len != stream_len || memcmp(symbol, stream_symbol, (size_t)symbol_len) != 0 ||
        first > final)
        Py_RETURN_NONE;
    if ((got = take_levels(&c, &bids)) <= 0) goto no_bids;
    if (expect(&c, ",\"a\":") < 0) goto not_canonical;
    if ((got = take_levels(&c, &asks)) <= 0) goto no_asks;
    if (expect(&c, "}}") < 0 || c.s != c.end) goto not_canonical;
    return Py_BuildValue("(s#LLLNN)", symbol, symbol_len, first, final, event_ms, bids, asks);
not_canonical:
    Py_XDECREF(bids);
    Py_XDECREF(asks);
    Py_RETURN_NONE;
no_asks:
    Py_DECREF(bids);
no_bids:
    if (got < 0) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"parse", (PyCFunction)parse, METH_O,
     "parse(frame) -> (symbol, U, u, E, bids, asks) for a canonical diff frame, else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "quantcore.feed._depth_diff",
    .m_doc = PyDoc_STR("Compiled parsing of canonical Binance diff frames (see binance.py)."),
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__depth_diff(void) { return PyModule_Create(&module); }
