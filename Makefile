# Cairn build. `make` builds every binary into $(BUILD)/bin; `make asan` the same with
# ASan+UBSan into build-asan/; `make test` and `make run` set up a throwaway stack
# (scripts/stack) and run the tests or the whole suite. Generated protobuf-c code goes to
# $(BUILD)/gen. To add a lib module, add lib/x.c (+ x_test.c): it is picked up by name.
# To add a service, add services/<name>/ with main.c: it becomes $(BUILD)/bin/cairn-<name>.

BUILD    ?= build
CC       ?= cc
OPT      ?= -O2
SAN      ?=
CFLAGS   ?= $(OPT) -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread $(SAN) \
            -I$(BUILD)/gen -Ilib -MMD -MP
LDFLAGS  += -pthread $(SAN)

PKGS     := libh2o-evloop libprotobuf-c libpq hiredis libcrypto libssl libevent \
            libevent_pthreads jansson libargon2 xgboost yaml-0.1
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lnng -lwslay -lz -lm
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)
CFLAGS   += $(PKG_CFLAGS)

PROTOS   := $(wildcard proto/cairn/v1/*.proto)
TPROTOS  := $(wildcard tests/proto/cairn/test/*.proto)
PB_C     := $(PROTOS:proto/%.proto=$(BUILD)/gen/%.pb-c.c)
TPB_C    := $(TPROTOS:tests/proto/%.proto=$(BUILD)/gen/%.pb-c.c)
PB_O     := $(PB_C:%.c=%.o)
TPB_O    := $(TPB_C:%.c=%.o)

LIB_SRC  := $(filter-out %_test.c,$(wildcard lib/*.c))
LIB_O    := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LIBCAIRN := $(BUILD)/lib/libcairn.a

GW_SRC   := $(filter-out %_test.c gateway/main.c,$(wildcard gateway/*.c))
GW_O     := $(GW_SRC:%.c=$(BUILD)/obj/%.o)
LIBGW    := $(BUILD)/lib/libgateway.a

SERVICES := $(notdir $(patsubst %/main.c,%,$(wildcard services/*/main.c)))
# Every service folder gets its archive and unit tests, even before it has a main.c.
SVC_DIRS := $(sort $(notdir $(patsubst %/,%,$(dir $(wildcard services/*/*.c)))))
BINS     := $(BUILD)/bin/cairn-gateway $(SERVICES:%=$(BUILD)/bin/cairn-%)

TEST_SRC := $(wildcard lib/*_test.c gateway/*_test.c services/*/*_test.c)
TESTS    := $(patsubst %_test.c,$(BUILD)/test/%_test,$(TEST_SRC))

FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)

.PHONY: all asan test test-unit test-system run fuzz clean checksrc
.SECONDARY:

all: $(BINS) $(TESTS)

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all

# --- generated protobuf-c code ---
$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen -Iproto $<
$(BUILD)/gen/cairn/test/%.pb-c.c $(BUILD)/gen/cairn/test/%.pb-c.h: tests/proto/cairn/test/%.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen -Itests/proto -Iproto $<
$(BUILD)/gen/%.pb-c.o: $(BUILD)/gen/%.pb-c.c
	$(CC) $(CFLAGS) -c $< -o $@

# Every object may include any generated header: generate them all first.
GEN_H    := $(PB_C:%.c=%.h) $(TPB_C:%.c=%.h)
$(BUILD)/obj/%.o: %.c | $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# Migrations are compiled into the service binary (scripts/embed), so a container needs
# no SQL files beside it.
$(BUILD)/gen/services/%/migrations.c: scripts/embed $(wildcard services/*/migrations/*.sql)
	@mkdir -p $(dir $@)
	sh scripts/embed $* services/$*/migrations > $@
$(BUILD)/obj/gen/services/%/migrations.o: $(BUILD)/gen/services/%/migrations.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIBCAIRN): $(LIB_O) $(PB_O)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIBGW): $(GW_O)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/cairn-gateway: $(BUILD)/obj/gateway/main.o $(LIBGW) $(LIBCAIRN)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) -o $@

# A service is main.o + its other objects (as an archive, so tests can reuse them) + lib.
define service_rules
$(BUILD)/lib/lib$(1).a: $(patsubst %.c,$(BUILD)/obj/%.o,$(filter-out %_test.c services/$(1)/main.c,$(wildcard services/$(1)/*.c))) $(BUILD)/obj/gen/services/$(1)/migrations.o
	@mkdir -p $$(dir $$@)
	rm -f $$@ && ar rcs $$@ $$^
$(BUILD)/test/services/$(1)/%_test: $(BUILD)/obj/services/$(1)/%_test.o $(BUILD)/lib/lib$(1).a $(LIBCAIRN) $(TPB_O)
	@mkdir -p $$(dir $$@)
	$(CC) $(LDFLAGS) $$^ $(PKG_LIBS) $(CMOCKA_LIBS) -o $$@
endef
define service_bin_rules
$(BUILD)/bin/cairn-$(1): $(BUILD)/obj/services/$(1)/main.o $(BUILD)/lib/lib$(1).a $(LIBCAIRN)
	@mkdir -p $$(dir $$@)
	$(CC) $(LDFLAGS) $$^ $(PKG_LIBS) -o $$@
endef
$(foreach s,$(SVC_DIRS),$(eval $(call service_rules,$(s))))
$(foreach s,$(SERVICES),$(eval $(call service_bin_rules,$(s))))

# Unit tests include the .c they test (to reach statics) and link the rest from archives.
$(BUILD)/test/lib/%_test: $(BUILD)/obj/lib/%_test.o $(LIBCAIRN) $(TPB_O)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) $(CMOCKA_LIBS) -o $@
$(BUILD)/test/gateway/%_test: $(BUILD)/obj/gateway/%_test.o $(LIBGW) $(LIBCAIRN) $(TPB_O)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(PKG_LIBS) $(CMOCKA_LIBS) -o $@

# --- fuzzing (clang + libFuzzer); FUZZ_SECONDS per target ---
FUZZ_SECONDS ?= 20
fuzz:
	scripts/fuzz $(FUZZ_SECONDS)

# --- running and testing ---
test:
	scripts/install-deps
	$(MAKE) all
	$(MAKE) asan
	scripts/test

test-unit: all
	scripts/test --unit

test-system: all
	scripts/test --system

run:
	scripts/install-deps
	$(MAKE) all
	scripts/run

checksrc:
	scripts/checksrc

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
