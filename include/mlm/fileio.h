/*
 * File helpers every writer and reader shares: whole-file reads, atomic writes
 * (temporary file, fsync, rename, fsync of the directory) so a reader never sees a
 * half-written file, and mkdir -p.
 */
#ifndef MLM_FILEIO_H
#define MLM_FILEIO_H

#include <stddef.h>
#include <stdint.h>

/* Reads a regular file whole into a NUL-terminated malloc'd buffer. Returns 0, or
 * -1 with `path: what is wrong`. */
int mlm_read_file(const char *path, char **buf, size_t *bytes, char *err, size_t err_len);

/* The file a write to path may replace, as a malloc'd path in *target: path itself
 * when nothing or a regular file is there; the regular file a symbolic link leads
 * to (the link is followed, never replaced). Anything else (a directory, a device
 * node, a FIFO, a socket, a link to one of those or to nothing) is refused: -1 with
 * `path: is a FIFO; refusing to replace it with a file`. Every writer of a named
 * output checks with this before it starts work. */
int mlm_output_target(const char *path, char **target, char *err, size_t err_len);

/* Writes the concatenation of nparts buffers to path atomically: PATH.tmp.<pid>,
 * fsync, rename over path, fsync the directory. On failure the temporary file is
 * removed, path is untouched, and -1 comes back with err. path goes through
 * mlm_output_target first: a symbolic link is written through, a non-regular file
 * refused. */
int mlm_write_file_atomic(const char *path, const void *const *parts, const size_t *sizes, int nparts, char *err,
                          size_t err_len);

/* Writes all n bytes to fd, retrying short and interrupted writes; 0, or -1 with
 * errno (ENOSPC when a write took nothing). */
int mlm_write_all(int fd, const void *p, size_t n);

/* Makes a rename or a new entry in dir durable (fsync of the directory). */
int mlm_fsync_dir(const char *dir, char *err, size_t err_len);

/* rm -r dir: its files, its subdirectories, then itself; best effort (for
 * temporary and superseded output only). */
void mlm_remove_tree(const char *dir);

/* qsort comparator for an array of C strings. */
int mlm_cmp_str(const void *a, const void *b);

/* mkdir -p; 0 or -1 with errno. */
int mlm_mkdir_p(const char *path);

/* Regular files named by input paths, in order; a directory contributes its
 * files recursively in name order (hidden entries, links to directories and other
 * kinds of entries are skipped). paths[i] + name_off[i] is the file's name
 * relative to the input that named it (its base name for a named file): the
 * same wherever the corpus lives, so decisions keyed by it (the val split) are
 * too. */
typedef struct {
    char **paths;
    uint64_t *sizes;
    int *name_off;
    int n, cap;
} mlm_file_list;

/* Returns 0, or -1 with err naming an unreadable or unsuitable input. */
int mlm_list_inputs(const char *const *inputs, int n, mlm_file_list *out, char *err, size_t err_len);
void mlm_file_list_free(mlm_file_list *fl);

#endif
