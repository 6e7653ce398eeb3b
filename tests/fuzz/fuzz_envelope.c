/* fuzz_envelope.c — libFuzzer target for what a service does with bytes off the wire:
 * unpack a Call envelope and then its body as the named method's input, all into an
 * arena (as lib/rpc.c does), and a Result as the gateway does. Must never crash or leak. */
#include <stdint.h>
#include <stdlib.h>

#include "arena.h"
#include "cairn/v1/auth.pb-c.h"
#include "cairn/v1/rpc.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cn_arena *a = cn_arena_new(0);
    ProtobufCAllocator alloc;
    cn_arena_allocator(a, &alloc);

    Cairn__V1__Call *c = cairn__v1__call__unpack(&alloc, size, data);
    if (c && c->method) {
        const ProtobufCMethodDescriptor *md =
            protobuf_c_service_descriptor_get_method_by_name(&cairn__v1__auth__descriptor, c->method);
        if (md) {
            ProtobufCMessage *in = protobuf_c_message_unpack(md->input, &alloc, c->body.len, c->body.data);
            if (in) {
                size_t n = protobuf_c_message_get_packed_size(in);
                uint8_t *buf = cn_arena_alloc(a, n + 1);
                if (protobuf_c_message_pack(in, buf) != n)
                    abort();
            }
        }
    }
    Cairn__V1__Result *r = cairn__v1__result__unpack(&alloc, size, data);
    (void)r;
    cn_arena_free(a);
    return 0;
}
