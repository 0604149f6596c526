# sdk/sdk.mk: libprefcap (static and shared), the `prefcap` CLI, the SDK's tests, examples and benches.
# Library sources are sdk/*.c; the CLI is sdk/cli/*.c; tests are tests/sdk/test_*.c (one program
# each) and the executable scripts tests/sdk/test_*.{sh,py}.

SDK_LIB_SRCS := $(sort $(wildcard sdk/*.c))
SDK_CLI_SRCS := $(sort $(wildcard sdk/cli/*.c))
SDK_LIB_OBJS := $(SDK_LIB_SRCS:%.c=$(BUILD)/%.o)
SDK_CLI_OBJS := $(SDK_CLI_SRCS:%.c=$(BUILD)/%.o)
SDK_LIBS     := -lsqlite3 -lcjson -lcurl -lz -lm
SDK_A        := $(BUILD)/libprefcap.a
SDK_SO       := $(BUILD)/libprefcap.so
PREFCAP_CLI  := $(BUILD)/prefcap

SDK_TEST_SRCS := $(sort $(wildcard tests/sdk/test_*.c))
SDK_TEST_BINS := $(SDK_TEST_SRCS:tests/sdk/%.c=$(BUILD)/tests/%)
SDK_TEST_SCRIPTS := $(sort $(wildcard tests/sdk/test_*.sh tests/sdk/test_*.py))
SDK_EXAMPLES := $(BUILD)/examples/chat_backend

ALL_TARGETS += $(SDK_A) $(SDK_SO) $(PREFCAP_CLI) $(SDK_EXAMPLES)
TEST_BINS   += $(SDK_TEST_BINS) $(BUILD)/tests/crashchild $(BUILD)/bench/ingest_bench
TESTS       += $(SDK_TEST_BINS) $(SDK_TEST_SCRIPTS)
BENCHES     += $(BUILD)/bench/ingest_bench
BENCH_CMDS  += $(BUILD)/bench/ingest_bench bench/export_bench.sh

$(BUILD)/sdk/%.o: sdk/%.c include/prefcap.h $(wildcard sdk/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -fvisibility=hidden -Isdk -c $< -o $@

# The CLI sees the public header only (as curl's tool sees only libcurl): no -Isdk, so an internal
# header cannot be included, and tests/sdk/test_cli_public.sh checks that no internal symbol is used.
$(BUILD)/sdk/cli/%.o: sdk/cli/%.c include/prefcap.h $(wildcard sdk/cli/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(SDK_A): $(SDK_LIB_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(SDK_SO): $(SDK_LIB_OBJS)
	$(CC) -shared -Wl,-soname,libprefcap.so.0 -o $@ $^ $(LDFLAGS_ALL) $(SDK_LIBS)

$(PREFCAP_CLI): $(SDK_CLI_OBJS) $(SDK_A)
	$(CC) -o $@ $(SDK_CLI_OBJS) $(SDK_A) $(LDFLAGS_ALL) $(SDK_LIBS)

$(BUILD)/tests/%: tests/sdk/%.c $(SDK_A) tests/test.h tests/sdk/util.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Isdk -Itests -o $@ $< $(SDK_A) $(LDFLAGS_ALL) $(SDK_LIBS)

$(BUILD)/tests/crashchild: tests/sdk/crashchild.c $(SDK_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(SDK_A) $(LDFLAGS_ALL) $(SDK_LIBS)

$(BUILD)/examples/%: examples/%.c $(SDK_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -o $@ $< $(SDK_A) $(LDFLAGS_ALL) $(SDK_LIBS)

$(BUILD)/bench/%: bench/%.c $(SDK_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Isdk -o $@ $< $(SDK_A) $(LDFLAGS_ALL) $(SDK_LIBS)

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
