/* tests/sdk/test_files.c: the files prefcap writes, against someone who shares the directory.
 *   - a symlink planted where the old code put its temporary file (PATH.tmp.<pid>) no longer makes the
 *     export write through it (the victim file keeps its bytes);
 *   - a target that is a symlink, a device node or a directory is refused, by name, untouched;
 *   - data, eval part and manifest are 0600 whatever the umask, or the mode asked for;
 *   - an export killed by SIGKILL while writing leaves a temporary file with data; the next export to
 *     the same directory removes it, and so does forget, which names any it cannot remove;
 *   - a store open to group or others gets a warning through the logger.
 * We run as root in CI: permission bits do not stop root, so the tests look at modes, not at denials. */
#include "test.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>

static int logj(prefcap_t *pc, const char *json) {
  int rc = prefcap_log_json(pc, json, strlen(json), NULL);
  if (rc) fprintf(stderr, "  log %s: %s\n", json, prefcap_errmsg(pc));
  return rc;
}

/* A store with n edit pairs whose texts are `size` bytes each (one word: cheap to pair). */
static bool fill(const char *db, int n, size_t size) {
  prefcap_t *pc = tu_open(db, PREFCAP_ASYNC);
  if (!pc) return false;
  char *big = malloc(2 * size + 256);
  bool ok = big != NULL;
  for (int i = 0; i < n && ok; i++) {
    int k = snprintf(big, 128, "{\"type\":\"generation\",\"id\":\"g%d\",\"prompt\":\"p%d\",\"user_id\":\"u%d\",\"completion\":\"", i, i, i % 3);
    memset(big + k, 'a', size);
    snprintf(big + k + size, 128, "%d\"}", i);
    ok = logj(pc, big) == 0;
    k = snprintf(big, 128, "{\"type\":\"edit\",\"id\":\"g%d\",\"text\":\"", i);
    memset(big + k, 'b', size);
    snprintf(big + k + size, 128, "%d\"}", i);
    ok = ok && logj(pc, big) == 0;
  }
  free(big);
  return prefcap_close(pc, -1) == 0 && ok;
}

static const char *dir_of(const char *db) {
  static char d[600];
  snprintf(d, sizeof d, "%s", db);
  *strrchr(d, '/') = 0;
  return d;
}

static int export_to(const char *db, const char *out, unsigned mode, double eval, char *why, size_t whylen) {
  prefcap_t *pc = tu_open(db, PREFCAP_SYNC);
  if (!pc) return -1;
  prefcap_export_options_t *o = prefcap_export_options_new();
  prefcap_export_options_set_out(o, out);
  if (mode) prefcap_export_options_set_mode(o, mode);
  if (eval > 0) prefcap_export_options_set_eval_fraction(o, eval);
  int rc = prefcap_export(pc, o, NULL);
  if (why) snprintf(why, whylen, "%s", rc ? prefcap_errmsg(pc) : "");
  prefcap_export_options_free(o);
  prefcap_close(pc, -1);
  return rc;
}

/* How many names in dir contain needle. */
static int count_names(const char *dir, const char *needle) {
  DIR *d = opendir(dir);
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, needle) != NULL;
  if (d) closedir(d);
  return n;
}

static const char victim_text[] = "the victim's own bytes\n";

static bool victim_intact(const char *path) {
  size_t len;
  char *v = tu_read_file(path, &len);
  bool ok = v && len == sizeof victim_text - 1 && !memcmp(v, victim_text, len);
  free(v);
  return ok;
}

// ---- the tests -----------------------------------------------------------------------------------

