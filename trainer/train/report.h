/* trainer/train/report.h: OUT/report.html, the page a person opens after (or during) a training run.
 *
 * It is drawn from OUT/metrics.jsonl alone (the format is in docs/training.md), so it can be rebuilt at
 * any time, also for a run that is still going or was interrupted. One self-contained HTML file: no
 * scripts, fonts, style sheets or images from elsewhere; the charts are inline SVG written here. */
#ifndef PC_REPORT_H
#define PC_REPORT_H
#include <stddef.h>

/* Reads metrics_jsonl and writes html_path: the run's title (escaped; NULL: "prefcap-dpo run"), four
 * charts against the step (loss; rewards, chosen and rejected; reward accuracy, or for a KTO run (kl
 * logged, no accuracies) the kl estimate; reward margin), each
 * with the train series as a line and, where eval lines exist, the eval series as a line with points in
 * another colour; then a table of the last finite value of every logged metric, train and eval.
 *
 * The file is read leniently where that cannot mislead: blank lines, keys it does not chart, null, NaN,
 * Infinity and -Infinity values (skipped, and counted on the page) pass. A step logged again (a resumed
 * run) replaces, in each series, the points logged from that step on. Errors (the text in err, which may
 * be NULL) name the file and, for a bad line, its number as FILE:LINE: a file that cannot be read, a line
 * that is not one JSON object, a line without a finite "step", a charted key whose value is not a number.
 * html_path is written to html_path.tmp and renamed over, so a reader never sees half a page.
 * Returns 0, or -1 with err set. Thread-safe (no shared state); prints nothing. */
int pc_report_write(const char *metrics_jsonl, const char *html_path, const char *title, char *err, size_t errlen);
#endif
