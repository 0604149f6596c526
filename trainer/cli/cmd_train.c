/* trainer/cli/cmd_train.c: `prefcap-dpo train`: the command line of DPO fine-tuning (and its variants) of
 * a Hugging Face checkpoint on preference pairs, LoRA or full, with the metrics, outputs and run
 * manifest that docs/training.md describes. The options are train/options.c's table; the run itself
 * is train/trainer.c (setup, steps, finish). Here: argv, --resume and --from-manifest (the run's
 * options come from its manifest), signals. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "dist/comm.h"
#include "train/manifest.h"
#include "train/options.h"
#include "train/trainer.h"
#include "util/util.h"

#define PROG "prefcap-dpo train"

static void usage(FILE *f) {
  fputs("usage: prefcap-dpo train --model DIR --data FILE --out DIR [options]\n"
        "       prefcap-dpo train --resume OUT [--threads N] [--ref-cache DIR | --no-ref-cache]\n"
        "       prefcap-dpo train --from-manifest OUT/run.json --out DIR [--threads N] [--ref-cache DIR | --no-ref-cache]\n"
        "\n"
        "DPO fine-tuning on preference pairs (docs/training.md). Writes OUT/metrics.jsonl (TRL's names, one\n"
        "line per optimizer step), OUT/report.html, OUT/run.json (the manifest that rebuilds the run), and\n"
        "the adapter (LoRA: adapter_config.json + adapter_model.safetensors, PEFT's format) or the model\n"
        "(full fine-tune). SIGINT/SIGTERM save a checkpoint and stop; --resume continues it.\n\n"
        "Data parallel (docs/training.md): `mpirun -np N prefcap-dpo train ...`, or N processes with torchrun's\n"
        "variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); each rank runs 1/N of every batch.\n"
        "  --comm-timeout S  a rank that does not answer for S seconds stops the run [300]\n\n",
        f);
  pc_train_opts_usage(f);
}

static void on_signal(int sig) { pc_train_request_stop(sig); }

/* --resume OUT / --from-manifest FILE: the run's own options from its manifest; only --threads, the
 * reference cache's options (and --out for a rebuild) may be given. given: the command line's options. *resume_manifest: the
 * manifest to continue (resume only). Returns 0, or the exit status. */
static int options_from_manifest(pc_train_opts *o, const pc_train_opts *given, int threads_given, const char *resume,
                                 const char *from, cJSON **resume_manifest) {
  char mpath[4200], err[2048];
  if (resume) snprintf(mpath, sizeof mpath, "%s/run.json", resume);
  else snprintf(mpath, sizeof mpath, "%s", from);
  cJSON *man = pc_json_read(mpath, err, sizeof err);
  if (!man) { fprintf(stderr, PROG ": %s\n", err); return 1; }
  pc_train_opts_defaults(o);
  if (pc_train_opts_from_json(o, cJSON_GetObjectItemCaseSensitive(man, "options"), mpath) != 0) goto fail;
  if (pc_manifest_verify(man, mpath, err, sizeof err) != 0) { fprintf(stderr, PROG ": %s\n", err); goto fail; }
  const cJSON *th = cJSON_GetObjectItemCaseSensitive(man, "threads");
  o->threads = threads_given ? given->threads : cJSON_IsNumber(th) ? th->valueint : 0;
  strcpy(o->dump_tokens, given->dump_tokens);
  strcpy(o->dump_grads, given->dump_grads);
  strcpy(o->dump_ref, given->dump_ref);
  strcpy(o->ref_cache, given->ref_cache);  // where the cache is belongs to this machine, not to the run
  o->no_ref_cache = given->no_ref_cache;
  if (resume) {
    snprintf(o->out, sizeof o->out, "%s", resume);
    char now[32];
    pc_iso_now(now, sizeof now);
    cJSON_Delete(cJSON_DetachItemFromObject(man, "resumed_at"));
    cJSON_AddStringToObject(man, "resumed_at", now);
    *resume_manifest = man;
    return 0;
  }
  cJSON_Delete(man);
  if (!given->out[0]) { fprintf(stderr, PROG ": --from-manifest needs --out DIR for the rebuilt run\n"); return 2; }
  strcpy(o->out, given->out);
  fprintf(stderr, PROG ": rebuilding the run of %s into %s (%d threads)\n", mpath, o->out, o->threads);
  return 0;
fail:
  cJSON_Delete(man);
  return 1;
}

