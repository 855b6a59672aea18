/*
 * diskaudit.scan._fastwalk: the per-entry loop of the directory walk, in C.
 *
 * walk.py does everything that is not per entry (which directories to enter, keys, chunk
 * boundaries, splitting); this module only reads a directory and stats its entries, which in
 * Python costs ~1.5 us of interpreter work per entry on top of the system calls (see
 * docs/adr/0002). It returns to Python at every subdirectory, at every entry that needs a
 * decision (a symlink to follow, an error) and when the entry budget is spent, so the walk's
 * semantics live in one place (walk.py) and this file stays small.
 *
 * Dir(fd): reads the directory open on fd (which stays owned by the caller).
 * Dir.scan(limit, follow, linked, key, totals, bounds, big)
 *     -> (n, blocks, size, files, kind, name, a, b, c)
 *   n       entries examined, the stopping one included
 *   blocks  sum of st_blocks of plain entries (not directories, not reported in `linked`)
 *   size    sum of st_size of the same
 *   files   non-directory entries counted (symlinks included unless followed)
 *   kind    STOP_END (directory exhausted), STOP_LIMIT (limit entries examined),
 *           STOP_DIR (name is a subdirectory: a=st_blocks, b=st_size, c=(st_dev, st_ino)),
 *           STOP_LINK (follow is true and name is a symlink: a=st_blocks, b=st_size),
 *           STOP_ERROR (name could not be stat'ed: a=errno),
 *           STOP_BIG (name is a file, already counted, with st_size >= big: a=st_size)
 * Optional per-file extras, both off by default (None, None, -1):
 *   totals, bounds  count each file in totals[4 + i] where i is the first bounds[i] >= st_size
 *                   (len(bounds) if none): the size buckets of the file's directory
 *   big             stop at every file of st_size >= big (-1: never), for the top-N largest
 * Entries with st_nlink > 1 are appended to `linked` as (st_dev, st_ino, st_blocks, st_size, key)
 * instead of being summed: the pool counts each such inode once per scan.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { STOP_END = 0, STOP_LIMIT = 1, STOP_DIR = 2, STOP_LINK = 3, STOP_ERROR = 4, STOP_BIG = 5 };

#define MAX_BUCKETS 32

typedef struct {
    PyObject_HEAD
    DIR *dir;
    int fd; /* the caller's descriptor, used for fstatat */
} DirObject;

static void Dir_close_stream(DirObject *self) {
    if (self->dir != NULL) {
        closedir(self->dir); /* closes our duplicate, not the caller's fd */
        self->dir = NULL;
    }
}

