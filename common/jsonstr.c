/* common/jsonstr.c: JSON string literals (see jsonstr.h). Two passes over the text, one to size it and
 * one to write it, so that a caller's buffer grows once, by exactly what is needed. */
#include "jsonstr.h"

static size_t esc_len(unsigned char c) {
  if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t') return 2;
  return c < 0x20 ? 6 : 1;
}

size_t pc_json_quoted_len(const char *s, size_t n) {
  size_t len = 2;
  for (size_t i = 0; i < n; i++) len += esc_len((unsigned char)s[i]);
  return len;
}

size_t pc_json_quote(char *out, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  char *o = out;
  *o++ = '"';
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    switch (c) {
      case '"': *o++ = '\\'; *o++ = '"'; break;
      case '\\': *o++ = '\\'; *o++ = '\\'; break;
      case '\n': *o++ = '\\'; *o++ = 'n'; break;
      case '\r': *o++ = '\\'; *o++ = 'r'; break;
      case '\t': *o++ = '\\'; *o++ = 't'; break;
      default:
        if (c >= 0x20) { *o++ = (char)c; break; }
        *o++ = '\\'; *o++ = 'u'; *o++ = '0'; *o++ = '0'; *o++ = hex[c >> 4]; *o++ = hex[c & 15];
    }
  }
  *o++ = '"';
  *o = 0;
  return (size_t)(o - out);
}
