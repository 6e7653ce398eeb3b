/* json.c — JSON <-> protobuf transcoding from protobuf-c descriptors (contract in json.h).
 *
 * Input: jansson parses the whole document (duplicate keys rejected, integers kept exact
 * as long long, strings checked for UTF-8 and NUL), then one walk over the JSON and the
 * message descriptor builds the message, allocating every piece from the caller's
 * ProtobufCAllocator. The message is kept in a state protobuf_c_message_free_unpacked
 * accepts at every step (arrays grow their count only once an element is in place, strings
 * replace the static defaults only when newly allocated), so an error halfway through is
 * cleaned up by one free of the root. Output: one walk appending to a cn_buf.
 *
 * Choices json.h leaves open, made here:
 *   - an unset message field is emitted as null, and null reads back as unset;
 *   - a oneof emits only its set member (none when unset), so output always reads back;
 *   - map keys that are integers must be canonical decimals ("7", not "07"), so two JSON
 *     keys can never name the same entry; on output, entries come in array order;
 *   - enum numbers must name a defined value; an undefined one read from the wire is
 *     emitted as its number;
 *   - a proto2 required field missing from the JSON is an error (the receiver's unpack
 *     would refuse the message otherwise); optional fields emit their default when unset;
 *   - integer fields take integral numbers in any JSON form (1e3); only the 64-bit
 *     types take decimal strings; -0.0 is emitted as -0.0, not the integer -0;
 *   - nesting counts JSON objects and arrays, the top object being level 1;
 *   - cn_json_set_field reads bytes as base64, like the JSON body does.
 *
 * To support a new scalar type, touch value_size, parse_value, parse_text and emit_value.
 */
#include "json.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "err.h"
#include "util.h"

#define MAX_DEPTH 64

/* The largest magnitude that still rounds to a finite float: FLT_MAX plus half an ulp. */
#define FLOAT_LIMIT 0x1.ffffffp+127

/* One transcoding call: where memory comes from, where the error goes, and the path of
 * the field being read, kept as text so an error can name it without reconstructing. */
struct ctx {
    ProtobufCAllocator *alloc;
    struct cn_json_error *err;
    char path[256];
    size_t plen;
};

/* A parsed decimal integer before it is fitted to a field's type. */
struct num {
    bool neg;
    uint64_t mag;
};

/* Storage for one value of any scalar type, so text can be parsed before the message is
 * touched. */
union scalar {
    int32_t i32;
    uint32_t u32;
    int64_t i64;
    uint64_t u64;
    float f;
    double d;
    protobuf_c_boolean b;
    char *s;
    ProtobufCBinaryData by;
};

/* ---- memory ---- */

/* Matches protobuf-c's own default allocator (malloc/free), so a message built with it
 * is freed by protobuf_c_message_free_unpacked(msg, NULL). */
static void *sys_alloc(void *data, size_t n)
{
    (void)data;
    return cn_malloc(n);
}

static void sys_free(void *data, void *p)
{
    (void)data;
    free(p);
}

static ProtobufCAllocator sys_allocator = {sys_alloc, sys_free, NULL};

/* Returns n bytes from the call's allocator; out of memory aborts, as everywhere. */
static void *palloc(struct ctx *c, size_t n)
{
    void *p = c->alloc->alloc(c->alloc->allocator_data, n ? n : 1);
    if (p == NULL)
        abort();
    return p;
}

static void pfree(struct ctx *c, void *p)
{
    if (p != NULL)
        c->alloc->free(c->alloc->allocator_data, p);
}

/* Returns a new message of type desc with its defaults set. */
static ProtobufCMessage *message_new(struct ctx *c, const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = palloc(c, desc->sizeof_message);
    protobuf_c_message_init(desc, m);
    return m;
}

/* ---- errors and paths ---- */

