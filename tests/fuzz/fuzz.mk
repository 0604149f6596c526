# tests/fuzz/fuzz.mk: libFuzzer targets for every parser of outside input (docs/fuzzing.md), built with
# clang into build-fuzz/ (whatever BUILD is: `make asan` runs the same binaries), AddressSanitizer and
# UBSan on, every parser source compiled with coverage instrumentation:
#
#   fuzz_event_json   SDK events as JSON (ingest lines, prefcap_log_json; the events a fleet exports)
#   fuzz_redact       capture-time redaction
#   fuzz_safetensors  safetensors headers and tensors
#   fuzz_config       config.json
#   fuzz_tok_load     tokenizer.json, loading (then a few encodes and decodes)
#   fuzz_tok_encode   encoding any text with a small and a real tokenizer
#   fuzz_chat         chat templates: recognition and rendering (the built-in formats)
#   fuzz_jinja        the Jinja interpreter on any template text, rendered with a fixed conversation
#   fuzz_data         preference (and KTO) JSONL
#
# `make fuzz` runs each for FUZZ_SECONDS (60); `make test` runs each for FUZZ_TEST_SECONDS (10) through
# tests/fuzz/test_fuzz.sh, where a crash, a leak, a timeout or an out-of-memory is a FAIL. Corpora grow
# in build-fuzz/corpus/; the committed seeds (tests/fuzz/seeds/, with every input that once crashed)
# and seeds made from the test data at run time are replayed first.

FUZZ_CC    ?= clang
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TEST_SECONDS ?= 10
HAVE_FUZZ  := $(shell f=$$($(FUZZ_CC) -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null); [ -f "$$f" ] && echo 1)
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -pthread -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
               -Iinclude -Icommon -Itrainer -Isdk -Itests/fuzz $(FUZZ_SAN) -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
FUZZ_NAMES := event_json redact safetensors config tok_load tok_encode chat jinja data
FUZZ_BINS  := $(FUZZ_NAMES:%=$(FUZZ_BUILD)/fuzz_%)

FUZZ_SDK_A := $(FUZZ_BUILD)/libprefcap.a
FZ = $(FUZZ_BUILD)/obj
FUZZ_TOK   := $(FZ)/trainer/text/tokenizer.o
# what every trainer parser links: read-whole-file (common/) and the trainer's helpers
FUZZ_UTIL  := $(FZ)/trainer/util/util.o $(FZ)/common/readfile.o

$(FZ)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@
-include $(wildcard $(FZ)/*/*.d $(FZ)/*/*/*.d $(FZ)/*/*/*/*.d)

$(FUZZ_SDK_A): $(SDK_LIB_SRCS:%.c=$(FZ)/%.o) $(COMMON_SRCS:%.c=$(FZ)/%.o)
	rm -f $@ && ar rcs $@ $^

# target: its objects, then its libraries
FUZZ_LINK = $(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -pthread -o $@
$(FUZZ_BUILD)/fuzz_event_json: $(FZ)/tests/fuzz/fuzz_event_json.o $(FUZZ_SDK_A)
	$(FUZZ_LINK) $^ $(SDK_LIBS)
$(FUZZ_BUILD)/fuzz_redact: $(FZ)/tests/fuzz/fuzz_redact.o $(FUZZ_SDK_A)
	$(FUZZ_LINK) $^ $(SDK_LIBS)
$(FUZZ_BUILD)/fuzz_safetensors: $(FZ)/tests/fuzz/fuzz_safetensors.o $(FZ)/trainer/model/safetensors.o $(FUZZ_UTIL)
	$(FUZZ_LINK) $^ -lcjson -lm -lcrypto
$(FUZZ_BUILD)/fuzz_config: $(FZ)/tests/fuzz/fuzz_config.o $(FZ)/trainer/model/config.o $(FUZZ_UTIL)
	$(FUZZ_LINK) $^ -lcjson -lm -lcrypto
$(FUZZ_BUILD)/fuzz_tok_load: $(FZ)/tests/fuzz/fuzz_tok_load.o $(FUZZ_TOK) $(FUZZ_UTIL)
	$(FUZZ_LINK) $^ $(PC_TOK_LIBS) -lcrypto
$(FUZZ_BUILD)/fuzz_tok_encode: $(FZ)/tests/fuzz/fuzz_tok_encode.o $(FUZZ_TOK) $(FUZZ_UTIL)
	$(FUZZ_LINK) $^ $(PC_TOK_LIBS) -lcrypto
$(FUZZ_BUILD)/fuzz_chat: $(FZ)/tests/fuzz/fuzz_chat.o $(FZ)/trainer/text/chat.o $(FZ)/trainer/text/jinja.o $(FUZZ_UTIL)
	$(FUZZ_LINK) $^ -lcjson -lm -lcrypto
$(FUZZ_BUILD)/fuzz_jinja: $(FZ)/tests/fuzz/fuzz_jinja.o $(FZ)/trainer/text/jinja.o
	$(FUZZ_LINK) $^ -lcjson -lm
$(FUZZ_BUILD)/fuzz_data: $(FZ)/tests/fuzz/fuzz_data.o $(FZ)/trainer/text/data.o $(FZ)/trainer/text/chat.o $(FZ)/trainer/text/jinja.o $(FUZZ_TOK) $(FUZZ_UTIL)
	$(FUZZ_LINK) $^ $(PC_TOK_LIBS) -lm -lcrypto

.PHONY: fuzz fuzz-build
fuzz-build: $(FUZZ_BINS)

ifeq ($(HAVE_FUZZ),1)
TEST_BINS += $(FUZZ_BINS)
fuzz: fuzz-build
	@FUZZ_BUILD=$(FUZZ_BUILD) FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/test_fuzz.sh $(FUZZ_ONLY)
else
fuzz:
	@echo "✗ $(FUZZ_CC) with libFuzzer (-fsanitize=fuzzer) not found: scripts/deps.sh installs clang and libclang-rt-14-dev"; exit 1
endif
TESTS += tests/fuzz/test_fuzz.sh
