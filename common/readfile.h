/* common/readfile.h: the project's one read-whole-file, for the small files read at once (manifests,
 * configs, tokenizer and model metadata). */
#ifndef PC_READFILE_H
#define PC_READFILE_H
#include <stddef.h>

/* Reads the whole file at path into a malloc'd buffer with a NUL after the last byte (so text can be
 * used as a string; the data may hold NULs of its own: *len is its length). Returns the buffer, or NULL
 * with errno, and *err, set to the errno of the failure (ENOENT, EISDIR for a directory, ENOMEM,
 * EIO...). len and err may be NULL. Free with free(). */
char *pc_read_file(const char *path, size_t *len, int *err);
#endif
