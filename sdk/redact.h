/* sdk/redact.h: capture-time redaction (docs/redaction.md has the rules and their known misses).
 * E-mail addresses, phone numbers, card-like numbers and API keys / secrets in a text are replaced by
 * typed placeholders: [EMAIL], [PHONE], [CARD], [API_KEY]. Hand-written scanners, one pass, no regex
 * library; only ASCII spans are replaced, so valid UTF-8 in gives valid UTF-8 out. Thread-safe (no
 * state). */
#ifndef PREFCAP_REDACT_H
#define PREFCAP_REDACT_H

#include <stddef.h>

/* Redacts in[0..len) into a malloc'd, NUL-terminated *out of *out_len bytes (the caller frees it with
 * free()). Returns 0, PREFCAP_EINVAL (NULL arguments) or PREFCAP_ENOMEM. in need not be NUL-terminated
 * and may hold no match at all (then *out is a copy). */
int prefcap__redact(const char *in, size_t len, char **out, size_t *out_len);

#endif
