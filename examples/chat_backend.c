/* examples/chat_backend.c: prefcap embedded the way a chat product's backend would embed it. Copy
 * from here.
 *
 * Several request threads serve simulated users. Each request logs the generation it served (prompt
 * or messages, completion, model and version, sampling params, user, session, latency), and the
 * user's next move is logged as feedback on it: copy, accept, edit, rating, regenerate (the new
 * generation says which one it replaced), abandon, and now and then a side-by-side choice.
 * The users here, like real ones, have a taste: they keep short answers that cite a source and
 * regenerate or rewrite long, unsourced ones. That taste is what `prefcap export` hands to DPO.
 *
 * usage: chat_backend [--db PATH] [--users N] [--turns N] [--threads N] [--seed S] [--prefix P] [--sync]
 * (--prefix P: a prefix for request and user ids, so that several runs log distinct traffic)
 * build: cc chat_backend.c $(pkg-config --cflags --libs prefcap)   (or see the Makefile) */
#include "prefcap.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// ---- a toy "model" -------------------------------------------------------------------------------

static const struct { const char *q, *good, *bad; } topics[] = {
    {"What is the boiling point of water at sea level?",
     "100 °C (212 °F) at 1 atm. [Source: NIST Chemistry WebBook]",
     "Water boils when its vapor pressure equals the surrounding pressure, which at sea level happens at "
     "around one hundred degrees on the Celsius scale, although many factors such as impurities, altitude "
     "and the exact atmospheric conditions on a given day can shift this somewhat in practice."},
    {"How many bones are in the adult human body?",
     "206 bones. [Source: Gray's Anatomy, 42nd ed.]",
     "The adult human skeleton is made up of a large number of bones, a figure that changes during "
     "development because many bones fuse as we grow, so the count in adults is lower than in infants."},
    {"When did the Berlin Wall fall?",
     "On 9 November 1989. [Source: Encyclopaedia Britannica]",
     "The Berlin Wall, which divided the city for decades, came down toward the end of the 1980s amid a "
     "wave of political change sweeping across Central and Eastern Europe at that time."},
    {"What is the speed of light in vacuum?",
     "299,792,458 m/s, exact by definition. [Source: BIPM, SI Brochure]",
     "Light travels extremely fast in a vacuum, roughly three hundred thousand kilometres every second, "
     "which is why we often treat it as instantaneous in everyday life even though it is not."},
    {"Who wrote 'Pride and Prejudice'?",
     "Jane Austen, published 1813. [Source: British Library]",
     "Pride and Prejudice is a classic English novel from the early nineteenth century by a celebrated "
     "author known for her sharp social commentary and memorable characters like Elizabeth Bennet."},
    {"What is the capital of Australia?",
     "Canberra. [Source: Australian Government, australia.gov.au]",
     "Many people assume it is Sydney or Melbourne, the two largest and best-known cities, but the "
     "capital is actually a planned city that was chosen as a compromise between those two rivals."},
};
#define N_TOPICS (sizeof topics / sizeof *topics)

typedef struct { prefcap_t *pc; int thread, users, turns; unsigned seed; const char *prefix; long generations, feedback, errors; } job;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Logs one generation; good selects the style. id_out receives its id. */
static int serve(job *j, const char *user, const char *session, int topic, int good, const char *regenerates,
                 int chat, char id_out[PREFCAP_ID_MAX + 1]) {
  prefcap_message_t msgs[2] = {{"system", "You are a helpful assistant."}, {"user", topics[topic].q}};
  char rid[128];   /* the backend's own request id: pass yours, it is how feedback finds the generation */
  snprintf(rid, sizeof rid, "%sreq-%d-%ld", j->prefix, j->thread, j->generations + j->errors);
  prefcap_generation_t g = {
      .id = rid,
      .completion = good ? topics[topic].good : topics[topic].bad,
      .model = "acme-chat", .model_version = good ? "2026-11-01" : "2026-10-01",
      .params_json = "{\"temperature\":0.7,\"top_p\":0.95,\"max_tokens\":512}",
      .user_id = user, .session_id = session, .regenerates = regenerates,
      .latency_ms = 300 + rand_r(&j->seed) % 900,
      .prompt_tokens = 20 + (int)strlen(topics[topic].q) / 4,
      .completion_tokens = (int64_t)strlen(good ? topics[topic].good : topics[topic].bad) / 4,
  };
  if (chat) { g.messages = msgs; g.n_messages = 2; }
  else g.prompt = topics[topic].q;
  int rc = prefcap_log_generation(j->pc, &g, id_out);
  if (rc) { j->errors++; fprintf(stderr, "log_generation: %s: %s\n", prefcap_strerror(rc), prefcap_errmsg(j->pc)); }
  else j->generations++;
  return rc;
}

static void feedback(job *j, prefcap_feedback_kind_t kind, const char *id, const char *text, int rating) {
  prefcap_feedback_t f = {.kind = kind, .id = id, .text = text, .rating = rating, .ts_ms = now_ms()};
  int rc = prefcap_log_feedback(j->pc, &f);
  if (rc) { j->errors++; fprintf(stderr, "log_feedback: %s: %s\n", prefcap_strerror(rc), prefcap_errmsg(j->pc)); }
  else j->feedback++;
}

// ---- a request thread ----------------------------------------------------------------------------

