/* tests/sdk/test_redact.c: capture-time redaction (sdk/redact.c) against a table of texts that must
 * be redacted, and one of texts that must come through untouched (dates, versions, prices, order
 * numbers, UUIDs, times, IPs...). Each row states the exact expected output, so a rule that eats too
 * much or too little fails with both strings shown. Also: UTF-8 stays valid, and a pass over 8 MiB of
 * mixed text stays linear (a time bound generous enough for ASan), and so do inputs built to make a
 * scanner rescan (tests/sdk/redact_adversarial.h). */
#include "redact.h"
#include "redact_adversarial.h"
#include "test.h"
#include "util.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct { const char *in, *want; } row;

static int check_rows(const row *rows, size_t n) {
  int bad = 0;
  for (size_t k = 0; k < n; k++) {
    char *out = NULL;
    size_t len = 0;
    int rc = prefcap__redact(rows[k].in, strlen(rows[k].in), &out, &len);
    EXPECTF(rc == 0, "rc %d for \"%s\"", rc, rows[k].in);
    if (rc) { bad++; continue; }
    EXPECTF(len == strlen(out), "length %zu vs %zu", len, strlen(out));
    EXPECTF(strcmp(out, rows[k].want) == 0, "\n    in:   \"%s\"\n    got:  \"%s\"\n    want: \"%s\"", rows[k].in, out, rows[k].want);
    bad += strcmp(out, rows[k].want) != 0;
    free(out);
  }
  return bad;
}

static void test_emails(void) {
  static const row r[] = {
    { "mail me at john.doe@example.com please", "mail me at [EMAIL] please" },
    { "<jane+tag@sub.example.co.uk>", "<[EMAIL]>" },
    { "Contact: a_b-c%d@x-y.io.", "Contact: [EMAIL]." },
    { "two: a@b.cd,e@f.gh", "two: [EMAIL],[EMAIL]" },
    { "mailto:ops@company.org?subject=hi", "mailto:[EMAIL]?subject=hi" },
    { "メールはjohn@example.jpです", "メールは[EMAIL]です" },
  };
  check_rows(r, sizeof r / sizeof *r);
}

static void test_phones(void) {
  static const row r[] = {
    { "call +1 (555) 123-4567 now", "call [PHONE] now" },
    { "UK office +44 20 7946 0958.", "UK office [PHONE]." },
    { "Paris: +33 1 23 45 67 89", "Paris: [PHONE]" },
    { "Berlin +49-30-1234567", "Berlin [PHONE]" },
    { "India +91 98765 43210", "India [PHONE]" },
    { "E.164 +14155552671", "E.164 [PHONE]" },
    { "US (415) 555-2671 or 415-555-2671 or 415.555.2671 or 1-800-555-0199", "US [PHONE] or [PHONE] or [PHONE] or [PHONE]" },
    { "London 020 7946 0958, mobile 07700 900123", "London [PHONE], mobile [PHONE]" },
    { "FR 01 23 45 67 89", "FR [PHONE]" },
    { "DE (030) 1234567", "DE [PHONE]" },
    { "phone: 5551234567", "phone: [PHONE]" },
    { "Tel. 030/1234567", "Tel. [PHONE]" },
    { "call me at 12345678", "call me at [PHONE]" },
  };
  check_rows(r, sizeof r / sizeof *r);
}

static void test_cards(void) {
  static const row r[] = {
    { "card 4111 1111 1111 1111 exp 12/27", "card [CARD] exp 12/27" },
    { "4111-1111-1111-1111", "[CARD]" },
    { "visa:4012888888881881;", "visa:[CARD];" },
    { "amex 3782 822463 10005", "amex [CARD]" },
    { "mc 5555555555554444.", "mc [CARD]." },
    { "discover 6011 1111 1111 1117", "discover [CARD]" },
  };
  check_rows(r, sizeof r / sizeof *r);
}