static void planted_symlink_at_the_old_temporary_name(void) {
  const char *db = tu_dbpath();
  REQUIRE(fill(db, 3, 10));
  char out[700], victim[700], link1[800], link2[800];
  snprintf(out, sizeof out, "%s/out.jsonl", dir_of(db));
  snprintf(victim, sizeof victim, "%s/victim.txt", dir_of(db));
  FILE *f = fopen(victim, "w");
  REQUIRE(f && fputs(victim_text, f) >= 0 && fclose(f) == 0);
  /* the names the old code opened with O_CREAT|O_TRUNC, following links: PATH.tmp.<pid> */
  snprintf(link1, sizeof link1, "%s.tmp.%d", out, (int)getpid());
  snprintf(link2, sizeof link2, "%s.manifest.json.tmp.%d", out, (int)getpid());
  REQUIRE(symlink(victim, link1) == 0 && symlink(victim, link2) == 0);
  char why[512];
  EXPECTF(export_to(db, out, 0, 0, why, sizeof why) == 0, "%s", why);
  EXPECTF(victim_intact(victim), "the export wrote through a symlink planted at %s", link1);
  struct stat st;
  EXPECT(lstat(link1, &st) == 0 && S_ISLNK(st.st_mode));   /* not ours: left alone */
  EXPECT(lstat(out, &st) == 0 && S_ISREG(st.st_mode));
}

static void target_must_be_a_regular_file_or_nothing(void) {
  const char *db = tu_dbpath();
  REQUIRE(fill(db, 3, 10));
  const char *d = dir_of(db);
  char victim[700], link[700], dev[700], dirp[700], mlink[800], why[512];
  snprintf(victim, sizeof victim, "%s/victim.txt", d);
  FILE *f = fopen(victim, "w");
  REQUIRE(f && fputs(victim_text, f) >= 0 && fclose(f) == 0);
  /* a symlink as the target */
  snprintf(link, sizeof link, "%s/link.jsonl", d);
  REQUIRE(symlink(victim, link) == 0);
  EXPECT(export_to(db, link, 0, 0, why, sizeof why) == PREFCAP_EINVAL);
  EXPECTF(strstr(why, link) && strstr(why, "symbolic link"), "%s", why);
  struct stat st;
  EXPECT(lstat(link, &st) == 0 && S_ISLNK(st.st_mode) && victim_intact(victim));
  /* a device node (our own /dev/null: 1,3; where mknod is not allowed, a FIFO stands in) */
  snprintf(dev, sizeof dev, "%s/null", d);
  bool is_dev = mknod(dev, S_IFCHR | 0666, makedev(1, 3)) == 0;
  if (!is_dev) REQUIRE(mkfifo(dev, 0666) == 0);
  EXPECT(export_to(db, dev, 0, 0, why, sizeof why) == PREFCAP_EINVAL);
  EXPECTF(strstr(why, dev) && strstr(why, is_dev ? "character device" : "FIFO"), "%s", why);
  EXPECT(lstat(dev, &st) == 0 && (is_dev ? S_ISCHR(st.st_mode) : S_ISFIFO(st.st_mode)));
  if (!is_dev) fprintf(stderr, "  (mknod not allowed here: a FIFO stood in for the device)\n");
  /* a directory */
  snprintf(dirp, sizeof dirp, "%s/adir", d);
  REQUIRE(mkdir(dirp, 0700) == 0);
  EXPECT(export_to(db, dirp, 0, 0, why, sizeof why) == PREFCAP_EINVAL);
  EXPECTF(strstr(why, "directory"), "%s", why);
  /* the manifest's name too: a link there refuses the export before the data is written */
  char out[700];
  snprintf(out, sizeof out, "%s/m.jsonl", d);
  snprintf(mlink, sizeof mlink, "%s.manifest.json", out);
  REQUIRE(symlink(victim, mlink) == 0);
  EXPECT(export_to(db, out, 0, 0, why, sizeof why) == PREFCAP_EINVAL);
  EXPECTF(strstr(why, mlink), "%s", why);
  EXPECT(access(out, F_OK) != 0 && victim_intact(victim));
  /* nothing left behind by any of the refusals */
  EXPECT(count_names(d, ".tmp.") == 0);
}

