/*
 * Shared file helpers (include/mlm/fileio.h): whole-file reads that never trust a
 * size, atomic writes, directory syncs, mkdir -p, and the expansion of input
 * paths (files and directories) into a sorted list of files.
 */
#include "mlm/fileio.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mlm/log.h"

int mlm_read_file(const char *path, char **buf, size_t *bytes, char *err, size_t len) {
    *buf = NULL;
    // O_NONBLOCK: opening a FIFO must not wait for a writer before it is refused
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return mlm_fail(err, len, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mlm_fail(err, len, "%s: not a regular file", path);
    }
    *bytes = (size_t)st.st_size;
    *buf = malloc(*bytes + 1);
    if (!*buf) {
        close(fd);
        return mlm_fail(err, len, "%s: out of memory reading %zu bytes", path, *bytes);
    }
    size_t got = 0;
    while (got < *bytes) {
        ssize_t r = read(fd, *buf + got, *bytes - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got == *bytes) {
        (*buf)[got] = 0;
        return 0;
    }
    free(*buf);
    *buf = NULL;
    return mlm_fail(err, len, "%s: read %zu of %zu bytes (file changed or unreadable)", path, got, *bytes);
}

int mlm_write_all(int fd, const void *p, size_t n) {
    const char *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) continue;
        if (w == 0) errno = ENOSPC;   // nothing written and no error: the device took no more
        if (w <= 0) return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int mlm_fsync_dir(const char *dir, char *err, size_t len) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd >= 0 ? fsync(fd) : -1;
    if (rc != 0 && errno == EINVAL) rc = 0;   // the filesystem cannot sync directories
    if (rc != 0) mlm_fail(err, len, "%s: syncing the directory failed: %s", dir, strerror(errno));
    if (fd >= 0) close(fd);
    return rc;
}

static int write_atomic(const char *path, const void *const *parts, const size_t *sizes, int nparts, char *err,
                        size_t len);

/* Writes the parts to a new file tmp and fsyncs it. */
static int write_new(const char *tmp, const void *const *parts, const size_t *sizes, int nparts) {
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    int rc = 0;
    for (int i = 0; i < nparts && rc == 0; i++) rc = mlm_write_all(fd, parts[i], sizes[i]);
    if (rc == 0) rc = fsync(fd);
    int saved = errno;
    if (close(fd) != 0 && rc == 0) rc = -1, saved = errno;
    errno = saved;
    return rc;
}

static const char *kind_of(mode_t m) {
    return S_ISDIR(m) ? "a directory" : S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device"
         : S_ISFIFO(m) ? "a FIFO" : S_ISSOCK(m) ? "a socket" : "not a regular file";
}

int mlm_output_target(const char *path, char **target, char *err, size_t len) {
    *target = NULL;
    struct stat ls, st;
    if (lstat(path, &ls) != 0) {
        if (errno != ENOENT) return mlm_fail(err, len, "%s: cannot inspect the output path: %s", path, strerror(errno));
        *target = mlm_xmalloc(strlen(path) + 1, "a file name");
        strcpy(*target, path);
        return 0;
    }
    if (S_ISLNK(ls.st_mode)) {
        if (stat(path, &st) != 0)
            return mlm_fail(err, len, "%s: a symbolic link to nothing (%s); refusing to write through it", path,
                            strerror(errno));
        if (!S_ISREG(st.st_mode))
            return mlm_fail(err, len, "%s: a symbolic link to %s; refusing to replace it with a file", path,
                            kind_of(st.st_mode));
        if (!(*target = realpath(path, NULL)))
            return mlm_fail(err, len, "%s: cannot resolve the symbolic link: %s", path, strerror(errno));
        return 0;
    }
    if (!S_ISREG(ls.st_mode))
        return mlm_fail(err, len, "%s: is %s; refusing to replace it with a file", path, kind_of(ls.st_mode));
    *target = mlm_xmalloc(strlen(path) + 1, "a file name");
    strcpy(*target, path);
    return 0;
}

int mlm_write_file_atomic(const char *named, const void *const *parts, const size_t *sizes, int nparts, char *err,
                          size_t len) {
    char *path;
    if (mlm_output_target(named, &path, err, len) != 0) return -1;
    int rc = write_atomic(path, parts, sizes, nparts, err, len);
    free(path);
    return rc;
}