static void path_append(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void path_append(struct ctx *c, const char *fmt, ...)
{
    va_list ap;
    size_t room = sizeof c->path - c->plen;
    if (room <= 1)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(c->path + c->plen, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        c->path[c->plen] = '\0';
    else
        c->plen += (size_t)n < room ? (size_t)n : room - 1;
}

/* Appends a field name (or map key) to the path; returns the length to restore. */
static size_t path_field(struct ctx *c, const char *name)
{
    size_t mark = c->plen;
    path_append(c, c->plen ? ".%s" : "%s", name);
    return mark;
}

static size_t path_index(struct ctx *c, size_t i)
{
    size_t mark = c->plen;
    path_append(c, "[%zu]", i);
    return mark;
}

static void path_restore(struct ctx *c, size_t mark)
{
    c->plen = mark;
    c->path[mark] = '\0';
}

static int error_at(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records the error at the current path and returns CN_EINVAL. */
static int error_at(struct ctx *c, const char *fmt, ...)
{
    va_list ap;
    if (c->err == NULL)
        return CN_EINVAL;
    snprintf(c->err->field, sizeof c->err->field, "%s", c->path);
    va_start(ap, fmt);
    vsnprintf(c->err->message, sizeof c->err->message, fmt, ap);
    va_end(ap);
    return CN_EINVAL;
}

/* What a JSON value is, for "got ..." in messages. */
static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "an unknown value";
}

static const char *type_name(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32: return "int32";
    case PROTOBUF_C_TYPE_SINT32: return "sint32";
    case PROTOBUF_C_TYPE_SFIXED32: return "sfixed32";
    case PROTOBUF_C_TYPE_INT64: return "int64";
    case PROTOBUF_C_TYPE_SINT64: return "sint64";
    case PROTOBUF_C_TYPE_SFIXED64: return "sfixed64";
    case PROTOBUF_C_TYPE_UINT32: return "uint32";
    case PROTOBUF_C_TYPE_FIXED32: return "fixed32";
    case PROTOBUF_C_TYPE_UINT64: return "uint64";
    case PROTOBUF_C_TYPE_FIXED64: return "fixed64";
    case PROTOBUF_C_TYPE_FLOAT: return "float";
    case PROTOBUF_C_TYPE_DOUBLE: return "double";
    case PROTOBUF_C_TYPE_BOOL: return "bool";
    case PROTOBUF_C_TYPE_ENUM: return "enum";
    case PROTOBUF_C_TYPE_STRING: return "string";
    case PROTOBUF_C_TYPE_BYTES: return "bytes";
    case PROTOBUF_C_TYPE_MESSAGE: return "message";
    }
    return "unknown";
}

/* ---- descriptors ---- */

/* Bytes one value of type t takes in a repeated field's array. */
static size_t value_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM: return sizeof(int32_t);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return sizeof(int64_t);
    case PROTOBUF_C_TYPE_FLOAT: return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
    }
    return 0;
}

static bool is_int_type(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return true;
    default: return false;
    }
}

static bool is_64bit(ProtobufCType t)
{
    return t == PROTOBUF_C_TYPE_INT64 || t == PROTOBUF_C_TYPE_SINT64 ||
           t == PROTOBUF_C_TYPE_SFIXED64 || t == PROTOBUF_C_TYPE_UINT64 ||
           t == PROTOBUF_C_TYPE_FIXED64;
}

static void *member_at(void *msg, unsigned offset) { return (char *)msg + offset; }

static const void *cmember_at(const void *msg, unsigned offset)
{
    return (const char *)msg + offset;
}

/* True if name equals protoc's map entry name for field (CamelCase of the field name
 * plus "Entry": "counts" -> "CountsEntry", "by_user" -> "ByUserEntry"). */
static bool is_entry_name(const char *name, const char *field)
{
    bool cap = true;
    for (; *field; field++) {
        if (*field == '_') {
            cap = true;
            continue;
        }
        char want = *field;
        if (cap && want >= 'a' && want <= 'z')
            want = (char)(want - 'a' + 'A');
        cap = false;
        if (*name++ != want)
            return false;
    }
    return strcmp(name, "Entry") == 0;
}

/* protobuf-c does not keep the map_entry option, so a map is recognised by the shape
 * protoc gives it: a repeated field of a message nested in the parent, named after the
 * field, with exactly key = 1 and value = 2. */
static bool is_map(const ProtobufCMessageDescriptor *parent, const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return false;
    const ProtobufCMessageDescriptor *e = f->descriptor;
    if (e == NULL || e->n_fields != 2 || !is_entry_name(e->short_name, f->name))
        return false;
    size_t plen = strlen(parent->name);
    if (strncmp(e->name, parent->name, plen) != 0 || e->name[plen] != '.' ||
        strcmp(e->name + plen + 1, e->short_name) != 0)
        return false;
    const ProtobufCFieldDescriptor *k = &e->fields[0], *v = &e->fields[1];
    if (k->id != 1 || strcmp(k->name, "key") != 0 || v->id != 2 || strcmp(v->name, "value") != 0)
        return false;
    if (k->label == PROTOBUF_C_LABEL_REPEATED || v->label == PROTOBUF_C_LABEL_REPEATED)
        return false;
    return k->type == PROTOBUF_C_TYPE_STRING || k->type == PROTOBUF_C_TYPE_BOOL ||
           is_int_type(k->type);
}

/* Records that an optional proto2 field is present; strings and messages have no flag
 * (their pointer says it), and a oneof's case is set by the caller. */
static void mark_present(const ProtobufCFieldDescriptor *f, void *msg)
{
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
        f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
        *(protobuf_c_boolean *)member_at(msg, f->quantifier_offset) = 1;
}

/* ---- enums ---- */

/* Length of the UPPER_SNAKE form of the enum's type name plus '_' that value starts
 * with ("JobStatus" strips "JOB_STATUS_" from "JOB_STATUS_PENDING"), or 0 if value does
 * not start with it or nothing would remain. */
static size_t enum_prefix(const char *type, const char *value)
{
    size_t j = 0;
    for (size_t i = 0; type[i]; i++) {
        char ch = type[i];
        bool upper = ch >= 'A' && ch <= 'Z';
        if (upper && i > 0) {
            char prev = type[i - 1], next = type[i + 1];
            bool after_lower = (prev >= 'a' && prev <= 'z') || (prev >= '0' && prev <= '9');
            bool ends_acronym = prev >= 'A' && prev <= 'Z' && next >= 'a' && next <= 'z';
            if (after_lower || ends_acronym) {
                if (value[j] != '_')
                    return 0;
                j++;
            }
        }
        char want = ch >= 'a' && ch <= 'z' ? (char)(ch - 'a' + 'A') : ch;
        if (value[j] != want)
            return 0;
        j++;
    }
    if (value[j] != '_' || value[j + 1] == '\0')
        return 0;
    return j + 1;
}

