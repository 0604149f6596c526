/* tests/model/test_safetensors.c: the safetensors reader and writer on their own: dtype conversions
 * against the compiler's own _Float16 and an exhaustive round trip, a write/read round trip, and the
 * checks a hostile header must fail (each error naming the file and the tensor). The whole-model
 * cases (truncated checkpoint, missing shard, shape mismatch) are in tests/model/test_model.py. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/safetensors.h"
#include "../test.h"

static char dir[256];

static void test_f16_exhaustive_roundtrip(void) {
  // every f16 bit pattern converts to the f32 the compiler gives, and back to itself (NaNs aside)
  int bad = 0;
  for (uint32_t u = 0; u < 65536 && bad < 5; u++) {
    uint16_t h = (uint16_t)u;
    _Float16 hf;
    memcpy(&hf, &h, 2);
    float want = (float)hf, got = pc_f16_to_f32(h);
    if (isnan(want)) { EXPECT(isnan(got)); continue; }
    if (memcmp(&want, &got, 4) != 0 || pc_f32_to_f16(got) != h) {
      fprintf(stderr, "  f16 0x%04x: want %a got %a back 0x%04x\n", h, want, got, pc_f32_to_f16(got));
      bad++;
    }
  }
  EXPECT(bad == 0);
}

static void test_f32_to_f16_rounding_matches_compiler(void) {
  // random bit patterns over the whole float range, plus ties and overflow edges
  uint64_t s = 12345;
  int bad = 0;
  for (int i = 0; i < 2000000 && bad < 5; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    uint32_t u = (uint32_t)(s >> 32);
    if (i < 8) {
      static const uint32_t edge[8] = {0x477ff000u, 0x477fefffu, 0x33000000u, 0x33000001u,
                                       0x387fe000u, 0x38800000u, 0x3f801000u, 0x3f803000u};
      u = edge[i];
    }
    float f;
    memcpy(&f, &u, 4);
    if (isnan(f)) continue;
    volatile float vf = f;
    _Float16 hf = (_Float16)vf;
    uint16_t want;
    memcpy(&want, &hf, 2);
    uint16_t got = pc_f32_to_f16(f);
    if (got != want) {
      fprintf(stderr, "  f32 %a (0x%08x): want f16 0x%04x got 0x%04x\n", f, u, want, got);
      bad++;
    }
  }
  EXPECT(bad == 0);
}

static void test_bf16_rounding(void) {
  // round to nearest, ties to even, on the 16 low bits
  EXPECT(pc_f32_to_bf16(1.0f) == 0x3f80);
  uint32_t u = 0x3f808000u;  // exactly halfway between 0x3f80 and 0x3f81: even is 0x3f80
  float f;
  memcpy(&f, &u, 4);
  EXPECT(pc_f32_to_bf16(f) == 0x3f80);
  u = 0x3f818000u;           // halfway between 0x3f81 and 0x3f82: even is 0x3f82
  memcpy(&f, &u, 4);
  EXPECT(pc_f32_to_bf16(f) == 0x3f82);
  u = 0x3f808001u;
  memcpy(&f, &u, 4);
  EXPECT(pc_f32_to_bf16(f) == 0x3f81);
  EXPECT(pc_bf16_to_f32(0x4049) == 3.140625f);
  EXPECT(isnan(pc_bf16_to_f32(pc_f32_to_bf16(NAN))));
}

static void test_write_read_roundtrip(void) {
  float a[6] = {1, -2, 3.5f, 0.25f, -0.125f, 1e-3f}, b[3] = {7, 8, 9};
  pc_st_write_tensor ts[2] = {{"a.weight", 2, {2, 3}, a}, {"b", 1, {3}, b}};
  char path[512], err[512];
  for (int d = 0; d < 3; d++) {
    pc_dtype dt = d == 0 ? PC_DT_F32 : d == 1 ? PC_DT_F16 : PC_DT_BF16;
    snprintf(path, sizeof path, "%s/rt_%d.safetensors", dir, d);
    REQUIRE(pc_st_write(path, ts, 2, dt, err, sizeof err) == 0);
    pc_st_file *f;
    EXPECTF(pc_st_open(path, &f, err, sizeof err) == 0, "%s", err);
    if (!f) continue;
    const pc_st_tensor *t = pc_st_find(f, "a.weight");
    REQUIRE(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->dtype == dt);
    float out[6];
    EXPECT(pc_tensor_to_f32(t, out, err, sizeof err) == 0);
    for (int i = 0; i < 6; i++) {
      float want = dt == PC_DT_F32 ? a[i] : dt == PC_DT_F16 ? pc_f16_to_f32(pc_f32_to_f16(a[i])) : pc_bf16_to_f32(pc_f32_to_bf16(a[i]));
      EXPECTF(out[i] == want, "dtype %s element %d: %g vs %g", pc_dtype_name(dt), i, out[i], want);
    }
    EXPECT(pc_st_find(f, "b") && !pc_st_find(f, "c"));
    EXPECT(pc_st_metadata(f, "format") && strcmp(pc_st_metadata(f, "format"), "pt") == 0);
    if (dt == PC_DT_F32) EXPECT(((uintptr_t)t->data % 4) == 0);  // written 8-aligned: usable in place
    pc_st_close(f);
  }
}

/* Writes a file with the given header and n data bytes; returns the open result and err. */
static int open_with_header(const char *name, const char *header, size_t ndata, char *err, size_t errlen,
                            char *path, size_t plen) {
  snprintf(path, plen, "%s/%s", dir, name);
  FILE *fp = fopen(path, "wb");
  uint64_t hl = strlen(header);
  unsigned char lb[8];
  for (int i = 0; i < 8; i++) lb[i] = (unsigned char)(hl >> (8 * i));
  fwrite(lb, 1, 8, fp);
  fwrite(header, 1, hl, fp);
  for (size_t i = 0; i < ndata; i++) fputc(0, fp);
  fclose(fp);
  pc_st_file *f = NULL;
  int rc = pc_st_open(path, &f, err, errlen);
  pc_st_close(f);
  return rc;
}

