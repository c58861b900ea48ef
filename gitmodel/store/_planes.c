/* Byte planes and the word arithmetic of deltas, compiled: the loops of gitmodel/store/planes.py
 * that numpy can only do as several passes, each taking and handing back the GIL.
 *
 * join:         interleave `width` planes of n bytes into the first n * width bytes of out.
 * split:        the inverse: the first n * width bytes of data into out, plane k at k * n.
 * unzigzag_add: `count` little-endian words of out, from byte `at`, := ref's words plus the
 *               zigzag-decoded integer in out's ((z >> 1) ^ -(z & 1)), modulo 2**bits.
 *
 * Every function checks its buffers' lengths and that inputs and outputs do not overlap, then
 * runs without the GIL. Results are the numpy versions' byte for byte (tests/test_planes.py).
 * Little-endian machines only: elsewhere the module does not build and numpy is used. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(_MSC_VER)               /* every Windows target is little-endian */
#define restrict __restrict
#elif !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gitmodel's plane kernels assume a little-endian machine"
#endif

#define MAX_WIDTH 16

static int overlap(const Py_buffer *a, const Py_buffer *b) {
    const char *x = a->buf, *y = b->buf;
    return x < y + b->len && y < x + a->len;
}

/* Borrow equal-length planes from a sequence; 0 on success, with *width set (release them
 * after). A tuple of the items, not the list itself: a plane's buffer export may run Python
 * code that changes the list while it is being read. */
static int borrow_planes(PyObject *sequence, Py_buffer *views, Py_ssize_t *width) {
    PyObject *items = PySequence_Tuple(sequence);
    if (items == NULL)
        return -1;
    Py_ssize_t w = PyTuple_GET_SIZE(items), k;
    if (w < 2 || w > MAX_WIDTH) {
        Py_DECREF(items);
        PyErr_Format(PyExc_ValueError, "planes: %zd planes, expected 2 to %d", w, MAX_WIDTH);
        return -1;
    }
    for (k = 0; k < w; k++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(items, k), &views[k], PyBUF_SIMPLE) < 0)
            break;
        if (views[k].len != views[0].len) {
            PyBuffer_Release(&views[k]);
            PyErr_SetString(PyExc_ValueError, "planes: planes of different lengths");
            break;
        }
    }
    Py_DECREF(items);
    if (k < w) {
        while (k--)
            PyBuffer_Release(&views[k]);
        return -1;
    }
    *width = w;
    return 0;
}

static void release_all(Py_buffer *views, Py_ssize_t n) {
    for (Py_ssize_t k = 0; k < n; k++)
        PyBuffer_Release(&views[k]);
}