/* The JSON name of an enum value is the rest of its .proto name after the prefix,
 * lowercased; this compares it to s (n bytes) without building it. */
static bool enum_short_eq(const ProtobufCEnumDescriptor *ed, const char *value, const char *s,
                          size_t n)
{
    const char *rest = value + enum_prefix(ed->short_name, value);
    size_t i = 0;
    for (; rest[i] && i < n; i++) {
        char ch = rest[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (ch != s[i])
            return false;
    }
    return rest[i] == '\0' && i == n;
}

static const ProtobufCEnumValue *enum_by_name(const ProtobufCEnumDescriptor *ed, const char *s,
                                              size_t n)
{
    for (unsigned i = 0; i < ed->n_values; i++) {
        const ProtobufCEnumValue *v = &ed->values[i];
        if ((strlen(v->name) == n && memcmp(v->name, s, n) == 0) ||
            enum_short_eq(ed, v->name, s, n))
            return &ed->values[i];
    }
    return NULL;
}

static void put_enum_short(struct cn_buf *out, const ProtobufCEnumDescriptor *ed,
                           const char *value)
{
    for (const char *p = value + enum_prefix(ed->short_name, value); *p; p++)
        cn_buf_putc(out, *p >= 'A' && *p <= 'Z' ? (char)(*p - 'A' + 'a') : *p);
}

/* Fails naming the enum and its accepted names, so the client can fix the value. */
static int fail_enum(struct ctx *c, const ProtobufCEnumDescriptor *ed, const char *what)
{
    struct cn_buf names = {0};
    for (unsigned i = 0; i < ed->n_values; i++) {
        if (i)
            cn_buf_puts(&names, ", ");
        put_enum_short(&names, ed, ed->values[i].name);
    }
    int rc = error_at(c, "unknown value %s for enum %s; expected one of: %s", what, ed->name,
                  names.data ? names.data : "");
    cn_buf_free(&names);
    return rc;
}

static int enum_from_number(struct ctx *c, const ProtobufCEnumDescriptor *ed, struct num n,
                            int32_t *out)
{
    char what[32];
    if (n.mag > (n.neg ? (uint64_t)INT32_MAX + 1 : (uint64_t)INT32_MAX) ||
        protobuf_c_enum_descriptor_get_value(
            ed, n.neg ? (int)(-(int64_t)n.mag) : (int)n.mag) == NULL) {
        snprintf(what, sizeof what, "%s%" PRIu64, n.neg ? "-" : "", n.mag);
        return fail_enum(c, ed, what);
    }
    *out = n.neg ? (int32_t)(-(int64_t)n.mag) : (int32_t)n.mag;
    return CN_OK;
}

static int enum_from_name(struct ctx *c, const ProtobufCEnumDescriptor *ed, const char *s,
                          size_t n, int32_t *out)
{
    const ProtobufCEnumValue *v = enum_by_name(ed, s, n);
    if (v == NULL) {
        char what[80];
        snprintf(what, sizeof what, "\"%.*s%s\"", n > 64 ? 64 : (int)n, s, n > 64 ? "..." : "");
        return fail_enum(c, ed, what);
    }
    *out = v->value;
    return CN_OK;
}

/* ---- integers ---- */

/* Parses an optional '-' and decimal digits (all n bytes). Returns 0, -1 for bad syntax
 * or -2 when the magnitude does not fit 64 bits. With canonical, leading zeros and "-0"
 * are refused, so one number has one spelling (needed for map keys). */
static int parse_dec(const char *s, size_t n, bool canonical, struct num *out)
{
    size_t i = 0;
    out->neg = false;
    out->mag = 0;
    if (i < n && s[i] == '-') {
        out->neg = true;
        i++;
    }
    if (i == n)
        return -1;
    if (canonical && s[i] == '0' && (n - i > 1 || out->neg))
        return -1;
    bool overflow = false;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (out->mag > (UINT64_MAX - d) / 10)
            overflow = true;
        else
            out->mag = out->mag * 10 + d;
    }
    return overflow ? -2 : 0;
}

static int fail_range(struct ctx *c, ProtobufCType t)
{
    const char *range = "";
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: range = "-2147483648 to 2147483647"; break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: range = "0 to 4294967295"; break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: range = "0 to 18446744073709551615"; break;
    default: range = "-9223372036854775808 to 9223372036854775807"; break;
    }
    return error_at(c, "integer out of range for %s (%s)", type_name(t), range);
}

