/* trainer/cli/cmd_score.c: `prefcap-dpo score`: the summed log-probability of each pair's chosen and
 * rejected completion under a model (optionally with a LoRA adapter), one JSON line per pair, in order.
 *
 * Used on its own (does the model already prefer the chosen answers?) and to precompute reference
 * log-probs for training. Pairs are scored `--batch-size` at a time as one packed batch (chosen and
 * rejected sequences laid end to end, no padding: every token computed is a real token), and a pair's
 * common prefix (its prompt) is computed once for both answers. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/cli.h"
#include "text/data.h"
#include "model/model.h"
#include "progress.h"
#include "text/tokenizer.h"
#include "train/reference.h"
#include "util/util.h"

static void usage(FILE *f) {
  fputs("usage: prefcap-dpo score --model DIR --data FILE --out FILE [options]\n"
        "\n"
        "Writes one line per pair of FILE that was scored, in input order:\n"
        "  {\"chosen_logps\": x, \"rejected_logps\": y, \"chosen_tokens\": n, \"rejected_tokens\": m, \"line\": k}\n"
        "where x and y are sums of natural-log probabilities over the completion tokens (those after the\n"
        "prompt, as TRL tokenizes), n and m the numbers of tokens summed, k the pair's line in FILE.\n"
        "At the end a summary goes to stderr (pairs, mean margin = mean(chosen - rejected), fraction with\n"
        "chosen > rejected, tokens/s) and, with --summary, to a JSON file. Progress goes to stderr: a bar\n"
        "with rate and ETA on a terminal, a plain line every few seconds otherwise.\n"
        "\n"
        "  --model DIR            Hugging Face model directory (config.json, safetensors, tokenizer.json)\n"
        "  --adapter DIR          PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors),\n"
        "                         merged into the weights (W + lora_alpha/r * B A)\n"
        "  --data FILE            preference JSONL (standard or conversational, as TRL reads it)\n"
        "  --out FILE             output JSONL ('-' for standard output)\n"
        "  --summary FILE         also write the summary as one JSON object to FILE\n"
        "  --batch-size N         pairs per forward pass (default 8)\n"
        "  --threads N            CPU threads (default: all cores)\n"
        "  --device NAME          cpu (default), cuda, or auto (cuda when a GPU is present)\n"
        "  --max-length N         truncate sequences to N tokens (TRL's max_length; default: none)\n"
        "  --truncation MODE      keep_start (default) or keep_end, as TRL defines them\n"
        "  --chat-template NAME   chatml, qwen3 or llama3: override the format read from\n"
        "                         tokenizer_config.json for conversational rows\n"
        "  --skip-bad             skip bad lines (counted, first one reported) instead of stopping\n",
        f);
}

static int parse_int(const char *opt, const char *s, int lo, int *out) {
  if (pc_parse_int(s, lo, out) == 0) return 0;
  fprintf(stderr, "prefcap-dpo score: %s wants an integer >= %d, got '%s'\n", opt, lo, s);
  return -1;
}

int pc_cmd_score(int argc, char **argv) {
  const char *model_dir = NULL, *adapter = NULL, *data = NULL, *out = NULL, *summary = NULL, *device = "cpu";
  int batch = 8, threads = 0;
  pc_data_opts dopt = {0, PC_TRUNC_KEEP_START, 0, NULL, 0};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) { fprintf(stderr, "prefcap-dpo score: %s needs a value\n", a); return 2; } i++; } while (0)
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
    else if (!strcmp(a, "--model")) { NEEDV(); model_dir = v; }
    else if (!strcmp(a, "--adapter")) { NEEDV(); adapter = v; }
    else if (!strcmp(a, "--data")) { NEEDV(); data = v; }
    else if (!strcmp(a, "--out")) { NEEDV(); out = v; }
    else if (!strcmp(a, "--summary")) { NEEDV(); summary = v; }
    else if (!strcmp(a, "--device")) { NEEDV(); device = v; }
    else if (!strcmp(a, "--batch-size")) { NEEDV(); if (parse_int(a, v, 1, &batch)) return 2; }
    else if (!strcmp(a, "--threads")) { NEEDV(); if (parse_int(a, v, 1, &threads)) return 2; }
    else if (!strcmp(a, "--max-length")) { NEEDV(); if (parse_int(a, v, 1, &dopt.max_length)) return 2; }
    else if (!strcmp(a, "--truncation")) {
      NEEDV();
      dopt.truncation = pc_data_truncation_from_name(v);
      if (dopt.truncation < 0) { fprintf(stderr, "prefcap-dpo score: --truncation is keep_start or keep_end, not '%s'\n", v); return 2; }
    }
    else if (!strcmp(a, "--chat-template")) { NEEDV(); dopt.chat_template = v; }
    else if (!strcmp(a, "--skip-bad")) dopt.skip_bad = 1;
    else { fprintf(stderr, "prefcap-dpo score: unknown option '%s'\n", a); usage(stderr); return 2; }
#undef NEEDV
  }
  if (!model_dir || !data || !out) {
    fprintf(stderr, "prefcap-dpo score: --model, --data and --out are required\n");
    usage(stderr);
    return 2;
  }
  char err[2048], path[4096];
  int rc = 1;
  pc_tokenizer *tok = NULL;
  pc_dataset ds;
  memset(&ds, 0, sizeof ds);
  pc_backend *be = NULL;
  pc_model *m = NULL;
  FILE *fo = NULL;
  pc_model_seq *seqs = NULL;
  double *sums = NULL;
  int *cnts = NULL;
  pc_progress *prog = NULL;

  snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
  if (!(tok = pc_tok_load(path, err, sizeof err))) { fprintf(stderr, "prefcap-dpo score: %s\n", err); goto done; }
  if (pc_data_load(data, tok, model_dir, &dopt, &ds, err, sizeof err) != 0) {
    fprintf(stderr, "prefcap-dpo score: %s\n", err);
    goto done;
  }
  if (ds.skipped_bad)
    fprintf(stderr, "prefcap-dpo score: skipped %zu bad line(s); the first: %s\n", ds.skipped_bad, ds.first_skipped_msg);
  if (ds.dropped_too_long)
    fprintf(stderr, "prefcap-dpo score: dropped %zu pair(s) whose prompt alone reaches --max-length (as TRL does)\n",
            ds.dropped_too_long);
  if (ds.prefix_mismatch)
    fprintf(stderr, "prefcap-dpo score: warning: in %zu pair(s) (first at %s:%d) the prompt's tokens are not a prefix "
            "of prompt+completion's; scored as TRL does\n", ds.prefix_mismatch, data, ds.first_mismatch_line);
  if (!(be = pc_backend_new(device, threads, err, sizeof err))) { fprintf(stderr, "prefcap-dpo score: %s\n", err); goto done; }
  pc_model_opts mo = {.merge_adapter = adapter};  // frozen: the weights as they are (+ the adapter)
  if (pc_model_load(model_dir, &mo, be, &m, err, sizeof err) != 0) {
    fprintf(stderr, "prefcap-dpo score: %s\n", err);
    goto done;
  }
  // Checks that name the data line (the model's own checks only know the position in a batch).
  const pc_config *cfg = pc_model_config(m);
  for (size_t i = 0; i < ds.n; i++) {
    const pc_seq *sq[2] = {&ds.pairs[i].chosen, &ds.pairs[i].rejected};
    for (int k = 0; k < 2; k++) {
      if (cfg->learned_pos && sq[k]->n > cfg->max_pos) {
        fprintf(stderr, "prefcap-dpo score: %s:%d: %s has %d tokens but the model has %d positions "
                "(n_positions); use --max-length\n", data, ds.pairs[i].line, k ? "rejected" : "chosen", sq[k]->n,
                cfg->max_pos);
        goto done;
      }
      for (int t = 0; t < sq[k]->n; t++)
        if (sq[k]->ids[t] < 0 || sq[k]->ids[t] >= cfg->vocab) {
          fprintf(stderr, "prefcap-dpo score: %s:%d: %s token %d has id %d, outside the model's vocabulary of %d "
                  "(tokenizer and model do not match)\n", data, ds.pairs[i].line, k ? "rejected" : "chosen", t,
                  sq[k]->ids[t], cfg->vocab);
          goto done;
        }
    }
  }
  if (!strcmp(out, "-")) fo = stdout;
  else if (!(fo = fopen(out, "w"))) {
    fprintf(stderr, "prefcap-dpo score: %s: cannot create: %s\n", out, strerror(errno));
    goto done;
  }
  seqs = malloc(sizeof *seqs * 2 * (size_t)batch);
  sums = malloc(sizeof *sums * 2 * (size_t)batch);
  cnts = malloc(sizeof *cnts * 2 * (size_t)batch);
  if (!seqs || !sums || !cnts) { fprintf(stderr, "prefcap-dpo score: out of memory\n"); goto done; }

  prog = pc_progress_new(stderr, "score", "pairs", "tok", ds.n);
  double t0 = pc_now_s(), tokens = 0, margin_sum = 0, chosen_sum = 0, rejected_sum = 0;
  size_t wins = 0, scored_tokens = 0;
  for (size_t b = 0; b < ds.n; b += (size_t)batch) {
    int nb = ds.n - b < (size_t)batch ? (int)(ds.n - b) : batch;
    for (int i = 0; i < nb; i++) {
      const pc_pair *p = &ds.pairs[b + (size_t)i];
      pc_pair_seqs(p, &seqs[2 * i]);
      tokens += p->chosen.n + p->rejected.n;
    }
    if (pc_model_forward(m, seqs, 2 * nb, 0, sums, cnts, NULL, err, sizeof err) != 0) {
      // the model names the sequence within the batch; name the data line
      pc_progress_free(prog);  // ends the bar's line: the message starts on its own
      prog = NULL;
      fprintf(stderr, "prefcap-dpo score: %s:%d: %s\n", data, ds.pairs[b].line, err);
      goto done;
    }
    for (int i = 0; i < nb; i++) {
      double c = sums[2 * i], r = sums[2 * i + 1];
      if (!isfinite(c) || !isfinite(r)) {
        // NaN is no score (and not JSON): a weight or a config value the checks missed, or a failed GPU
        pc_progress_free(prog);
        prog = NULL;
        const char *failed = be->ops->error(be);
        fprintf(stderr, "prefcap-dpo score: %s:%d: the %s log-probability is %g, not a number a model can give "
                "(%s); nothing more written\n", data, ds.pairs[b + (size_t)i].line, isfinite(c) ? "rejected" : "chosen",
                isfinite(c) ? r : c, failed ? failed : "check the checkpoint's weights and config.json");
        goto done;
      }
      pc_ref_write_line(fo, c, r, cnts[2 * i], cnts[2 * i + 1], ds.pairs[b + (size_t)i].line);
      margin_sum += c - r;
      chosen_sum += c;
      rejected_sum += r;
      wins += c > r;
      scored_tokens += (size_t)cnts[2 * i] + (size_t)cnts[2 * i + 1];
    }
    pc_progress_update(prog, b + (size_t)nb, tokens, NULL);
  }
  double el = pc_now_s() - t0;
  pc_progress_end(prog, ds.n, tokens, NULL);
  prog = NULL;
  if (fo != stdout && fclose(fo) != 0) {
    fo = NULL;
    fprintf(stderr, "prefcap-dpo score: %s: write failed: %s\n", out, strerror(errno));
    goto done;
  }
  if (fo == stdout) fflush(stdout);
  fo = NULL;
  double n = ds.n ? (double)ds.n : 1;
  fprintf(stderr, "score: %zu pairs, mean margin %.6g, chosen > rejected %.4f, mean chosen_logps %.6g, "
          "mean rejected_logps %.6g, %zu completion tokens, %.0f tokens/s (%.1f s)\n",
          ds.n, margin_sum / n, (double)wins / n, chosen_sum / n, rejected_sum / n, scored_tokens,
          el > 0 ? tokens / el : 0, el);
  if (summary) {
    FILE *fs = fopen(summary, "w");
    if (!fs) { fprintf(stderr, "prefcap-dpo score: %s: cannot create: %s\n", summary, strerror(errno)); goto done; }
    fprintf(fs, "{\"pairs\": %zu, \"mean_margin\": %.9g, \"accuracy\": %.9g, \"mean_chosen_logps\": %.9g, "
            "\"mean_rejected_logps\": %.9g, \"completion_tokens\": %zu, \"tokens\": %.0f, \"seconds\": %.3f, "
            "\"tokens_per_s\": %.1f, \"skipped_bad\": %zu, \"dropped_too_long\": %zu, \"truncated\": %zu, "
            "\"prefix_mismatch\": %zu}\n", ds.n, margin_sum / n, (double)wins / n, chosen_sum / n,
            rejected_sum / n, scored_tokens, tokens, el, el > 0 ? tokens / el : 0, ds.skipped_bad,
            ds.dropped_too_long, ds.truncated, ds.prefix_mismatch);
    if (fclose(fs) != 0) { fprintf(stderr, "prefcap-dpo score: %s: write failed\n", summary); goto done; }
  }
  rc = 0;
done:
  pc_progress_free(prog);
  if (fo && fo != stdout) fclose(fo);
  free(seqs);
  free(sums);
  free(cnts);
  pc_model_free(m);
  if (be) be->ops->destroy(be);
  pc_data_free(&ds);
  pc_tok_free(tok);
  return rc;
}
