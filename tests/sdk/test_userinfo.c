/* tests/sdk/test_userinfo.c: a URL's userinfo (https://user:PASSWORD@host/) is a credential, like a
 * presigned query: prefcap_upload must never hand it to the progress callback or put it in its error
 * detail, prefcap_errmsg(NULL) (issue 13, item 4). The upload goes to a closed loopback port, so it
 * fails at once, with no server needed; what the library says about it is checked for the password. */
#include "test.h"
#include "util.h"

static char seen_url[600];
static int on_progress(const prefcap_upload_progress_t *p, void *ud) {
  (void)ud;
  if (p->event == PREFCAP_UPLOAD_EV_START && p->url) snprintf(seen_url, sizeof seen_url, "%s", p->url);
  return 0;
}

static void userinfo_never_reported(void) {
  char file[700];
  snprintf(file, sizeof file, "%s/data.bin", tu_tmpdir());
  FILE *f = fopen(file, "wb");
  REQUIRE(f);
  fputs("some bytes", f);
  fclose(f);
  prefcap_upload_options_t *o = prefcap_upload_options_new();
  prefcap_upload_options_set_retries(o, 0);
  prefcap_upload_options_set_manifest(o, 0);
  prefcap_upload_options_set_auth(o, PREFCAP_UPLOAD_PLAIN);
  prefcap_upload_options_set_progress(o, on_progress, NULL);
  /* port 1 on loopback: nothing listens there, the connection is refused */
  int rc = prefcap_upload(o, file, "http://alice:s3cretPW@127.0.0.1:1/bucket/data.bin?X-Amz-Signature=abc");
  /* the detail of a call without a handle: prefcap_errmsg(NULL), this thread's */
  char err[1024];
  snprintf(err, sizeof err, "%s", prefcap_errmsg(NULL));
  prefcap_upload_options_free(o);
  EXPECT(rc == PREFCAP_ENETWORK);
  EXPECTF(!strstr(err, "s3cretPW") && !strstr(err, "alice") && strstr(err, "http://***@127.0.0.1:1/bucket/data.bin"), "%s", err);
  EXPECTF(!strstr(err, "X-Amz-Signature=abc"), "%s", err);
  EXPECTF(!strcmp(seen_url, "http://***@127.0.0.1:1/bucket/data.bin?…"), "%s", seen_url);
}

int main(void) {
  RUN(userinfo_never_reported);
  return tst_end();
}
