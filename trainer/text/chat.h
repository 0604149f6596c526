/* trainer/text/chat.h: the built-in chat formats, written in C: what `--chat-template NAME` renders with
 * for a model that ships no template. A model's own `chat_template` is run by the Jinja interpreter
 * (text/jinja.h) instead; pc_chat_detect then only names it in reports.
 *
 * A format is recognised from the template text of tokenizer_config.json (pc_chat_detect) or named
 * (pc_chat_by_name: "chatml", "qwen3", "llama3"); rendering then produces exactly the string Hugging
 * Face's apply_chat_template(messages, tokenize=False, add_generation_prompt=...) produces with that
 * template, for conversations of system/user/assistant (and, for qwen3, tool) messages with string
 * content. Measured against the interpreter on Qwen 3's template: about 1 us a render against 30 us
 * (bench in the issue 20 report), which does not justify a second copy for templates models ship.
 *
 * Formats:
 *   chatml  "<|im_start|>{role}\n{content}<|im_end|>\n" per message, "<|im_start|>assistant\n" as the
 *           generation prompt (SmolLM, and Qwen2/2.5 for plain text chats); a default system message
 *           found in the template (SmolLM2, Qwen2.5) is put first when the chat has none.
 *   qwen3   Qwen3's template: ChatML plus its <think> handling (reasoning in `reasoning_content` or
 *           inside "<think>…</think>" of the content; an empty think block on assistant turns after
 *           the last user query; `enable_thinking=false` in the generation prompt).
 *   llama3  "<|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>", BOS before the
 *           first message, "<|start_header_id|>assistant<|end_header_id|>\n\n" as generation prompt
 *           (some Llama 3 uploads emit it unconditionally; detection notices which).
 *
 * Ownership: a pc_chat_format owns its strings (pc_chat_format_free); rendered strings are malloc'd
 * and the caller frees them. No function keeps a pointer to its arguments. Thread-safe: no globals. */
#ifndef PREFCAP_TRAINER_CHAT_H
#define PREFCAP_TRAINER_CHAT_H
#include <stddef.h>

enum { PC_CHAT_NONE = 0, PC_CHAT_CHATML, PC_CHAT_QWEN3, PC_CHAT_LLAMA3 };

typedef struct {
  int kind;               /* PC_CHAT_* */
  int gen_prompt_always;  /* llama3: the template emits the generation prompt even without add_generation_prompt */
  char *default_system;   /* chatml: system text used when the chat starts without one; NULL = none */
  char *bos;              /* llama3: the BOS text the template prints (tokenizer_config bos_token); NULL = "" */
} pc_chat_format;

typedef struct {
  const char *role;       /* required */
  const char *content;    /* required (may be "") */
  const char *reasoning;  /* qwen3: message.reasoning_content, NULL when absent */
  const void *json;       /* the message as read (a cJSON object, borrowed), or NULL: what a model's own
                             template sees, tool_calls and all; the built-in formats ignore it */
} pc_chat_msg;

typedef struct {
  int enable_thinking;    /* qwen3 chat_template_kwargs: -1 undefined (default), 0 false, 1 true */
} pc_chat_opts;

/* Recognises `template_text`. 0 and *out filled, or -1 with err saying what was found (e.g. a Llama 3.1
 * template, which prints dates and tool preambles we do not reproduce). bos may be NULL. */
int pc_chat_detect(const char *template_text, const char *bos, pc_chat_format *out, char *err, size_t errlen);

/* A built-in format by name ("chatml", "qwen3", "llama3"; "smollm" and "qwen2" are "chatml"), with no
 * default system message and the conditional generation prompt. -1 for an unknown name. */
int pc_chat_by_name(const char *name, const char *bos, pc_chat_format *out, char *err, size_t errlen);

const char *pc_chat_kind_name(int kind);
void pc_chat_format_free(pc_chat_format *f);

/* The rendered conversation, malloc'd (NULL only when out of memory). o may be NULL (defaults). */
char *pc_chat_render(const pc_chat_format *f, const pc_chat_msg *msgs, int n, int add_generation_prompt,
                     const pc_chat_opts *o);

#endif
