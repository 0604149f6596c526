/* trainer/util/util.h: small helpers shared by the trainer's commands and model code: a seeded generator
 * and file-system chores. None prints or exits. */
#ifndef PC_UTIL_H
#define PC_UTIL_H
#include <stdint.h>

/* splitmix64: the next 64 random bits of the stream whose state is *s. */
uint64_t pc_splitmix64(uint64_t *s);
/* A uniform double in (0, 1) from the stream. */
double pc_rand_unit(uint64_t *s);
/* Copies src to dst: 0, 1 when src does not exist (nothing written), -1 on error (errno set). */
int pc_copy_file(const char *src, const char *dst);
/* mkdir -p: 0, or -1 with errno set. */
int pc_mkdir_p(const char *dir);

#endif
