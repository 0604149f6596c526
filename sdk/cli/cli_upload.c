/* sdk/cli/cli_upload.c: `prefcap upload FILE --to URL`, the CLI face of prefcap_upload (sdk/upload.c).
 * CLI code (public API only): it prints progress and errors to stderr, through S() (URLs without
 * their userinfo, a server's bytes without control characters), and returns the exit code: 0
 * uploaded, 1 failed, 2 usage. A line per file started, retried and finished, and between them the
 * shared progress bar (common/progress.h: redrawn in place on a terminal, a line every few seconds
 * in a log). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "progress.h"

static const char usage[] =
  "usage: prefcap upload FILE --to URL [options]\n"
  "\n"
  "Uploads FILE with an HTTP PUT, then FILE.manifest.json (if present) to URL.manifest.json. The\n"
  "manifest's \"sha256\" must match FILE. Retries timeouts, dropped connections and HTTP 408/429/5xx\n"
  "with backoff (honouring Retry-After); other errors fail at once.\n"
  "\n"
  "  --to URL            https://..., http://..., a presigned URL, or s3://BUCKET/KEY\n"
  "  --manifest-url URL  where the manifest goes (needed when URL has a query string, e.g. presigned)\n"
  "  --no-manifest       do not upload FILE.manifest.json\n"
  "  --sigv4             sign with AWS SigV4 (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,\n"
  "                      AWS_SESSION_TOKEN from the environment)\n"
  "  --presigned         send a plain, unsigned PUT (presigned URLs, servers with their own auth)\n"
  "                      default: SigV4 for s3:// or when credentials are set and URL is not presigned\n"
  "  --region R          SigV4 region (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1)\n"
  "  --retries N         retries after the first attempt (default 4)\n"
  "  --timeout S         fail an attempt when nothing moves for S seconds, or connecting takes longer\n"
  "                      (default: 30 s stall, 10 s connect)\n"
  "  --cacert FILE       trust the CA certificates in FILE (PEM) instead of the system's\n"
  "  --quiet             no progress output\n"
  "  -h, --help          this text\n"
  "\n"
  "exit status: 0 uploaded, 1 failed, 2 usage error\n";

// ---- progress -----------------------------------------------------------------------------------------
/* The bar itself is common/progress.c, the one both CLIs use (in MiB, with MB/s and ETA); around it,
 * a line per file started, retried and finished, which logs keep. */
typedef struct { bool quiet; pc_progress *bar; } view;

static void human(double b, char *out, size_t n) {
  const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
  int k = 0;
  while (b >= 1024 && k < 4) { b /= 1024; k++; }
  snprintf(out, n, k ? "%.1f %s" : "%.0f %s", b, u[k]);
}

static const char *base_name(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

static void bar_drop(view *v) {
  pc_progress_free(v->bar);   /* ends a drawn line, so the message below starts on its own */
  v->bar = NULL;
}

static int on_progress(const prefcap_upload_progress_t *p, void *ud) {
  view *v = ud;
  if (v->quiet) return 0;
  char total[32];
  human((double)p->total, total, sizeof total);
  const double mib = 1024.0 * 1024.0;
  switch (p->event) {
    case PREFCAP_UPLOAD_EV_START:
      bar_drop(v);
      fprintf(stderr, "upload: %s (%s) -> %s%s\n", S(base_name(p->file)), total, S(p->url),
              p->attempt > 1 ? " (retry)" : "");
      if (p->attempt > 1) fprintf(stderr, "upload: attempt %d of %d\n", p->attempt, p->max_attempts);
      v->bar = pc_progress_new(stderr, "upload", "MiB", "MB", (size_t)((double)p->total / mib + 0.999));
      break;
    case PREFCAP_UPLOAD_EV_PROGRESS:
      pc_progress_update(v->bar, (size_t)((double)p->sent / mib), (double)p->sent / 1e6, S(base_name(p->file)));
      break;
    case PREFCAP_UPLOAD_EV_RETRY:
      bar_drop(v);
      fprintf(stderr, "upload: %s: attempt %d of %d failed (%s); retrying in %.1f s\n", S(base_name(p->file)),
              p->attempt, p->max_attempts, p->reason ? S(p->reason) : "?", p->retry_in_ms / 1000.0);
      break;
    case PREFCAP_UPLOAD_EV_DONE: {
      bar_drop(v);
      char r[32];
      human(p->elapsed_s > 0 ? (double)p->total / p->elapsed_s : 0, r, sizeof r);
      fprintf(stderr, "upload: %s done, %s in %.1f s (%s/s), HTTP %ld\n", S(base_name(p->file)), total, p->elapsed_s,
              r, p->status);
      break;
    }
  }
  return 0;
}

// ---- arguments ------------------------------------------------------------------------------------------
static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "prefcap upload: ");
  fprintf(stderr, fmt, S(arg));
  fprintf(stderr, "\n(see prefcap upload --help)\n");
  return 2;
}

