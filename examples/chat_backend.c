/* examples/chat_backend.c: prefcap embedded the way a chat product's backend would embed it. Copy
 * from here.
 *
 * Several request threads serve simulated users. Each request logs the generation it served (prompt
 * or messages, completion, model and version, sampling params, user, session, latency), and the
 * user's next move is logged as feedback on it: copy, accept, edit, rating, regenerate (the new
 * generation says which one it replaced), abandon, and now and then a side-by-side choice.
 *
 * The traffic is made to look like a real product's: questions about 64 subjects (programming,
 * cooking, history, science, geography, health, money, the arts) asked in 10 ways, 640 distinct
 * prompts in all. The "model" answers in one of two styles:
 *   concise  one or two sentences that end with a citation ("[1] https://en.wikipedia.org/wiki/…");
 *   verbose  a long, hedging answer with the same facts and no source.
 * The users, like real ones, have a taste: they keep the concise, sourced answers (copy, accept, +1)
 * and regenerate, rewrite, thumb down or pass over the verbose ones. Not all of them, not always:
 * in about 6% of sessions the user prefers the verbose style, and in about 4% they abandon every
 * answer, so the pairs carry the noise real feedback does. That taste is what `prefcap export` hands
 * to DPO (examples/demo.sh trains on it). Everything is drawn from --seed: the same seed, the same
 * traffic.
 *
 * usage: chat_backend [--db PATH] [--users N] [--turns N] [--threads N] [--seed S] [--prefix P] [--sync]
 * (--prefix P: a prefix for request and user ids, so that several runs log distinct traffic)
 * build: cc chat_backend.c $(pkg-config --cflags --libs prefcap)   (or see the Makefile) */
#include "prefcap.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// ---- what users ask about ------------------------------------------------------------------------
/* name: as it reads mid-sentence; wiki: the Wikipedia article the concise answer cites;
 * what: the fact, continuing "<name> ..."; use: why it matters, continuing "It ...". */