/* Parses argv into o (and --resume / --from-manifest). Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, pc_train_opts *o, const char **resume, const char **from,
                      int *threads_given, double *comm_timeout, char *cmdline, size_t cmdlen) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--comm-timeout")) {  // how the ranks talk, not what the run is: not in the manifest
      char *end = NULL;
      *comm_timeout = i + 1 < argc ? strtod(argv[++i], &end) : 0;
      if (!end || *end || !(*comm_timeout > 0)) { fprintf(stderr, PROG ": --comm-timeout needs seconds > 0\n"); return 2; }
      continue;
    }
    size_t u = strlen(cmdline);
    snprintf(cmdline + u, cmdlen - u, " %s", argv[i]);
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
    if (!strcmp(a, "--resume") || !strcmp(a, "--from-manifest")) {
      if (i + 1 >= argc) { fprintf(stderr, PROG ": %s needs a value\n", a); return 2; }
      *(!strcmp(a, "--resume") ? resume : from) = argv[++i];
      continue;
    }
    const pc_train_optdef *d = strncmp(a, "--", 2) == 0 ? pc_train_opts_find(a + 2) : NULL;
    if (!d) { fprintf(stderr, PROG ": unknown option '%s' (see --help)\n", a); return 2; }
    if (d->t != PC_OPT_FLAG && i + 1 >= argc) { fprintf(stderr, PROG ": --%s needs a value\n", d->name); return 2; }
    if (pc_train_opts_set(o, d, d->t == PC_OPT_FLAG ? "1" : argv[++i]) != 0) return 2;
    *threads_given |= !strcmp(d->name, "threads");
  }
  return -1;
}

int pc_cmd_train(int argc, char **argv) {
  pc_train_opts *given = malloc(sizeof *given), *o = malloc(sizeof *o);
  const char *resume = NULL, *from = NULL;
  int threads_given = 0, rc;
  double comm_timeout = 300;
  pc_comm *comm = NULL;
  char cmdline[8192] = "prefcap-dpo train";
  cJSON *resume_manifest = NULL;
  if (!given || !o) { free(given); free(o); fprintf(stderr, PROG ": out of memory\n"); return 1; }
  pc_train_opts_defaults(given);
  *o = *given;
  if ((rc = parse_args(argc, argv, given, &resume, &from, &threads_given, &comm_timeout, cmdline, sizeof cmdline)) >= 0) goto done;
  rc = 2;
  if (resume || from) {
    if ((rc = options_from_manifest(o, given, threads_given, resume, from, &resume_manifest)) != 0) goto done;
    rc = 2;
  } else if (!given->out[0]) {
    fprintf(stderr, PROG ": --out is required\n");
    usage(stderr);
    goto done;
  } else {
    *o = *given;
  }
  if (pc_train_opts_check(o) != 0) goto done;
  char cerr[600];
  if (pc_comm_from_env(comm_timeout, &comm, cerr, sizeof cerr) != 0) {
    fprintf(stderr, PROG ": data parallel: %s\n", cerr);
    rc = 1;
    goto done;
  }
  if (comm && o->dump_grads[0]) {  // each rank holds the gradient of its slice only
    fprintf(stderr, PROG ": --dump-grads is for one process, not %d ranks\n", comm->size);
    goto done;
  }
  o->comm = comm;
  if (pc_mkdir_p(o->out) != 0) { fprintf(stderr, PROG ": %s: cannot create: %s\n", o->out, strerror(errno)); rc = 1; goto done; }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  pc_trainer *t;
  rc = pc_train_setup(o, cmdline, resume_manifest, &t);
  resume_manifest = NULL;  // the trainer's now
  if (rc == 0) {
    int s;
    while ((s = pc_train_step(t)) == 0) {}
    rc = s < 0 ? 1 : pc_train_finish(t);
  }
  pc_trainer_free(t);
  if (rc != 0 && comm) fprintf(stderr, PROG ": rank %d of %d stops (exit %d)\n", comm->rank, comm->size, rc);
done:
  pc_comm_free(comm, rc != 0);
  cJSON_Delete(resume_manifest);
  free(given);
  free(o);
  return rc;
}
