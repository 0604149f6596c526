# sdk/sdk.mk: libprefcap (static and shared), the `prefcap` CLI, the SDK's tests, examples and benches.
# Library sources are sdk/*.c (with common/'s objects inside); the CLI is sdk/cli/*.c; tests are
# tests/sdk/test_*.c (one program each) and the executable scripts tests/sdk/test_*.{sh,py}.
#
# The shared library's ABI: sdk/prefcap.map versions its symbols, and sdk/compat/*.c (only in the .so)
# keeps the entry points of older headers working (tests/sdk/test_abi.sh runs a 0.1 client on it).

SDK_LIB_SRCS := $(sort $(wildcard sdk/*.c))
SDK_CLI_SRCS := $(sort $(wildcard sdk/cli/*.c))
SDK_LIB_OBJS := $(SDK_LIB_SRCS:%.c=$(BUILD)/%.o)
SDK_CLI_OBJS := $(SDK_CLI_SRCS:%.c=$(BUILD)/%.o)
SDK_LIBS     := -lsqlite3 -lcjson -lcurl -lcrypto -lz -lm
SDK_COMPAT_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(sort $(wildcard sdk/compat/*.c)))
SDK_A        := $(BUILD)/libprefcap.a
SDK_SO       := $(BUILD)/libprefcap.so
PREFCAP_CLI  := $(BUILD)/prefcap

SDK_TEST_SRCS := $(sort $(wildcard tests/sdk/test_*.c))
SDK_TEST_BINS := $(SDK_TEST_SRCS:tests/sdk/%.c=$(BUILD)/tests/%)
SDK_TEST_SCRIPTS := $(sort $(wildcard tests/sdk/test_*.sh tests/sdk/test_*.py))
SDK_EXAMPLES := $(BUILD)/examples/chat_backend

ALL_TARGETS += $(SDK_A) $(SDK_SO) $(PREFCAP_CLI) $(SDK_EXAMPLES)
TEST_BINS   += $(SDK_TEST_BINS) $(BUILD)/tests/crashchild $(BUILD)/bench/ingest_bench $(BUILD)/bench/redact_bench
TESTS       += $(SDK_TEST_BINS) $(SDK_TEST_SCRIPTS)
BENCHES     += $(BUILD)/bench/ingest_bench $(BUILD)/bench/redact_bench $(BUILD)/bench/fleet_bench
BENCH_CMDS  += $(BUILD)/bench/ingest_bench $(BUILD)/bench/redact_bench bench/export_bench.sh $(BUILD)/bench/fleet_bench

$(BUILD)/sdk/%.o: sdk/%.c include/prefcap.h $(wildcard sdk/*.h common/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fvisibility=hidden -Isdk -c $< -o $@

# The CLI sees the public header (and common/'s, which CFLAGS_ALL puts on the path) only, as curl's
# tool sees only libcurl: no -Isdk, so an internal header cannot be included, and
# tests/sdk/test_cli_hostile.sh checks that no internal symbol is used.
$(BUILD)/sdk/cli/%.o: sdk/cli/%.c include/prefcap.h $(wildcard sdk/cli/*.h common/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

# The static library carries common/'s objects too, whose pc_* names are not the library's to take:
# an application with its own pc_read_file would fail to link against it, or silently get ours. So
# the archive's copies are renamed into the library's internal namespace (prefcap__pc_*), in every
# object that defines or calls them; tests/sdk/test_abi.sh checks that the archive defines nothing
# outside prefcap_*. The CLIs take the pc_* originals from $(COMMON_A).
SDK_A_STAGE := $(BUILD)/sdk/archive
$(SDK_A): $(SDK_LIB_OBJS) $(COMMON_OBJS)
	@mkdir -p $(dir $@) $(SDK_A_STAGE)
	rm -rf $(SDK_A_STAGE)/* && nm -g --defined-only $(COMMON_OBJS) | awk 'NF == 3 && $$3 ~ /^pc_/ { print $$3, "prefcap__" $$3 }' > $(SDK_A_STAGE)/rename.syms
	for o in $^; do objcopy --redefine-syms=$(SDK_A_STAGE)/rename.syms $$o $(SDK_A_STAGE)/$$(echo $$o | tr / _) || exit 1; done
	rm -f $@ && ar rcs $@ $(SDK_A_STAGE)/*.o

$(SDK_SO): $(SDK_LIB_OBJS) $(SDK_COMPAT_OBJS) $(COMMON_OBJS) sdk/prefcap.map
	$(CC) -shared -Wl,-soname,libprefcap.so.0 -Wl,--version-script=sdk/prefcap.map -Wl,--no-undefined \
	  -o $@ $(SDK_LIB_OBJS) $(SDK_COMPAT_OBJS) $(COMMON_OBJS) $(LDFLAGS_ALL) $(SDK_LIBS)

$(PREFCAP_CLI): $(SDK_CLI_OBJS) $(SDK_A) $(COMMON_A)
	$(CC) -o $@ $(SDK_CLI_OBJS) $(SDK_A) $(COMMON_A) $(LDFLAGS_ALL) $(SDK_LIBS)

$(BUILD)/tests/%: tests/sdk/%.c $(SDK_A) tests/test.h $(wildcard tests/sdk/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Isdk -Itests -o $@ $< $(SDK_A) $(LDFLAGS_ALL) $(SDK_LIBS)

$(BUILD)/tests/crashchild: tests/sdk/crashchild.c $(SDK_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(SDK_A) $(LDFLAGS_ALL) $(SDK_LIBS)

$(BUILD)/examples/%: examples/%.c $(SDK_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(SDK_A) $(LDFLAGS_ALL) $(SDK_LIBS)

$(BUILD)/bench/%: bench/%.c $(SDK_A) $(wildcard tests/sdk/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Isdk -o $@ $< $(SDK_A) $(LDFLAGS_ALL) $(SDK_LIBS)

# ---- the ABI test (tests/sdk/test_abi.sh): a 0.1 client linked against a stand-in for the 0.1 library
# (unversioned symbols, as 0.1 exported them), and a client of today's header linked against the .so.
SDK_ABI_DIR := $(BUILD)/tests/abi
$(SDK_ABI_DIR)/lib01/libprefcap.so: tests/sdk/abi/stub01.c
	@mkdir -p $(dir $@)
	$(CC) -shared -fPIC -Wl,-soname,libprefcap.so.0 -o $@ $<

$(SDK_ABI_DIR)/client01: tests/sdk/abi/client01.c tests/sdk/abi/prefcap-0.1.h $(SDK_ABI_DIR)/lib01/libprefcap.so
	$(CC) -std=c11 -g -Wall -Wextra -Werror $(SAN) -Itests/sdk/abi -o $@ $< -L$(SDK_ABI_DIR)/lib01 -lprefcap

$(SDK_ABI_DIR)/client02: tests/sdk/abi/client02.c include/prefcap.h $(SDK_SO)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(SDK_SO) $(LDFLAGS_ALL)

# an application that defines pc_* functions of its own, linked statically against libprefcap.a
$(SDK_ABI_DIR)/own_pc: tests/sdk/abi/own_pc.c include/prefcap.h $(SDK_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(SDK_A) $(LDFLAGS_ALL) $(SDK_LIBS)

TEST_BINS += $(SDK_ABI_DIR)/client01 $(SDK_ABI_DIR)/client02 $(SDK_ABI_DIR)/own_pc

install: $(SDK_A) $(SDK_SO) $(PREFCAP_CLI)
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin
	install -m 644 include/prefcap.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(SDK_A) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SDK_SO) $(DESTDIR)$(PREFIX)/lib/libprefcap.so.$(VERSION)
	ln -sf libprefcap.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libprefcap.so.0
	ln -sf libprefcap.so.0 $(DESTDIR)$(PREFIX)/lib/libprefcap.so
	install -m 755 $(PREFCAP_CLI) $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' sdk/prefcap.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/prefcap.pc
	@if [ -x $(BUILD)/prefcap-dpo ]; then install -m 755 $(BUILD)/prefcap-dpo $(DESTDIR)$(PREFIX)/bin/; fi
