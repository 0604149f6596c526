/* tests/sdk/test_upload.c: uploads (sdk/upload.c) against a real HTTP server on loopback
 * (tests/sdk/http_server.py, started here), which verifies SigV4 signatures on its own
 * (tests/sdk/sigv4_verify.py, itself checked against AWS's published vectors by
 * tests/sdk/test_sigv4_verify.py), and the libcrypto adapters under the upload (sdk/digest.c) against
 * their standards' vectors.
 *
 * Server cases: success with the manifest (the bytes the server received hash to the manifest's
 * sha256), 500 then success, 408 then success, 403 and 404 (not retried, clear error), a stalled server
 * (timeout within seconds), a dropped connection (retried; and failing after the last retry), a
 * refused connection, 429 + Retry-After in seconds and 503 + Retry-After as an HTTP date (both
 * honoured), a Retry-After beyond the cap, SigV4 verified by the server's own recomputation (and a
 * wrong secret refused, so the check can fail), a presigned URL and its manifest URL, a manifest whose
 * sha256 is wrong (nothing sent), progress events and cancelling. */
#include "md5.h"
#include "sha256.h"
#include "test.h"
#include "upload.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// ---- small helpers -------------------------------------------------------------------------------------
/* prefcap_upload, with its detail (prefcap_errmsg(NULL), the library's one error channel) copied to
 * err for the checks below; "" after a success. */
static int upload_err(const prefcap_upload_options_t *o, const char *file, const char *url, char *err, size_t n) {
  int rc = prefcap_upload(o, file, url);
  snprintf(err, n, "%s", rc ? prefcap_errmsg(NULL) : "");
  return rc;
}

static void spit(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) { fprintf(stderr, "cannot write %s\n", path); return; }
  fwrite(data, 1, len, f);
  fclose(f);
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void hexof(const void *d, size_t n, char *out) { prefcap__hex(d, n, out); }

// ---- hashes against their standards ------------------------------------------------------------------

