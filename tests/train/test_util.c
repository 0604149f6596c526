/* tests/train/test_util.c: pc_sha256_file (trainer/util/util.c) against coreutils' sha256sum, and its
 * memory of files already hashed in this process: the same file is read once, and any change to it is
 * seen, a rewrite of the same size with its mtime put back included (ctime moves), and a rename over
 * it (a new inode). */
#include "test.h"
#include "util/util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256], path[300];

static void write_file(const char *p, char fill, size_t n) {
  FILE *f = fopen(p, "wb");
  for (size_t i = 0; i < n; i++) fputc(fill + (char)(i % 7), f);
  fclose(f);
}

static int coreutils_sha256(const char *p, char hex[65]) {
  char cmd[400];
  snprintf(cmd, sizeof cmd, "sha256sum '%s'", p);
  FILE *f = popen(cmd, "r");
  if (!f) return -1;
  int ok = fscanf(f, "%64s", hex) == 1;
  return pclose(f) == 0 && ok ? 0 : -1;
}

static void hash_matches_sha256sum(void) {
  char a[65], b[65];
  write_file(path, 'a', 3 << 20);
  REQUIRE(pc_sha256_file(path, a) == 0);
  REQUIRE(coreutils_sha256(path, b) == 0);
  EXPECTF(!strcmp(a, b), "%s vs sha256sum %s", a, b);
  EXPECT(pc_sha256_file("/nonexistent/file", a) == -1);
}

static void same_file_read_once(void) {
  char a[65], b[65];
  write_file(path, 'k', 1 << 20);
  size_t n0 = pc_sha256_files_read();
  REQUIRE(pc_sha256_file(path, a) == 0);
  REQUIRE(pc_sha256_file(path, b) == 0);
  EXPECTF(pc_sha256_files_read() == n0 + 1, "read %zu times", pc_sha256_files_read() - n0);
  EXPECT(!strcmp(a, b));
}

static void rewrite_with_mtime_restored_is_seen(void) {
  char a[65], b[65], want[65];
  write_file(path, 'p', 1 << 20);
  REQUIRE(pc_sha256_file(path, a) == 0);
  struct stat st;
  REQUIRE(stat(path, &st) == 0);
  usleep(50000);   /* past the kernel's coarse clock tick, which ctime is taken from */
  write_file(path, 'q', 1 << 20);   /* same size, other bytes */
  struct timespec ts[2] = {st.st_atim, st.st_mtim};
  REQUIRE(utimensat(AT_FDCWD, path, ts, 0) == 0);   /* the mtime put back */
  struct stat st2;
  REQUIRE(stat(path, &st2) == 0);
  EXPECT(st2.st_size == st.st_size && st2.st_mtim.tv_sec == st.st_mtim.tv_sec && st2.st_mtim.tv_nsec == st.st_mtim.tv_nsec);
  size_t n0 = pc_sha256_files_read();
  REQUIRE(pc_sha256_file(path, b) == 0);
  REQUIRE(coreutils_sha256(path, want) == 0);
  EXPECTF(strcmp(a, b) && !strcmp(b, want), "after the rewrite: %s (before %s, sha256sum %s)", b, a, want);
  EXPECT(pc_sha256_files_read() == n0 + 1);
}

static void rename_over_is_seen(void) {
  char a[65], b[65], want[65], tmp[320];
  write_file(path, 'r', 1 << 16);
  REQUIRE(pc_sha256_file(path, a) == 0);
  snprintf(tmp, sizeof tmp, "%s.new", path);
  write_file(tmp, 's', 1 << 16);
  REQUIRE(rename(tmp, path) == 0);
  REQUIRE(pc_sha256_file(path, b) == 0);
  REQUIRE(coreutils_sha256(path, want) == 0);
  EXPECTF(!strcmp(b, want), "%s vs sha256sum %s", b, want);
}

int main(void) {
  snprintf(dir, sizeof dir, "%s/pc-util-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
  snprintf(path, sizeof path, "%s/weights.bin", dir);
  RUN(hash_matches_sha256sum);
  RUN(same_file_read_once);
  RUN(rewrite_with_mtime_restored_is_seen);
  RUN(rename_over_is_seen);
  unlink(path);
  rmdir(dir);
  return tst_end();
}
