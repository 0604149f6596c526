/* tests/sdk/abi/stub01.c: a stand-in for 0.1's libprefcap.so.0 at link time only: the functions
 * client01 calls, without symbol versions, as 0.1's library exported them. Linking client01 against it
 * gives the binary the unversioned references that a program built in 0.1's time has; it never runs
 * (tests/sdk/test_abi.sh runs client01 with today's library in its place). */
void prefcap_version(void) {}
void prefcap_options_new(void) {}
void prefcap_options_set_path(void) {}
void prefcap_options_set_durability(void) {}
void prefcap_options_free(void) {}
void prefcap_open(void) {}
void prefcap_strerror(void) {}
void prefcap_errmsg(void) {}
void prefcap_log_generation(void) {}
void prefcap_log_feedback(void) {}
void prefcap_get_counters(void) {}
void prefcap_export_options_new(void) {}
void prefcap_export_options_set_out(void) {}
void prefcap_export_options_set_since_last(void) {}
void prefcap_export(void) {}
void prefcap_export_options_free(void) {}
void prefcap_upload(void) {}
void prefcap_close(void) {}