static void Dir_dealloc(DirObject *self) {
    Dir_close_stream(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Dir_init(DirObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", NULL};
    int fd;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", kwlist, &fd)) {
        return -1;
    }
    Dir_close_stream(self);
    /* fdopendir takes ownership of the descriptor it is given: give it a duplicate so the
     * caller keeps fd (for openat of subdirectories) and closes it as it always does. */
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    DIR *dir = fdopendir(dup_fd);
    if (dir == NULL) {
        int saved = errno;
        close(dup_fd);
        errno = saved;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->dir = dir;
    self->fd = fd;
    return 0;
}

typedef struct {
    PyObject *totals; /* list, or NULL when buckets are off */
    Py_ssize_t nbounds;
    long long bounds[MAX_BUCKETS];
    long long counts[MAX_BUCKETS + 1];
} Buckets;

/* Add the counts gathered since the last flush to totals[4 + i]. */
static int flush_buckets(Buckets *bk) {
    if (bk->totals == NULL) {
        return 0;
    }
    for (Py_ssize_t i = 0; i <= bk->nbounds; i++) {
        if (bk->counts[i] == 0) {
            continue;
        }
        PyObject *old = PyList_GET_ITEM(bk->totals, 4 + i);
        long long value = PyLong_AsLongLong(old);
        if (value == -1 && PyErr_Occurred()) {
            return -1;
        }
        PyObject *sum = PyLong_FromLongLong(value + bk->counts[i]);
        if (sum == NULL) {
            return -1;
        }
        PyList_SetItem(bk->totals, 4 + i, sum); /* steals sum, releases old */
        bk->counts[i] = 0;
    }
    return 0;
}

static PyObject *result(Buckets *bk, Py_ssize_t n, long long blocks, long long size,
                        long long files, int kind, PyObject *name, PyObject *a, PyObject *b,
                        PyObject *c) {
    if (flush_buckets(bk) != 0) {
        Py_XDECREF(name);
        Py_XDECREF(a);
        Py_XDECREF(b);
        Py_XDECREF(c);
        return NULL;
    }
    /* "N" steals the references of name, a, b and c. */
    return Py_BuildValue("(nLLLiNNNN)", n, blocks, size, files, kind, name, a, b, c);
}

static int parse_buckets(Buckets *bk, PyObject *totals, PyObject *bounds) {
    bk->totals = NULL;
    bk->nbounds = 0;
    if (totals == Py_None || bounds == Py_None) {
        return 0;
    }
    if (!PyList_Check(totals) || !PyTuple_Check(bounds)) {
        PyErr_SetString(PyExc_TypeError, "totals must be a list and bounds a tuple");
        return -1;
    }
    Py_ssize_t nb = PyTuple_GET_SIZE(bounds);
    if (nb > MAX_BUCKETS || PyList_GET_SIZE(totals) < 4 + nb + 1) {
        PyErr_SetString(PyExc_ValueError, "too many bounds, or totals too short for them");
        return -1;
    }
    for (Py_ssize_t i = 0; i < nb; i++) {
        bk->bounds[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(bounds, i));
        if (bk->bounds[i] == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    memset(bk->counts, 0, sizeof(bk->counts));
    bk->nbounds = nb;
    bk->totals = totals;
    return 0;
}

static PyObject *Dir_scan(DirObject *self, PyObject *args) {
    Py_ssize_t limit;
    int follow;
    PyObject *linked;
    PyObject *key;
    PyObject *totals = Py_None;
    PyObject *bounds = Py_None;
    long long big = -1;
    if (!PyArg_ParseTuple(args, "npO!O|OOL", &limit, &follow, &PyList_Type, &linked, &key, &totals,
                          &bounds, &big)) {
        return NULL;
    }
    Buckets bk;
    if (parse_buckets(&bk, totals, bounds) != 0) {
        return NULL;
    }
    if (self->dir == NULL) {
        /* Exhausted (or closed): like an iterator, it stays exhausted. */
        return result(&bk, 0, 0, 0, 0, STOP_END, Py_NewRef(Py_None), Py_NewRef(Py_None),
                      Py_NewRef(Py_None), Py_NewRef(Py_None));
    }
    Py_ssize_t n = 0;
    long long blocks = 0, size = 0, files = 0;
    struct stat st;
    while (n < limit) {
        errno = 0;
        struct dirent *ent = readdir(self->dir);
        if (ent == NULL) {
            if (errno != 0) {
                /* A read error ends the listing (ESTALE, EIO): report it once, as an error of
                 * the directory itself (empty name). */
                int err = errno;
                Dir_close_stream(self);
                return result(&bk, n, blocks, size, files, STOP_ERROR, PyUnicode_FromString(""),
                              PyLong_FromLong(err), Py_NewRef(Py_None), Py_NewRef(Py_None));
            }
            Dir_close_stream(self);
            return result(&bk, n, blocks, size, files, STOP_END, Py_NewRef(Py_None),
                          Py_NewRef(Py_None), Py_NewRef(Py_None), Py_NewRef(Py_None));
        }
        const char *nm = ent->d_name;
        if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0'))) {
            continue;
        }
        n++;
        if (fstatat(self->fd, nm, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            int err = errno;
            return result(&bk, n, blocks, size, files, STOP_ERROR, PyUnicode_DecodeFSDefault(nm),
                          PyLong_FromLong(err), Py_NewRef(Py_None), Py_NewRef(Py_None));
        }
        if (S_ISDIR(st.st_mode)) {
            PyObject *devino = Py_BuildValue("(KK)", (unsigned long long)st.st_dev,
                                             (unsigned long long)st.st_ino);
            return result(&bk, n, blocks, size, files, STOP_DIR, PyUnicode_DecodeFSDefault(nm),
                          PyLong_FromLongLong((long long)st.st_blocks),
                          PyLong_FromLongLong((long long)st.st_size), devino);
        }
        if (follow && S_ISLNK(st.st_mode)) {
            return result(&bk, n, blocks, size, files, STOP_LINK, PyUnicode_DecodeFSDefault(nm),
                          PyLong_FromLongLong((long long)st.st_blocks),
                          PyLong_FromLongLong((long long)st.st_size), Py_NewRef(Py_None));
        }
        files++;
        if (bk.totals != NULL) {
            Py_ssize_t i = 0;
            while (i < bk.nbounds && st.st_size > bk.bounds[i]) {
                i++;
            }
            bk.counts[i]++;
        }
        if (st.st_nlink > 1) {
            PyObject *rec = Py_BuildValue("(KKLLO)", (unsigned long long)st.st_dev,
                                          (unsigned long long)st.st_ino, (long long)st.st_blocks,
                                          (long long)st.st_size, key);
            if (rec == NULL || PyList_Append(linked, rec) != 0) {
                Py_XDECREF(rec);
                return NULL;
            }
            Py_DECREF(rec);
        } else {
            blocks += st.st_blocks;
            size += st.st_size;
        }
        if (big >= 0 && st.st_size >= big) {
            return result(&bk, n, blocks, size, files, STOP_BIG, PyUnicode_DecodeFSDefault(nm),
                          PyLong_FromLongLong((long long)st.st_size), Py_NewRef(Py_None),
                          Py_NewRef(Py_None));
        }
    }
    return result(&bk, n, blocks, size, files, STOP_LIMIT, Py_NewRef(Py_None), Py_NewRef(Py_None),
                  Py_NewRef(Py_None), Py_NewRef(Py_None));
}

static PyObject *Dir_close(DirObject *self, PyObject *Py_UNUSED(ignored)) {
    Dir_close_stream(self);
    Py_RETURN_NONE;
}

static PyMethodDef Dir_methods[] = {
    {"scan", (PyCFunction)Dir_scan, METH_VARARGS,
     "scan(limit, follow, linked, key, totals=None, bounds=None, big=-1)"
     " -> (n, blocks, size, files, kind, name, a, b, c)"},
    {"close", (PyCFunction)Dir_close, METH_NOARGS, "Release the directory stream."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DirType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "diskaudit.scan._fastwalk.Dir",
    .tp_basicsize = sizeof(DirObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A directory being read; see the module's comment.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Dir_init,
    .tp_dealloc = (destructor)Dir_dealloc,
    .tp_methods = Dir_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "diskaudit.scan._fastwalk",
    .m_doc = "The per-entry loop of the directory walk, in C.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fastwalk(void) {
    if (PyType_Ready(&DirType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Dir", (PyObject *)&DirType) < 0 ||
        PyModule_AddIntConstant(m, "STOP_END", STOP_END) < 0 ||
        PyModule_AddIntConstant(m, "STOP_LIMIT", STOP_LIMIT) < 0 ||
        PyModule_AddIntConstant(m, "STOP_DIR", STOP_DIR) < 0 ||
        PyModule_AddIntConstant(m, "STOP_LINK", STOP_LINK) < 0 ||
        PyModule_AddIntConstant(m, "STOP_ERROR", STOP_ERROR) < 0 ||
        PyModule_AddIntConstant(m, "STOP_BIG", STOP_BIG) < 0 ||
        PyModule_AddIntConstant(m, "MAX_BUCKETS", MAX_BUCKETS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