/* Fits n to integer type t and stores it in *out. */
static int num_store(struct ctx *c, ProtobufCType t, struct num n, union scalar *out)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (n.mag > (n.neg ? (uint64_t)INT32_MAX + 1 : (uint64_t)INT32_MAX))
            return fail_range(c, t);
        out->i32 = n.neg ? (int32_t)(-(int64_t)n.mag) : (int32_t)n.mag;
        return CN_OK;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if ((n.neg && n.mag) || n.mag > UINT32_MAX)
            return fail_range(c, t);
        out->u32 = (uint32_t)n.mag;
        return CN_OK;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (n.mag > (n.neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX))
            return fail_range(c, t);
        if (n.neg)
            out->i64 = n.mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)n.mag;
        else
            out->i64 = (int64_t)n.mag;
        return CN_OK;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (n.neg && n.mag)
            return fail_range(c, t);
        out->u64 = n.mag;
        return CN_OK;
    default:
        return error_at(c, "internal error: %s is not an integer type", type_name(t));
    }
}

/* Reads an integer from JSON: a number (an integral real like 1e3 included) or, for
 * 64-bit types, a decimal string, since JavaScript numbers cannot hold them exactly. */
static int json_num(struct ctx *c, ProtobufCType t, const json_t *v, struct num *out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        out->neg = i < 0;
        out->mag = i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;
        return CN_OK;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d))
            return error_at(c, "expected an integer, got %.17g", d);
        if (fabs(d) >= 18446744073709551616.0)
            return fail_range(c, t);
        out->neg = d < 0;
        out->mag = (uint64_t)fabs(d);
        return CN_OK;
    }
    if (json_is_string(v) && is_64bit(t)) {
        int rc = parse_dec(json_string_value(v), json_string_length(v), false, out);
        if (rc == -2)
            return fail_range(c, t);
        if (rc != 0)
            return error_at(c, "expected an integer or a string of decimal digits, got \"%.64s\"",
                        json_string_value(v));
        return CN_OK;
    }
    return error_at(c, "expected an integer, got %s", json_kind(v));
}

/* ---- floating point ---- */

static bool special_float(const char *s, size_t n, double *out)
{
    if (n == 3 && memcmp(s, "NaN", 3) == 0)
        *out = NAN;
    else if (n == 8 && memcmp(s, "Infinity", 8) == 0)
        *out = INFINITY;
    else if (n == 9 && memcmp(s, "-Infinity", 9) == 0)
        *out = -INFINITY;
    else
        return false;
    return true;
}

/* Stores d as type t, refusing finite doubles too large for a float. */
static int real_store(struct ctx *c, ProtobufCType t, double d, union scalar *out)
{
    if (t == PROTOBUF_C_TYPE_DOUBLE) {
        out->d = d;
        return CN_OK;
    }
    if (isfinite(d) && fabs(d) >= FLOAT_LIMIT)
        return error_at(c, "number out of range for float (magnitude at most 3.4028235e+38)");
    out->f = (float)d;
    return CN_OK;
}

/* True if s (n bytes) is a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?.
 * strtod alone would also take hex, "inf" and leading spaces. */
static bool is_json_number(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0')
        i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9')
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    else
        return false;
    if (i < n && s[i] == '.') {
        size_t start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start)
            return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start)
            return false;
    }
    return i == n;
}

/* ---- base64 ---- */

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+' || ch == '-')
        return 62;
    if (ch == '/' || ch == '_')
        return 63;
    return -1;
}

/* Decodes standard or url-safe base64, padded or not, into a buffer from the allocator.
 * Refuses stray characters, wrong padding and set trailing bits, so every accepted text
 * is the one encoding of its bytes (up to alphabet and padding). */
static int b64_decode(struct ctx *c, const char *s, size_t n, ProtobufCBinaryData *out)
{
    size_t pad = 0;
    while (pad < n && s[n - 1 - pad] == '=')
        pad++;
    size_t len = n - pad;
    for (size_t i = 0; i < len; i++)
        if (b64_value(s[i]) < 0)
            return error_at(c, "invalid base64: unexpected character at offset %zu", i);
    if (len % 4 == 1)
        return error_at(c, "invalid base64: truncated input");
    if (pad && (4 - len % 4) % 4 != pad)
        return error_at(c, "invalid base64: wrong padding (with '=' the length must be a "
                           "multiple of 4)");
    size_t outlen = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    uint8_t *p = palloc(c, outlen);
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 6) | (uint32_t)b64_value(s[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            p[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
        pfree(c, p);
        return error_at(c, "invalid base64: the last character has bits set past the data");
    }
    out->len = outlen;
    out->data = p;
    return CN_OK;
}

static void b64_encode(struct cn_buf *out, const uint8_t *p, size_t n)
{
    cn_buf_reserve(out, (n + 2) / 3 * 4 + 2);
    cn_buf_putc(out, '"');
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        char q[4] = {b64_std[v >> 18], b64_std[(v >> 12) & 63],
                     i + 1 < n ? b64_std[(v >> 6) & 63] : '=', i + 2 < n ? b64_std[v & 63] : '='};
        cn_buf_append(out, q, 4);
    }
    cn_buf_putc(out, '"');
}

/* ---- UTF-8 (for text that did not pass through jansson) ---- */

