/* The order book of book.py (`PythonOrderBook`), compiled: same algorithm, same results.
 *
 * Why: a diff carries ~34 level changes, and the interpreted per-level loop was a third of a
 * shard's CPU. Each side keeps every level in an open-addressing hash table (price -> qty) and
 * the best levels' keys in a sorted array (key = price for bids, -price for asks; ascending,
 * the best LAST, so changes near the top move few elements). Every level whose key is at or
 * above `floor` is in that array; deeper changes cost one hash-table operation.
 *
 * Prices must be positive and finite (the codec refuses anything else before a book sees it):
 * 0.0 marks an empty hash slot.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define INITIAL_SLOTS 64

typedef struct {
    double *prices; /* hash table keys; 0.0 = empty slot */
    double *qtys;
    size_t slots;   /* a power of two, at least twice `levels` */
    Py_ssize_t levels;
    double *keys;   /* the sorted window, best last */
    Py_ssize_t nkeys;
    Py_ssize_t keys_cap;
    double floor;   /* every level with key >= floor is in keys; -inf: all of them are */
    double sign;    /* +1 bids, -1 asks: key = sign * price */
} Side;

typedef struct {
    PyObject_HEAD
    Side bids;
    Side asks;
    Py_ssize_t window;
    Py_ssize_t min_sorted;
} OrderBook;

/* --- the hash table (linear probing, backward-shift deletion: no tombstones) --- */

static inline size_t slot_of(double price, size_t mask) {
    uint64_t bits;
    memcpy(&bits, &price, sizeof bits);
    bits *= 0x9E3779B97F4A7C15ull; /* Fibonacci hashing: mixes the low mantissa bits up */
    return (size_t)(bits ^ (bits >> 32)) & mask;
}

static int table_alloc(Side *s, size_t slots) {
    double *prices = PyMem_Calloc(slots, sizeof(double));
    double *qtys = PyMem_Calloc(slots, sizeof(double));
    if (prices == NULL || qtys == NULL) {
        PyMem_Free(prices);
        PyMem_Free(qtys);
        PyErr_NoMemory();
        return -1;
    }
    s->prices = prices;
    s->qtys = qtys;
    s->slots = slots;
    s->levels = 0;
    return 0;
}

static Py_ssize_t table_find(const Side *s, double price) {
    size_t mask = s->slots - 1;
    for (size_t i = slot_of(price, mask);; i = (i + 1) & mask) {
        double p = s->prices[i];
        if (p == price) return (Py_ssize_t)i;
        if (p == 0.0) return -1;
    }
}

static int table_grow(Side *s) {
    double *old_prices = s->prices, *old_qtys = s->qtys;
    size_t old_slots = s->slots;
    Py_ssize_t levels = s->levels;
    if (table_alloc(s, old_slots * 2) < 0) return -1;
    size_t mask = s->slots - 1;
    for (size_t j = 0; j < old_slots; j++) {
        if (old_prices[j] == 0.0) continue;
        size_t i = slot_of(old_prices[j], mask);
        while (s->prices[i] != 0.0) i = (i + 1) & mask;
        s->prices[i] = old_prices[j];
        s->qtys[i] = old_qtys[j];
    }
    s->levels = levels;
    PyMem_Free(old_prices);
    PyMem_Free(old_qtys);
    return 0;
}

/* Set price -> qty; 1 if the price is new, 0 if it was there, -1 on error. */
static int table_set(Side *s, double price, double qty) {
    size_t mask = s->slots - 1;
    size_t i = slot_of(price, mask);
    for (;; i = (i + 1) & mask) {
        double p = s->prices[i];
        if (p == price) {
            s->qtys[i] = qty;
            return 0;
        }
        if (p == 0.0) break;
    }
    s->prices[i] = price;
    s->qtys[i] = qty;
    s->levels++;
    if ((size_t)s->levels * 2 > s->slots && table_grow(s) < 0) return -1;
    return 1;
}

/* Remove a price; 1 if it was there. */
static int table_remove(Side *s, double price) {
    Py_ssize_t found = table_find(s, price);
    if (found < 0) return 0;
    size_t mask = s->slots - 1, hole = (size_t)found;
    for (size_t j = (hole + 1) & mask; s->prices[j] != 0.0; j = (j + 1) & mask) {
        size_t home = slot_of(s->prices[j], mask);
        /* The entry at j may fill the hole only if its home slot is not in (hole, j]. */
        int stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (stays) continue;
        s->prices[hole] = s->prices[j];
        s->qtys[hole] = s->qtys[j];
        hole = j;
    }
    s->prices[hole] = 0.0;
    s->qtys[hole] = 0.0;
    s->levels--;
    return 1;
}