static const struct { const char *name, *wiki, *what, *use; } topics[] = {
    // programming
    {"quicksort", "Quicksort", "is a divide-and-conquer sorting algorithm that partitions a list around a pivot and sorts each part recursively", "sorts in O(n log n) time on average and needs little extra memory"},
    {"binary search", "Binary_search", "finds an item in a sorted array by repeatedly halving the range that can hold it", "needs only O(log n) comparisons"},
    {"a hash table", "Hash_table", "is a data structure that maps keys to values by hashing each key to a slot in an array", "gives constant-time lookups and inserts on average"},
    {"recursion", "Recursion_(computer_science)", "is a technique in which a function solves a problem by calling itself on smaller instances of it", "expresses tree walks and divide-and-conquer algorithms naturally"},
    {"garbage collection", "Garbage_collection_(computer_science)", "is automatic memory management that frees the objects a program can no longer reach", "rules out whole classes of bugs such as use-after-free"},
    {"Git", "Git", "is a distributed version control system that records snapshots of a project's files", "lets many people work on the same code and merge their changes"},
    {"SQL", "SQL", "is a declarative language for querying and changing data in relational databases", "is the standard way to work with databases such as PostgreSQL and SQLite"},
    {"a mutex", "Lock_(computer_science)", "is a lock that lets only one thread at a time enter a critical section", "prevents data races on shared state"},
    // cooking
    {"the Maillard reaction", "Maillard_reaction", "is a reaction between amino acids and reducing sugars that browns food above about 140 °C", "creates the flavour of seared meat, toast and roasted coffee"},
    {"sourdough", "Sourdough", "is bread leavened by a culture of wild yeast and lactic acid bacteria instead of baker's yeast", "tastes tangy and keeps longer than yeasted bread"},
    {"an emulsion", "Emulsion", "is a mixture of two liquids that do not normally mix, such as oil droplets held in water", "is the basis of mayonnaise, vinaigrette and hollandaise"},
    {"blanching", "Blanching_(cooking)", "is briefly boiling food and then plunging it into ice water to stop the cooking", "sets the colour of vegetables and loosens tomato skins"},
    {"a roux", "Roux", "is equal weights of flour and fat cooked together to thicken sauces", "is the base of béchamel, velouté and gumbo"},
    {"sous vide", "Sous_vide", "is cooking food sealed in a bag in a water bath held at a precise temperature", "cooks meat evenly to an exact doneness"},
    {"umami", "Umami", "is one of the five basic tastes, the savoury taste of glutamates", "explains why broth, parmesan and soy sauce taste rich"},
    {"kimchi", "Kimchi", "is a Korean side dish of salted and fermented vegetables, usually napa cabbage and radish", "is served with almost every Korean meal"},
    // history
    {"the fall of the Berlin Wall", "Fall_of_the_Berlin_Wall", "was the opening of the border between East and West Berlin on 9 November 1989", "led to German reunification in 1990"},
    {"the Magna Carta", "Magna_Carta", "is a charter of rights agreed to by King John of England in 1215", "established that the king was subject to the law"},
    {"the printing press", "Printing_press", "is a machine for printing with movable type, brought to Europe by Johannes Gutenberg around 1440", "made books cheap and spread literacy across Europe"},
    {"the Silk Road", "Silk_Road", "was a network of trade routes linking China with the Mediterranean from the 2nd century BC", "carried goods, religions and ideas between East and West"},
    {"the French Revolution", "French_Revolution", "was the period of upheaval in France from 1789 to 1799 that ended the absolute monarchy", "spread the ideas of citizenship and rights across Europe"},
    {"the Industrial Revolution", "Industrial_Revolution", "was the shift from hand production to machines that began in Britain around 1760", "brought factories, railways and rapid growth of cities"},
    {"the Rosetta Stone", "Rosetta_Stone", "is a stele from 196 BC carrying the same decree in hieroglyphic, Demotic and Greek", "was the key to deciphering Egyptian hieroglyphs"},
    {"the Peace of Westphalia", "Peace_of_Westphalia", "is the set of treaties of 1648 that ended the Thirty Years' War", "is often called the origin of the modern system of sovereign states"},
    // science
    {"photosynthesis", "Photosynthesis", "is the process by which plants, algae and some bacteria turn light, water and carbon dioxide into sugar and oxygen", "supplies almost all the oxygen in the air"},
    {"the speed of light", "Speed_of_light", "is exactly 299,792,458 metres per second in vacuum", "is the upper limit on how fast information can travel"},
    {"DNA", "DNA", "is the double-helix molecule that carries the genetic instructions of living things", "is copied and passed on each time a cell divides"},
    {"entropy", "Entropy", "is a measure of how many microscopic states fit a system's macroscopic state", "never decreases in an isolated system, which gives time its direction"},
    {"plate tectonics", "Plate_tectonics", "is the theory that Earth's outer shell is split into plates that move slowly over the mantle", "explains earthquakes, volcanoes and mountain ranges"},
    {"a black hole", "Black_hole", "is a region of spacetime where gravity is so strong that nothing, not even light, escapes", "forms when a very massive star collapses"},
    {"the greenhouse effect", "Greenhouse_effect", "is the warming of a planet's surface by gases that absorb and re-emit infrared radiation", "keeps Earth about 33 °C warmer than it would otherwise be"},
    {"CRISPR", "CRISPR_gene_editing", "is a gene-editing method in which the Cas9 enzyme, guided by RNA, cuts DNA at a chosen site", "makes precise changes to genomes cheap and fast"},
    // geography
    {"the Amazon River", "Amazon_River", "is the river in South America that carries more water than any other", "drains about 40% of the continent"},
    {"Mount Everest", "Mount_Everest", "is the highest mountain above sea level, 8,849 m, on the border of Nepal and China", "was first climbed by Tenzing Norgay and Edmund Hillary in 1953"},
    {"the Sahara", "Sahara", "is the largest hot desert in the world, covering most of North Africa", "spans about 9 million square kilometres"},
    {"the Great Barrier Reef", "Great_Barrier_Reef", "is the world's largest coral reef system, off the coast of Queensland, Australia", "is home to thousands of species of fish and coral"},
    {"Canberra", "Canberra", "is the capital of Australia, chosen in 1908 as a compromise between Sydney and Melbourne", "is the seat of the federal parliament"},
    {"the Mariana Trench", "Mariana_Trench", "is the deepest known part of the ocean, about 11,000 m deep, in the western Pacific", "was first reached by a crewed dive in 1960"},
    {"a fjord", "Fjord", "is a long, narrow sea inlet with steep sides carved by a glacier", "is common in Norway, Chile and New Zealand"},
    {"the Ring of Fire", "Ring_of_Fire", "is a belt of volcanoes and earthquake zones around the rim of the Pacific Ocean", "holds about three quarters of the world's active volcanoes"},
    // health
    {"vitamin D", "Vitamin_D", "is a fat-soluble vitamin that the skin makes in sunlight", "helps the body absorb calcium for healthy bones"},
    {"a vaccine", "Vaccine", "is a preparation that trains the immune system to recognise a pathogen without causing the disease", "eradicated smallpox and has nearly eradicated polio"},
    {"REM sleep", "Rapid_eye_movement_sleep", "is the sleep phase of rapid eye movements and vivid dreams, recurring about every 90 minutes", "plays a part in consolidating memories"},
    {"blood pressure", "Blood_pressure", "is the pressure of circulating blood on the walls of the arteries, given as systolic over diastolic", "is a key indicator of heart health"},
    {"antibiotic resistance", "Antimicrobial_resistance", "is the ability of bacteria to survive drugs that used to kill them", "makes common infections harder to treat"},
    {"the placebo effect", "Placebo", "is an improvement in symptoms caused by the expectation of treatment rather than the treatment itself", "is why drug trials compare against a placebo"},
    {"insulin", "Insulin", "is a hormone made by the pancreas that lets cells take up glucose from the blood", "is the treatment for type 1 diabetes"},
    {"cholesterol", "Cholesterol", "is a waxy lipid that cell membranes need and the liver makes", "raises the risk of heart disease when LDL levels are high"},
    // money
    {"compound interest", "Compound_interest", "is interest computed on both the principal and the interest already earned", "makes savings grow exponentially over time"},
    {"inflation", "Inflation", "is a general rise in prices that reduces the purchasing power of money", "is what central banks try to keep near 2% a year"},
    {"an index fund", "Index_fund", "is a fund that tracks a market index such as the S&P 500 instead of picking stocks", "offers broad diversification at low cost"},
    {"a bond", "Bond_(finance)", "is a loan to a government or company that pays fixed interest until it is repaid", "gives steadier income than shares"},
    {"opportunity cost", "Opportunity_cost", "is the value of the best alternative you give up when you make a choice", "is central to how economists compare decisions"},
    {"supply and demand", "Supply_and_demand", "is the model in which a price settles where the quantity supplied equals the quantity demanded", "explains why prices rise when goods are scarce"},
    {"a credit score", "Credit_score", "is a number that summarises how reliably a person has repaid debt", "decides the interest rates lenders offer"},
    {"GDP", "Gross_domestic_product", "is the market value of all final goods and services a country produces in a year", "is the most common measure of an economy's size"},
    // the arts
    {"the sonata form", "Sonata_form", "is a musical structure of exposition, development and recapitulation", "shaped the first movements of most classical symphonies"},
    {"Impressionism", "Impressionism", "is a 19th-century art movement, led by Monet and Renoir, that painted light and everyday scenes with visible brushstrokes", "paved the way for modern painting"},
    {"the Mona Lisa", "Mona_Lisa", "is a portrait painted by Leonardo da Vinci in the early 16th century, now in the Louvre", "is perhaps the most famous painting in the world"},
    {"a haiku", "Haiku", "is a short Japanese poem of three phrases of 5, 7 and 5 morae", "often evokes a season or a moment in nature"},
    {"jazz", "Jazz", "is a genre that began in New Orleans in the early 20th century, built on swing, blue notes and improvisation", "shaped almost all popular music that followed"},
    {"the golden ratio", "Golden_ratio", "is the number (1 + √5)/2, about 1.618, the ratio in which a whole is to its larger part as that part is to the smaller", "recurs in geometry, art and architecture"},
    {"a fugue", "Fugue", "is a composition in which one voice states a theme and the others imitate it in turn", "reached its peak in the works of J. S. Bach"},
    {"Hamlet", "Hamlet", "is a tragedy by William Shakespeare, written around 1600, about a Danish prince avenging his father", "is among the most performed plays in the world"},
};
#define N_TOPICS (int)(sizeof topics / sizeof *topics)

