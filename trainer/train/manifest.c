/* trainer/train/manifest.c: see manifest.h. */
#include "train/manifest.h"
#include "util/err.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Paths are built into fixed buffers; a path long enough to be cut is also too long to open. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

void pc_iso_now(char *b, size_t n) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(b, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

cJSON *pc_json_read(const char *path, char *err, size_t errlen) {
  char *b = pc_read_file(path, NULL, NULL);
  if (!b) { pc_seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno)); return NULL; }
  cJSON *j = cJSON_Parse(b);
  free(b);
  if (!j) pc_seterr(err, errlen, "%s: not valid JSON", path);
  return j;
}

int pc_json_write(const char *path, const cJSON *j) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  char *s = cJSON_Print(j);
  FILE *f = s ? fopen(tmp, "wb") : NULL;
  int ok = f && fputs(s, f) >= 0 && fputc('\n', f) != EOF;
  if (f && fclose(f) != 0) ok = 0;
  free(s);
  if (ok && rename(tmp, path) != 0) ok = 0;
  return ok ? 0 : -1;
}

cJSON *pc_manifest_file(const char *path) {
  cJSON *j = cJSON_CreateObject();
  char hex[65];
  cJSON_AddStringToObject(j, "path", path);
  if (pc_sha256_file(path, hex) == 0) cJSON_AddStringToObject(j, "sha256", hex);
  else cJSON_AddNullToObject(j, "sha256");
  return j;
}

cJSON *pc_manifest_model(const char *dir) {
  cJSON *j = cJSON_CreateObject();
  char path[4200], e[256];
  cJSON_AddStringToObject(j, "path", dir);
  snprintf(path, sizeof path, "%s/config.json", dir);
  cJSON *cfg = pc_json_read(path, e, sizeof e);
  cJSON_AddItemToObject(j, "config", cfg ? cfg : cJSON_CreateNull());
  cJSON_AddItemToObject(j, "config_file", pc_manifest_file(path));
  snprintf(path, sizeof path, "%s/tokenizer.json", dir);
  cJSON_AddItemToObject(j, "tokenizer", pc_manifest_file(path));
  cJSON *w = cJSON_AddArrayToObject(j, "weights");
  struct dirent **list;
  int n = scandir(dir, &list, NULL, alphasort);
  for (int i = 0; i < n; i++) {
    size_t l = strlen(list[i]->d_name);
    if (l > 12 && !strcmp(list[i]->d_name + l - 12, ".safetensors")) {
      snprintf(path, sizeof path, "%s/%s", dir, list[i]->d_name);
      cJSON_AddItemToArray(w, pc_manifest_file(path));
    }
    free(list[i]);
  }
  if (n >= 0) free(list);
  return j;
}

cJSON *pc_manifest_data(const char *path, const pc_dataset *ds) {
  cJSON *j = pc_manifest_file(path);
  cJSON_AddNumberToObject(j, "pairs", (double)ds->n);
  cJSON_AddNumberToObject(j, "skipped_bad", (double)ds->skipped_bad);
  cJSON_AddNumberToObject(j, "dropped_too_long", (double)ds->dropped_too_long);
  cJSON_AddNumberToObject(j, "truncated", (double)ds->truncated);
  char mp[4200], e[256];
  snprintf(mp, sizeof mp, "%s.manifest.json", path);
  cJSON *em = access(mp, R_OK) == 0 ? pc_json_read(mp, e, sizeof e) : NULL;  // the export's own manifest
  cJSON_AddItemToObject(j, "export_manifest", em ? em : cJSON_CreateNull());
  return j;
}

int pc_manifest_verify(const cJSON *man, const char *mpath, char *err, size_t errlen) {
  const char *keys[][2] = {{"data", NULL}, {"eval_data", NULL}, {"ref_logps", NULL}, {"model", "config_file"},
                           {"model", "tokenizer"}};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(man, keys[i][0]);
    if (keys[i][1]) e = cJSON_GetObjectItemCaseSensitive(e, keys[i][1]);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(e, "path"), *h = cJSON_GetObjectItemCaseSensitive(e, "sha256");
    if (!cJSON_IsString(p) || !cJSON_IsString(h)) continue;
    char hex[65];
    if (pc_sha256_file(p->valuestring, hex) != 0) {
      pc_seterr(err, errlen, "%s names %s, which cannot be read: %s", mpath, p->valuestring, strerror(errno));
      return -1;
    }
    if (strcmp(hex, h->valuestring)) {
      pc_seterr(err, errlen, "%s has changed since the run in %s (sha256 %s, the manifest says %s)", p->valuestring,
                mpath, hex, h->valuestring);
      return -1;
    }
  }
  const cJSON *w = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(man, "model"), "weights"), *e;
  cJSON_ArrayForEach(e, w) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(e, "path"), *h = cJSON_GetObjectItemCaseSensitive(e, "sha256");
    char hex[65];
    if (!cJSON_IsString(p) || !cJSON_IsString(h)) continue;
    if (pc_sha256_file(p->valuestring, hex) != 0 || strcmp(hex, h->valuestring)) {
      pc_seterr(err, errlen, "model weights %s are missing or changed since the run in %s", p->valuestring, mpath);
      return -1;
    }
  }
  return 0;
}

int pc_manifest_set_status(cJSON *man, const char *out, const char *status) {
  char t[32];
  pc_iso_now(t, sizeof t);
  cJSON_Delete(cJSON_DetachItemFromObject(man, "status"));
  cJSON_AddStringToObject(man, "status", status);
  if (strcmp(status, "running")) {
    cJSON_Delete(cJSON_DetachItemFromObject(man, "ended_at"));
    cJSON_AddStringToObject(man, "ended_at", t);
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/run.json", out);
  return pc_json_write(path, man);
}