static bool utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned ch = s[i];
        size_t len;
        unsigned min;
        if (ch == 0)
            return false;
        if (ch < 0x80) {
            i++;
            continue;
        }
        if ((ch & 0xe0) == 0xc0) { len = 2; min = 0x80; ch &= 0x1f; }
        else if ((ch & 0xf0) == 0xe0) { len = 3; min = 0x800; ch &= 0x0f; }
        else if ((ch & 0xf8) == 0xf0) { len = 4; min = 0x10000; ch &= 0x07; }
        else return false;
        if (len > n - i)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            ch = (ch << 6) | (s[i + k] & 0x3f);
        }
        if (ch < min || ch > 0x10ffff || (ch >= 0xd800 && ch <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

static char *pstrndup(struct ctx *c, const char *s, size_t n)
{
    char *p = palloc(c, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* ---- JSON -> message ---- */

static int parse_object(struct ctx *c, const ProtobufCMessageDescriptor *desc, json_t *obj,
                        ProtobufCMessage *msg, int depth);

/* Reads one value of field f's type from v into member (one element for repeated
 * fields). For a message, the new message is stored in *member before its fields are
 * read, so a failure inside it is freed with the rest of the tree. *count, if given, is
 * bumped as soon as member holds something to free. */
static int parse_value(struct ctx *c, const ProtobufCFieldDescriptor *f, json_t *v, void *member,
                       size_t *count, int depth)
{
    union scalar val;
    struct num n;
    double d;
    int rc;

    memset(&val, 0, sizeof val);
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if ((rc = json_num(c, f->type, v, &n)) != 0 || (rc = num_store(c, f->type, n, &val)) != 0)
            return rc;
        break;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        if (json_is_number(v))
            d = json_number_value(v);
        else if (json_is_string(v) && special_float(json_string_value(v), json_string_length(v), &d))
            ;
        else if (json_is_string(v))
            return error_at(c, "expected a number, got the string \"%.64s\" (the only strings "
                           "accepted are \"NaN\", \"Infinity\" and \"-Infinity\")",
                        json_string_value(v));
        else
            return error_at(c, "expected a number, got %s", json_kind(v));
        if ((rc = real_store(c, f->type, d, &val)) != 0)
            return rc;
        break;
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v))
            return error_at(c, "expected true or false, got %s", json_kind(v));
        val.b = json_is_true(v);
        break;
    case PROTOBUF_C_TYPE_ENUM:
        if (json_is_string(v))
            rc = enum_from_name(c, f->descriptor, json_string_value(v), json_string_length(v),
                                &val.i32);
        else if (json_is_integer(v) && json_num(c, f->type, v, &n) == 0)
            rc = enum_from_number(c, f->descriptor, n, &val.i32);
        else
            return error_at(c, "expected an enum value name (a string), got %s", json_kind(v));
        if (rc != 0)
            return rc;
        break;
    case PROTOBUF_C_TYPE_STRING:
        if (!json_is_string(v))
            return error_at(c, "expected a string, got %s", json_kind(v));
        val.s = pstrndup(c, json_string_value(v), json_string_length(v));
        break;
    case PROTOBUF_C_TYPE_BYTES:
        if (!json_is_string(v))
            return error_at(c, "expected a base64 string, got %s", json_kind(v));
        if ((rc = b64_decode(c, json_string_value(v), json_string_length(v), &val.by)) != 0)
            return rc;
        break;
    case PROTOBUF_C_TYPE_MESSAGE: {
        if (!json_is_object(v))
            return error_at(c, "expected an object, got %s", json_kind(v));
        ProtobufCMessage *sub = message_new(c, f->descriptor);
        *(ProtobufCMessage **)member = sub;
        if (count)
            (*count)++;
        return parse_object(c, f->descriptor, v, sub, depth + 1);
    }
    }
    memcpy(member, &val, value_size(f->type));
    if (count)
        (*count)++;
    return CN_OK;
}

static int parse_array(struct ctx *c, const ProtobufCFieldDescriptor *f, json_t *arr,
                       ProtobufCMessage *msg, int depth)
{
    if (!json_is_array(arr))
        return error_at(c, "expected an array, got %s", json_kind(arr));
    if (depth + 1 > MAX_DEPTH)
        return error_at(c, "nesting deeper than %d levels", MAX_DEPTH);
    size_t n = json_array_size(arr), size = value_size(f->type);
    if (n == 0)
        return CN_OK;
    /* n came from a parsed document, so n * size fits: each element took bytes to say. */
    char *items = palloc(c, n * size);
    size_t *count = member_at(msg, f->quantifier_offset);
    *(void **)member_at(msg, f->offset) = items;
    *count = 0;
    for (size_t i = 0; i < n; i++) {
        size_t mark = path_index(c, i);
        int rc = parse_value(c, f, json_array_get(arr, i), items + i * size, count, depth + 1);
        if (rc != 0)
            return rc;
        path_restore(c, mark);
    }
    return CN_OK;
}

/* Parses text (n bytes, not NUL-terminated) as one value of scalar field f into *out:
 * path and query parameters, and map keys (with canonical integers). */
static int parse_text(struct ctx *c, const ProtobufCFieldDescriptor *f, const char *s, size_t n,
                      bool canonical, union scalar *out)
{
    struct num num;
    double d;
    int rc;

    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        rc = parse_dec(s, n, canonical, &num);
        if (rc == -2)
            return fail_range(c, f->type);
        if (rc != 0)
            return error_at(c, "expected a%s decimal integer, got \"%.*s\"",
                        canonical ? " canonical" : "", n > 64 ? 64 : (int)n, s);
        return num_store(c, f->type, num, out);
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        if (!special_float(s, n, &d)) {
            if (!is_json_number(s, n))
                return error_at(c, "expected a number, got \"%.*s\"", n > 64 ? 64 : (int)n, s);
            char *copy = cn_strndup(s, n);
            d = strtod(copy, NULL);
            free(copy);
            if (isinf(d))
                return error_at(c, "number out of range for %s", type_name(f->type));
        }
        return real_store(c, f->type, d, out);
    case PROTOBUF_C_TYPE_BOOL:
        if (n == 4 && memcmp(s, "true", 4) == 0)
            out->b = 1;
        else if (n == 5 && memcmp(s, "false", 5) == 0)
            out->b = 0;
        else
            return error_at(c, "expected true or false, got \"%.*s\"", n > 64 ? 64 : (int)n, s);
        return CN_OK;
    case PROTOBUF_C_TYPE_ENUM:
        if (parse_dec(s, n, false, &num) == 0)
            return enum_from_number(c, f->descriptor, num, &out->i32);
        return enum_from_name(c, f->descriptor, s, n, &out->i32);
    case PROTOBUF_C_TYPE_STRING:
        if (!utf8_valid((const unsigned char *)s, n))
            return error_at(c, "expected text in UTF-8 without NUL characters");
        out->s = pstrndup(c, s, n);
        return CN_OK;
    case PROTOBUF_C_TYPE_BYTES:
        return b64_decode(c, s, n, &out->by);
    case PROTOBUF_C_TYPE_MESSAGE:
        break;
    }
    return error_at(c, "a message cannot be given as text");
}

