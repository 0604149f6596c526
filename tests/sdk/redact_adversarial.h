/* tests/sdk/redact_adversarial.h: inputs built to make a redaction scanner (sdk/redact.c) walk the same
 * bytes again from every start position: one long run shared by many token boundaries, for each
 * pattern. Shared by tests/sdk/test_redact.c (which times them) and bench/redact_bench.c (which
 * compares them with a plain memchr/strlen pass). Header-only (static). */
#ifndef PREFCAP_REDACT_ADVERSARIAL_H
#define PREFCAP_REDACT_ADVERSARIAL_H
#include <stdlib.h>
#include <string.h>

typedef struct { const char *name, *head, *unit, *tail; } redact_adversary;

/* head once, then unit repeated to fill the size, then tail (if it fits) */
static const redact_adversary redact_adversaries[] = {
  {"email local part", "", "a.", ""},                                /* a start after every dot */
  {"email domain", "", "a.", "@b.b.b.b.b"},                          /* every start reaches the '@' */
  {"jwt first part", "", "eyJ-", ""},
  {"jwt later parts", "", "eyJaaaaaaaaa-", ".eyJbbbbbbbbbbbb.c"},
  {"pem without END", "", "-----BEGIN RSA PRIVATE KEY-----\n", ""},
  {"pem END line", "", "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY"},
  {"key word value", "", "key=a=", ""},
  {"key word dots", "", "key=", "..........................................."},
  {"key word identifier", "", "a.token.", ""},
  {"bearer", "", "bearer ", ""},
  {"card groups", "", "2 ", ""},
  {"trunk phone groups", "", "00 ", ""},
  {"intl phone", "+1", " 1", ""},
  {"phone word parens", "phone ", "(", ""},
  {"key formats", "", "sk-a-", ""},
  {"digits", "", "4", ""},
};
#define REDACT_ADVERSARIES (sizeof redact_adversaries / sizeof *redact_adversaries)

/* The adversary's text of about size bytes (malloc'd, NUL-terminated); *len gets its length. */
static inline char *redact_adversary_text(const redact_adversary *a, size_t size, size_t *len) {
  char *b = malloc(size + strlen(a->head) + strlen(a->tail) + 64);
  if (!b) return NULL;
  size_t n = strlen(a->head), u = strlen(a->unit);
  memcpy(b, a->head, n);
  while (n + u <= size) { memcpy(b + n, a->unit, u); n += u; }
  memcpy(b + n, a->tail, strlen(a->tail));
  n += strlen(a->tail);
  b[n] = 0;
  *len = n;
  return b;
}
#endif
