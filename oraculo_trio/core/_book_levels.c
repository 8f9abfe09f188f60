/* One side of an order book, updated in C: oraculo_trio.core.book's per-level loop.
 *
 * update_side(prices, quantities, levels) does what book.update_side_in_python does:
 * for each (price, quantity) level, in order, find the price in the ascending
 * array('d') `prices` (bisect_left), then set its quantity, delete the level (quantity 0)
 * or insert it (a new price). Absent prices with quantity 0 are ignored.
 *
 * Why C: a diff-book service spends its CPU here. With the levels of a 10+10 diff on a
 * 1000-level book, the Python loop costs ~7 µs a diff and this one ~2.6
 * (python benchmarks/bench_book.py); on the side-by-side harness at 1,500 diffs/s the
 * service's CPU fell by a fifth. The libraries made for the job lose to the Python loop
 * already (sortedcontainers' SortedDict, and order-book's C SortedDict, which re-sorts its
 * keys after every insert), so the loop stays ours and only moves to C.
 *
 * The extension is optional (setup.py): without a C compiler at install, the service runs
 * the Python loop and says so at start-up.
 *
 * Comparisons are those of Python floats (NaN included), and a quantity is "zero" exactly
 * when Python finds it false, so both loops leave the same book for any input.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *insert_name; /* "insert", interned once */

/* The buffer of an array('d'); raises TypeError for anything else. */
static int
get_doubles(PyObject *array, Py_buffer *view, int flags)
{
    if (PyObject_GetBuffer(array, view, flags | PyBUF_FORMAT) < 0) {
        return -1;
    }
    if (view->itemsize != (Py_ssize_t)sizeof(double) || view->format == NULL
        || strcmp(view->format, "d") != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "update_side: prices and quantities are array('d')");
        return -1;
    }
    return 0;
}

/* bisect_left of `price` in `prices`; *found tells whether prices[index] == price. */
static Py_ssize_t
find_price(PyObject *prices, double price, int *found)
{
    Py_buffer view;
    if (get_doubles(prices, &view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    const double *sorted = (const double *)view.buf;
    Py_ssize_t size = view.len / (Py_ssize_t)sizeof(double);
    Py_ssize_t low = 0, high = size;
    while (low < high) {
        Py_ssize_t middle = low + (high - low) / 2;
        if (sorted[middle] < price) {
            low = middle + 1;
        }
        else {
            high = middle;
        }
    }
    *found = low < size && sorted[low] == price;
    PyBuffer_Release(&view);
    return low;
}

static int
set_quantity(PyObject *quantities, Py_ssize_t index, double quantity)
{
    Py_buffer view;
    if (get_doubles(quantities, &view, PyBUF_WRITABLE) < 0) {
        return -1;
    }
    if (index >= view.len / (Py_ssize_t)sizeof(double)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_IndexError, "update_side: fewer quantities than prices");
        return -1;
    }
    ((double *)view.buf)[index] = quantity;
    PyBuffer_Release(&view);
    return 0;
}

/* array.insert(index, value) on both arrays (no buffer may be held: the arrays resize). */
static int
insert_level(PyObject *prices, PyObject *quantities, Py_ssize_t index, PyObject *price,
             PyObject *quantity)
{
    PyObject *position = PyLong_FromSsize_t(index);
    if (position == NULL) {
        return -1;
    }
    PyObject *result = PyObject_CallMethodObjArgs(prices, insert_name, position, price, NULL);
    if (result != NULL) {
        Py_DECREF(result);
        result = PyObject_CallMethodObjArgs(quantities, insert_name, position, quantity, NULL);
        Py_XDECREF(result);
    }
    Py_DECREF(position);
    return result == NULL ? -1 : 0;
}

static int
apply_level(PyObject *prices, PyObject *quantities, PyObject *price_object,
            PyObject *quantity_object)
{
    double price = PyFloat_AsDouble(price_object);
    if (price == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    double quantity = PyFloat_AsDouble(quantity_object);
    if (quantity == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    int found = 0;
    Py_ssize_t index = find_price(prices, price, &found);
    if (index < 0) {
        return -1;
    }
    if (found) {
        if (quantity != 0.0) {
            return set_quantity(quantities, index, quantity);
        }
        if (PySequence_DelItem(prices, index) < 0) {
            return -1;
        }
        return PySequence_DelItem(quantities, index);
    }
    if (quantity != 0.0) {
        return insert_level(prices, quantities, index, price_object, quantity_object);
    }
    return 0;
}

static PyObject *
update_side(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "update_side(prices, quantities, levels)");
        return NULL;
    }
    PyObject *prices = args[0], *quantities = args[1];
    PyObject *levels = PySequence_Fast(args[2], "update_side: levels must be iterable");
    if (levels == NULL) {
        return NULL;
    }
    /* Size and items are read again each turn: a quantity's __float__ could change a list.
     * `pair` holds its own reference (for a tuple, the level itself), so the level lives. */
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(levels); i++) {
        PyObject *pair = PySequence_Fast(PySequence_Fast_GET_ITEM(levels, i),
                                         "update_side: a level is a (price, quantity) pair");
        int failed = pair == NULL;
        if (!failed && PySequence_Fast_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_ValueError, "update_side: a level is a (price, quantity) pair");
            failed = 1;
        }
        if (!failed) {
            failed = apply_level(prices, quantities, PySequence_Fast_GET_ITEM(pair, 0),
                                 PySequence_Fast_GET_ITEM(pair, 1)) < 0;
        }
        Py_XDECREF(pair);
        if (failed) {
            Py_DECREF(levels);
            return NULL;
        }
    }
    Py_DECREF(levels);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"update_side", (PyCFunction)(void (*)(void))update_side, METH_FASTCALL,
     "update_side(prices, quantities, levels)\n--\n\n"
     "Set, replace or delete (quantity 0) each (price, quantity) level in the ascending\n"
     "array('d') prices and its array('d') quantities, in order."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef book_levels_module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "oraculo_trio.core._book_levels",
    .m_doc = "oraculo_trio.core.book's per-level update, in C.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__book_levels(void)
{
    insert_name = PyUnicode_InternFromString("insert");
    if (insert_name == NULL) {
        return NULL;
    }
    return PyModule_Create(&book_levels_module);
}
