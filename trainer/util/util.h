/* trainer/util/util.h: small helpers shared by the trainer's commands and model code: a seeded generator,
 * file-system chores, reading a whole file, parsing an integer, a file's SHA-256. None prints or exits.
 *
 * The trainer's parts, each in its folder under trainer/ (docs/architecture.md draws them):
 *   util/     this: err.h (the error-message convention), util.c, progress.c (the progress display)
 *   text/     the tokenizer, chat templates and the preference-data reader (text/data.h)
 *   backend/  the compute interface, its registry, the CPU and CUDA backends (backend/backend.h)
 *   model/    config.json, safetensors, the family tables and the one model (model/model.h)
 *   train/    the losses, the optimizer and schedules, the training loop, checkpoints, the report
 *   cli/      the prefcap-dpo commands and their options (cli/cli.h) */
#ifndef PC_UTIL_H
#define PC_UTIL_H
#include "readfile.h"
#include <stddef.h>
#include <stdint.h>

/* splitmix64: the next 64 random bits of the stream whose state is *s. */
uint64_t pc_splitmix64(uint64_t *s);
/* A uniform double in (0, 1) from the stream. */
double pc_rand_unit(uint64_t *s);
/* Copies src to dst: 0, 1 when src does not exist (nothing written), -1 on error (errno set). */
int pc_copy_file(const char *src, const char *dst);
/* mkdir -p: 0, or -1 with errno set. */
int pc_mkdir_p(const char *dir);
/* pc_read_file (the whole file, NUL-terminated) is the project's one, in common/readfile.h */
/* s as a decimal integer in [lo, INT_MAX] into *out: 0, or -1 (not a number, or out of range). */
int pc_parse_int(const char *s, int lo, int *out);
/* The SHA-256 of the file at path as 64 hex digits (libcrypto's EVP): 0, or -1 with errno set. A file
 * this process hashed before and that has not changed since (device, inode, size, mtime, ctime) is
 * not read again. Thread-safe. */
int pc_sha256_file(const char *path, char hex[65]);
/* How many files pc_sha256_file has read through so far (tests). */
size_t pc_sha256_files_read(void);

#endif
