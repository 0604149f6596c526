/* common/progress.h: the progress display of the long-running commands (score, train, upload).
 *
 * On a terminal: one line redrawn in place, "LABEL [#####.....] DONE/TOTAL ITEMS  RATE UNIT/s  ELAPSED
 * ETA T  EXTRA", at most five times a second. Elsewhere (a log file, a pipe, CI): a plain line
 * "LABEL: DONE/TOTAL ITEMS, RATE UNIT/s, elapsed T, ETA T, EXTRA" at most every five seconds, so a log
 * stays readable. pc_progress_end always prints the final state.
 *
 * The display writes only to the stream it is given (the caller's choice: stderr for the commands); it
 * never exits. Not thread-safe: one thread updates one display. */
#ifndef PC_PROGRESS_H
#define PC_PROGRESS_H
#include <stddef.h>
#include <stdio.h>

typedef struct pc_progress pc_progress;

/* Seconds on a monotonic clock (for elapsed times; its zero means nothing). */
double pc_now_s(void);

/* Formats a duration as M:SS or H:MM:SS into b; "--:--" for a negative, NaN or absurd (>= 100 h) value. */
void pc_fmt_time(char *b, size_t n, double s);

/* A new display on f (borrowed; it must outlive the display). label names the command ("score",
 * "train"), items what is counted ("pairs", "steps"), unit what the rate counts per second ("tok"; NULL
 * shows no rate), total how many items the run has (0: unknown, no bar and no ETA). The strings are
 * copied. The clock starts now. Terminal or not is decided once, here, by isatty(fileno(f)).
 * Returns NULL when out of memory (callers may pass NULL to the other calls: they do nothing). */
pc_progress *pc_progress_new(FILE *f, const char *label, const char *items, const char *unit, size_t total);

/* Reports that done items are finished and units_done units (tokens) processed since the start; extra
 * (may be NULL; copied when shown) is appended, e.g. "loss 0.6931 acc 0.50". Prints only when enough
 * time has passed since the last print (0.2 s on a terminal, 5 s otherwise), so it is cheap to call
 * after every item. */
void pc_progress_update(pc_progress *p, size_t done, double units_done, const char *extra);

/* Ends a terminal bar's line (if one is drawn) so that the caller can print a message of its own; the
 * next update draws the bar again below it. Does nothing off a terminal. */
void pc_progress_break(pc_progress *p);

/* Prints the final state (always, terminal or not, ending the line) and frees the display. Returns the
 * seconds elapsed since pc_progress_new (0 for NULL). */
double pc_progress_end(pc_progress *p, size_t done, double units_done, const char *extra);

/* Frees the display without printing a final state (an error path): ends a drawn bar's line first so
 * the error message that follows starts on a line of its own. NULL is a no-op. */
void pc_progress_free(pc_progress *p);
#endif
