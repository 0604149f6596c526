/* common/jsonstr.h: the project's one JSON string escaper (RFC 8259), shared by the SDK (export lines,
 * manifests, the CLI's JSON output) and anything else that writes JSON by hand. It writes into memory
 * the caller provides, so it fits any buffer: ask for the length, make room, write. */
#ifndef PC_JSONSTR_H
#define PC_JSONSTR_H
#include <stddef.h>

/* The length of s (n bytes) as a JSON string literal, quotes included, NUL not included. */
size_t pc_json_quoted_len(const char *s, size_t n);
/* Writes s (n bytes) as a JSON string literal: '"', then s with quote, backslash and control
 * characters escaped (\n \r \t by name, the others as \u00xx), then '"' and a NUL. out holds
 * pc_json_quoted_len(s, n) + 1 bytes. UTF-8 passes through as is: validate it before, if it came from
 * outside. Returns the length written (without the NUL). */
size_t pc_json_quote(char *out, const char *s, size_t n);
#endif