/* A map is a JSON object; each member becomes one entry message, stored (and counted)
 * before its key and value are read so a failure frees it. */
static int parse_map(struct ctx *c, const ProtobufCFieldDescriptor *f, json_t *obj,
                     ProtobufCMessage *msg, int depth)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    const char *key;
    json_t *val;

    if (!json_is_object(obj))
        return error_at(c, "expected an object (a map), got %s", json_kind(obj));
    if (depth + 1 > MAX_DEPTH)
        return error_at(c, "nesting deeper than %d levels", MAX_DEPTH);
    size_t n = json_object_size(obj);
    if (n == 0)
        return CN_OK;
    ProtobufCMessage **items = palloc(c, n * sizeof *items);
    size_t *count = member_at(msg, f->quantifier_offset);
    *(void **)member_at(msg, f->offset) = items;
    *count = 0;
    json_object_foreach(obj, key, val) {
        size_t mark = path_field(c, key);
        ProtobufCMessage *entry = message_new(c, ed);
        union scalar k;
        int rc;

        items[(*count)++] = entry;
        memset(&k, 0, sizeof k);
        if ((rc = parse_text(c, kf, key, strlen(key), true, &k)) != 0) {
            char why[sizeof c->err->message];
            snprintf(why, sizeof why, "%s", c->err ? c->err->message : "");
            return error_at(c, "invalid map key: %s", why);
        }
        memcpy(member_at(entry, kf->offset), &k, value_size(kf->type));
        mark_present(kf, entry);
        if (!json_is_null(val)) {
            if ((rc = parse_value(c, vf, val, member_at(entry, vf->offset), NULL, depth + 1)) != 0)
                return rc;
            mark_present(vf, entry);
        }
        path_restore(c, mark);
    }
    return CN_OK;
}

static int parse_field(struct ctx *c, const ProtobufCMessageDescriptor *desc,
                       const ProtobufCFieldDescriptor *f, json_t *v, ProtobufCMessage *msg,
                       int depth)
{
    if (json_is_null(v))
        return CN_OK;
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return is_map(desc, f) ? parse_map(c, f, v, msg, depth) : parse_array(c, f, v, msg, depth);
    void *member = member_at(msg, f->offset);
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *oneof_case = member_at(msg, f->quantifier_offset);
        if (*oneof_case != 0 && *oneof_case != f->id) {
            const ProtobufCFieldDescriptor *other =
                protobuf_c_message_descriptor_get_field(desc, *oneof_case);
            return error_at(c, "conflicts with \"%s\": both are in one oneof; set only one",
                        other ? other->name : "another field");
        }
        /* Select the member before reading it: free_unpacked frees only the selected
         * member, and a zeroed one is safe to free if the read fails. */
        memset(member, 0, value_size(f->type));
        *oneof_case = f->id;
    }
    int rc = parse_value(c, f, v, member, NULL, depth);
    if (rc == 0)
        mark_present(f, msg);
    return rc;
}

static int parse_object(struct ctx *c, const ProtobufCMessageDescriptor *desc, json_t *obj,
                        ProtobufCMessage *msg, int depth)
{
    const char *key;
    json_t *val;

    if (depth > MAX_DEPTH)
        return error_at(c, "nesting deeper than %d levels", MAX_DEPTH);
    json_object_foreach(obj, key, val) {
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(desc, key);
        size_t mark = path_field(c, key);
        if (f == NULL)
            return error_at(c, "unknown field");
        int rc = parse_field(c, desc, f, val, msg, depth);
        if (rc != 0)
            return rc;
        path_restore(c, mark);
    }
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        if (f->label != PROTOBUF_C_LABEL_REQUIRED)
            continue;
        json_t *v = json_object_get(obj, f->name);
        if (v == NULL || json_is_null(v)) {
            path_field(c, f->name);
            return error_at(c, "missing required field");
        }
    }
    return CN_OK;
}