static void test_secrets(void) {
  static const row r[] = {
    { "OPENAI_API_KEY=sk-proj-abcDEF1234567890ghijKLMN", "OPENAI_API_KEY=[API_KEY]" },
    { "key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv", "key [API_KEY]" },
    { "aws AKIAIOSFODNN7EXAMPLE here", "aws [API_KEY] here" },
    { "gh token ghp_16C7e42F292c6912E7710c838347Ae178B4a in env", "gh token [API_KEY] in env" },
    { "slack xoxb-123456789012-abcdefghij", "slack [API_KEY]" },
    { "Authorization: Bearer abcDEF123456ghiJKL789.mno", "Authorization: Bearer [API_KEY]" },
    { "Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic [API_KEY]" },
    { "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = [API_KEY]" },
    { "{\"api_key\": \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"}", "{\"api_key\": \"[API_KEY]\"}" },
    { "token=Zm9vYmFyMTIzNDU2Nzg5MGFiY2RlZg", "token=[API_KEY]" },
    { "X-Api-Key: 3xAmPl3K3yW1thD1g1ts99", "X-Api-Key: [API_KEY]" },
    { "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U ok", "jwt [API_KEY] ok" },
    { "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\nafter", "[API_KEY]\nafter" },
    { "hf hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "hf [API_KEY]" },
  };
  check_rows(r, sizeof r / sizeof *r);
}

/* Must come through untouched. */
static void test_negatives(void) {
  static const char *const keep[] = {
    "Released 2024-01-15 at 12:30:45, see 15/01/2024 and 01-15-2024.",
    "version 1.2.3, v10.14.2-beta, python 3.11.2, build 20240115.1",
    "price $1,234.56 or €99.99 or 0.99 USD; 1,000,000 users",
    "order #123456789, order 1234567890, invoice INV-2024-000123",
    "ticket 4111111111111112 fails Luhn",
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 (a commit, no key word)",
    "IPv4 192.168.100.200 and 10.0.0.1, port 8080",
    "ISBN 978-3-16-148410-0",
    "score 0.123456789 and pi 3.14159265358979",
    "call 2 functions with 10 args; text of 1234567 chars",
    "max_tokens: 4096, token_count=123, the key: value pairs",
    "password: hunter2",
    "user@localhost is not an address; @handle neither; a@b is short",
    "2 + 2 = 4; +5 points; x+12345678",
    "between 555 and 1234",
    "coordinates 48.8584, 2.2945",
    "SerializedTokenizerConfigurationKeyNames and some_long_snake_case_identifier_name",
    "ääkköset ja 日本語のテキスト, émojis 🎉",
  };
  for (size_t k = 0; k < sizeof keep / sizeof *keep; k++) {
    row r = { keep[k], keep[k] };
    check_rows(&r, 1);
  }
}

static bool utf8_ok(const uint8_t *s, size_t n) {
  for (size_t i = 0; i < n;) {
    uint8_t c = s[i];
    size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!l || i + l > n) return false;
    for (size_t k = 1; k < l; k++) if ((s[i + k] & 0xC0) != 0x80) return false;
    i += l;
  }
  return true;
}

/* Mixed text around every kind of match, multi-byte characters right against the spans. */
static void test_utf8_and_speed(void) {
  static const char *const parts[] = {
    "Ünïcödé «quoted» ", "jöhn@example.com ", "→+44 20 7946 0958← ", "日本4111 1111 1111 1111語 ",
    "sk-abcdefghijklmnopqrstuvwxyz012345😀 ", "plain words and numbers 12345 ", "電話：090-1234-5678 ",
  };
  size_t target = 8u << 20, n = 0;
  char *big = malloc(target + 256);
  REQUIRE(big);
  for (size_t k = 0; n < target; k++) {
    const char *p = parts[k % (sizeof parts / sizeof *parts)];
    memcpy(big + n, p, strlen(p));
    n += strlen(p);
  }
  REQUIRE(utf8_ok((uint8_t *)big, n));
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  char *out = NULL;
  size_t len = 0;
  int rc = prefcap__redact(big, n, &out, &len);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
  REQUIRE(rc == 0);
  EXPECT(utf8_ok((uint8_t *)out, len));
  EXPECT(!strstr(out, "4111 1111") && !strstr(out, "7946") && !strstr(out, "sk-abc") && !strstr(out, "1234-5678"));
  EXPECT(strstr(out, "日本[CARD]語") && strstr(out, "→[PHONE]←") && strstr(out, "[API_KEY]😀"));
  fprintf(stderr, "  redact: %.1f MiB in %.3f s (%.0f MiB/s)\n", (double)n / (1 << 20), s, (double)n / (1 << 20) / s);
  EXPECTF(s < 10.0, "took %.2f s for 8 MiB", s);
  free(out);
  free(big);
}