/* The output (writable) and input buffers of split and unzigzag_add; 0 on success. */
static int borrow_pair(PyObject *target, Py_buffer *out, PyObject *source, Py_buffer *in) {
    if (PyObject_GetBuffer(target, out, PyBUF_WRITABLE) < 0)
        return -1;
    if (PyObject_GetBuffer(source, in, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(out);
        return -1;
    }
    return 0;
}

/* Let go of both buffers and raise ValueError(problem); NULL, to return. */
static PyObject *refuse_pair(const char *problem, Py_buffer *out, Py_buffer *in) {
    PyBuffer_Release(out);
    PyBuffer_Release(in);
    PyErr_SetString(PyExc_ValueError, problem);
    return NULL;
}

static void join_loop(uint8_t *restrict out, const uint8_t *const *planes, Py_ssize_t width,
                      Py_ssize_t n) {
    if (width == 4) {          /* fp32: assemble each word, one store (compilers vectorise) */
        const uint8_t *restrict a = planes[0], *restrict b = planes[1];
        const uint8_t *restrict c = planes[2], *restrict d = planes[3];
        for (Py_ssize_t i = 0; i < n; i++) {
            uint32_t word = (uint32_t)a[i] | (uint32_t)b[i] << 8 | (uint32_t)c[i] << 16
                            | (uint32_t)d[i] << 24;
            memcpy(out + 4 * i, &word, 4);
        }
    } else if (width == 2) {
        const uint8_t *restrict a = planes[0], *restrict b = planes[1];
        for (Py_ssize_t i = 0; i < n; i++) {
            uint16_t word = (uint16_t)(a[i] | b[i] << 8);
            memcpy(out + 2 * i, &word, 2);
        }
    } else {
        for (Py_ssize_t k = 0; k < width; k++) {
            const uint8_t *restrict p = planes[k];
            for (Py_ssize_t i = 0; i < n; i++)
                out[i * width + k] = p[i];
        }
    }
}

static void split_loop(uint8_t *const *planes, const uint8_t *restrict data, Py_ssize_t width,
                       Py_ssize_t n) {
    if (width == 4) {
        uint8_t *restrict a = planes[0], *restrict b = planes[1];
        uint8_t *restrict c = planes[2], *restrict d = planes[3];
        for (Py_ssize_t i = 0; i < n; i++) {
            uint32_t word;
            memcpy(&word, data + 4 * i, 4);
            a[i] = (uint8_t)word;
            b[i] = (uint8_t)(word >> 8);
            c[i] = (uint8_t)(word >> 16);
            d[i] = (uint8_t)(word >> 24);
        }
    } else if (width == 2) {
        uint8_t *restrict a = planes[0], *restrict b = planes[1];
        for (Py_ssize_t i = 0; i < n; i++) {
            uint16_t word;
            memcpy(&word, data + 2 * i, 2);
            a[i] = (uint8_t)word;
            b[i] = (uint8_t)(word >> 8);
        }
    } else {
        for (Py_ssize_t k = 0; k < width; k++) {
            uint8_t *restrict p = planes[k];
            for (Py_ssize_t i = 0; i < n; i++)
                p[i] = data[i * width + k];
        }
    }
}

static PyObject *join(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *sequence, *target;
    Py_buffer planes[MAX_WIDTH], out;
    Py_ssize_t width, n, k;
    if (!PyArg_ParseTuple(args, "OO:join", &sequence, &target))
        return NULL;
    if (borrow_planes(sequence, planes, &width) < 0)
        return NULL;
    n = planes[0].len;
    if (PyObject_GetBuffer(target, &out, PyBUF_WRITABLE) < 0) {
        release_all(planes, width);
        return NULL;
    }
    const char *problem = n > PY_SSIZE_T_MAX / width || out.len < n * width
                          ? "join: output shorter than the planes" : NULL;
    for (k = 0; k < width && problem == NULL; k++)
        if (overlap(&out, &planes[k]))
            problem = "join: output overlaps a plane";
    if (problem != NULL) {
        PyBuffer_Release(&out);
        release_all(planes, width);
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    const uint8_t *sources[MAX_WIDTH];
    for (k = 0; k < width; k++)
        sources[k] = planes[k].buf;
    Py_BEGIN_ALLOW_THREADS
    join_loop(out.buf, sources, width, n);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    release_all(planes, width);
    Py_RETURN_NONE;
}

static PyObject *split(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *source, *target;
    Py_ssize_t width, n;
    Py_buffer data, out;
    if (!PyArg_ParseTuple(args, "OnO:split", &source, &width, &target))
        return NULL;
    if (width < 2 || width > MAX_WIDTH) {
        PyErr_Format(PyExc_ValueError, "split: width %zd, expected 2 to %d", width, MAX_WIDTH);
        return NULL;
    }
    if (borrow_pair(target, &out, source, &data) < 0)
        return NULL;
    n = out.len / width;
    const char *problem = out.len % width ? "split: output not a whole number of planes"
                          : data.len < out.len ? "split: data shorter than the planes"
                          : overlap(&data, &out) ? "split: output overlaps the data" : NULL;
    if (problem != NULL)
        return refuse_pair(problem, &out, &data);
    uint8_t *planes[MAX_WIDTH];
    for (Py_ssize_t k = 0; k < width; k++)
        planes[k] = (uint8_t *)out.buf + k * n;
    Py_BEGIN_ALLOW_THREADS
    split_loop(planes, data.buf, width, n);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    Py_RETURN_NONE;
}

/* One function per word type: a loop the compiler sees whole vectorises. */
#define UNZIGZAG_ADD(name, word)                                                              \
    static void name(uint8_t *restrict out, const uint8_t *restrict ref, Py_ssize_t count) { \
        for (Py_ssize_t i = 0; i < count; i++) {                                            \
            word z, r;                                                                       \
            memcpy(&z, out + i * sizeof(word), sizeof(word));                                \
            memcpy(&r, ref + i * sizeof(word), sizeof(word));                                \
            z = (word)(r + ((z >> 1) ^ (word)(0 - (z & 1))));                                \
            memcpy(out + i * sizeof(word), &z, sizeof(word));                                \
        }                                                                                    \
    }
UNZIGZAG_ADD(unzigzag_add16, uint16_t)
UNZIGZAG_ADD(unzigzag_add32, uint32_t)
UNZIGZAG_ADD(unzigzag_add64, uint64_t)

static PyObject *unzigzag_add(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *target, *source;
    Py_ssize_t width, at, count;
    Py_buffer out, ref;
    if (!PyArg_ParseTuple(args, "OOnnn:unzigzag_add", &target, &source, &width, &at, &count))
        return NULL;
    if (width != 2 && width != 4 && width != 8) {
        PyErr_Format(PyExc_ValueError, "unzigzag_add: width %zd, expected 2, 4 or 8", width);
        return NULL;
    }
    if (borrow_pair(target, &out, source, &ref) < 0)
        return NULL;
    if (at < 0 || count < 0 || count > (PY_SSIZE_T_MAX - at) / width
        || at + count * width > out.len || at + count * width > ref.len)
        return refuse_pair("unzigzag_add: words outside the buffers", &out, &ref);
    if (overlap(&out, &ref))
        return refuse_pair("unzigzag_add: output overlaps the reference", &out, &ref);
    uint8_t *o = (uint8_t *)out.buf + at;
    const uint8_t *r = (const uint8_t *)ref.buf + at;
    Py_BEGIN_ALLOW_THREADS
    if (width == 2)
        unzigzag_add16(o, r, count);
    else if (width == 4)
        unzigzag_add32(o, r, count);
    else
        unzigzag_add64(o, r, count);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    PyBuffer_Release(&ref);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"join", join, METH_VARARGS, "join(planes, out): interleave byte planes into out."},
    {"split", split, METH_VARARGS, "split(data, width, out): data's byte planes into out, one after another."},
    {"unzigzag_add", unzigzag_add, METH_VARARGS,
     "unzigzag_add(out, ref, width, at, count): out's words := ref's + unzigzag(out's)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_planes", NULL, -1, methods,
                                     NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__planes(void) { return PyModule_Create(&module); }