/* How users ask. why: the question asks what it is for too, so the answer says it. */
static const struct { const char *fmt; int why; } asks[] = {
    {"What is %s?", 0},
    {"Can you explain %s in simple terms?", 0},
    {"Why does %s matter?", 1},
    {"Give me a one-line summary of %s.", 0},
    {"I keep hearing about %s. What is it, briefly?", 0},
    {"What should a beginner know about %s?", 1},
    {"Quick question: what's %s, and why is it useful?", 1},
    {"Explain %s like I'm five.", 0},
    {"Tell me about %s.", 1},
    {"In a nutshell, what is %s?", 0},
};
#define N_ASKS (int)(sizeof asks / sizeof *asks)

// ---- a toy "model": the two styles it answers in -------------------------------------------------

/* The verbose style's padding: an opener, maybe a hedge, a closer; none of it cites anything. */
static const char *openers[] = {
    "That's a great question, and honestly there are a lot of different ways to look at it.",
    "Well, this is one of those topics where the answer really depends on who you ask and in what context.",
    "Sure! Before diving in, it's worth saying that this is a surprisingly nuanced subject.",
    "Good question. I'll try to give a balanced overview, although I can't promise it will be complete.",
    "There's quite a bit to unpack here, so let me try to walk through it carefully.",
    "Thanks for asking! Many people find this confusing at first, and that's completely understandable.",
};
static const char *hedges[] = {
    "Of course, different sources emphasise different aspects, and some of them may disagree on the finer points.",
    "It's also possible that things have changed, or that there are exceptions I'm not fully accounting for.",
    "That said, I wouldn't want to oversimplify something that experts have written a great deal about.",
    "There are many subtleties here, and a complete treatment would take a lot more space than this.",
    "People sometimes mix this up with related ideas, so it helps to keep the context in mind.",
};
static const char *closers[] = {
    "Ultimately, it really depends on your specific situation, so you may want to look into it further.",
    "I hope this helps a little, but please do double-check with other resources before relying on it.",
    "In any case, it's a fascinating subject, and there's always more to learn about it.",
    "So the short answer is that it's complicated, but hopefully this gives you a rough idea.",
};
/* ... and the fact itself, wrapped in qualifiers (each takes the name and the fact) */
static const char *frames[] = {
    "Broadly speaking, and with some caveats, %s %s, at least according to most descriptions I'm aware of.",
    "In general terms, and I may be simplifying here, %s %s, or so it is usually described.",
    "As far as I understand it, %s %s, though I wouldn't want to overstate that.",
};
#define PICK(arr, seed) arr[rand_r(seed) % (sizeof arr / sizeof *arr)]

