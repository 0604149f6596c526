/* trainer/train/manifest.h: the run manifest (OUT/run.json): what a run was made from (the model's
 * config and every weight file's SHA-256, the data and its export manifest, the options, the build),
 * its status, and the check that the inputs a manifest names are still the same before --resume or
 * --from-manifest rebuilds the run. Also the JSON file helpers the trainer uses. Nothing prints. */
#ifndef PC_MANIFEST_H
#define PC_MANIFEST_H
#include <cjson/cJSON.h>
#include <stddef.h>

#include "text/data.h"

/* The JSON in path (the caller deletes it), or NULL with err set. */
cJSON *pc_json_read(const char *path, char *err, size_t errlen);
/* Writes j to path through path.tmp and a rename: 0 or -1. */
int pc_json_write(const char *path, const cJSON *j);

/* {"path", "sha256"} of a file (sha256 null when it cannot be read). */
cJSON *pc_manifest_file(const char *path);
/* The model's identity: config.json (parsed and hashed), the tokenizer's and every safetensors file's
 * hash. */
cJSON *pc_manifest_model(const char *dir);
/* A data file: its hash, the counts of its reading, and the export manifest beside it, if any. */
cJSON *pc_manifest_data(const char *path, const pc_dataset *ds);
/* 0 when every input the manifest (read from mpath) names still has the hash it records; else -1
 * with err saying which changed. */
int pc_manifest_verify(const cJSON *man, const char *mpath, char *err, size_t errlen);
/* Sets "status" (and "ended_at" unless running) and writes OUT/run.json: 0, or -1 when it cannot be
 * written. */
int pc_manifest_set_status(cJSON *man, const char *out, const char *status);
/* The time now as ISO 8601 UTC. */
void pc_iso_now(char *buf, size_t n);

#endif