#define BAD(name, header, ndata, ...)                                                          \
  do {                                                                                         \
    char err_[1024] = "", path_[512];                                                          \
    int rc_ = open_with_header(name, header, ndata, err_, sizeof err_, path_, sizeof path_);   \
    EXPECTF(rc_ != 0, "%s opened", name);                                                      \
    const char *need_[] = {path_, __VA_ARGS__};                                                \
    for (size_t i_ = 0; i_ < sizeof need_ / sizeof *need_; i_++)                               \
      EXPECTF(strstr(err_, need_[i_]), "message '%s' lacks '%s'", err_, need_[i_]);            \
  } while (0)

static void test_hostile_headers(void) {
  BAD("lies.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24, "'w'", "header lies");
  BAD("trunc.st", "{\"w\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}", 6, "'w'", "truncated");
  BAD("overlap.st",
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, "overlap", "'a'", "'b'");
  BAD("nested.st",
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[0,32]},"
      "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 32, "overlap");
  BAD("dtype.st", "{\"w\":{\"dtype\":\"Q4_K\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, "'w'", "dtype");
  BAD("neg.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "'w'", "shape");
  BAD("offs.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "'w'", "data_offsets");
  BAD("huge.st", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4, "'w'",
      "header lies");
  BAD("json.st", "{\"w\": nope", 0, "not a JSON object");
  BAD("dup.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, "'w'", "twice");
  // header length larger than the file
  char path[512], err[512];
  snprintf(path, sizeof path, "%s/short.st", dir);
  FILE *fp = fopen(path, "wb");
  fwrite("\xff\x00\x00\x00\x00\x00\x00\x00{}", 1, 10, fp);
  fclose(fp);
  pc_st_file *f = NULL;
  EXPECT(pc_st_open(path, &f, err, sizeof err) != 0 && strstr(err, path) && strstr(err, "truncated"));
  // a non-float tensor is readable but not convertible; the error names it
  char p2[512];
  EXPECT(open_with_header("ints.st", "{\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, err,
                          sizeof err, p2, sizeof p2) == 0);
  EXPECT(pc_st_open(p2, &f, err, sizeof err) == 0);
  if (f) {
    float x;
    EXPECT(pc_tensor_to_f32(pc_st_find(f, "i"), &x, err, sizeof err) != 0 && strstr(err, "'i'") && strstr(err, "I64"));
    pc_st_close(f);
  }
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/pc-st-test-XXXXXX");
  if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
  RUN(test_f16_exhaustive_roundtrip);
  RUN(test_f32_to_f16_rounding_matches_compiler);
  RUN(test_bf16_rounding);
  RUN(test_write_read_roundtrip);
  RUN(test_hostile_headers);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  return tst_end();
}