/* --- the sorted window --- */

static Py_ssize_t bisect_left(const double *a, Py_ssize_t n, double x) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (a[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int keys_reserve(Side *s, Py_ssize_t n) {
    if (n <= s->keys_cap) return 0;
    Py_ssize_t cap = s->keys_cap ? s->keys_cap : 64;
    while (cap < n) cap *= 2;
    double *keys = PyMem_Realloc(s->keys, (size_t)cap * sizeof(double));
    if (keys == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    s->keys = keys;
    s->keys_cap = cap;
    return 0;
}

static int keys_insert(Side *s, double key) {
    if (keys_reserve(s, s->nkeys + 1) < 0) return -1;
    Py_ssize_t at = bisect_left(s->keys, s->nkeys, key);
    memmove(s->keys + at + 1, s->keys + at, (size_t)(s->nkeys - at) * sizeof(double));
    s->keys[at] = key;
    s->nkeys++;
    return 0;
}

static void keys_delete(Side *s, double key) {
    Py_ssize_t at = bisect_left(s->keys, s->nkeys, key);
    if (at == s->nkeys || s->keys[at] != key) return;
    memmove(s->keys + at, s->keys + at + 1, (size_t)(s->nkeys - at - 1) * sizeof(double));
    s->nkeys--;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Keep exactly the best `n` levels sorted (all of them if there are no more). */
static int side_sort(Side *s, Py_ssize_t n) {
    if (s->nkeys >= n && s->levels > n) {
        /* Trim: the window holds every key >= floor, so its best n are the side's best n. */
        Py_ssize_t drop = s->nkeys - n;
        memmove(s->keys, s->keys + drop, (size_t)n * sizeof(double));
        s->nkeys = n;
        s->floor = s->keys[0];
        return 0;
    }
    /* Refill from the whole table (rare: the window ran short). */
    if (keys_reserve(s, s->levels) < 0) return -1;
    Py_ssize_t k = 0;
    for (size_t i = 0; i < s->slots; i++) {
        if (s->prices[i] != 0.0) s->keys[k++] = s->sign * s->prices[i];
    }
    if (k > 1) qsort(s->keys, (size_t)k, sizeof(double), compare_doubles);
    if (k > n) {
        memmove(s->keys, s->keys + (k - n), (size_t)n * sizeof(double));
        s->nkeys = n;
        s->floor = s->keys[0];
    } else {
        s->nkeys = k;
        s->floor = -INFINITY;
    }
    return 0;
}

static int side_init(Side *s, double sign) {
    memset(s, 0, sizeof *s);
    s->sign = sign;
    s->floor = -INFINITY;
    return table_alloc(s, INITIAL_SLOTS);
}

static void side_free(Side *s) {
    PyMem_Free(s->prices);
    PyMem_Free(s->qtys);
    PyMem_Free(s->keys);
    s->prices = s->qtys = s->keys = NULL;
}

static int side_clear(Side *s) {
    side_free(s);
    return side_init(s, s->sign);
}

/* Read one level, a (price, qty) pair of numbers. */
static int read_level(PyObject *level, double *price, double *qty) {
    PyObject *p, *q;
    if (PyTuple_CheckExact(level) && PyTuple_GET_SIZE(level) == 2) {
        p = PyTuple_GET_ITEM(level, 0);
        q = PyTuple_GET_ITEM(level, 1);
    } else if (PyList_CheckExact(level) && PyList_GET_SIZE(level) == 2) {
        p = PyList_GET_ITEM(level, 0);
        q = PyList_GET_ITEM(level, 1);
    } else {
        PyErr_SetString(PyExc_TypeError, "a level is a (price, quantity) pair");
        return -1;
    }
    *price = PyFloat_CheckExact(p) ? PyFloat_AS_DOUBLE(p) : PyFloat_AsDouble(p);
    if (*price == -1.0 && PyErr_Occurred()) return -1;
    *qty = PyFloat_CheckExact(q) ? PyFloat_AS_DOUBLE(q) : PyFloat_AsDouble(q);
    if (*qty == -1.0 && PyErr_Occurred()) return -1;
    if (!(*price > 0.0 && *price < INFINITY)) {
        PyErr_SetString(PyExc_ValueError, "a price must be positive and finite");
        return -1;
    }
    return 0;
}

static int side_apply(Side *s, PyObject *levels, const OrderBook *book) {
    PyObject *seq = PySequence_Fast(levels, "levels must be a sequence of (price, qty) pairs");
    if (seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    int rc = 0;
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        double price, qty;
        if (read_level(items[i], &price, &qty) < 0) {
            rc = -1;
            break;
        }
        double key = s->sign * price;
        if (qty != 0.0) {
            int added = table_set(s, price, qty);
            if (added < 0)
                rc = -1;
            else if (added && key >= s->floor)
                rc = keys_insert(s, key);
        } else if (table_remove(s, price) && key >= s->floor) {
            keys_delete(s, key);
        }
    }
    Py_DECREF(seq);
    if (rc < 0) return -1;
    if (s->nkeys > 2 * book->window || (s->nkeys < book->min_sorted && s->floor != -INFINITY))
        return side_sort(s, book->window);
    return 0;
}

/* The best n levels, best first, as two new lists: prices and quantities. */
static int side_top(Side *s, Py_ssize_t n, const OrderBook *book, PyObject **px_out,
                    PyObject **qty_out) {
    if (n < 0) n = 0;
    if (n > s->nkeys && s->floor != -INFINITY) {
        if (side_sort(s, n > book->window ? n : book->window) < 0) return -1;
    }
    Py_ssize_t count = n < s->nkeys ? n : s->nkeys;
    PyObject *px = PyList_New(count), *qty = PyList_New(count);
    if (px == NULL || qty == NULL) goto fail;
    for (Py_ssize_t i = 0; i < count; i++) {
        double price = s->sign * s->keys[s->nkeys - 1 - i];
        Py_ssize_t slot = table_find(s, price);
        PyObject *p = PyFloat_FromDouble(price);
        PyObject *q = PyFloat_FromDouble(slot >= 0 ? s->qtys[slot] : 0.0);
        if (p == NULL || q == NULL) {
            Py_XDECREF(p);
            Py_XDECREF(q);
            goto fail;
        }
        PyList_SET_ITEM(px, i, p);
        PyList_SET_ITEM(qty, i, q);
    }
    *px_out = px;
    *qty_out = qty;
    return 0;
fail:
    Py_XDECREF(px);
    Py_XDECREF(qty);
    return -1;
}

/* bids(n) / asks(n): (prices, quantities) of one side's best n. */
static PyObject *side_top_pair(Side *s, PyObject *n_arg, const OrderBook *book) {
    Py_ssize_t n = PyLong_AsSsize_t(n_arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    PyObject *px, *qty;
    if (side_top(s, n, book, &px, &qty) < 0) return NULL;
    return Py_BuildValue("(NN)", px, qty);
}

static int side_best(const Side *s, double *price, double *qty) {
    if (s->nkeys == 0) return 0;
    *price = s->sign * s->keys[s->nkeys - 1];
    Py_ssize_t slot = table_find(s, *price);
    *qty = slot >= 0 ? s->qtys[slot] : 0.0;
    return 1;
}

/* --- the Python type --- */

static PyObject *OrderBook_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"window", "min_sorted", NULL};
    Py_ssize_t window = 256, min_sorted = 20;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$nn:OrderBook", kwlist, &window, &min_sorted))
        return NULL;
    OrderBook *self = (OrderBook *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->window = window > 1 ? window : 1;
    self->min_sorted = min_sorted > 1 ? min_sorted : 1; /* a non-empty side has its best sorted */
    if (side_init(&self->bids, 1.0) < 0 || side_init(&self->asks, -1.0) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void OrderBook_dealloc(OrderBook *self) {
    side_free(&self->bids);
    side_free(&self->asks);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int book_clear(OrderBook *self) {
    return side_clear(&self->bids) < 0 || side_clear(&self->asks) < 0 ? -1 : 0;
}

/* Apply `levels` to a side unless the list is empty (as the Python book skips empty sides). */
static int apply_if_any(Side *s, PyObject *levels, const OrderBook *book) {
    int any = PyObject_IsTrue(levels);
    if (any < 0) return -1;
    return any ? side_apply(s, levels, book) : 0;
}

static int book_update(OrderBook *self, PyObject *bids, PyObject *asks) {
    if (apply_if_any(&self->bids, bids, self) < 0) return -1;
    return apply_if_any(&self->asks, asks, self);
}

static PyObject *OrderBook_clear(OrderBook *self, PyObject *Py_UNUSED(ignored)) {
    if (book_clear(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *OrderBook_update(OrderBook *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "update(bids, asks)");
        return NULL;
    }
    if (book_update(self, args[0], args[1]) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *OrderBook_load(OrderBook *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "load(bids, asks)");
        return NULL;
    }
    if (book_clear(self) < 0 || book_update(self, args[0], args[1]) < 0) return NULL;
    Py_RETURN_NONE;
}

static int book_crossed(const OrderBook *self) {
    double bid, bid_qty, ask, ask_qty;
    return side_best(&self->bids, &bid, &bid_qty) && side_best(&self->asks, &ask, &ask_qty) &&
           bid >= ask;
}

static PyObject *OrderBook_crossed(OrderBook *self, PyObject *Py_UNUSED(ignored)) {
    return PyBool_FromLong(book_crossed(self));
}

/* update + crossed + bids(n) + asks(n) in one call: the per-diff path. */
static PyObject *OrderBook_apply(OrderBook *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "apply(bids, asks, n)");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[2]);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (book_update(self, args[0], args[1]) < 0) return NULL;
    if (book_crossed(self)) Py_RETURN_NONE;
    PyObject *bid_px, *bid_qty, *ask_px, *ask_qty;
    if (side_top(&self->bids, n, self, &bid_px, &bid_qty) < 0) return NULL;
    if (side_top(&self->asks, n, self, &ask_px, &ask_qty) < 0) {
        Py_DECREF(bid_px);
        Py_DECREF(bid_qty);
        return NULL;
    }
    return Py_BuildValue("(NNNN)", bid_px, bid_qty, ask_px, ask_qty);
}

static PyObject *OrderBook_top_of_book(OrderBook *self, PyObject *Py_UNUSED(ignored)) {
    const Side *sides[2] = {&self->bids, &self->asks};
    PyObject *out[4];
    for (int i = 0; i < 2; i++) {
        double price, qty;
        if (side_best(sides[i], &price, &qty)) {
            out[2 * i] = PyFloat_FromDouble(price);
            out[2 * i + 1] = PyFloat_FromDouble(qty);
        } else {
            out[2 * i] = Py_NewRef(Py_None);
            out[2 * i + 1] = Py_NewRef(Py_None);
        }
    }
    if (out[0] == NULL || out[1] == NULL || out[2] == NULL || out[3] == NULL) {
        for (int i = 0; i < 4; i++) Py_XDECREF(out[i]);
        return NULL;
    }
    return Py_BuildValue("(NNNN)", out[0], out[1], out[2], out[3]);
}

static PyObject *OrderBook_bids(OrderBook *self, PyObject *arg) {
    return side_top_pair(&self->bids, arg, self);
}

static PyObject *OrderBook_asks(OrderBook *self, PyObject *arg) {
    return side_top_pair(&self->asks, arg, self);
}

static PyObject *OrderBook_depth(OrderBook *self, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("(nn)", self->bids.levels, self->asks.levels);
}

static PyMethodDef OrderBook_methods[] = {
    {"clear", (PyCFunction)OrderBook_clear, METH_NOARGS, "Remove every level."},
    {"load", (PyCFunction)(void (*)(void))OrderBook_load, METH_FASTCALL,
     "load(bids, asks): replace the book with these levels."},
    {"update", (PyCFunction)(void (*)(void))OrderBook_update, METH_FASTCALL,
     "update(bids, asks): apply level changes; quantity 0 removes a level."},
    {"apply", (PyCFunction)(void (*)(void))OrderBook_apply, METH_FASTCALL,
     "apply(bids, asks, n): update, then (bid_px, bid_qty, ask_px, ask_qty) of the best n "
     "levels, or None if the book crossed."},
    {"crossed", (PyCFunction)OrderBook_crossed, METH_NOARGS, "Best bid >= best ask."},
    {"top_of_book", (PyCFunction)OrderBook_top_of_book, METH_NOARGS,
     "(bid_px, bid_qty, ask_px, ask_qty); None for an empty side."},
    {"bids", (PyCFunction)OrderBook_bids, METH_O, "bids(n): the best n bids, (prices, qtys)."},
    {"asks", (PyCFunction)OrderBook_asks, METH_O, "asks(n): the best n asks, (prices, qtys)."},
    {"depth", (PyCFunction)OrderBook_depth, METH_NOARGS, "(bid levels, ask levels)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject OrderBookType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "quantcore.feed._orderbook.OrderBook",
    .tp_doc = PyDoc_STR("Both sides of a price-level order book (see book.PythonOrderBook)."),
    .tp_basicsize = sizeof(OrderBook),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = OrderBook_new,
    .tp_dealloc = (destructor)OrderBook_dealloc,
    .tp_methods = OrderBook_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "quantcore.feed._orderbook",
    .m_doc = PyDoc_STR("The compiled order book (same behaviour as book.PythonOrderBook)."),
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__orderbook(void) {
    if (PyType_Ready(&OrderBookType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "OrderBook", (PyObject *)&OrderBookType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
