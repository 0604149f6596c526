/* tests/model/test_config.c: config.json as outside input (trainer/model/config.c). Every number is
 * checked against what it means: what the fuzzer and an outside probe found (issue 13) must be an error
 * naming the file and the field, and real configs must still load unchanged. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "model/config.h"

static char dir[256], path[300];

static void write_cfg(const char *text) {
  FILE *f = fopen(path, "w");
  if (!f) { perror(path); exit(1); }
  fputs(text, f);
  fclose(f);
}

/* A small Llama config with one field replaced (or added) by `field: value`. */
static int load_llama_with(const char *field, const char *value, pc_config *c, char *err, size_t errlen) {
  static const char *base[][2] = {
    {"model_type", "\"llama\""}, {"vocab_size", "320"}, {"hidden_size", "64"}, {"intermediate_size", "128"},
    {"num_hidden_layers", "2"}, {"num_attention_heads", "4"}, {"num_key_value_heads", "2"},
    {"rms_norm_eps", "1e-6"}, {"rope_theta", "10000.0"}, {"bos_token_id", "1"}, {"eos_token_id", "[2,3]"}};
  char text[2048];
  size_t n = (size_t)snprintf(text, sizeof text, "{\"%s\":%s", field, value);
  for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)   /* each key once: cJSON takes the first */
    if (strcmp(base[i][0], field) != 0) n += (size_t)snprintf(text + n, sizeof text - n, ",\"%s\":%s", base[i][0], base[i][1]);
  snprintf(text + n, sizeof text - n, "}");
  write_cfg(text);
  return pc_config_load(path, c, err, errlen);
}

static void test_real_values_load(void) {
  pc_config c; char err[512];
  EXPECTF(load_llama_with("tie_word_embeddings", "false", &c, err, sizeof err) == 0, "%s", err);
  EXPECT(c.kv_heads == 2 && c.head_dim == 16 && c.bos_id == 1 && c.eos_id == 2 && c.rope_theta == 10000.0);
  EXPECTF(load_llama_with("num_key_value_heads", "null", &c, err, sizeof err) == 0, "%s", err);
  EXPECT(c.kv_heads == 4);                          /* null: the default (all heads) */
  EXPECTF(load_llama_with("eos_token_id", "[]", &c, err, sizeof err) == 0, "%s", err);
  EXPECT(c.eos_id == -1);
  write_cfg("{\"model_type\":\"gpt2\",\"n_embd\":64,\"n_layer\":2,\"n_head\":4,\"n_positions\":128,"
            "\"vocab_size\":300,\"layer_norm_epsilon\":1e-5,\"n_inner\":null,\"eos_token_id\":50256}");
  EXPECTF(pc_config_load(path, &c, err, sizeof err) == 0, "%s", err);
  EXPECT(c.intermediate == 256 && c.head_dim == 16 && c.eos_id == 50256);
}

static void test_hostile_values_refused(void) {
  static const struct { const char *field, *value, *want; } bad[] = {
    /* float-to-int overflow in the token-id reader (undefined behaviour before) */
    {"bos_token_id", "1e400", "\"bos_token_id\" must be a token id"},
    {"eos_token_id", "[1e20]", "\"eos_token_id\" must be a token id"},
    {"eos_token_id", "[2, -7]", "\"eos_token_id\" must be a token id"},
    {"bos_token_id", "\"<s>\"", "\"bos_token_id\" must be a token id"},
    {"bos_token_id", "1.5", "\"bos_token_id\" must be a token id"},
    /* zero shapes that the family default used to replace silently */
    {"num_key_value_heads", "0", "\"num_key_value_heads\" must be an integer from 1"},
    {"head_dim", "0", "\"head_dim\" must be an integer from 1"},
    {"num_attention_heads", "-4", "\"num_attention_heads\" must be an integer from 1"},
    {"hidden_size", "1e12", "\"hidden_size\" must be an integer from 1"},
    {"vocab_size", "0", "\"vocab_size\" must be an integer from 1"},
    {"max_position_embeddings", "0", "\"max_position_embeddings\" must be an integer from 1"},
    /* numbers that made `score` write NaN log-probs */
    {"rms_norm_eps", "-1e-6", "\"rms_norm_eps\" must be a finite positive number"},
    {"rms_norm_eps", "0", "\"rms_norm_eps\" must be a finite positive number"},
    {"rope_theta", "0", "\"rope_theta\" must be a finite positive number"},
    {"rope_theta", "1e400", "\"rope_theta\" must be a finite positive number"},
    {"partial_rotary_factor", "-1e999", "\"partial_rotary_factor\" must be a finite number"},
    {"rope_scaling", "{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":0,\"high_freq_factor\":4}",
     "\"low_freq_factor\" must be a finite positive number"},
    {"head_dim", "8388608", "num_attention_heads x head_dim"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    pc_config c; char err[512] = "";
    int rc = load_llama_with(bad[i].field, bad[i].value, &c, err, sizeof err);
    EXPECTF(rc != 0, "%s=%s loaded", bad[i].field, bad[i].value);
    EXPECTF(strstr(err, path) && strstr(err, bad[i].want), "%s=%s: want \"%s\" in: %s", bad[i].field, bad[i].value,
            bad[i].want, err);
  }
  /* GPT-2's names too */
  pc_config c; char err[512] = "";
  write_cfg("{\"model_type\":\"gpt2\",\"n_embd\":64,\"n_layer\":2,\"n_head\":4,\"layer_norm_epsilon\":-1}");
  EXPECT(pc_config_load(path, &c, err, sizeof err) != 0);
  EXPECTF(strstr(err, path) && strstr(err, "\"layer_norm_epsilon\" must be a finite positive number"), "%s", err);
  write_cfg("{\"model_type\":\"gpt2\",\"n_embd\":64,\"n_layer\":2,\"n_head\":4,\"n_inner\":0}");
  EXPECT(pc_config_load(path, &c, err, sizeof err) != 0);
  EXPECTF(strstr(err, path) && strstr(err, "\"n_inner\" must be an integer from 1"), "%s", err);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/prefcap-config-test-XXXXXX");
  if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
  snprintf(path, sizeof path, "%s/config.json", dir);
  RUN(test_real_values_load);
  RUN(test_hostile_values_refused);
  unlink(path);
  rmdir(dir);
  return tst_end();
}