static int fail_syntax(struct ctx *c, const json_error_t *je)
{
    if (json_error_code(je) == json_error_numeric_overflow)
        return error_at(c, "invalid JSON at line %d column %d: number too large (write integers "
                       "beyond the int64 range, such as large uint64 values, as strings)",
                    je->line, je->column);
    return error_at(c, "invalid JSON at line %d column %d: %s", je->line, je->column, je->text);
}

int cn_json_to_proto(const char *json, size_t len, const ProtobufCMessageDescriptor *desc,
                     ProtobufCAllocator *alloc, ProtobufCMessage **out,
                     struct cn_json_error *err)
{
    struct ctx c = {.alloc = alloc ? alloc : &sys_allocator, .err = err};
    json_error_t je;
    json_t *root = NULL;
    ProtobufCMessage *msg = NULL;
    int rc = CN_OK;

    *out = NULL;
    if (err)
        err->field[0] = err->message[0] = '\0';
    if (len == 0) {
        /* An empty body is "{}", required fields still checked. */
        root = json_object();
        if (root == NULL)
            abort();
    } else {
        /* JSON_DECODE_ANY so a top-level scalar gets a clear message below rather than
         * jansson's "'[' or '{' expected". */
        root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
        if (root == NULL) {
            rc = fail_syntax(&c, &je);
            goto out;
        }
        if (!json_is_object(root)) {
            rc = error_at(&c, "expected a JSON object, got %s", json_kind(root));
            goto out;
        }
    }
    msg = message_new(&c, desc);
    if ((rc = parse_object(&c, desc, root, msg, 1)) != 0)
        goto out;
    *out = msg;
    msg = NULL;
out:
    if (msg != NULL)
        protobuf_c_message_free_unpacked(msg, c.alloc);
    json_decref(root);
    return rc;
}

/* ---- message -> JSON ---- */

static void emit_message(const ProtobufCMessage *msg, struct cn_buf *out);

static void emit_double(struct cn_buf *out, double d, bool is_float)
{
    if (isnan(d))
        cn_buf_puts(out, "\"NaN\"");
    else if (isinf(d))
        cn_buf_puts(out, d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    else if (d == 0 && signbit(d))
        cn_buf_puts(out, "-0.0"); /* "-0" would read back as the integer 0 */
    else
        cn_buf_printf(out, is_float ? "%.9g" : "%.17g", d);
}

/* Appends the value of field f stored at member (one element for repeated fields). */
static void emit_value(const ProtobufCFieldDescriptor *f, const void *member, struct cn_buf *out)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        cn_buf_printf(out, "%" PRId32, *(const int32_t *)member);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        cn_buf_printf(out, "%" PRIu32, *(const uint32_t *)member);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        cn_buf_printf(out, "%" PRId64, *(const int64_t *)member);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        uint64_t u = *(const uint64_t *)member;
        /* Above INT64_MAX no JSON parser we know keeps it exact as a number. */
        cn_buf_printf(out, u > INT64_MAX ? "\"%" PRIu64 "\"" : "%" PRIu64, u);
        break;
    }
    case PROTOBUF_C_TYPE_FLOAT:
        emit_double(out, *(const float *)member, true);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        emit_double(out, *(const double *)member, false);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        cn_buf_puts(out, *(const protobuf_c_boolean *)member ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        int32_t n = *(const int32_t *)member;
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(ed, n);
        if (v == NULL) {
            cn_buf_printf(out, "%" PRId32, n);
        } else {
            cn_buf_putc(out, '"');
            put_enum_short(out, ed, v->name);
            cn_buf_putc(out, '"');
        }
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)member;
        if (s == NULL) /* an unset proto2 string: its default, or "" */
            s = f->default_value ? f->default_value : "";
        cn_buf_json_str(out, s, strlen(s));
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = member;
        b64_encode(out, b->data, b->data ? b->len : 0);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)member;
        if (m == NULL)
            cn_buf_puts(out, "null");
        else
            emit_message(m, out);
        break;
    }
    }
}

/* Map keys are JSON strings whatever the key type. */
static void emit_key(const ProtobufCFieldDescriptor *kf, const void *member, struct cn_buf *out)
{
    if (kf->type == PROTOBUF_C_TYPE_STRING) {
        emit_value(kf, member, out);
    } else if (kf->type == PROTOBUF_C_TYPE_BOOL) {
        cn_buf_puts(out, *(const protobuf_c_boolean *)member ? "\"true\"" : "\"false\"");
    } else {
        struct cn_buf tmp = {0};
        emit_value(kf, member, &tmp);
        if (tmp.data[0] == '"') /* uint64 above INT64_MAX is already quoted */
            cn_buf_append(out, tmp.data, tmp.len);
        else
            cn_buf_json_str(out, tmp.data, tmp.len);
        cn_buf_free(&tmp);
    }
}