static void files_are_private_unless_asked(void) {
  const char *db = tu_dbpath();
  REQUIRE(fill(db, 20, 10));
  const char *d = dir_of(db);
  mode_t old = umask(0);   /* the library must not rely on the caller's umask */
  char out[700], path[800], why[512];
  snprintf(out, sizeof out, "%s/private.jsonl", d);
  EXPECTF(export_to(db, out, 0, 0.5, why, sizeof why) == 0, "%s", why);
  const char *suffix[] = {"", ".manifest.json"};
  struct stat st;
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s%s", out, suffix[i]);
    EXPECTF(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "%s is %04o", path, (unsigned)(st.st_mode & 0777));
  }
  snprintf(path, sizeof path, "%s/private.eval.jsonl", d);
  EXPECTF(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "%s is %04o", path, (unsigned)(st.st_mode & 0777));
  snprintf(out, sizeof out, "%s/shared.jsonl", d);
  EXPECTF(export_to(db, out, 0640, 0, why, sizeof why) == 0, "%s", why);
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s%s", out, suffix[i]);
    EXPECTF(stat(path, &st) == 0 && (st.st_mode & 0777) == 0640, "%s is %04o", path, (unsigned)(st.st_mode & 0777));
  }
  umask(old);
  prefcap_export_options_t *o = prefcap_export_options_new();
  EXPECT(prefcap_export_options_set_mode(o, 01777) == PREFCAP_EINVAL);
  prefcap_export_options_free(o);
}

/* Runs an export of db to out in a child and SIGKILLs it once a temporary file beside out holds data.
 * True when the kill landed there. */
static bool kill_while_writing(const char *db, const char *out) {
  pid_t pid = fork();
  if (pid == 0) _exit(export_to(db, out, 0, 0, NULL, 0) ? 1 : 0);
  if (pid < 0) return false;
  const char *slash = strrchr(out, '/');
  char dir[700], stem[300];
  snprintf(dir, sizeof dir, "%.*s", (int)(slash - out), out);
  snprintf(stem, sizeof stem, "%s.tmp.", slash + 1);
  bool hit = false;
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    DIR *d = opendir(dir);
    for (struct dirent *e; d && !hit && (e = readdir(d));) {
      if (strncmp(e->d_name, stem, strlen(stem))) continue;
      char p[1100];
      struct stat st;
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      if (!stat(p, &st) && st.st_size > 0) hit = true;
    }
    if (d) closedir(d);
    if (hit) { kill(pid, SIGKILL); break; }
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) return false;   /* finished first */
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (t.tv_sec - t0.tv_sec > 60) { kill(pid, SIGKILL); break; }
  }
  waitpid(pid, NULL, 0);
  return hit;
}

static long long leftover_rows(const char *db) {
  return tu_query(db, "SELECT count(*) FROM meta WHERE key >= 'export.tmp:' AND key < 'export.tmp;'");
}

static void killed_exports_leave_nothing_for_long(void) {
  const char *db = tu_dbpath();
  /* 32 MiB of text in 1,000 pairs: the export writes 4 MiB chunks for a while before its rename */
  REQUIRE(fill(db, 1000, 16000));
  const char *d = dir_of(db);
  char out[700], other[700], why[512];
  snprintf(out, sizeof out, "%s/night.jsonl", d);
  snprintf(other, sizeof other, "%s/other.jsonl", d);
  bool hit = false;
  for (int tries = 0; tries < 5 && !hit; tries++) hit = kill_while_writing(db, out);
  REQUIRE(hit);
  EXPECT(count_names(d, "night.jsonl.tmp.") >= 1);
  EXPECT(leftover_rows(db) >= 1);
  /* the next export to the same directory (any name) removes them */
  EXPECTF(export_to(db, other, 0, 0, why, sizeof why) == 0, "%s", why);
  EXPECTF(count_names(d, ".tmp.") == 0, "%d temporary file(s) still there", count_names(d, ".tmp."));
  EXPECT(leftover_rows(db) == 0);
  /* killed again; now forget removes them (the user's text may be in them) */
  hit = false;
  for (int tries = 0; tries < 5 && !hit; tries++) hit = kill_while_writing(db, out);
  REQUIRE(hit);
  REQUIRE(count_names(d, "night.jsonl.tmp.") >= 1);
  prefcap_t *pc = tu_open(db, PREFCAP_SYNC);
  REQUIRE(pc);
  EXPECTF(prefcap_forget_user(pc, "u1", NULL, NULL, NULL) == 0, "%s", prefcap_errmsg(pc));
  EXPECT(prefcap_close(pc, -1) == 0);
  EXPECTF(count_names(d, ".tmp.") == 0, "%d temporary file(s) still there after forget", count_names(d, ".tmp."));
  EXPECT(leftover_rows(db) == 0);
}

