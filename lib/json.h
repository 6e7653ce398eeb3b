/* json.h — JSON <-> protobuf transcoding driven by protobuf-c descriptors.
 *
 * No per-message JSON code anywhere: the gateway turns request JSON into the RPC's input
 * message and the output message back into JSON using only the descriptors protoc-c
 * generates. Mapping (proto3 JSON, with Cairn's choices):
 *   - field names are the .proto names (snake_case); unknown fields are rejected
 *   - every scalar type; int64/uint64 accepted as JSON number or decimal string, emitted
 *     as numbers (uint64 above INT64_MAX as a string); float/double also accept "NaN",
 *     "Infinity", "-Infinity"; bool only true/false
 *   - enums by name: the value name lowercased with the enum's UPPER_SNAKE type-name
 *     prefix removed (JobStatus JOB_STATUS_PENDING <-> "pending"); the full .proto value
 *     name and the number are also accepted on input
 *   - bytes as standard base64 (url-safe accepted on input)
 *   - repeated as arrays, nested messages as objects, oneof members as plain fields (two
 *     members of one oneof in the same object is an error), proto maps as objects
 *   - null for a field means "default"
 *   - output emits every field, defaults included, in field-number order (protobuf-c
 *     keeps no other; it is the .proto order when numbers ascend); an unset message
 *     field is null, and a oneof emits only its set member (none when unset)
 * Errors name the field by path ("rows[3].values.age") and say what was expected
 * ("expected a string", "unknown field", "integer out of range for int32").
 * Limits: nesting depth 64, input as given (the caller caps body size).
 */
#ifndef CN_JSON_H
#define CN_JSON_H

#include <stddef.h>
#include <protobuf-c/protobuf-c.h>

struct cn_buf;

struct cn_json_error {
    char field[256];    /* path of the offending field, "" for the document itself */
    char message[256];  /* what was expected / what is wrong */
};

/* Parses len bytes of JSON (an object) into a new message of type desc, every allocation
 * from alloc (pass an arena allocator; with the default allocator free it with
 * protobuf_c_message_free_unpacked). An empty body (len 0) is an empty message.
 * Returns 0 and *out, or CN_EINVAL with err filled. Never crashes on any input. */
int cn_json_to_proto(const char *json, size_t len, const ProtobufCMessageDescriptor *desc,
                     ProtobufCAllocator *alloc, ProtobufCMessage **out,
                     struct cn_json_error *err);

/* Appends msg as a compact JSON object to out. */
void cn_json_from_proto(const ProtobufCMessage *msg, struct cn_buf *out);

/* Sets the top-level field `name` of msg from text (a path or query parameter), parsed
 * by the field's type (strings as-is, numbers/bools/enums parsed; for a repeated field
 * the value is appended). Memory from alloc. Returns 0, CN_ENOTFOUND for no such field,
 * or CN_EINVAL with err filled. */
int cn_json_set_field(ProtobufCMessage *msg, const char *name, const char *value, size_t len,
                      ProtobufCAllocator *alloc, struct cn_json_error *err);

/* Returns the descriptor of the top-level field `name` of desc, or NULL. */
const ProtobufCFieldDescriptor *cn_json_field(const ProtobufCMessageDescriptor *desc,
                                              const char *name);

#endif