/* Writes to buf the prompt for topic t asked in way a. */
static void make_prompt(char *buf, size_t n, int t, int a) { snprintf(buf, n, asks[a].fmt, topics[t].name); }

/* Writes to buf an answer to (topic t, way a) in the concise style (1-2 sentences and a citation) or
 * the verbose one. The wording varies with *seed, as a sampled model's would. */
static void make_answer(char *buf, size_t n, int t, int a, int concise, unsigned *seed) {
  char name[96];   /* the name at the start of a sentence */
  snprintf(name, sizeof name, "%s", topics[t].name);
  name[0] = (char)toupper((unsigned char)name[0]);
  if (concise) {
    static const char *cite[] = {"[1] https://en.wikipedia.org/wiki/%s", "(source: https://en.wikipedia.org/wiki/%s)"};
    char why[256] = "", src[160];
    if (asks[a].why) snprintf(why, sizeof why, " It %s.", topics[t].use);
    snprintf(src, sizeof src, PICK(cite, seed), topics[t].wiki);
    snprintf(buf, n, "%s %s.%s %s", name, topics[t].what, why, src);
  } else {   /* opener, the fact buried in qualifiers, maybe what it is for, maybe a hedge, closer */
    char body[512], why[256] = "";
    snprintf(body, sizeof body, PICK(frames, seed), topics[t].name, topics[t].what);
    if (asks[a].why || rand_r(seed) % 2)
      snprintf(why, sizeof why, " Some would also say that it %s, although that may not be the whole picture.", topics[t].use);
    const char *hedge = rand_r(seed) % 2 ? PICK(hedges, seed) : NULL;
    snprintf(buf, n, "%s %s%s%s%s %s", PICK(openers, seed), body, why, hedge ? " " : "", hedge ? hedge : "",
             PICK(closers, seed));
  }
}

