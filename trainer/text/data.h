/* trainer/text/data.h: the preference-data reader, the main header of text/: tokenizer.c (Hugging Face
 * tokenizer.json), chat.c (the built-in chat formats) and data.c (this reader). JSONL in (what `prefcap export --format trl-dpo` writes
 * and TRL reads), tokenized (prompt, chosen, rejected) sequences out, exactly as TRL's DPOTrainer
 * prepares them (trl/trainer/dpo_trainer.py `_prepare_dataset` and its DataCollatorForPreference):
 *
 *  1. Rows: standard ({"prompt": str, "chosen": str, "rejected": str}) or conversational (each a list of
 *     {"role", "content"} messages; prompt may hold system/user/assistant turns). A row without
 *     "prompt" has it extracted as TRL's extract_prompt does: the longest common prefix of chosen and
 *     rejected (messages, or characters less a trailing space), stopping one short when they never
 *     diverge. Provenance fields (id, signal, weight, model, source) are accepted; id and weight kept.
 *  2. Standard rows: the EOS token text is appended to chosen and rejected unless they end with it;
 *     prompt and prompt+chosen / prompt+rejected are each encoded as one string with the tokenizer's
 *     default special tokens (as `tokenizer(text)` does).
 *     Conversational rows: prompt rendered with the model's chat_template (run by the Jinja
 *     interpreter, text/jinja.h, as transformers runs it; or a built-in format named by
 *     --chat-template) and add_generation_prompt, and prompt+chosen / prompt+rejected rendered without
 *     it, each encoded without special tokens (as apply_chat_template(tokenize=True) does; the template
 *     prints BOS itself). A row whose prompt rendering does not begin the joint rendering is refused
 *     with its line (TRL would train on a shifted mask); so is a row the template raises on. The
 *     row's "tools" and each message object as written (tool_calls and all) are what the template sees.
 *  3. The completion is the prompt+completion tokens after the first len(prompt tokens); the sequence
 *     is the prompt's own tokens followed by that completion. Where the prompt's tokens are not a prefix
 *     of prompt+completion's, TRL warns and goes on: we count (prefix_mismatch) and go on the same way.
 *  4. max_length: keep_start drops a pair whose prompt alone has >= max_length tokens (TRL's filter)
 *     and keeps the first max_length tokens of each sequence; keep_end drops nothing and keeps the last
 *     max_length tokens (prompt_len shrinks, to 0 when the completion alone is too long).
 *
 * Scoring note: TRL's log-probs use the shifted mask, so a sequence's token i is scored for
 * i >= max(prompt_len, 1): with prompt_len 0 (keep_end) the first token has no predecessor.
 *
 * Ownership: pc_data_load fills *out with memory owned by it; pc_data_free releases it (safe on a
 * zeroed or freed dataset). The library never prints; counts and the first skipped line say what was
 * warned about or skipped. Not thread-safe on the same dataset; distinct loads are independent. */
#ifndef PREFCAP_TRAINER_DATA_H
#define PREFCAP_TRAINER_DATA_H
#include <stddef.h>
#include <stdint.h>

#include "text/tokenizer.h"

typedef struct { int32_t *ids; int n; int prompt_len; } pc_seq;   /* ids = prompt + completion tokens; completion = ids[prompt_len..n) */
typedef struct { pc_seq chosen, rejected; int line; float weight; char *id; signed char label; } pc_pair;   /* line: 1-based JSONL line; weight 1 if absent; id NULL if absent;
   label: -1 for a pair; for an unpaired (KTO) example 1 desirable / 0 undesirable, the example in chosen
   (tokenized exactly as a pair's chosen side) and rejected empty (ids NULL, n 0) */
typedef struct {
  pc_pair *pairs; size_t n;
  size_t skipped_bad;       /* bad lines skipped under skip_bad */
  size_t dropped_too_long;  /* dropped as TRL drops them */
  size_t truncated;         /* pairs truncated to max_length */
  size_t prefix_mismatch;   /* prompt tokens were not a prefix of prompt+completion tokens (warned) */
  /* Added: what the CLI needs to say more than counts. */
  int first_skipped_line;   /* 1-based line of the first bad line skipped, 0 if none */
  char first_skipped_msg[256]; /* its error message ("FILE:LINE: ...") */
  int first_mismatch_line;  /* 1-based line of the first prefix mismatch, 0 if none */
  int conversational;       /* 1 when the rows were conversational (then chat_format says how rendered) */
  char chat_format[16];     /* "chatml", "qwen3", "llama3" (recognised or named), "template" (another
                               chat_template, interpreted), or "" when no row needed one */
} pc_dataset;

enum { PC_TRUNC_KEEP_START = 0, PC_TRUNC_KEEP_END = 1 };

typedef struct {
  int max_length;            /* 0 = no limit */
  int truncation;            /* PC_TRUNC_* */
  int skip_bad;              /* 0: first bad line is an error; 1: skip and count */
  const char *chat_template; /* NULL = auto from DIR/tokenizer_config.json; else a name: "chatml", "qwen3", "llama3" */
  int unpaired;              /* 1: TRL's unpaired (KTO) rows {"prompt", "completion", "label": bool} (prompt
                                required, never extracted); a pair row is then an error naming the
                                missing field, and the other way round */
} pc_data_opts;

/* model_dir holds tokenizer_config.json (eos_token, bos_token, chat_template). 0, or -1 with err naming
 * file:line and field, e.g. "pairs.jsonl:7: field 'chosen' missing". o may be NULL (defaults). */
int pc_data_load(const char *path, const pc_tokenizer *tok, const char *model_dir, const pc_data_opts *o,
                 pc_dataset *out, char *err, size_t errlen);
void pc_data_free(pc_dataset *d);

/* TRL's collator slicing of one sequence to max_length (PC_TRUNC_*; keep_end moves prompt_len down);
 * 1 when s was cut. Also what KTO's KL sequences (train/kto.c) are cut with. */
int pc_seq_truncate(pc_seq *s, int max_length, int mode);

/* Parses a truncation mode name ("keep_start", "keep_end"); -1 if unknown. */
int pc_data_truncation_from_name(const char *name);

// ---- tokenizer_config.json ---------------------------------------------------------------------

/* The special-token texts and chat template of a model directory, read from tokenizer_config.json
 * (entries may be strings or {"content": …} objects), falling back to special_tokens_map.json for the
 * tokens and to chat_template.json for the template, with chat_template.jinja, when present, taking
 * priority over both, as transformers does.
 * Absent or null entries are NULL. */
typedef struct {
  char *eos_token, *bos_token, *pad_token, *unk_token;
  char *chat_template;
  char *path;                /* the tokenizer_config.json read (for messages) */
} pc_tokcfg;

/* 0, or -1 with err (a missing tokenizer_config.json is an error; missing entries are not). */
int pc_tokcfg_load(const char *model_dir, pc_tokcfg *out, char *err, size_t errlen);
void pc_tokcfg_free(pc_tokcfg *c);

#endif
