/* trainer/util/err.h: the trainer's one way to report a failure to its caller: a message written into a
 * caller-provided buffer (err may be NULL when the caller does not want it). Header-only, so every
 * trainer object (and the test drivers that link only a few of them) has it without a link change. */
#ifndef PC_ERR_H
#define PC_ERR_H
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

__attribute__((format(printf, 3, 4))) static inline void pc_seterr(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}
#endif