static void test_sha256_nist(void) {
  char h[65];
  prefcap__sha256_hex("abc", 3, h);
  EXPECT(strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
  prefcap__sha256_hex("", 0, h);
  EXPECT(strcmp(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
  const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  prefcap__sha256_hex(m448, strlen(m448), h);
  EXPECT(strcmp(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0);
  const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
  prefcap__sha256_hex(m896, strlen(m896), h);
  EXPECT(strcmp(h, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1") == 0);
  /* one million 'a', fed in uneven pieces to exercise the buffering */
  prefcap__sha256_ctx c;
  prefcap__sha256_init(&c);
  char a[1024];
  memset(a, 'a', sizeof a);
  size_t left = 1000000, step = 1;
  while (left) { size_t k = step < left ? step : left; prefcap__sha256_update(&c, a, k); left -= k; step = step % 997 + 13; }
  uint8_t d[32];
  prefcap__sha256_final(&c, d);
  hexof(d, 32, h);
  EXPECT(strcmp(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
}

static void test_hmac_rfc4231(void) {
  uint8_t key[131], out[32];
  char h[65];
  memset(key, 0x0b, 20);
  prefcap__hmac_sha256(key, 20, "Hi There", 8, out);
  hexof(out, 32, h);
  EXPECT(strcmp(h, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7") == 0);
  prefcap__hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, out);
  hexof(out, 32, h);
  EXPECT(strcmp(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843") == 0);
  memset(key, 0xaa, 131);   /* test case 6: a key longer than the block is hashed first */
  const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
  prefcap__hmac_sha256(key, 131, m6, strlen(m6), out);
  hexof(out, 32, h);
  EXPECT(strcmp(h, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54") == 0);
}

static void test_md5_base64(void) {
  static const struct { const char *in, *hex; } v[] = {   /* RFC 1321, appendix A.5 */
    { "", "d41d8cd98f00b204e9800998ecf8427e" }, { "a", "0cc175b9c0f1b6a831c399e269772661" },
    { "abc", "900150983cd24fb0d6963f7d28e17f72" }, { "message digest", "f96b697d7cb7938d525a2f31aaf161d0" },
    { "abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b" },
    { "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f" },
    { "12345678901234567890123456789012345678901234567890123456789012345678901234567890", "57edf4a22be3c955ac49da2e2107b67a" },
  };
  for (size_t k = 0; k < sizeof v / sizeof *v; k++) {
    prefcap__md5_ctx c;
    uint8_t d[16];
    char h[33];
    prefcap__md5_init(&c);
    prefcap__md5_update(&c, v[k].in, strlen(v[k].in));
    prefcap__md5_final(&c, d);
    hexof(d, 16, h);
    EXPECTF(strcmp(h, v[k].hex) == 0, "md5(\"%s\") = %s", v[k].in, h);
  }
  static const struct { const char *in, *b64; } b[] = {   /* RFC 4648, section 10 */
    { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" }, { "foob", "Zm9vYg==" },
    { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
  };
  for (size_t k = 0; k < sizeof b / sizeof *b; k++) {
    char o[16];
    prefcap__base64((const uint8_t *)b[k].in, strlen(b[k].in), o);
    EXPECTF(strcmp(o, b[k].b64) == 0, "base64(\"%s\") = %s", b[k].in, o);
  }
}

// ---- retry timing -------------------------------------------------------------------------------------------
static void test_retry_after_parse(void) {
  int64_t now = 784111777;   /* Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example date */
  EXPECT(prefcap__retry_after_ms("120", now) == 120000);
  EXPECT(prefcap__retry_after_ms(" 5\r\n", now) == 5000);
  EXPECT(prefcap__retry_after_ms("0", now) == 0);
  EXPECT(prefcap__retry_after_ms("Sun, 06 Nov 1994 08:49:47 GMT", now) == 10000);
  EXPECT(prefcap__retry_after_ms("Sunday, 06-Nov-94 08:49:47 GMT", now) == 10000);   /* RFC 850 */
  EXPECT(prefcap__retry_after_ms("Sun Nov  6 08:49:47 1994", now) == 10000);         /* asctime */
  EXPECT(prefcap__retry_after_ms("Sun, 06 Nov 1994 08:00:00 GMT", now) == 0);        /* past */
  EXPECT(prefcap__retry_after_ms("soon", now) == -1);
  EXPECT(prefcap__retry_after_ms("", now) == -1);
  EXPECT(prefcap__retry_after_ms("-5", now) == -1);
}

static void test_backoff(void) {
  uint64_t rng = 12345;
  for (int k = 1; k <= 8; k++) {
    int64_t d = 100LL << (k - 1);
    if (d > 1000) d = 1000;
    bool varied = false;
    int64_t first = -1;
    for (int t = 0; t < 50; t++) {
      int64_t w = prefcap__backoff_ms(k, 100, 1000, &rng);
      EXPECTF(w >= d / 2 && w <= d, "retry %d: %lld not in [%lld, %lld]", k, (long long)w, (long long)d / 2, (long long)d);
      if (first < 0) first = w; else varied |= w != first;
    }
    EXPECTF(varied, "retry %d: no jitter", k);
  }
}

// ---- the loopback server --------------------------------------------------------------------------------------
#define SECRET "test/SECRET+key/abcdefghijklmnopqrstuv"
static pid_t srv_pid = -1;
static int srv_port;
static char tmpdir[256];

static bool start_server(void) {
  const char *script = NULL;
  static const char *const cands[] = { "tests/sdk/http_server.py", "../tests/sdk/http_server.py", "../../tests/sdk/http_server.py" };
  for (size_t k = 0; k < 3; k++) if (access(cands[k], R_OK) == 0) { script = cands[k]; break; }
  if (!script || access("/usr/bin/python3", X_OK) != 0) return false;
  int p[2];
  if (pipe(p) != 0) return false;
  srv_pid = fork();
  if (srv_pid == 0) {
    dup2(p[1], 1);
    close(p[0]); close(p[1]);
    execl("/usr/bin/python3", "python3", script, "--lifetime", "150", "--secret", SECRET, (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  FILE *f = fdopen(p[0], "r");
  char line[64] = "";
  bool ok = f && fgets(line, sizeof line, f) && sscanf(line, "PORT %d", &srv_port) == 1;
  if (f) fclose(f);
  return ok;
}

static size_t grow_cb(char *d, size_t s, size_t n, void *ud) {
  char **buf = ud;
  size_t old = *buf ? strlen(*buf) : 0, add = s * n;
  char *p = realloc(*buf, old + add + 1);
  if (!p) return 0;
  memcpy(p + old, d, add);
  p[old + add] = 0;
  *buf = p;
  return add;
}

static char *http_get(const char *path) {
  char url[256];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", srv_port, path);
  CURL *c = curl_easy_init();
  char *buf = NULL;
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, grow_cb);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &buf);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
  curl_easy_perform(c);
  curl_easy_cleanup(c);
  return buf;
}

static void stop_server(void) {
  if (srv_pid <= 0) return;
  free(http_get("/_quit"));
  for (int k = 0; k < 50; k++) {
    if (waitpid(srv_pid, NULL, WNOHANG) == srv_pid) { srv_pid = -1; return; }
    usleep(100000);
  }
  kill(srv_pid, SIGKILL);
  waitpid(srv_pid, NULL, 0);
  srv_pid = -1;
}

/* The server's records of PUTs to exactly this path (without query), as a cJSON array the caller frees. */
static cJSON *puts_to(const char *path) {
  char *log = http_get("/_log");
  cJSON *all = log ? cJSON_Parse(log) : NULL, *out = cJSON_CreateArray();
  free(log);
  cJSON *e;
  cJSON_ArrayForEach(e, all) {
    const char *p = cJSON_GetObjectItem(e, "path")->valuestring;
    size_t l = strcspn(p, "?");
    if (strlen(path) == l && strncmp(p, path, l) == 0) cJSON_AddItemToArray(out, cJSON_Duplicate(e, 1));
  }
  cJSON_Delete(all);
  return out;
}

static const char *jstr(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItem(o, k);
  return cJSON_IsString(v) ? v->valuestring : "";
}
static double jnum(const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItem(o, k);
  return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* A data file of n bytes (JSONL-looking text) and, when with_manifest, FILE.manifest.json holding its
 * sha256 (plus fields an export manifest has). Returns the file's path (static buffer per slot). */
static const char *make_export(const char *name, size_t n, bool with_manifest, const char *bad_sha) {
  static char paths[8][512];
  static int slot;
  char *path = paths[slot++ % 8];
  snprintf(path, 512, "%s/%s", tmpdir, name);
  char *d = malloc(n + 1);
  for (size_t k = 0; k < n; k++) d[k] = (k % 97 == 96) ? '\n' : (char)('a' + (k * 7 + k / 13) % 26);
  spit(path, d, n);
  char hex[65], mpath[600], man[512];
  prefcap__sha256_hex(d, n, hex);
  free(d);
  snprintf(mpath, sizeof mpath, "%s.manifest.json", path);
  unlink(mpath);
  if (with_manifest) {
    snprintf(man, sizeof man, "{\"export_id\":\"t1\",\"format\":\"trl-dpo\",\"sha256\":\"%s\",\"count\":%zu}\n",
             bad_sha ? bad_sha : hex, n / 97);
    spit(mpath, man, strlen(man));
  }
  return path;
}

static prefcap_upload_options_t *fast_opts(void) {
  prefcap_upload_options_t *o = prefcap_upload_options_new();
  prefcap_upload_options_set_auth(o, PREFCAP_UPLOAD_PLAIN);
  prefcap_upload_options_set_backoff(o, 20, 200, 10);
  prefcap_upload_options_set_timeouts(o, 2, 2, 30);
  prefcap_upload_options_set_retries(o, 3);
  return o;
}

static char *url_for(const char *path) {
  static char u[8][512];
  static int slot;
  char *p = u[slot++ % 8];
  snprintf(p, 512, "http://127.0.0.1:%d%s", srv_port, path);
  return p;
}

#define NEED_SERVER() do { if (srv_pid <= 0) SKIP("no /usr/bin/python3 or tests/sdk/http_server.py"); } while (0)

// ---- upload cases ----------------------------------------------------------------------------------------------
static void test_upload_ok_with_manifest(void) {
  NEED_SERVER();
  const char *f = make_export("ok.jsonl", 300000, true, NULL);
  prefcap_upload_options_t *o = fast_opts();
  char err[512];
  int rc = upload_err(o, f, url_for("/ok/exports/ok.jsonl"), err, sizeof err);
  EXPECTF(rc == PREFCAP_OK, "rc %d: %s", rc, err);
  cJSON *d = puts_to("/ok/exports/ok.jsonl"), *m = puts_to("/ok/exports/ok.jsonl.manifest.json");
  REQUIRE(cJSON_GetArraySize(d) == 1 && cJSON_GetArraySize(m) == 1);
  const cJSON *dr = cJSON_GetArrayItem(d, 0), *mr = cJSON_GetArrayItem(m, 0);
  /* what the server received (hashed by Python) equals what the manifest says */
  char mpath[600];
  snprintf(mpath, sizeof mpath, "%s.manifest.json", f);
  char *man = tu_read_file(mpath, NULL);
  cJSON *mj = cJSON_Parse(man);
  EXPECT(strcmp(jstr(dr, "sha256"), jstr(mj, "sha256")) == 0);
  EXPECT(jnum(dr, "length") == 300000);
  EXPECT(jnum(mr, "length") == (double)strlen(man));
  const cJSON *hd = cJSON_GetObjectItem(dr, "headers");
  EXPECT(strlen(jstr(hd, "content-md5")) == 24);             /* checked by the server: it answered 200 */
  EXPECT(strcmp(jstr(hd, "content-type"), "application/jsonl") == 0);
  EXPECT(jnum(dr, "t") <= jnum(mr, "t"));                     /* data first, then the manifest */
  cJSON_Delete(mj); free(man);
  cJSON_Delete(d); cJSON_Delete(m);
  prefcap_upload_options_free(o);
}

typedef struct { int start, progress, retry, done; uint64_t last_sent, total; long done_status; char reason[256];
                 int retry_ms; int cancel_at_progress; } prog;

static int on_progress(const prefcap_upload_progress_t *p, void *ud) {
  prog *g = ud;
  switch (p->event) {
    case PREFCAP_UPLOAD_EV_START: g->start++; break;
    case PREFCAP_UPLOAD_EV_PROGRESS:
      g->progress++;
      if (p->sent < g->last_sent && g->start < 2) g->last_sent = UINT64_MAX;   /* went backwards in one attempt */
      else g->last_sent = p->sent;
      g->total = p->total;
      if (g->cancel_at_progress && g->progress >= g->cancel_at_progress) return 1;
      break;
    case PREFCAP_UPLOAD_EV_RETRY: g->retry++; g->retry_ms = p->retry_in_ms; snprintf(g->reason, sizeof g->reason, "%s", p->reason); break;
    case PREFCAP_UPLOAD_EV_DONE: g->done++; g->done_status = p->status; break;
  }
  return 0;
}

static void test_upload_500_then_ok(void) {
  NEED_SERVER();
  const char *f = make_export("flaky.jsonl", 5000, false, NULL);
  prefcap_upload_options_t *o = fast_opts();
  prog g = { 0 };
  prefcap_upload_options_set_progress(o, on_progress, &g);
  char err[512];
  int rc = upload_err(o, f, url_for("/fail/500/1/flaky.jsonl"), err, sizeof err);
  EXPECTF(rc == PREFCAP_OK, "rc %d: %s", rc, err);
  cJSON *d = puts_to("/fail/500/1/flaky.jsonl");
  EXPECT(cJSON_GetArraySize(d) == 2);
  EXPECT(jnum(cJSON_GetArrayItem(d, 0), "status") == 500 && jnum(cJSON_GetArrayItem(d, 1), "status") == 200);
  EXPECT(g.start == 2 && g.retry == 1 && g.done == 1 && g.done_status == 200);
  EXPECTF(strstr(g.reason, "HTTP 500") != NULL, "reason \"%s\"", g.reason);
  cJSON_Delete(d);
  /* 408 is retried the same way */
  rc = upload_err(o, f, url_for("/fail/408/2/flaky.jsonl"), err, sizeof err);
  EXPECTF(rc == PREFCAP_OK, "rc %d: %s", rc, err);
  d = puts_to("/fail/408/2/flaky.jsonl");
  EXPECT(cJSON_GetArraySize(d) == 3);
  cJSON_Delete(d);
  /* and a 503 that never ends fails after the last retry, naming the status */
  rc = upload_err(o, f, url_for("/fail/503/99/flaky.jsonl"), err, sizeof err);
  EXPECT(rc == PREFCAP_EHTTP);
  EXPECTF(strstr(err, "after 4 attempts") && strstr(err, "HTTP 503"), "err \"%s\"", err);
  d = puts_to("/fail/503/99/flaky.jsonl");
  EXPECT(cJSON_GetArraySize(d) == 4);
  cJSON_Delete(d);
  prefcap_upload_options_free(o);
}

static void test_upload_403_not_retried(void) {
  NEED_SERVER();
  const char *f = make_export("denied.jsonl", 1000, false, NULL);
  prefcap_upload_options_t *o = fast_opts();
  char err[512];
  int rc = upload_err(o, f, url_for("/status/403/denied.jsonl?X-Amz-Signature=abc&X-Amz-Security-Token=TOPSECRET"), err, sizeof err);
  EXPECT(rc == PREFCAP_EHTTP);
  EXPECTF(strstr(err, "403") && strstr(err, "AccessDenied") && strstr(err, "denied.jsonl"), "err \"%s\"", err);
  EXPECTF(!strstr(err, "TOPSECRET") && !strstr(err, "X-Amz-Signature"), "query leaked: \"%s\"", err);
  cJSON *d = puts_to("/status/403/denied.jsonl");
  EXPECT(cJSON_GetArraySize(d) == 1);
  cJSON_Delete(d);
  rc = upload_err(o, f, url_for("/status/404/denied.jsonl"), err, sizeof err);
  EXPECT(rc == PREFCAP_EHTTP);
  d = puts_to("/status/404/denied.jsonl");
  EXPECT(cJSON_GetArraySize(d) == 1);
  cJSON_Delete(d);
  prefcap_upload_options_free(o);
}

static void test_upload_stall_times_out(void) {
  NEED_SERVER();
  const char *f = make_export("stall.jsonl", 20000, false, NULL);
  prefcap_upload_options_t *o = fast_opts();
  prefcap_upload_options_set_timeouts(o, 1, 1, 0);
  prefcap_upload_options_set_retries(o, 1);
  char err[512];
  double t0 = mono_s();
  int rc = upload_err(o, f, url_for("/stall/stall.jsonl"), err, sizeof err);
  double dt = mono_s() - t0;
  EXPECT(rc == PREFCAP_ENETWORK);
  EXPECTF(strstr(err, "timed out") && strstr(err, "after 2 attempts"), "err \"%s\"", err);
  EXPECTF(dt >= 1.5 && dt < 6.0, "took %.2f s with a 1 s stall timeout and 2 attempts", dt);
  cJSON *d = puts_to("/stall/stall.jsonl");
  EXPECT(cJSON_GetArraySize(d) == 2);
  cJSON_Delete(d);
  fprintf(stderr, "  stalled server: failed after %.2f s\n", dt);
  prefcap_upload_options_free(o);
}

static void test_upload_dropped_connection(void) {
  NEED_SERVER();
  const char *f = make_export("drop.jsonl", 200000, false, NULL);
  prefcap_upload_options_t *o = fast_opts();
  char err[512];
  int rc = upload_err(o, f, url_for("/drop/1/drop.jsonl"), err, sizeof err);
  EXPECTF(rc == PREFCAP_OK, "rc %d: %s", rc, err);
  cJSON *d = puts_to("/drop/1/drop.jsonl");
  EXPECT(cJSON_GetArraySize(d) == 2);
  EXPECT(jnum(cJSON_GetArrayItem(d, 1), "length") == 200000);
  cJSON_Delete(d);
  prefcap_upload_options_set_retries(o, 2);
  rc = upload_err(o, f, url_for("/drop/99/drop.jsonl"), err, sizeof err);
  EXPECT(rc == PREFCAP_ENETWORK);
  EXPECTF(strstr(err, "after 3 attempts"), "err \"%s\"", err);
  d = puts_to("/drop/99/drop.jsonl");
  EXPECT(cJSON_GetArraySize(d) == 3);
  cJSON_Delete(d);
  prefcap_upload_options_free(o);
}

static void test_upload_connection_refused(void) {
  /* a port that was free a moment ago: nothing listens there */
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t al = sizeof a;
  REQUIRE(bind(s, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(s, (struct sockaddr *)&a, &al) == 0);
  close(s);
  const char *f = make_export("refused.jsonl", 100, false, NULL);
  prefcap_upload_options_t *o = fast_opts();
  prog g = { 0 };
  prefcap_upload_options_set_progress(o, on_progress, &g);
  char url[128], err[512];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/x", ntohs(a.sin_port));
  int rc = upload_err(o, f, url, err, sizeof err);
  EXPECT(rc == PREFCAP_ENETWORK);
  EXPECT(g.start == 4 && g.retry == 3);
  EXPECTF(strstr(err, "after 4 attempts"), "err \"%s\"", err);
  prefcap_upload_options_free(o);
}

static void test_upload_retry_after(void) {
  NEED_SERVER();
  const char *f = make_export("ra.jsonl", 1000, false, NULL);
  prefcap_upload_options_t *o = fast_opts();
  prog g = { 0 };
  prefcap_upload_options_set_progress(o, on_progress, &g);
  char err[512];
  int rc = upload_err(o, f, url_for("/retry-after/1/2/ra.jsonl"), err, sizeof err);
  EXPECTF(rc == PREFCAP_OK, "rc %d: %s", rc, err);
  cJSON *d = puts_to("/retry-after/1/2/ra.jsonl");
  REQUIRE(cJSON_GetArraySize(d) == 2);
  double gap = jnum(cJSON_GetArrayItem(d, 1), "t") - jnum(cJSON_GetArrayItem(d, 0), "t");
  EXPECTF(gap >= 1.95 && gap < 4.0, "429 with Retry-After: 2, next try after %.2f s (backoff alone is <= 0.2 s)", gap);
  EXPECT(g.retry_ms == 2000);
  cJSON_Delete(d);
  /* an HTTP date, one-second resolution: at least 1 s later */
  rc = upload_err(o, f, url_for("/retry-date/1/2/ra.jsonl"), err, sizeof err);
  EXPECTF(rc == PREFCAP_OK, "rc %d: %s", rc, err);
  d = puts_to("/retry-date/1/2/ra.jsonl");
  REQUIRE(cJSON_GetArraySize(d) == 2);
  gap = jnum(cJSON_GetArrayItem(d, 1), "t") - jnum(cJSON_GetArrayItem(d, 0), "t");
  EXPECTF(gap >= 0.95 && gap < 4.0, "503 with an HTTP-date Retry-After 2 s ahead, next try after %.2f s", gap);
  cJSON_Delete(d);
  /* asking for more than the cap (10 s here) fails at once, with one request */
  rc = upload_err(o, f, url_for("/retry-after/1/600/ra.jsonl"), err, sizeof err);
  EXPECT(rc == PREFCAP_EHTTP);
  EXPECTF(strstr(err, "retry after 600 s") && strstr(err, "429"), "err \"%s\"", err);
  d = puts_to("/retry-after/1/600/ra.jsonl");
  EXPECT(cJSON_GetArraySize(d) == 1);
  cJSON_Delete(d);
  prefcap_upload_options_free(o);
}

static void test_upload_sigv4_verified_by_server(void) {
  NEED_SERVER();
  const char *f = make_export("signed data.jsonl", 70000, true, NULL);
  setenv("AWS_ACCESS_KEY_ID", "AKIDTESTPREFCAP", 1);
  setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
  unsetenv("AWS_SESSION_TOKEN");
  prefcap_upload_options_t *o = fast_opts();
  prefcap_upload_options_set_auth(o, PREFCAP_UPLOAD_AUTO);   /* credentials present, no presigned query: SigV4 */
  prefcap_upload_options_set_region(o, "eu-west-3");
  char err[512];
  /* a key with a space and a '$': encoded once in what is sent and what is signed */
  int rc = upload_err(o, f, url_for("/sigv4/bucket/exports/signed%20data$1.jsonl"), err, sizeof err);
  EXPECTF(rc == PREFCAP_OK, "rc %d: %s", rc, err);
  cJSON *d = puts_to("/sigv4/bucket/exports/signed%20data%241.jsonl");
  REQUIRE(cJSON_GetArraySize(d) == 1);
  const cJSON *r = cJSON_GetArrayItem(d, 0), *hd = cJSON_GetObjectItem(r, "headers");
  EXPECTF(strcmp(jstr(r, "sigv4"), "ok") == 0, "server says: %s", jstr(r, "sigv4"));
  EXPECT(strstr(jstr(hd, "authorization"), "/eu-west-3/s3/aws4_request") != NULL);
  EXPECT(strcmp(jstr(hd, "x-amz-content-sha256"), jstr(r, "sha256")) == 0);
  cJSON_Delete(d);
  d = puts_to("/sigv4/bucket/exports/signed%20data%241.jsonl.manifest.json");
  EXPECT(cJSON_GetArraySize(d) == 1 && strcmp(jstr(cJSON_GetArrayItem(d, 0), "sigv4"), "ok") == 0);
  cJSON_Delete(d);

  /* with a session token: signed too */
  setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEDMaDTESTTOKEN//+==", 1);
  rc = upload_err(o, f, url_for("/sigv4/bucket/tok.jsonl"), err, sizeof err);
  EXPECTF(rc == PREFCAP_OK, "rc %d: %s", rc, err);
  d = puts_to("/sigv4/bucket/tok.jsonl");
  REQUIRE(cJSON_GetArraySize(d) == 1);
  EXPECT(strcmp(jstr(cJSON_GetArrayItem(d, 0), "sigv4"), "ok") == 0);
  EXPECT(strstr(jstr(cJSON_GetObjectItem(cJSON_GetArrayItem(d, 0), "headers"), "authorization"), "x-amz-security-token") != NULL);
  cJSON_Delete(d);

  /* the wrong secret is refused by the server (the check can fail), and not retried */
  setenv("AWS_SECRET_ACCESS_KEY", "WRONGsecretWRONGsecretWRONGsecret", 1);
  rc = upload_err(o, f, url_for("/sigv4/bucket/wrong.jsonl"), err, sizeof err);
  EXPECT(rc == PREFCAP_EHTTP);
  EXPECTF(strstr(err, "SignatureDoesNotMatch") != NULL, "err \"%s\"", err);
  EXPECTF(!strstr(err, "WRONGsecret") && !strstr(err, "TESTTOKEN"), "credential in error: \"%s\"", err);
  d = puts_to("/sigv4/bucket/wrong.jsonl");
  EXPECT(cJSON_GetArraySize(d) == 1);
  cJSON_Delete(d);

  /* SigV4 asked for without credentials: a clear error, nothing sent */
  unsetenv("AWS_ACCESS_KEY_ID"); unsetenv("AWS_SECRET_ACCESS_KEY"); unsetenv("AWS_SESSION_TOKEN");
  prefcap_upload_options_set_auth(o, PREFCAP_UPLOAD_SIGV4);
  rc = upload_err(o, f, url_for("/sigv4/bucket/nocreds.jsonl"), err, sizeof err);
  EXPECT(rc == PREFCAP_EINVAL);
  EXPECTF(strstr(err, "AWS_ACCESS_KEY_ID") != NULL, "err \"%s\"", err);
  prefcap_upload_options_free(o);
}

static void test_upload_presigned_and_manifest_url(void) {
  NEED_SERVER();
  const char *f = make_export("pre.jsonl", 4000, true, NULL);
  prefcap_upload_options_t *o = fast_opts();
  char err[512];
  const char *u = url_for("/ok/pre.jsonl?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=deadbeef");
  int rc = upload_err(o, f, u, err, sizeof err);
  EXPECT(rc == PREFCAP_EINVAL);
  EXPECTF(strstr(err, "manifest") && !strstr(err, "deadbeef"), "err \"%s\"", err);
  cJSON *d = puts_to("/ok/pre.jsonl");
  EXPECT(cJSON_GetArraySize(d) == 0);   /* nothing sent before the problem was seen */
  cJSON_Delete(d);
  prefcap_upload_options_set_manifest_url(o, url_for("/ok/pre-manifest.json?X-Amz-Signature=cafe"));
  rc = upload_err(o, f, u, err, sizeof err);
  EXPECTF(rc == PREFCAP_OK, "rc %d: %s", rc, err);
  d = puts_to("/ok/pre.jsonl");
  cJSON *m = puts_to("/ok/pre-manifest.json");
  EXPECT(cJSON_GetArraySize(d) == 1 && cJSON_GetArraySize(m) == 1);
  EXPECT(strstr(jstr(cJSON_GetArrayItem(d, 0), "path"), "X-Amz-Signature=deadbeef") != NULL);   /* sent as is */
  cJSON_Delete(d); cJSON_Delete(m);
  /* or the manifest turned off */
  prefcap_upload_options_set_manifest_url(o, NULL);
  prefcap_upload_options_set_manifest(o, 0);
  rc = upload_err(o, f, url_for("/ok/pre2.jsonl?sig=1"), err, sizeof err);
  EXPECTF(rc == PREFCAP_OK, "rc %d: %s", rc, err);
  prefcap_upload_options_free(o);
}

static void test_upload_manifest_mismatch(void) {
  NEED_SERVER();
  const char *f = make_export("mismatch.jsonl", 3000, true, "0000000000000000000000000000000000000000000000000000000000000000");
  prefcap_upload_options_t *o = fast_opts();
  char err[512];
  int rc = upload_err(o, f, url_for("/ok/mismatch.jsonl"), err, sizeof err);
  EXPECT(rc == PREFCAP_ECRYPTO);
  EXPECTF(strstr(err, "mismatch.jsonl.manifest.json") && strstr(err, "sha256"), "err \"%s\"", err);
  cJSON *d = puts_to("/ok/mismatch.jsonl");
  EXPECT(cJSON_GetArraySize(d) == 0);
  cJSON_Delete(d);
  /* a missing file */
  rc = upload_err(o, "/nonexistent/prefcap/file.jsonl", url_for("/ok/x"), err, sizeof err);
  EXPECT(rc == PREFCAP_EIO);
  EXPECTF(strstr(err, "/nonexistent/prefcap/file.jsonl") != NULL, "err \"%s\"", err);
  /* bad URLs, found before the file is read */
  f = make_export("plain.jsonl", 10, false, NULL);
  EXPECT(upload_err(o, f, "ftp://example.com/x", err, sizeof err) == PREFCAP_EINVAL);
  EXPECT(upload_err(o, f, "s3://bucket-only", err, sizeof err) == PREFCAP_EINVAL);
  EXPECT(upload_err(o, f, "not a url", err, sizeof err) == PREFCAP_EINVAL);
  prefcap_upload_options_free(o);
}

static void test_upload_progress_and_cancel(void) {
  NEED_SERVER();
  const char *f = make_export("big.jsonl", 6u << 20, false, NULL);
  prefcap_upload_options_t *o = fast_opts();
  prog g = { 0 };
  prefcap_upload_options_set_progress(o, on_progress, &g);
  char err[512];
  int rc = upload_err(o, f, url_for("/ok/big.jsonl"), err, sizeof err);
  EXPECTF(rc == PREFCAP_OK, "rc %d: %s", rc, err);
  EXPECTF(g.progress >= 1 && g.last_sent == (6u << 20) && g.total == (6u << 20), "progress %d, last %llu", g.progress,
          (unsigned long long)g.last_sent);
  EXPECT(g.done == 1);
  prog c = { .cancel_at_progress = 1 };
  prefcap_upload_options_set_progress(o, on_progress, &c);
  rc = upload_err(o, f, url_for("/ok/big-cancel.jsonl"), err, sizeof err);
  EXPECT(rc == PREFCAP_ENETWORK);
  EXPECTF(strstr(err, "cancelled") != NULL, "err \"%s\"", err);
  EXPECT(c.retry == 0 && c.start == 1);
  prefcap_upload_options_free(o);
}

static void test_options_validation(void) {
  prefcap_upload_options_t *o = prefcap_upload_options_new();
  REQUIRE(o);
  EXPECT(prefcap_upload_options_set_retries(o, -1) == PREFCAP_EINVAL);
  EXPECT(prefcap_upload_options_set_backoff(o, 0, 10, 1) == PREFCAP_EINVAL);
  EXPECT(prefcap_upload_options_set_backoff(o, 100, 10, 1) == PREFCAP_EINVAL);
  EXPECT(prefcap_upload_options_set_timeouts(o, 0, 1, 0) == PREFCAP_EINVAL);
  EXPECT(prefcap_upload_options_set_auth(o, (prefcap_upload_auth_t)7) == PREFCAP_EINVAL);
  EXPECT(prefcap_upload_options_set_cacert(o, "/tmp/ca.pem") == PREFCAP_OK);
  EXPECT(prefcap_upload_options_set_cacert(o, NULL) == PREFCAP_OK);
  char err[64];
  EXPECT(upload_err(NULL, NULL, "http://x/", err, sizeof err) == PREFCAP_EINVAL);
  EXPECT(upload_err(NULL, "f", NULL, err, sizeof err) == PREFCAP_EINVAL);
  prefcap_upload_options_free(o);
  prefcap_upload_options_free(NULL);
}

int main(int argc, char **argv) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  unsetenv("AWS_ACCESS_KEY_ID"); unsetenv("AWS_SECRET_ACCESS_KEY"); unsetenv("AWS_SESSION_TOKEN");
  snprintf(tmpdir, sizeof tmpdir, "/tmp/prefcap-upload-XXXXXX");
  if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
  bool srv = start_server();
  if (!srv) fprintf(stderr, "  (no loopback server: the upload cases will be skipped)\n");
  RUN(test_sha256_nist);
  RUN(test_hmac_rfc4231);
  RUN(test_md5_base64);
  RUN(test_retry_after_parse);
  RUN(test_backoff);
  RUN(test_options_validation);
  RUN(test_upload_ok_with_manifest);
  RUN(test_upload_500_then_ok);
  RUN(test_upload_403_not_retried);
  RUN(test_upload_stall_times_out);
  RUN(test_upload_dropped_connection);
  RUN(test_upload_connection_refused);
  RUN(test_upload_retry_after);
  RUN(test_upload_sigv4_verified_by_server);
  RUN(test_upload_presigned_and_manifest_url);
  RUN(test_upload_manifest_mismatch);
  RUN(test_upload_progress_and_cancel);
  stop_server();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  curl_global_cleanup();
  return tst_end();
}
