/* fuzz_json.c — libFuzzer target for lib/json.c, the gateway's parser of request bodies.
 *
 * Each input is parsed as JSON into the test messages (proto3 AllTypes and proto2 Legacy,
 * from tests/proto/cairn/test/) with an arena allocator, as the gateway does. Whatever the
 * input, parsing must not crash; when it succeeds, the emitted JSON must parse again and
 * emit the same text (the output is canonical), and the message must pack and unpack.
 * The input is also fed to cn_json_set_field as the text of every field of AllTypes, and
 * the result must survive the same JSON round trip. Any broken promise aborts.
 * Build by hand (or with `make fuzz`), seeds in tests/fuzz/corpus/fuzz_json/:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE -Ibuild/gen \
 *     -Ilib tests/fuzz/fuzz_json.c lib/json.c lib/buf.c lib/arena.c lib/util.c lib/err.c \
 *     build/gen/cairn/test/transcode.pb-c.c build/gen/cairn/test/transcode2.pb-c.c \
 *     $(pkg-config --cflags --libs libprotobuf-c jansson libcrypto) -lm -o fuzz_json
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "buf.h"
#include "json.h"
#include "cairn/test/transcode.pb-c.h"
#include "cairn/test/transcode2.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, const struct cn_buf *json, const struct cn_json_error *err)
{
    fprintf(stderr, "fuzz_json: %s\n  json: %s\n", what, json && json->data ? json->data : "");
    if (err)
        fprintf(stderr, "  error: field \"%s\": %s\n", err->field, err->message);
    abort();
}

/* Emits m, parses that, emits again: both texts must be equal. */
static void check_canonical(const ProtobufCMessage *m, ProtobufCAllocator *alloc)
{
    struct cn_buf first = {0}, second = {0};
    struct cn_json_error err;
    ProtobufCMessage *again;

    cn_json_from_proto(m, &first);
    if (cn_json_to_proto(first.data, first.len, m->descriptor, alloc, &again, &err) != 0)
        die("emitted JSON does not parse back", &first, &err);
    cn_json_from_proto(again, &second);
    if (first.len != second.len || memcmp(first.data, second.data, first.len) != 0)
        die("re-emitted JSON differs", &second, NULL);

    /* The message must be valid for protobuf-c: pack, unpack, emit. */
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *wire = malloc(n ? n : 1);
    if (wire == NULL || protobuf_c_message_pack(m, wire) != n)
        die("pack failed", &first, NULL);
    ProtobufCMessage *u = protobuf_c_message_unpack(m->descriptor, alloc, n, wire);
    if (u == NULL)
        die("packed message does not unpack", &first, NULL);
    cn_buf_reset(&second);
    cn_json_from_proto(u, &second);
    free(wire);
    cn_buf_free(&first);
    cn_buf_free(&second);
}

static void parse_into(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t size,
                       ProtobufCAllocator *alloc)
{
    ProtobufCMessage *m;
    struct cn_json_error err;

    if (cn_json_to_proto((const char *)data, size, desc, alloc, &m, &err) != 0) {
        if (err.message[0] == '\0' || m != NULL)
            die("refusal without a message", NULL, &err);
        return;
    }
    check_canonical(m, alloc);
}

static void set_every_field(const uint8_t *data, size_t size, ProtobufCAllocator *alloc)
{
    const ProtobufCMessageDescriptor *desc = &cairn__test__all_types__descriptor;
    ProtobufCMessage *m = alloc->alloc(alloc->allocator_data, desc->sizeof_message);
    struct cn_json_error err;

    protobuf_c_message_init(desc, m);
    for (unsigned i = 0; i < desc->n_fields; i++) {
        int rc = cn_json_set_field(m, desc->fields[i].name, (const char *)data, size, alloc, &err);
        if (rc != 0 && err.message[0] == '\0')
            die("set_field refusal without a message", NULL, &err);
    }
    check_canonical(m, alloc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct cn_arena *arena;
    ProtobufCAllocator alloc;

    if (arena == NULL)
        arena = cn_arena_new(0);
    cn_arena_allocator(arena, &alloc);
    parse_into(&cairn__test__all_types__descriptor, data, size, &alloc);
    cn_arena_reset(arena);
    parse_into(&cairn__test__legacy__descriptor, data, size, &alloc);
    cn_arena_reset(arena);
    set_every_field(data, size, &alloc);
    cn_arena_reset(arena);
    return 0;
}
