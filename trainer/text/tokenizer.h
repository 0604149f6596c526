/* trainer/text/tokenizer.h: Hugging Face tokenizer.json (BPE, byte-level or SentencePiece-style) for the trainer.
 *
 * Reads the tokenizer.json of GPT-2, Llama 2/3, Mistral, Gemma, Qwen 2/3, DeepSeek, gpt-oss, SmolLM and
 * their kin and encodes exactly as Hugging Face's `tokenizers` does: added/special tokens matched in the
 * text; normalizers (NFC, NFKC, NFD, NFKD, Lowercase, Strip, Prepend, Replace, Sequence); pre-tokenizers
 * (Split with the file's own regex or string and any behavior, ByteLevel, Metaspace, Digits, Punctuation,
 * Sequence); BPE merges by rank over bytes (byte-level) or chars (with byte_fallback's <0xNN> tokens,
 * unk, fuse_unk, ignore_merges); post-processors (ByteLevel, TemplateProcessing such as Llama's BOS,
 * Sequence, and add_bos_token/add_eos_token from the tokenizer_config.json beside the file where
 * tokenizer.json has no template, as transformers' Llama/Gemma tokenizers do); decoders (ByteLevel,
 * Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence). Anything else, Unigram and WordPiece models
 * included, is refused at load time, by name.
 *
 * Ownership and threads: a loaded tokenizer is read-only apart from an internal word cache guarded by
 * its own locks, so any number of threads may call pc_tok_encode / pc_tok_decode and the lookups on
 * one tokenizer at once; pc_tok_free must not race with them. The library never prints or exits;
 * failures come back as a message in the caller's err buffer. */
#ifndef PREFCAP_TOKENIZER_H
#define PREFCAP_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>

typedef struct pc_tokenizer pc_tokenizer;

/* Loads a Hugging Face tokenizer.json. NULL on failure with a message naming the file and problem in err. */
pc_tokenizer *pc_tok_load(const char *tokenizer_json_path, char *err, size_t errlen);
void pc_tok_free(pc_tokenizer *tok);                       /* NULL is a no-op */
/* Encodes len bytes of UTF-8. add_special != 0 applies the post-processor (e.g. Llama 3's BOS), as HF's
   encode(text, add_special_tokens=True) does. *ids is malloc'd (caller frees). 0, or -1 with err.
   Invalid UTF-8 is an error (HF only ever sees valid text). */
int pc_tok_encode(const pc_tokenizer *tok, const char *text, size_t len, int add_special,
                  int32_t **ids, size_t *n_ids, char *err, size_t errlen);
/* Decodes to a malloc'd NUL-terminated UTF-8 string (invalid bytes as U+FFFD, like HF); skip_special drops
   special/added special tokens. Ids out of range are skipped, as HF does. NULL only when out of memory. */
char *pc_tok_decode(const pc_tokenizer *tok, const int32_t *ids, size_t n, int skip_special);
/* Like pc_tok_decode, and *out_len receives the byte length (the text may contain U+0000). */
char *pc_tok_decode_len(const pc_tokenizer *tok, const int32_t *ids, size_t n, int skip_special,
                        size_t *out_len);
int32_t pc_tok_token_to_id(const pc_tokenizer *tok, const char *token);   /* -1 if absent */
const char *pc_tok_id_to_token(const pc_tokenizer *tok, int32_t id);      /* NULL if out of range */
size_t pc_tok_vocab_size(const pc_tokenizer *tok);                       /* incl. added tokens: max id + 1 */
/* 1 if id is an added token marked special (what skip_special drops), else 0. */
int pc_tok_is_special(const pc_tokenizer *tok, int32_t id);

/* `prefcap-dpo tokenize` (trainer/cli/cmd_tokenize.c); argv[0] is "tokenize". Prints; returns the exit code. */
int pc_cmd_tokenize(int argc, char **argv);

#endif