static bool parse_int(const char *s, int lo, int hi, int *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < lo || v > hi) return false;
  *out = (int)v;
  return true;
}

int cli_upload(int argc, char **argv) {
  const char *file = NULL, *to = NULL, *murl = NULL, *cacert = NULL, *region = NULL;
  int retries = -1, timeout = -1;
  bool no_manifest = false, quiet = false;
  prefcap_upload_auth_t auth = PREFCAP_UPLOAD_AUTO;
  int modes = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = NULL;
    bool takes = !strcmp(a, "--to") || !strcmp(a, "--manifest-url") || !strcmp(a, "--retries") ||
                 !strcmp(a, "--timeout") || !strcmp(a, "--cacert") || !strcmp(a, "--region");
    if (takes) {
      if (i + 1 >= argc) return usage_error("%s needs a value", a);
      val = argv[++i];
    }
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(usage, stdout); return 0; }
    else if (!strcmp(a, "--to")) to = val;
    else if (!strcmp(a, "--manifest-url")) murl = val;
    else if (!strcmp(a, "--cacert")) cacert = val;
    else if (!strcmp(a, "--region")) region = val;
    else if (!strcmp(a, "--retries")) { if (!parse_int(val, 0, 100, &retries)) return usage_error("--retries: \"%s\" is not a number from 0 to 100", val); }
    else if (!strcmp(a, "--timeout")) { if (!parse_int(val, 1, 86400, &timeout)) return usage_error("--timeout: \"%s\" is not a number of seconds from 1 to 86400", val); }
    else if (!strcmp(a, "--no-manifest")) no_manifest = true;
    else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) quiet = true;
    else if (!strcmp(a, "--sigv4")) { auth = PREFCAP_UPLOAD_SIGV4; modes++; }
    else if (!strcmp(a, "--presigned")) { auth = PREFCAP_UPLOAD_PLAIN; modes++; }
    else if (a[0] == '-' && a[1]) return usage_error("unknown option %s", a);
    else if (!file) file = a;
    else return usage_error("one FILE only (\"%s\" is a second one)", a);
  }
  if (!file) return usage_error("%s", "no FILE given");
  if (!to) return usage_error("%s", "--to URL is required");
  if (modes > 1) return usage_error("%s", "--sigv4 and --presigned exclude each other");
  if (no_manifest && murl) return usage_error("%s", "--manifest-url and --no-manifest exclude each other");

  prefcap_upload_options_t *o = prefcap_upload_options_new();
  if (!o) { fprintf(stderr, "prefcap upload: out of memory\n"); return 1; }
  view v = { .quiet = quiet };
  int rc = prefcap_upload_options_set_auth(o, auth);
  if (!rc && retries >= 0) rc = prefcap_upload_options_set_retries(o, retries);
  if (!rc && timeout > 0) rc = prefcap_upload_options_set_timeouts(o, timeout < 10 ? timeout : 10, timeout, 0);
  if (!rc && cacert) rc = prefcap_upload_options_set_cacert(o, cacert);
  if (!rc && region) rc = prefcap_upload_options_set_region(o, region);
  if (!rc && murl) rc = prefcap_upload_options_set_manifest_url(o, murl);
  if (!rc && no_manifest) rc = prefcap_upload_options_set_manifest(o, 0);
  if (!rc) rc = prefcap_upload_options_set_progress(o, on_progress, &v);
  if (!rc) rc = prefcap_upload(o, file, to);
  prefcap_upload_options_free(o);
  bar_drop(&v);
  if (rc) {
    /* the setters and the upload report through the same channel, prefcap_errmsg(NULL); the message
     * quotes the server's answer and the URL: both made safe to print */
    const char *why = prefcap_errmsg(NULL);
    fprintf(stderr, "prefcap upload: %s (%s)\n", why[0] ? S(why) : prefcap_strerror(rc), prefcap_strerror(rc));
    return 1;
  }
  return 0;
}