/* Every scanner linear: 1 MiB built to make a scanner rescan a long run from each start must be
 * redacted in well under a second (about 10 ms here; quadratic scanners took minutes: 200 kB of
 * "a.a.a…" took 25 s). The limit, 5 s per input, leaves room for sanitizers and a loaded machine; an
 * alarm ends the program if one never finishes. */
static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "  a redaction of 1 MiB ran for 60 s\nFAIL test_adversarial_linear\n";
  if (write(1, msg, sizeof msg - 1)) {}
  _exit(1);
}

static void test_adversarial_linear(void) {
  signal(SIGALRM, on_alarm);
  alarm(60);
  double worst = 0;
  for (size_t a = 0; a < REDACT_ADVERSARIES; a++) {
    size_t n;
    char *in = redact_adversary_text(&redact_adversaries[a], 1u << 20, &n), *out = NULL;
    REQUIRE(in);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t len;
    int rc = prefcap__redact(in, n, &out, &len);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    EXPECTF(rc == 0 && s < 5.0, "%s: rc %d, %.2f s for 1 MiB", redact_adversaries[a].name, rc, s);
    if (getenv("REDACT_VERBOSE")) fprintf(stderr, "  %-22s %.4f s\n", redact_adversaries[a].name, s);
    if (s > worst) worst = s;
    free(in);
    free(out);
  }
  alarm(0);
  fprintf(stderr, "  slowest adversarial 1 MiB: %.3f s\n", worst);
  /* the memos change no verdict: a match after a long run of near-misses is still found */
  char *out = NULL;
  size_t len;
  static const char *const cases[][2] = {
    {"a.a.a.b@example.com", "[EMAIL]"},
    {"x.y eyJ-eyJ eyJaaaaaaaaaa.eyJbbbbbbbbbb.cccccccccc", "x.y eyJ-eyJ [API_KEY]"},
    {"key=a=a=a=a=a=a=a=a=a=a=a=a=a=a= token=Zq3vX9pL2mN8rT5wK1yB7", "key=a=a=a=a=a=a=a=a=a=a=a=a=a=a= token=[API_KEY]"},
    {"a.token.x token: Zq3vX9pL2mN8rT5wK1yB7.", "a.token.x token: [API_KEY]."},
    {"-----BEGIN RSA PRIVATE KEY----- -----BEGIN RSA PRIVATE KEY-----\nx\n-----END RSA PRIVATE KEY-----", "[API_KEY]"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    EXPECT(prefcap__redact(cases[k][0], strlen(cases[k][0]), &out, &len) == 0);
    EXPECTF(out && !strcmp(out, cases[k][1]), "%s -> %s", cases[k][0], out ? out : "(null)");
    free(out);
  }
}

static void test_edges(void) {
  char *out = NULL;
  size_t len = 1;
  EXPECT(prefcap__redact("", 0, &out, &len) == 0 && out && len == 0 && out[0] == 0);
  free(out);
  EXPECT(prefcap__redact(NULL, 3, &out, &len) == PREFCAP_EINVAL);
  /* not NUL-terminated: only len bytes are read */
  const char buf[] = { 'a', '@', 'b', '.', 'c', 'o', 'm' };
  EXPECT(prefcap__redact(buf, sizeof buf, &out, &len) == 0 && strcmp(out, "[EMAIL]") == 0);
  free(out);
  EXPECT(prefcap__redact("x@y.co", 4, &out, &len) == 0 && strcmp(out, "x@y.") == 0);
  free(out);
}

int main(void) {
  RUN(test_emails);
  RUN(test_phones);
  RUN(test_cards);
  RUN(test_secrets);
  RUN(test_negatives);
  RUN(test_edges);
  RUN(test_utf8_and_speed);
  RUN(test_adversarial_linear);
  return tst_end();
}