static int write_atomic(const char *path, const void *const *parts, const size_t *sizes, int nparts, char *err,
                        size_t len) {
    size_t tmp_len = strlen(path) + 32;
    char *tmp = mlm_xmalloc(tmp_len, "a file name");
    snprintf(tmp, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    int rc = write_new(tmp, parts, sizes, nparts);
    if (rc != 0) mlm_fail(err, len, "%s: cannot write %s: %s", path, tmp, strerror(errno));
    else if (rename(tmp, path) != 0)
        rc = mlm_fail(err, len, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    if (rc != 0) unlink(tmp);
    free(tmp);
    if (rc != 0) return -1;
    char *copy = mlm_xmalloc(strlen(path) + 1, "a file name");
    strcpy(copy, path);
    rc = mlm_fsync_dir(dirname(copy), err, len);
    free(copy);
    return rc;
}

int mlm_cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void mlm_remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        for (struct dirent *e; (e = readdir(d));) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *p = mlm_xmalloc(strlen(dir) + strlen(e->d_name) + 2, "a path");
            sprintf(p, "%s/%s", dir, e->d_name);
            if (unlink(p) != 0) mlm_remove_tree(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

int mlm_mkdir_p(const char *path) {
    size_t n = strlen(path);
    char *buf = mlm_xmalloc(n + 1, "a directory name");
    memcpy(buf, path, n + 1);
    int rc = 0;
    for (char *p = buf + 1; *p && rc == 0; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) rc = -1;
        *p = '/';
    }
    if (rc == 0 && mkdir(buf, 0755) != 0 && errno != EEXIST) rc = -1;
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------- input lists */

static void files_add(mlm_file_list *fl, const char *path, int name_off, uint64_t size) {
    if (fl->n == fl->cap) {
        fl->cap = fl->cap ? 2 * fl->cap : 64;
        fl->paths = realloc(fl->paths, fl->cap * sizeof(char *));
        fl->sizes = realloc(fl->sizes, fl->cap * sizeof(uint64_t));
        fl->name_off = realloc(fl->name_off, fl->cap * sizeof(int));
        if (!fl->paths || !fl->sizes || !fl->name_off)
            mlm_die(MLM_EXIT_RUNTIME, "out of memory listing %d input files", fl->n);
    }
    fl->paths[fl->n] = strdup(path);
    fl->name_off[fl->n] = name_off;
    fl->sizes[fl->n++] = size;
}

void mlm_file_list_free(mlm_file_list *fl) {
    for (int i = 0; i < fl->n; i++) free(fl->paths[i]);
    free(fl->paths);
    free(fl->sizes);
    free(fl->name_off);
}


static int collect(const char *path, int named, int name_off, mlm_file_list *fl, char *err, size_t err_len);

static int is_link_to_dir(const char *path) {
    struct stat ls, st;
    return lstat(path, &ls) == 0 && S_ISLNK(ls.st_mode) && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Adds a directory's entries in name order. Symbolic links to directories are
 * not followed (they could loop); links to files are read. */
static int collect_dir(const char *dir, int name_off, mlm_file_list *fl, char *err, size_t err_len) {
    DIR *d = opendir(dir);
    if (!d) return mlm_fail(err, err_len, "%s: cannot read directory: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;   // ., .., and hidden files (stamps, editor state)
        if (n == cap && !(names = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof(char *))))
            mlm_die(MLM_EXIT_RUNTIME, "out of memory listing %s", dir);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(char *), mlm_cmp_str);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char *child = mlm_xmalloc(strlen(dir) + strlen(names[i]) + 2, "path");
        sprintf(child, "%s/%s", dir, names[i]);
        if (rc == 0 && !is_link_to_dir(child)) rc = collect(child, 0, name_off, fl, err, err_len);
        free(child);
        free(names[i]);
    }
    free(names);
    return rc;
}

/* A named input must be a readable regular file or directory; inside
 * directories, other kinds of entries (sockets, fifos) are skipped. */
static int collect(const char *path, int named, int name_off, mlm_file_list *fl, char *err, size_t err_len) {
    struct stat st;
    if (stat(path, &st) != 0) return mlm_fail(err, err_len, "%s: cannot read: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return collect_dir(path, named ? (int)strlen(path) + 1 : name_off, fl, err, err_len);
    if (!S_ISREG(st.st_mode)) {
        if (named) return mlm_fail(err, err_len, "%s: not a regular file or directory", path);
        return 0;
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) return mlm_fail(err, err_len, "%s: cannot read: %s", path, strerror(errno));
    close(fd);
    if (named) {
        const char *slash = strrchr(path, '/');
        name_off = slash ? (int)(slash - path) + 1 : 0;
    }
    files_add(fl, path, name_off, (uint64_t)st.st_size);
    return 0;
}

int mlm_list_inputs(const char *const *inputs, int n, mlm_file_list *out, char *err, size_t err_len) {
    memset(out, 0, sizeof *out);
    for (int i = 0; i < n; i++)
        if (collect(inputs[i], 1, 0, out, err, err_len) != 0) {
            mlm_file_list_free(out);
            return -1;
        }
    return 0;
}