static void *request_thread(void *arg) {
  job *j = arg;
  for (int u = 0; u < j->users; u++) {
    char user[96], session[112];
    snprintf(user, sizeof user, "%suser-%d-%d", j->prefix, j->thread, u);
    for (int t = 0; t < j->turns; t++) {
      snprintf(session, sizeof session, "%s-s%d", user, t / 3);
      int topic = (int)(rand_r(&j->seed) % N_TOPICS), chat = rand_r(&j->seed) % 2;
      int good = rand_r(&j->seed) % 100 < 40;   /* the current model is mostly verbose */
      char id[PREFCAP_ID_MAX + 1], prev[PREFCAP_ID_MAX + 1];
      if (serve(j, user, session, topic, good, NULL, chat, id)) continue;
      int r = (int)(rand_r(&j->seed) % 100);
      if (good) {   /* they like it: copy, accept, or +1; rarely nothing at all */
        if (r < 45) feedback(j, PREFCAP_FB_COPY, id, NULL, 0);
        else if (r < 75) feedback(j, PREFCAP_FB_ACCEPT, id, NULL, 0);
        else if (r < 90) feedback(j, PREFCAP_FB_RATING, id, NULL, 1);
        continue;
      }
      if (r < 45) {   /* regenerate until they get a short, sourced answer (at most 3 tries) */
        for (int k = 0; k < 3; k++) {
          feedback(j, PREFCAP_FB_REGENERATE, id, NULL, 0);
          memcpy(prev, id, sizeof id);
          int now_good = rand_r(&j->seed) % 100 < 55;
          if (serve(j, user, session, topic, now_good, prev, chat, id)) break;
          if (now_good) { feedback(j, rand_r(&j->seed) % 2 ? PREFCAP_FB_COPY : PREFCAP_FB_ACCEPT, id, NULL, 0); break; }
        }
      } else if (r < 70) {   /* they rewrite it the way they wanted it */
        feedback(j, PREFCAP_FB_EDIT, id, topics[topic].good, 0);
      } else if (r < 82) {   /* a thumbs-down, then a second answer they rate up */
        feedback(j, PREFCAP_FB_RATING, id, NULL, -1);
        char id2[PREFCAP_ID_MAX + 1];
        if (!serve(j, user, session, topic, 1, NULL, chat, id2)) feedback(j, PREFCAP_FB_RATING, id2, NULL, 1);
      } else if (r < 90) {   /* side by side: both answers shown, they pick the sourced one */
        char id2[PREFCAP_ID_MAX + 1];
        if (!serve(j, user, session, topic, 1, NULL, chat, id2)) {
          prefcap_feedback_t f = {.kind = PREFCAP_FB_CHOICE, .id = id2, .rejected_id = id};
          if (prefcap_log_feedback(j->pc, &f) == 0) j->feedback++;
        }
      } else {
        feedback(j, PREFCAP_FB_ABANDON, id, NULL, 0);
      }
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  const char *db = "prefcap.db", *prefix = "";
  int users = 25, turns = 8, threads = 4, sync_mode = 0;
  unsigned seed = 42;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--db") && i + 1 < argc) db = argv[++i];
    else if (!strcmp(argv[i], "--users") && i + 1 < argc) users = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--turns") && i + 1 < argc) turns = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = (unsigned)atoi(argv[++i]);
    else if (!strcmp(argv[i], "--prefix") && i + 1 < argc) prefix = argv[++i];
    else if (!strcmp(argv[i], "--sync")) sync_mode = 1;
    else {
      fprintf(stderr, "usage: chat_backend [--db PATH] [--users N] [--turns N] [--threads N (1-64)] [--seed S] [--prefix P] [--sync]\n");
      return 2;
    }
  }
  if (threads < 1 || threads > 64 || users < 1 || turns < 1) { fprintf(stderr, "chat_backend: counts must be positive, threads at most 64\n"); return 2; }

  // ---- open once at startup; options are copied, so they can be freed at once
  prefcap_options_t *o = prefcap_options_new();
  prefcap_options_set_path(o, db);
  prefcap_options_set_durability(o, sync_mode ? PREFCAP_SYNC : PREFCAP_ASYNC);
  prefcap_t *pc;
  int rc = prefcap_open(o, &pc);
  prefcap_options_free(o);
  if (rc) { fprintf(stderr, "chat_backend: cannot open %s: %s\n", db, prefcap_strerror(rc)); return 1; }

  // ---- serve requests from several threads at once: the log calls are thread-safe
  pthread_t th[64];
  job jobs[64];
  for (int t = 0; t < threads; t++) {
    jobs[t] = (job){pc, t, users, turns, seed + (unsigned)t * 7919u, prefix, 0, 0, 0};
    pthread_create(&th[t], NULL, request_thread, &jobs[t]);
  }
  long gens = 0, fbs = 0, errors = 0;
  for (int t = 0; t < threads; t++) {
    pthread_join(th[t], NULL);
    gens += jobs[t].generations; fbs += jobs[t].feedback; errors += jobs[t].errors;
  }

  // ---- at shutdown: close flushes the queue (up to 5 s here) and derives the pairs
  prefcap_counters_t k;
  prefcap_flush(pc, 5000);
  prefcap_get_counters(pc, &k);
  rc = prefcap_close(pc, 5000);
  printf("chat_backend: %d threads served %ld generations and %ld feedback events into %s "
         "(stored %llu, dropped %llu, failed %llu)%s\n", threads, gens, fbs, db, (unsigned long long)k.stored,
         (unsigned long long)k.dropped, (unsigned long long)k.failed, rc ? ": close timed out" : "");
  return errors || rc ? 1 : 0;
}
