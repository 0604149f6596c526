/* tests/model/test_backend_seam.c: the backend seam (trainer/backend/backend.h) as the model sees it.
 *
 *  - the registry: "cpu" has every op (pc_backend_can_train), an unknown name is refused naming the
 *    known ones, "cuda" without a GPU (or without nvcc) fails with a message instead of a backend;
 *  - a failing backend: the CPU backend wrapped so that its ops record a failure (as the CUDA backend
 *    does with a CUDA error) and download() returns -1: pc_model_forward returns an error whose
 *    message names the failed op, and no numbers; the same model on the plain CPU backend scores.
 * The model is a tiny GPT-2 written here from the family table (model/families.h), as `init` does. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/backend.h"
#include "model/config.h"
#include "model/families.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "test.h"

static char g_dir[256];

/* A 1-layer GPT-2 (hidden 16, vocab 64) with small deterministic weights, norms at 1. */
static int write_tiny_model(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/pc-seam-%d", (int)getpid());
  if (mkdir(g_dir, 0755) != 0) return -1;
  pc_config c;
  pc_config_defaults(&c, PC_FAM_GPT2);
  c.vocab = 64, c.hidden = 16, c.layers = 1, c.heads = 2, c.kv_heads = 2, c.head_dim = 8, c.intermediate = 32;
  c.max_pos = 32;
  char path[512], err[512];
  snprintf(path, sizeof path, "%s/config.json", g_dir);
  if (pc_config_write(&c, path, err, sizeof err) != 0) return -1;
  const pc_family_table *ft = pc_family_table_of(c.family);
  pc_st_write_tensor ts[32];
  char names[32][128];
  int n = 0;
  for (int i = 0; i < ft->count && n < 32; i++) {
    const pc_tensor_spec *t = &ft->tensors[i];
    if (!pc_tensor_present(t, &c)) continue;
    int64_t d[2];
    int nd = pc_tensor_shape(t, &c, d);
    size_t k = (size_t)d[0] * (size_t)(nd == 2 ? d[1] : 1);
    float *x = malloc(sizeof(float) * k);
    for (size_t j = 0; j < k; j++) x[j] = t->init == PC_INIT_ONES ? 1.0f : 0.02f * (float)sin(0.7 * (double)(j + 31 * i));
    snprintf(names[n], sizeof names[n], t->name, 0);
    ts[n] = (pc_st_write_tensor){names[n], nd, {d[0], d[1]}, x};
    n++;
  }
  snprintf(path, sizeof path, "%s/model.safetensors", g_dir);
  int rc = pc_st_write(path, ts, n, PC_DT_F32, err, sizeof err);
  for (int i = 0; i < n; i++) free((void *)ts[i].data);
  return rc;
}

static void test_registry(void) {
  char err[512] = "";
  pc_backend *be = pc_backend_new("cpu", 1, err, sizeof err);
  REQUIRE(be);
  EXPECT(pc_backend_can_train(be));
  EXPECT(be->ops->error(be) == NULL);
  be->ops->destroy(be);
  EXPECT(pc_backend_new("tpu", 1, err, sizeof err) == NULL);
  EXPECTF(strstr(err, "unknown device 'tpu'") && strstr(err, "cpu, cuda, auto"), "%s", err);
  err[0] = 0;
  be = pc_backend_new("cuda", 1, err, sizeof err);
  if (be) {  // a machine with a GPU: the CUDA backend scores, and trains once it has every op
    int all = 1;
    for (int op = 0; op < PC_OP_COUNT; op++) all &= be->ops->supports(be, (pc_op)op);
    EXPECT(be->ops->supports(be, PC_OP_MATMUL) && be->ops->supports(be, PC_OP_ADAMW) && pc_backend_can_train(be) == all);
    be->ops->destroy(be);
  } else {
    EXPECTF(strstr(err, "device 'cuda': ") != NULL, "%s", err);
  }
}

// ---- a backend that fails like a device -----------------------------------------------------------

static pc_backend *g_cpu;
static const pc_backend_ops *g_cpu_ops;  /* the CPU backend's own table */
static pc_backend_ops g_failing_ops;
static int g_failed;

static const char *failing_error(pc_backend *be) { return g_failed ? "matmul: injected device failure" : NULL; }
static void failing_matmul(pc_backend *be, float *out, const float *inp, const pc_weight *w, int N, int C, int OC,
                           int accumulate) {
  g_failed = 1;  // an asynchronous failure: nothing to return, kept for the next synchronising op
}
static int failing_download(pc_backend *be, void *dst, const void *src, size_t bytes) {
  if (g_failed) return -1;
  return g_cpu_ops->download(be, dst, src, bytes);
}

static void test_failure_reaches_caller(void) {
  char err[512] = "";
  g_cpu = pc_backend_new("cpu", 1, err, sizeof err);
  REQUIRE(g_cpu);
  int32_t ids[6] = {1, 5, 9, 3, 7, 2};
  pc_model_seq seq = {ids, 6, 2, 0};
  double sum = NAN;
  int cnt = -1;
  pc_model *m = NULL;
  // the plain CPU backend scores the model
  REQUIRE(pc_model_load(g_dir, NULL, g_cpu, &m, err, sizeof err) == 0);
  EXPECTF(pc_model_forward(m, &seq, 1, 0, &sum, &cnt, NULL, err, sizeof err) == 0, "%s", err);
  EXPECT(isfinite(sum) && sum < 0 && cnt == 4);
  pc_model_free(m);
  // the same backend with a table whose matmul fails: an error naming it, no numbers
  g_cpu_ops = g_cpu->ops;
  g_failing_ops = *g_cpu->ops;
  g_failing_ops.name = "failing";
  g_failing_ops.matmul = failing_matmul;
  g_failing_ops.download = failing_download;
  g_failing_ops.error = failing_error;
  g_cpu->ops = &g_failing_ops;
  REQUIRE(pc_model_load(g_dir, NULL, g_cpu, &m, err, sizeof err) == 0);
  sum = 12345;
  err[0] = 0;
  EXPECT(pc_model_forward(m, &seq, 1, 0, &sum, &cnt, NULL, err, sizeof err) != 0);
  EXPECTF(strstr(err, "backend failing") && strstr(err, "matmul: injected device failure"), "%s", err);
  EXPECT(sum == 12345);  // nothing written
  pc_model_free(m);
  g_cpu->ops = g_cpu_ops;
  g_cpu->ops->destroy(g_cpu);
}

int main(void) {
  if (write_tiny_model() != 0) { printf("FAIL seam_model_written\n"); return 1; }
  RUN(test_registry);
  RUN(test_failure_reaches_caller);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
  return tst_end();
}
