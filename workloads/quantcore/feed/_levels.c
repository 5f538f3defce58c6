/* codec.python_plain_levels, compiled: the levels of a canonical diff frame, parsed in one pass.
 *
 * Why: building 67 floats through a flat JSON array, slices and zips was a sixth of a shard's
 * CPU. The input is the text between the brackets of a diff's "b" or "a" list, already
 * matched by codec.PLAIN_LEVELS: `["1.50","2.0"],["1.40","0.0"]`. Anything else (or a zero
 * price, or a number with a leading zero, which JSON forbids) returns None, and the caller
 * decodes the frame the slow way, which says what is wrong with it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Digit limits of codec.PLAIN_LEVEL: every such number is finite and below MAX_PRICE/MAX_QTY. */
#define PRICE_INT_DIGITS 11
#define QTY_INT_DIGITS 14
#define FRAC_DIGITS 20

/* 10^0 .. 10^22 are exact doubles. */
static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Parse `"<int>.<frac>"` at *p; 0 and the value in *out, or -1 (not plain text: give up). */
static int parse_number(const char **p, const char *end, int int_digits, double *out) {
    const char *s = *p;
    if (s >= end || *s != '"') return -1;
    const char *start = ++s;
    unsigned long long mantissa = 0;
    int digits = 0, ints = 0, fracs = 0;
    while (s < end && *s >= '0' && *s <= '9') {
        if (digits < 19) mantissa = mantissa * 10 + (unsigned)(*s - '0');
        digits++;
        ints++;
        s++;
    }
    if (ints == 0 || ints > int_digits || (ints > 1 && *start == '0')) return -1;
    if (s >= end || *s != '.') return -1;
    s++;
    while (s < end && *s >= '0' && *s <= '9') {
        if (digits < 19) mantissa = mantissa * 10 + (unsigned)(*s - '0');
        digits++;
        fracs++;
        s++;
    }
    if (fracs == 0 || fracs > FRAC_DIGITS || s >= end || *s != '"') return -1;
    if (digits <= 15) {
        /* An exact integer below 2^53 over an exact power of ten: one IEEE division, so the
           result is correctly rounded, as float() and orjson round. */
        *out = (double)mantissa / POW10[fracs];
    } else {
        char buf[64];
        size_t n = (size_t)(s - start);
        memcpy(buf, start, n);
        buf[n] = '\0';
        *out = PyOS_string_to_double(buf, NULL, NULL);
        if (*out == -1.0 && PyErr_Occurred()) return -1;
    }
    *p = s + 1;
    return 0;
}

/* One side's text -> a list of (price, qty) tuples; NULL with no error set = not plain. */
static PyObject *parse_side(const char *s, Py_ssize_t len) {
    const char *end = s + len;
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    while (s < end) {
        double price, qty;
        if (*s != '[') goto not_plain;
        s++;
        if (parse_number(&s, end, PRICE_INT_DIGITS, &price) < 0) goto not_plain;
        if (s >= end || *s != ',') goto not_plain;
        s++;
        if (parse_number(&s, end, QTY_INT_DIGITS, &qty) < 0) goto not_plain;
        if (s >= end || *s != ']') goto not_plain;
        s++;
        if (price == 0.0) goto not_plain; /* the one insane value plain text can spell */
        if (s < end) {
            if (*s != ',' || s + 1 >= end) goto not_plain;
            s++;
        }
        PyObject *level = PyTuple_New(2), *p_obj = PyFloat_FromDouble(price),
                 *q_obj = PyFloat_FromDouble(qty);
        if (level == NULL || p_obj == NULL || q_obj == NULL) {
            Py_XDECREF(level);
            Py_XDECREF(p_obj);
            Py_XDECREF(q_obj);
            goto error;
        }
        PyTuple_SET_ITEM(level, 0, p_obj);
        PyTuple_SET_ITEM(level, 1, q_obj);
        int rc = PyList_Append(out, level);
        Py_DECREF(level);
        if (rc < 0) goto error;
    }
    return out;
not_plain:
    PyErr_Clear(); /* a failed PyOS_string_to_double: the slow path will say why */
error:
    Py_DECREF(out);
    return NULL;
}

static PyObject *plain_levels(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "plain_levels(bids: bytes, asks: bytes)");
        return NULL;
    }
    PyObject *bids = parse_side(PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]));
    if (bids == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *asks = parse_side(PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1]));
    if (asks == NULL) {
        Py_DECREF(bids);
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(NN)", bids, asks);
}

static PyMethodDef methods[] = {
    {"plain_levels", (PyCFunction)(void (*)(void))plain_levels, METH_FASTCALL,
     "plain_levels(bids, asks) -> (bids, asks) as lists of (price, qty), or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "quantcore.feed._levels",
    .m_doc = PyDoc_STR("Compiled parsing of canonical level text (see codec.plain_levels)."),
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__levels(void) { return PyModule_Create(&module); }