/* A leftover that a running export still holds (here: this process holds its lock) is not removed;
 * forget names it and fails, and removes it once it is free. */
static void forget_names_what_it_cannot_remove(void) {
  const char *db = tu_dbpath();
  REQUIRE(fill(db, 3, 10));
  char tmp[700], sql[900];
  snprintf(tmp, sizeof tmp, "%s/held.jsonl.tmp.0123456789abcdef01234567", dir_of(db));
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
  REQUIRE(fd >= 0 && write(fd, "u1's text\n", 10) == 10);
  REQUIRE(flock(fd, LOCK_EX) == 0);
  snprintf(sql, sizeof sql, "INSERT INTO meta(key, value) VALUES('export.tmp:%s', 1) RETURNING 1", tmp);
  REQUIRE(tu_query(db, sql) == 1);
  prefcap_t *pc = tu_open(db, PREFCAP_SYNC);
  REQUIRE(pc);
  EXPECT(prefcap_forget_user(pc, "u1", NULL, NULL, NULL) == PREFCAP_EIO);
  EXPECTF(strstr(prefcap_errmsg(pc), tmp) && strstr(prefcap_errmsg(pc), "running export"), "%s", prefcap_errmsg(pc));
  EXPECT(access(tmp, F_OK) == 0 && leftover_rows(db) == 1);
  close(fd);   /* the "export" ends, killed: the file is free */
  EXPECTF(prefcap_forget_user(pc, "u1", NULL, NULL, NULL) == 0, "%s", prefcap_errmsg(pc));
  EXPECT(access(tmp, F_OK) != 0 && leftover_rows(db) == 0);
  EXPECT(prefcap_close(pc, -1) == 0);
}

static char warned[1024];
static void capture(prefcap_log_level_t level, const char *msg, void *ud) {
  (void)ud;
  if (level >= PREFCAP_LOG_WARN) snprintf(warned, sizeof warned, "%s", msg);
}

static void open_store_warns_when_others_can_read(void) {
  const char *db = tu_dbpath();
  REQUIRE(fill(db, 1, 10));
  struct stat st;
  EXPECT(stat(db, &st) == 0 && (st.st_mode & 0777) == 0600);   /* created private */
  for (int pass = 0; pass < 2; pass++) {
    REQUIRE(chmod(db, pass ? 0644 : 0600) == 0);
    prefcap_options_t *o = prefcap_options_new();
    prefcap_options_set_path(o, db);
    prefcap_options_set_logger(o, capture, NULL);
    prefcap_t *pc = NULL;
    warned[0] = 0;
    EXPECT(prefcap_open(o, &pc) == 0);
    prefcap_options_free(o);
    if (pass) EXPECTF(strstr(warned, db) && strstr(warned, "0644") && strstr(warned, "chmod 600"), "warning: '%s'", warned);
    else EXPECTF(!warned[0], "a private store got a warning: %s", warned);
    prefcap_close(pc, -1);
  }
}

int main(void) {
  RUN(planted_symlink_at_the_old_temporary_name);
  RUN(target_must_be_a_regular_file_or_nothing);
  RUN(files_are_private_unless_asked);
  RUN(killed_exports_leave_nothing_for_long);
  RUN(forget_names_what_it_cannot_remove);
  RUN(open_store_warns_when_others_can_read);
  return tst_end();
}