// ---- the backend's side: log what was served, and what the user did with it ----------------------

typedef struct { prefcap_t *pc; int thread, users, turns; unsigned seed; const char *prefix; long generations, feedback, errors; } job;

/* One conversation turn: what was asked, and how (text prompt or chat messages). */
typedef struct { const char *user, *session; int topic, ask, chat; char prompt[256]; } turn;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Serves one answer in the given style and logs it; regenerates: the id of the answer it replaces,
 * or NULL. id_out receives its id. */
static int serve(job *j, const turn *tu, int concise, const char *regenerates, char id_out[PREFCAP_ID_MAX + 1]) {
  char answer[1024];
  make_answer(answer, sizeof answer, tu->topic, tu->ask, concise, &j->seed);
  prefcap_message_t msgs[2] = {{"system", "You are a helpful assistant."}, {"user", tu->prompt}};
  char rid[128];   /* the backend's own request id: pass yours, it is how feedback finds the generation */
  snprintf(rid, sizeof rid, "%sreq-%d-%ld", j->prefix, j->thread, j->generations + j->errors);
  prefcap_generation_t g = {.size = sizeof g,
      .id = rid,
      .completion = answer,
      .model = "acme-chat", .model_version = concise ? "2026-11-01" : "2026-10-01",
      .params_json = "{\"temperature\":0.7,\"top_p\":0.95,\"max_tokens\":512}",
      .user_id = tu->user, .session_id = tu->session, .regenerates = regenerates,
      .latency_ms = 300 + rand_r(&j->seed) % 900,
      .prompt_tokens = 20 + (int64_t)strlen(tu->prompt) / 4,
      .completion_tokens = (int64_t)strlen(answer) / 4,
  };
  if (tu->chat) { g.messages = msgs; g.n_messages = 2; }
  else g.prompt = tu->prompt;
  int rc = prefcap_log_generation(j->pc, &g, id_out);   /* copies what it needs before returning */
  if (rc) { j->errors++; fprintf(stderr, "log_generation: %s: %s\n", prefcap_strerror(rc), prefcap_errmsg(j->pc)); }
  else j->generations++;
  return rc;
}

static void feedback(job *j, prefcap_feedback_kind_t kind, const char *id, const char *text, int rating) {
  prefcap_feedback_t f = {.size = sizeof f, .kind = kind, .id = id, .text = text, .rating = rating, .ts_ms = now_ms()};
  int rc = prefcap_log_feedback(j->pc, &f);
  if (rc) { j->errors++; fprintf(stderr, "log_feedback: %s: %s\n", prefcap_strerror(rc), prefcap_errmsg(j->pc)); }
  else j->feedback++;
}

static void choice(job *j, const char *chosen, const char *rejected) {
  prefcap_feedback_t f = {.size = sizeof f, .kind = PREFCAP_FB_CHOICE, .id = chosen, .rejected_id = rejected, .ts_ms = now_ms()};
  int rc = prefcap_log_feedback(j->pc, &f);
  if (rc) { j->errors++; fprintf(stderr, "log_feedback: %s: %s\n", prefcap_strerror(rc), prefcap_errmsg(j->pc)); }
  else j->feedback++;
}

// ---- a simulated user ------------------------------------------------------------------------------

/* One turn: the model answers (mostly verbose: it is the model we want to improve), and the user acts
 * on the answer. liked: the style this user prefers (1 concise, 0 verbose); abandons: a user who
 * leaves every answer unused. */