static void emit_map(const ProtobufCFieldDescriptor *f, size_t n, ProtobufCMessage *const *items,
                     struct cn_buf *out)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    bool first = true;

    cn_buf_putc(out, '{');
    for (size_t i = 0; i < n; i++) {
        if (items[i] == NULL)
            continue;
        if (!first)
            cn_buf_putc(out, ',');
        first = false;
        emit_key(kf, cmember_at(items[i], kf->offset), out);
        cn_buf_putc(out, ':');
        emit_value(vf, cmember_at(items[i], vf->offset), out);
    }
    cn_buf_putc(out, '}');
}

static void emit_message(const ProtobufCMessage *msg, struct cn_buf *out)
{
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    bool first = true;

    cn_buf_putc(out, '{');
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)cmember_at(msg, f->quantifier_offset) != f->id)
            continue;
        if (!first)
            cn_buf_putc(out, ',');
        first = false;
        cn_buf_json_str(out, f->name, strlen(f->name));
        cn_buf_putc(out, ':');
        if (f->label != PROTOBUF_C_LABEL_REPEATED) {
            emit_value(f, cmember_at(msg, f->offset), out);
            continue;
        }
        size_t n = *(const size_t *)cmember_at(msg, f->quantifier_offset);
        const char *items = *(char *const *)cmember_at(msg, f->offset);
        if (items == NULL)
            n = 0;
        if (is_map(desc, f)) {
            emit_map(f, n, (ProtobufCMessage *const *)items, out);
            continue;
        }
        size_t size = value_size(f->type);
        cn_buf_putc(out, '[');
        for (size_t k = 0; k < n; k++) {
            if (k)
                cn_buf_putc(out, ',');
            emit_value(f, items + k * size, out);
        }
        cn_buf_putc(out, ']');
    }
    cn_buf_putc(out, '}');
}

void cn_json_from_proto(const ProtobufCMessage *msg, struct cn_buf *out)
{
    if (msg == NULL)
        cn_buf_puts(out, "null");
    else
        emit_message(msg, out);
}

/* ---- single fields from text ---- */

const ProtobufCFieldDescriptor *cn_json_field(const ProtobufCMessageDescriptor *desc,
                                              const char *name)
{
    return protobuf_c_message_descriptor_get_field_by_name(desc, name);
}

/* Frees what a singular string or bytes member points to, unless it is the static
 * default (the same test protobuf_c_message_free_unpacked makes). The allocator must be
 * the one the message was built with, as for free_unpacked. */
static void free_member(struct ctx *c, const ProtobufCFieldDescriptor *f, void *member)
{
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        char *s = *(char **)member;
        if (s != f->default_value)
            pfree(c, s);
    } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
        const ProtobufCBinaryData *def = f->default_value;
        void *data = ((ProtobufCBinaryData *)member)->data;
        if (def == NULL || def->data != data)
            pfree(c, data);
    }
}

int cn_json_set_field(ProtobufCMessage *msg, const char *name, const char *value, size_t len,
                      ProtobufCAllocator *alloc, struct cn_json_error *err)
{
    struct ctx c = {.alloc = alloc ? alloc : &sys_allocator, .err = err};
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(desc, name);
    union scalar val;
    int rc;

    if (err)
        err->field[0] = err->message[0] = '\0';
    if (value == NULL) { /* an empty parameter may come without a buffer */
        value = "";
        len = 0;
    }
    path_field(&c, name);
    if (f == NULL) {
        error_at(&c, "unknown field");
        return CN_ENOTFOUND;
    }
    if (f->type == PROTOBUF_C_TYPE_MESSAGE)
        return error_at(&c, "this field holds %s and cannot be set from a path or query parameter",
                    is_map(desc, f) ? "a map" : "a message");
    uint32_t *oneof_case = NULL;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        oneof_case = member_at(msg, f->quantifier_offset);
        if (*oneof_case != 0 && *oneof_case != f->id) {
            const ProtobufCFieldDescriptor *other =
                protobuf_c_message_descriptor_get_field(desc, *oneof_case);
            return error_at(&c, "conflicts with \"%s\": both are in one oneof; set only one",
                        other ? other->name : "another field");
        }
    }
    memset(&val, 0, sizeof val);
    if ((rc = parse_text(&c, f, value, len, false, &val)) != 0)
        return rc;

    size_t size = value_size(f->type);
    void *member = member_at(msg, f->offset);
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        size_t *count = member_at(msg, f->quantifier_offset);
        char *old = *(char **)member;
        char *items = palloc(&c, (*count + 1) * size);
        if (*count)
            memcpy(items, old, *count * size);
        memcpy(items + *count * size, &val, size);
        *(char **)member = items;
        (*count)++;
        pfree(&c, old);
        return CN_OK;
    }
    /* The old value goes only once the new one is in hand; an unselected oneof member
     * holds whatever its union siblings left, so there is nothing of it to free. */
    if (oneof_case == NULL || *oneof_case == f->id)
        free_member(&c, f, member);
    if (oneof_case != NULL)
        *oneof_case = f->id;
    memcpy(member, &val, size);
    mark_present(f, msg);
    return CN_OK;
}
