/* trainer/text/jinja.h: a Jinja interpreter for Hugging Face chat templates, run the way transformers runs
 * them (jinja2's ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and loop controls; its
 * own tojson, raise_exception and strftime_now), so that `chat_template` renders to the exact string
 * TRL tokenizes.
 *
 * The subset is what chat templates use: {{ }}, {% %}, {# #} with `-`/`+` whitespace control; for (with
 * loop.*, else, an `if` filter, tuple targets, break/continue), if/elif/else, set (names, namespace
 * attributes, blocks), macro/call/caller, generation blocks; literals, ~ + - * / // % **, comparisons,
 * in / not in, and/or/not, `x if c else y`, attribute/item access and slices; tests defined, undefined,
 * none, string, number, integer, boolean, mapping, iterable, sequence, true, false, equalto, odd, even;
 * filters trim, length/count, tojson, upper, lower, capitalize, title, default/d, items, selectattr,
 * rejectattr, map, join, first, last, replace, string, int, float, list, safe, abs, unique, indent;
 * Python's string methods strip, lstrip, rstrip, split, startswith, endswith, replace, title, upper,
 * lower, capitalize, find, count, format-less; dict items/keys/values/get; globals raise_exception,
 * strftime_now, namespace, range, dict. Anything else is refused at parse time (or, for a method
 * called on a value, when it is called) with the template line and the construct.
 *
 * Limits: loop iterations (10^6 in all), output size (16 MiB), macro recursion (64 deep), expression
 * nesting (200) and memory (256 MiB of intermediate values) each end the render with a clear error instead of running away.
 *
 * Values come in as JSON (cJSON): JSON numbers without a fraction that fit 2^53 are ints, others floats.
 *
 * Ownership: pc_jinja_parse copies what it needs; a parsed template is read-only, so threads may render
 * it at once. The rendered string is malloc'd (the caller frees it). The library never prints. */
#ifndef PREFCAP_TRAINER_JINJA_H
#define PREFCAP_TRAINER_JINJA_H
#include <stddef.h>

#include <cjson/cJSON.h>

typedef struct pc_jinja pc_jinja;

/* Parses a template. NULL on failure with "line N: what" in err. */
pc_jinja *pc_jinja_parse(const char *src, char *err, size_t errlen);
void pc_jinja_free(pc_jinja *t);                    /* NULL is a no-op */

/* Renders with the variables of `vars` (a JSON object: messages, tools, add_generation_prompt,
 * bos_token, ...). NULL on failure with "line N: what" in err; a raise_exception() call gives its message
 * as "line N: raise_exception: MESSAGE". *out_len (may be NULL) receives the length. */
char *pc_jinja_render(const pc_jinja *t, const cJSON *vars, size_t *out_len, char *err, size_t errlen);

/* Python's str.isspace() for the character at s[0..n): its length in bytes, or 0 when it is not
 * whitespace (or n is 0). Shared by the templates' strip/split and chat.c's message trimming. */
size_t pc_py_space(const char *s, size_t n);

#endif