static void user_turn(job *j, const turn *tu, int liked, int abandons) {
  unsigned *s = &j->seed;
  int concise = rand_r(s) % 100 < 35;
  char id[PREFCAP_ID_MAX + 1], prev[PREFCAP_ID_MAX + 1], id2[PREFCAP_ID_MAX + 1];
  if (serve(j, tu, concise, NULL, id)) return;
  if (abandons) { feedback(j, PREFCAP_FB_ABANDON, id, NULL, 0); return; }
  int r = (int)(rand_r(s) % 100);
  if (concise == liked) {   /* they like it: copy, accept or +1; sometimes nothing at all */
    if (r < 45) feedback(j, PREFCAP_FB_COPY, id, NULL, 0);
    else if (r < 75) feedback(j, PREFCAP_FB_ACCEPT, id, NULL, 0);
    else if (r < 90) feedback(j, PREFCAP_FB_RATING, id, NULL, 1);
    return;
  }
  if (r < 40) {   /* regenerate until they get an answer they like (at most 3 tries), then use it */
    for (int k = 0; k < 3; k++) {
      feedback(j, PREFCAP_FB_REGENERATE, id, NULL, 0);
      memcpy(prev, id, sizeof id);
      int now = rand_r(s) % 100 < 55 ? liked : !liked;
      if (serve(j, tu, now, prev, id)) return;
      if (now == liked) { feedback(j, rand_r(s) % 2 ? PREFCAP_FB_COPY : PREFCAP_FB_ACCEPT, id, NULL, 0); return; }
    }
  } else if (r < 60) {   /* they rewrite it the way they wanted it */
    char text[1024];
    make_answer(text, sizeof text, tu->topic, tu->ask, liked, s);
    feedback(j, PREFCAP_FB_EDIT, id, text, 0);
  } else if (r < 75) {   /* a thumbs-down, a second answer in the same session, and a thumbs-up for it */
    feedback(j, PREFCAP_FB_RATING, id, NULL, -1);
    if (!serve(j, tu, liked, NULL, id2)) feedback(j, PREFCAP_FB_RATING, id2, NULL, 1);
  } else if (r < 88) {   /* side by side: a second answer shown next to the first, and they pick it */
    if (!serve(j, tu, liked, NULL, id2)) choice(j, id2, id);
  } else if (r < 94) {   /* a thumbs-down and nothing more: a label, no pair */
    feedback(j, PREFCAP_FB_RATING, id, NULL, -1);
  } else {
    feedback(j, PREFCAP_FB_ABANDON, id, NULL, 0);
  }
}

// ---- a request thread ----------------------------------------------------------------------------

static void *request_thread(void *arg) {
  job *j = arg;
  for (int u = 0; u < j->users; u++) {
    char user[96], session[112];
    snprintf(user, sizeof user, "%suser-%d-%d", j->prefix, j->thread, u);
    int liked = 1, abandons = 0;
    for (int t = 0; t < j->turns; t++) {
      if (t % 3 == 0) {   /* a new session every 3 turns; its user's taste for the session */
        snprintf(session, sizeof session, "%s-s%d", user, t / 3);
        int r = (int)(rand_r(&j->seed) % 100);
        liked = r >= 6;          /* 6%: this user prefers the long answers today */
        abandons = r >= 6 && r < 10;   /* 4%: in a hurry, leaves every answer unused */
      }
      turn tu = {.user = user, .session = session, .topic = (int)(rand_r(&j->seed) % N_TOPICS),
                 .ask = (int)(rand_r(&j->seed) % N_ASKS), .chat = (int)(rand_r(&j->seed) % 2)};
      make_prompt(tu.prompt, sizeof tu.prompt, tu.topic, tu.ask);
      user_turn(j, &tu, liked, abandons);
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
  prefcap_counters_t k = PREFCAP_COUNTERS_INIT;
  prefcap_flush(pc, 5000);
  prefcap_get_counters(pc, &k);
  rc = prefcap_close(pc, 5000);
  printf("chat_backend: %d threads served %ld generations and %ld feedback events into %s "
         "(stored %llu, dropped %llu, failed %llu)%s\n", threads, gens, fbs, db, (unsigned long long)k.stored,
         (unsigned long long)k.dropped, (unsigned long long)k.failed, rc ? ": close timed out" : "");
  return errors || rc ? 1 : 0;
}
