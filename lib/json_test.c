/* json_test.c — JSON <-> protobuf transcoding against the test messages in
 * tests/proto/cairn/test/ (proto3 AllTypes/Inner, proto2 Legacy).
 *
 * Every accepted document goes JSON -> message -> wire -> message -> JSON, with the
 * default allocator and with an arena, and both JSON texts must equal the expectation;
 * every refused document must name the field and say what is wrong. The cases are
 * tables: to cover a new input add a row to good_cases, bad_cases or set_cases.
 * Run it once under valgrind --leak-check=full: the default-allocator paths must free
 * everything, error paths included.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "json.c"
#include "arena.h"
#include "cairn/test/transcode.pb-c.h"
#include "cairn/test/transcode2.pb-c.h"

#define ALL (&cairn__test__all_types__descriptor)
#define INNER (&cairn__test__inner__descriptor)
#define LEGACY (&cairn__test__legacy__descriptor)

/* An empty AllTypes as emitted: every field, defaults included, in .proto order. */
#define INNER_EMPTY "{\"count\":0,\"label\":\"\",\"child\":null}"
#define ALL_EMPTY                                                                              \
    "{\"i32\":0,\"si32\":0,\"sf32\":0,\"i64\":0,\"si64\":0,\"sf64\":0,\"u32\":0,\"f32\":0,"    \
    "\"u64\":0,\"f64\":0,\"fl\":0,\"db\":0,\"b\":false,\"s\":\"\",\"by\":\"\","                \
    "\"colour\":\"unspecified\",\"inner\":null,\"r_i32\":[],\"r_si32\":[],\"r_sf32\":[],"      \
    "\"r_i64\":[],\"r_si64\":[],\"r_sf64\":[],\"r_u32\":[],\"r_f32\":[],\"r_u64\":[],"         \
    "\"r_f64\":[],\"r_fl\":[],\"r_db\":[],\"r_b\":[],\"r_s\":[],\"r_by\":[],\"r_colour\":[],"  \
    "\"items\":[],\"counts\":{},\"names\":{}}"
#define LEGACY_DEFAULTS                                                                        \
    "\"name\":\"anon\",\"big\":-5,\"ratio\":0.5,\"flag\":true,\"blob\":\"eHk=\","              \
    "\"level\":\"high\",\"u\":0,\"tags\":[],\"sub\":null,\"plain\":\"\"}"

/* ---- helpers ---- */

static char *emit(const ProtobufCMessage *m)
{
    struct cn_buf b = {0};
    cn_json_from_proto(m, &b);
    return cn_buf_steal(&b, NULL);
}

/* Packs m and unpacks it again (default allocator), as a service on the other end
 * would; the caller frees the result with protobuf_c_message_free_unpacked. */
static ProtobufCMessage *wire_copy(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *wire = cn_malloc(n);
    assert_int_equal(protobuf_c_message_pack(m, wire), n);
    ProtobufCMessage *u = protobuf_c_message_unpack(m->descriptor, NULL, n, wire);
    free(wire);
    assert_non_null(u);
    return u;
}

static ProtobufCMessage *parse_ok(const ProtobufCMessageDescriptor *desc, const char *json,
                                  size_t len, ProtobufCAllocator *alloc)
{
    ProtobufCMessage *m = NULL;
    struct cn_json_error err;
    int rc = cn_json_to_proto(json, len, desc, alloc, &m, &err);
    if (rc != 0)
        fail_msg("refused %s: field \"%s\": %s", json, err.field, err.message);
    assert_non_null(m);
    return m;
}

/* Parses json with both allocators and returns its JSON after a trip over the wire,
 * having checked that the message emits the same text before and after the trip. */
static char *roundtrip_len(const ProtobufCMessageDescriptor *desc, const char *json, size_t len)
{
    ProtobufCMessage *m = parse_ok(desc, json, len, NULL);
    char *direct = emit(m);
    ProtobufCMessage *u = wire_copy(m);
    char *after = emit(u);
    assert_string_equal(direct, after);
    protobuf_c_message_free_unpacked(u, NULL);
    protobuf_c_message_free_unpacked(m, NULL);

    struct cn_arena *a = cn_arena_new(0);
    ProtobufCAllocator alloc;
    cn_arena_allocator(a, &alloc);
    m = parse_ok(desc, json, len, &alloc);
    char *arena = emit(m);
    assert_string_equal(direct, arena);
    u = wire_copy(m);
    free(after);
    after = emit(u);
    assert_string_equal(direct, after);
    protobuf_c_message_free_unpacked(u, NULL);
    cn_arena_free(a);

    free(arena);
    free(after);
    return direct;
}

static char *roundtrip(const ProtobufCMessageDescriptor *desc, const char *json)
{
    return roundtrip_len(desc, json, strlen(json));
}

/* Asserts that json (len bytes) is refused, with both allocators, naming field and
 * saying message. A message starting with '~' need only be contained in the error. */
static void expect_error_len(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                             const char *field, const char *message)
{
    for (int arena = 0; arena < 2; arena++) {
        struct cn_arena *a = arena ? cn_arena_new(0) : NULL;
        ProtobufCAllocator alloc;
        ProtobufCMessage *m = (ProtobufCMessage *)&alloc; /* must be reset to NULL */
        struct cn_json_error err;
        if (a)
            cn_arena_allocator(a, &alloc);
        int rc = cn_json_to_proto(json, len, desc, a ? &alloc : NULL, &m, &err);
        if (rc != CN_EINVAL)
            fail_msg("accepted %s (rc %d)", json, rc);
        assert_null(m);
        if (strcmp(err.field, field) != 0)
            fail_msg("%s: field \"%s\", expected \"%s\"", json, err.field, field);
        if (message[0] == '~' ? strstr(err.message, message + 1) == NULL
                              : strcmp(err.message, message) != 0)
            fail_msg("%s: message \"%s\", expected \"%s\"", json, err.message, message);
        cn_arena_free(a);
    }
}

static void expect_error(const ProtobufCMessageDescriptor *desc, const char *json,
                         const char *field, const char *message)
{
    expect_error_len(desc, json, strlen(json), field, message);
}

/* Returns a document of depth objects nested through field name ({"child":{...}}). */
static char *nested(const char *name, int depth)
{
    struct cn_buf b = {0};
    for (int i = 1; i < depth; i++)
        cn_buf_printf(&b, "{\"%s\":", name);
    cn_buf_puts(&b, "{}");
    for (int i = 1; i < depth; i++)
        cn_buf_putc(&b, '}');
    return cn_buf_steal(&b, NULL);
}

/* ---- JSON -> proto -> wire -> proto -> JSON ---- */

/* Every field set at once; the output is the canonical form of the input. */
static void test_every_type_roundtrip(void **state)
{
    (void)state;
    const char *in =
        "{\"i32\":-1,\"si32\":-2,\"sf32\":-3,\"i64\":\"-4\",\"si64\":-5,\"sf64\":\"-6\","
        "\"u32\":7,\"f32\":8,\"u64\":\"18446744073709551615\",\"f64\":10,\"fl\":1.5,"
        "\"db\":-2.25,\"b\":true,\"s\":\"snow \\u2603 \\\"q\\\"\",\"by\":\"aGk=\","
        "\"colour\":\"dark_blue\",\"inner\":{\"count\":1,\"label\":\"in\",\"child\":{\"count\":2}},"
        "\"r_i32\":[1,-1],\"r_si32\":[-2],\"r_sf32\":[3],"
        "\"r_i64\":[\"-9223372036854775808\",9223372036854775807],\"r_si64\":[-6],"
        "\"r_sf64\":[7],\"r_u32\":[4294967295],\"r_f32\":[0],"
        "\"r_u64\":[0,\"18446744073709551615\"],\"r_f64\":[1],\"r_fl\":[0.25,\"NaN\"],"
        "\"r_db\":[\"Infinity\",-0.0,\"-Infinity\"],\"r_b\":[true,false],\"r_s\":[\"a\",\"\"],"
        "\"r_by\":[\"\",\"AA==\"],\"r_colour\":[\"red\",0],"
        "\"items\":[{\"count\":5},{\"label\":\"z\"}],\"pick_inner\":{\"count\":9},"
        "\"counts\":{\"x\":1,\"y\":-2},\"names\":{\"0\":\"zero\",\"-7\":\"neg\"}}";
    const char *want =
        "{\"i32\":-1,\"si32\":-2,\"sf32\":-3,\"i64\":-4,\"si64\":-5,\"sf64\":-6,"
        "\"u32\":7,\"f32\":8,\"u64\":\"18446744073709551615\",\"f64\":10,\"fl\":1.5,"
        "\"db\":-2.25,\"b\":true,\"s\":\"snow \xe2\x98\x83 \\\"q\\\"\",\"by\":\"aGk=\","
        "\"colour\":\"dark_blue\",\"inner\":{\"count\":1,\"label\":\"in\",\"child\":"
        "{\"count\":2,\"label\":\"\",\"child\":null}},"
        "\"r_i32\":[1,-1],\"r_si32\":[-2],\"r_sf32\":[3],"
        "\"r_i64\":[-9223372036854775808,9223372036854775807],\"r_si64\":[-6],"
        "\"r_sf64\":[7],\"r_u32\":[4294967295],\"r_f32\":[0],"
        "\"r_u64\":[0,\"18446744073709551615\"],\"r_f64\":[1],\"r_fl\":[0.25,\"NaN\"],"
        "\"r_db\":[\"Infinity\",-0.0,\"-Infinity\"],\"r_b\":[true,false],\"r_s\":[\"a\",\"\"],"
        "\"r_by\":[\"\",\"AA==\"],\"r_colour\":[\"red\",\"unspecified\"],"
        "\"items\":[{\"count\":5,\"label\":\"\",\"child\":null},"
        "{\"count\":0,\"label\":\"z\",\"child\":null}],"
        "\"pick_inner\":{\"count\":9,\"label\":\"\",\"child\":null},"
        "\"counts\":{\"x\":1,\"y\":-2},\"names\":{\"0\":\"zero\",\"-7\":\"neg\"}}";
    char *out = roundtrip(ALL, in);
    assert_string_equal(out, want);
    free(out);

    /* The canonical form reads back to itself. */
    out = roundtrip(ALL, want);
    assert_string_equal(out, want);
    free(out);
}

/* One field in, the same field (as a fragment of the full output) out. */
static const struct {
    const char *in, *fragment;
} good_cases[] = {
    {"{\"i32\":-2147483648}", "\"i32\":-2147483648,"},
    {"{\"i32\":2147483647}", "\"i32\":2147483647,"},
    {"{\"i32\":1e3}", "\"i32\":1000,"},
    {"{\"i32\":-0.0}", "\"i32\":0,"},
    {"{\"si32\":-2147483648}", "\"si32\":-2147483648,"},
    {"{\"sf32\":-7}", "\"sf32\":-7,"},
    {"{\"i64\":9223372036854775807}", "\"i64\":9223372036854775807,"},
    {"{\"i64\":\"-9223372036854775808\"}", "\"i64\":-9223372036854775808,"},
    {"{\"i64\":-9223372036854775808}", "\"i64\":-9223372036854775808,"},
    {"{\"i64\":\"0042\"}", "\"i64\":42,"},
    {"{\"si64\":\"-12\"}", "\"si64\":-12,"},
    {"{\"sf64\":-3}", "\"sf64\":-3,"},
    {"{\"u32\":4294967295}", "\"u32\":4294967295,"},
    {"{\"f32\":4294967295}", "\"f32\":4294967295,"},
    {"{\"u64\":\"18446744073709551615\"}", "\"u64\":\"18446744073709551615\","},
    {"{\"u64\":9223372036854775807}", "\"u64\":9223372036854775807,"},
    {"{\"u64\":\"9223372036854775808\"}", "\"u64\":\"9223372036854775808\","},
    {"{\"u64\":1e19}", "\"u64\":\"10000000000000000000\","},
    {"{\"f64\":\"18446744073709551615\"}", "\"f64\":\"18446744073709551615\","},
    {"{\"fl\":0.1}", "\"fl\":0.100000001,"},
    {"{\"fl\":3.4028235e38}", "\"fl\":3.40282347e+38,"},
    {"{\"fl\":\"-Infinity\"}", "\"fl\":\"-Infinity\","},
    {"{\"fl\":1e-50}", "\"fl\":0,"},
    {"{\"db\":0.1}", "\"db\":0.10000000000000001,"},
    {"{\"db\":5}", "\"db\":5,"},
    {"{\"db\":1e300}", "\"db\":1.0000000000000001e+300,"},
    /* A singular -0.0 does not survive protobuf-c's wire (it skips "zero" fields); in
     * a repeated field it does, and JSON keeps it distinct from 0. */
    {"{\"r_db\":[-0.0,0]}", "\"r_db\":[-0.0,0],"},
    {"{\"db\":\"NaN\"}", "\"db\":\"NaN\","},
    {"{\"db\":\"Infinity\"}", "\"db\":\"Infinity\","},
    {"{\"b\":true}", "\"b\":true,"},
    {"{\"s\":\"tab\\tnl\\nquote\\\"bs\\\\ \\u00e9\\ud83d\\ude00\"}",
     "\"s\":\"tab\\tnl\\nquote\\\"bs\\\\ \xc3\xa9\xf0\x9f\x98\x80\","},
    {"{\"s\":\"\\u0001\"}", "\"s\":\"\\u0001\","},
    {"{\"by\":\"AAEC/w==\"}", "\"by\":\"AAEC/w==\","},
    {"{\"by\":\"AAEC/w\"}", "\"by\":\"AAEC/w==\","},
    {"{\"by\":\"AAEC_w==\"}", "\"by\":\"AAEC/w==\","},
    {"{\"by\":\"AAEC_w\"}", "\"by\":\"AAEC/w==\","},
    {"{\"by\":\"-_-_\"}", "\"by\":\"+/+/\","},
    {"{\"by\":\"Zm9vYmE=\"}", "\"by\":\"Zm9vYmE=\","},
    {"{\"by\":\"\"}", "\"by\":\"\","},
    {"{\"colour\":\"dark_blue\"}", "\"colour\":\"dark_blue\","},
    {"{\"colour\":\"COLOUR_RED\"}", "\"colour\":\"red\","},
    {"{\"colour\":2}", "\"colour\":\"dark_blue\","},
    {"{\"colour\":\"unspecified\"}", "\"colour\":\"unspecified\","},
    {"{\"inner\":{}}", "\"inner\":" INNER_EMPTY ","},
    {"{\"inner\":{\"child\":{\"child\":{\"label\":\"deep\"}}}}",
     "\"inner\":{\"count\":0,\"label\":\"\",\"child\":{\"count\":0,\"label\":\"\",\"child\":"
     "{\"count\":0,\"label\":\"deep\",\"child\":null}}},"},
    {"{\"r_sf32\":[-1,2]}", "\"r_sf32\":[-1,2],"},
    {"{\"r_si64\":[\"-5\",5]}", "\"r_si64\":[-5,5],"},
    {"{\"r_f64\":[\"18446744073709551615\",1]}", "\"r_f64\":[\"18446744073709551615\",1],"},
    {"{\"r_u32\":[]}", "\"r_u32\":[],"},
    {"{\"r_s\":[\"x\",\"y\",\"\"]}", "\"r_s\":[\"x\",\"y\",\"\"],"},
    {"{\"r_colour\":[\"COLOUR_DARK_BLUE\",1]}", "\"r_colour\":[\"dark_blue\",\"red\"],"},
    {"{\"items\":[{},{\"count\":-1}]}",
     "\"items\":[" INNER_EMPTY ",{\"count\":-1,\"label\":\"\",\"child\":null}],"},
    {"{\"pick_name\":\"bob\"}", "\"items\":[],\"pick_name\":\"bob\",\"counts\""},
    {"{\"pick_id\":\"5\",\"pick_name\":null}", "\"items\":[],\"pick_id\":5,\"counts\""},
    {"{\"pick_inner\":{}}", "\"pick_inner\":" INNER_EMPTY ",\"counts\""},
    {"{\"pick_name\":\"\"}", "\"items\":[],\"pick_name\":\"\",\"counts\""},
    {"{\"counts\":{\"a\":1,\"\":\"-9223372036854775808\",\"z\":null}}",
     "\"counts\":{\"a\":1,\"\":-9223372036854775808,\"z\":0},"},
    {"{\"names\":{\"-2147483648\":\"min\",\"7\":\"seven\",\"0\":\"\"}}",
     "\"names\":{\"-2147483648\":\"min\",\"7\":\"seven\",\"0\":\"\"}}"},
    {"{\"names\":{}}", "\"names\":{}}"},
};

static void test_good_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < CN_ARRAY_LEN(good_cases); i++) {
        char *out = roundtrip(ALL, good_cases[i].in);
        if (strstr(out, good_cases[i].fragment) == NULL)
            fail_msg("%s -> %s; expected to contain %s", good_cases[i].in, out,
                     good_cases[i].fragment);
        free(out);
    }
}

/* null means the default, for every kind of field; an empty body is an empty message. */
static void test_null_and_empty(void **state)
{
    (void)state;
    const char *docs[] = {
        "{}",
        " { } ",
        "{\"i32\":null,\"u64\":null,\"fl\":null,\"b\":null,\"s\":null,\"by\":null,"
        "\"colour\":null,\"inner\":null,\"r_i32\":null,\"r_s\":null,\"items\":null,"
        "\"pick_name\":null,\"pick_id\":null,\"pick_inner\":null,\"counts\":null,"
        "\"names\":null}",
    };
    for (size_t i = 0; i < CN_ARRAY_LEN(docs); i++) {
        char *out = roundtrip(ALL, docs[i]);
        assert_string_equal(out, ALL_EMPTY);
        free(out);
    }
    char *out = roundtrip_len(ALL, "", 0);
    assert_string_equal(out, ALL_EMPTY);
    free(out);
    out = roundtrip_len(ALL, NULL, 0);
    assert_string_equal(out, ALL_EMPTY);
    free(out);
}

/* Proto2: defaults, has_ flags, required fields; the static defaults must survive
 * protobuf_c_message_free_unpacked (valgrind would see a bad free). */
static void test_proto2(void **state)
{
    (void)state;
    char *out = roundtrip(LEGACY, "{\"id\":1}");
    assert_string_equal(out, "{\"id\":1," LEGACY_DEFAULTS);
    free(out);

    const char *set = "{\"id\":-3,\"name\":\"anon\",\"big\":-5,\"ratio\":\"NaN\",\"flag\":false,"
                      "\"blob\":\"\",\"level\":\"LEVEL_LOW\",\"u\":\"18446744073709551615\","
                      "\"tags\":[\"t\"],\"sub\":{\"id\":2,\"name\":\"s\"},\"plain\":\"\"}";
    ProtobufCMessage *m = parse_ok(LEGACY, set, strlen(set), NULL);
    Cairn__Test__Legacy *l = (Cairn__Test__Legacy *)m;
    assert_true(l->has_big && l->has_ratio && l->has_flag && l->has_blob && l->has_level &&
                l->has_u);
    assert_non_null(l->plain);
    assert_ptr_not_equal(l->name, cairn__test__legacy__name__default_value);
    assert_int_equal(l->level, CAIRN__TEST__LEVEL__LEVEL_LOW);
    assert_false(l->sub->has_big);
    protobuf_c_message_free_unpacked(m, NULL);
    out = roundtrip(LEGACY, set);
    assert_string_equal(out, "{\"id\":-3,\"name\":\"anon\",\"big\":-5,\"ratio\":\"NaN\","
                             "\"flag\":false,\"blob\":\"\",\"level\":\"low\","
                             "\"u\":\"18446744073709551615\",\"tags\":[\"t\"],\"sub\":"
                             "{\"id\":2,\"name\":\"s\",\"big\":-5,\"ratio\":0.5,\"flag\":true,"
                             "\"blob\":\"eHk=\",\"level\":\"high\",\"u\":0,\"tags\":[],"
                             "\"sub\":null,\"plain\":\"\"},\"plain\":\"\"}");
    free(out);

    m = parse_ok(LEGACY, "{\"id\":1}", 8, NULL);
    l = (Cairn__Test__Legacy *)m;
    assert_false(l->has_big || l->has_ratio || l->has_flag || l->has_blob || l->has_level);
    assert_ptr_equal(l->name, cairn__test__legacy__name__default_value);
    assert_null(l->plain);
    protobuf_c_message_free_unpacked(m, NULL);

    expect_error(LEGACY, "{}", "id", "missing required field");
    expect_error_len(LEGACY, "", 0, "id", "missing required field");
    expect_error(LEGACY, "{\"id\":null}", "id", "missing required field");
    expect_error(LEGACY, "{\"id\":1,\"sub\":{\"name\":\"x\"}}", "sub.id", "missing required field");
    expect_error(LEGACY, "{\"id\":1,\"level\":\"medium\"}", "level",
                 "unknown value \"medium\" for enum cairn.test.Level; expected one of: low, high");
    expect_error(LEGACY, "{\"id\":1,\"level\":0}", "level",
                 "unknown value 0 for enum cairn.test.Level; expected one of: low, high");
}

/* ---- refusals ---- */

#define RANGE_I32 "integer out of range for int32 (-2147483648 to 2147483647)"
#define RANGE_U32 "integer out of range for uint32 (0 to 4294967295)"
#define RANGE_I64 "integer out of range for int64 (-9223372036854775808 to 9223372036854775807)"
#define RANGE_U64 "integer out of range for uint64 (0 to 18446744073709551615)"
#define B64_PAD "invalid base64: wrong padding (with '=' the length must be a multiple of 4)"
#define COLOURS "for enum cairn.test.Colour; expected one of: unspecified, red, dark_blue"

static const struct {
    const char *in, *field, *message;
} bad_cases[] = {
    /* the document */
    {"[1]", "", "expected a JSON object, got an array"},
    {"5", "", "expected a JSON object, got a number"},
    {"\"x\"", "", "expected a JSON object, got a string"},
    {"null", "", "expected a JSON object, got null"},
    {" ", "", "~invalid JSON at line 1"},
    {"{", "", "~invalid JSON at line 1"},
    {"{} x", "", "~invalid JSON at line 1"},
    {"{\"i32\":1,}", "", "~invalid JSON"},
    {"{\"i32\":1,\"i32\":2}", "", "~duplicate object key"},
    {"{\"inner\":{\"count\":1,\"count\":1}}", "", "~duplicate object key"},
    {"{\"s\":\"\xff\"}", "", "~invalid JSON"},
    {"{\"s\":\"\xc0\xaf\"}", "", "~invalid JSON"},
    {"{\"s\":\"\xed\xa0\x80\"}", "", "~invalid JSON"},
    {"{\"s\":\"\\ud800\"}", "", "~invalid JSON"},
    {"{\"s\":\"a\\u0000b\"}", "", "~invalid JSON"},
    {"{\"\xff\":1}", "", "~invalid JSON"},
    {"{\"db\":1e400}", "", "~invalid JSON"},
    {"{\"u64\":18446744073709551615}", "", "~write integers beyond the int64 range"},
    {"{\"db\":NaN}", "", "~invalid JSON"},
    /* fields */
    {"{\"nope\":1}", "nope", "unknown field"},
    {"{\"inner\":{\"nope\":null}}", "inner.nope", "unknown field"},
    {"{\"I32\":1}", "I32", "unknown field"},
    {"{\"i32\":\"5\"}", "i32", "expected an integer, got a string"},
    {"{\"i32\":1.5}", "i32", "expected an integer, got 1.5"},
    {"{\"i32\":true}", "i32", "expected an integer, got a boolean"},
    {"{\"i32\":{}}", "i32", "expected an integer, got an object"},
    {"{\"i32\":2147483648}", "i32", RANGE_I32},
    {"{\"i32\":-2147483649}", "i32", RANGE_I32},
    {"{\"si32\":3e9}", "si32", "integer out of range for sint32 (-2147483648 to 2147483647)"},
    {"{\"sf32\":[]}", "sf32", "expected an integer, got an array"},
    {"{\"u32\":-1}", "u32", RANGE_U32},
    {"{\"u32\":4294967296}", "u32", RANGE_U32},
    {"{\"f32\":\"1\"}", "f32", "expected an integer, got a string"},
    {"{\"i64\":\"9223372036854775808\"}", "i64", RANGE_I64},
    {"{\"i64\":\"-9223372036854775809\"}", "i64", RANGE_I64},
    {"{\"i64\":1e19}", "i64", RANGE_I64},
    {"{\"i64\":\"12a\"}", "i64", "expected an integer or a string of decimal digits, got \"12a\""},
    {"{\"i64\":\" 12\"}", "i64", "expected an integer or a string of decimal digits, got \" 12\""},
    {"{\"i64\":\"\"}", "i64", "expected an integer or a string of decimal digits, got \"\""},
    {"{\"i64\":\"+1\"}", "i64", "expected an integer or a string of decimal digits, got \"+1\""},
    {"{\"sf64\":false}", "sf64", "expected an integer, got a boolean"},
    {"{\"u64\":-1}", "u64", RANGE_U64},
    {"{\"u64\":\"-1\"}", "u64", RANGE_U64},
    {"{\"u64\":\"18446744073709551616\"}", "u64", RANGE_U64},
    {"{\"u64\":\"99999999999999999999999\"}", "u64", RANGE_U64},
    {"{\"u64\":2e19}", "u64", RANGE_U64},
    {"{\"f64\":null,\"u64\":0.5}", "u64", "expected an integer, got 0.5"},
    {"{\"fl\":\"abc\"}", "fl",
     "expected a number, got the string \"abc\" (the only strings accepted are \"NaN\", "
     "\"Infinity\" and \"-Infinity\")"},
    {"{\"fl\":1e39}", "fl", "number out of range for float (magnitude at most 3.4028235e+38)"},
    {"{\"fl\":-3.5e38}", "fl", "number out of range for float (magnitude at most 3.4028235e+38)"},
    {"{\"db\":\"nan\"}", "db", "~got the string \"nan\""},
    {"{\"db\":\"1.5\"}", "db", "~got the string \"1.5\""},
    {"{\"db\":[]}", "db", "expected a number, got an array"},
    {"{\"db\":true}", "db", "expected a number, got a boolean"},
    {"{\"b\":1}", "b", "expected true or false, got a number"},
    {"{\"b\":\"true\"}", "b", "expected true or false, got a string"},
    {"{\"s\":5}", "s", "expected a string, got a number"},
    {"{\"s\":[\"a\"]}", "s", "expected a string, got an array"},
    {"{\"by\":5}", "by", "expected a base64 string, got a number"},
    {"{\"by\":\"A\"}", "by", "invalid base64: truncated input"},
    {"{\"by\":\"AAAAA\"}", "by", "invalid base64: truncated input"},
    {"{\"by\":\"AA=\"}", "by", B64_PAD},
    {"{\"by\":\"AAA==\"}", "by", B64_PAD},
    {"{\"by\":\"AAAA=\"}", "by", B64_PAD},
    {"{\"by\":\"AAAA====\"}", "by", B64_PAD},
    {"{\"by\":\"=\"}", "by", B64_PAD},
    {"{\"by\":\"AAA==A==\"}", "by", "invalid base64: unexpected character at offset 3"},
    {"{\"by\":\"AA AA\"}", "by", "invalid base64: unexpected character at offset 2"},
    {"{\"by\":\"AA\\nA\"}", "by", "invalid base64: unexpected character at offset 2"},
    {"{\"by\":\"AF==\"}", "by", "invalid base64: the last character has bits set past the data"},
    {"{\"by\":\"AAF\"}", "by", "invalid base64: the last character has bits set past the data"},
    {"{\"colour\":\"purple\"}", "colour", "unknown value \"purple\" " COLOURS},
    {"{\"colour\":\"RED\"}", "colour", "unknown value \"RED\" " COLOURS},
    {"{\"colour\":\"colour_red\"}", "colour", "unknown value \"colour_red\" " COLOURS},
    {"{\"colour\":\"\"}", "colour", "unknown value \"\" " COLOURS},
    {"{\"colour\":7}", "colour", "unknown value 7 " COLOURS},
    {"{\"colour\":-1}", "colour", "unknown value -1 " COLOURS},
    {"{\"colour\":4294967297}", "colour", "unknown value 4294967297 " COLOURS},
    {"{\"colour\":1.0}", "colour", "expected an enum value name (a string), got a number"},
    {"{\"colour\":true}", "colour", "expected an enum value name (a string), got a boolean"},
    {"{\"inner\":5}", "inner", "expected an object, got a number"},
    {"{\"inner\":[]}", "inner", "expected an object, got an array"},
    {"{\"inner\":{\"count\":\"x\"}}", "inner.count", "expected an integer, got a string"},
    {"{\"inner\":{\"child\":{\"label\":1}}}", "inner.child.label", "expected a string, got a number"},
    {"{\"items\":[{},{},{\"count\":\"2\"}]}", "items[2].count", "expected an integer, got a string"},
    {"{\"items\":[{\"child\":{\"child\":{\"x\":1}}}]}", "items[0].child.child.x", "unknown field"},
    {"{\"items\":{}}", "items", "expected an array, got an object"},
    {"{\"items\":[null]}", "items[0]", "expected an object, got null"},
    {"{\"items\":[{},7]}", "items[1]", "expected an object, got a number"},
    {"{\"r_i32\":[1,\"2\"]}", "r_i32[1]", "expected an integer, got a string"},
    {"{\"r_i32\":5}", "r_i32", "expected an array, got a number"},
    {"{\"r_u64\":[\"1\",-1]}", "r_u64[1]", RANGE_U64},
    {"{\"r_s\":[null]}", "r_s[0]", "expected a string, got null"},
    {"{\"r_by\":[\"AA==\",\"!\"]}", "r_by[1]", "invalid base64: unexpected character at offset 0"},
    {"{\"r_b\":[[true]]}", "r_b[0]", "expected true or false, got an array"},
    {"{\"r_colour\":[\"red\",\"blue\"]}", "r_colour[1]", "unknown value \"blue\" " COLOURS},
    {"{\"r_fl\":[1,\"x\"]}", "r_fl[1]", "~got the string \"x\""},
    {"{\"pick_name\":\"a\",\"pick_id\":1}", "pick_id",
     "conflicts with \"pick_name\": both are in one oneof; set only one"},
    {"{\"pick_inner\":{},\"pick_name\":\"a\"}", "pick_name",
     "conflicts with \"pick_inner\": both are in one oneof; set only one"},
    {"{\"pick_inner\":{\"count\":\"1\"}}", "pick_inner.count", "expected an integer, got a string"},
    {"{\"pick_name\":5}", "pick_name", "expected a string, got a number"},
    {"{\"counts\":[]}", "counts", "expected an object (a map), got an array"},
    {"{\"counts\":{\"a\":\"x\"}}", "counts.a",
     "expected an integer or a string of decimal digits, got \"x\""},
    {"{\"counts\":{\"a\":1,\"b\":{}}}", "counts.b", "expected an integer, got an object"},
    {"{\"names\":{\"x\":\"a\"}}", "names.x",
     "invalid map key: expected a canonical decimal integer, got \"x\""},
    {"{\"names\":{\"01\":\"a\"}}", "names.01",
     "invalid map key: expected a canonical decimal integer, got \"01\""},
    {"{\"names\":{\"-0\":\"a\"}}", "names.-0",
     "invalid map key: expected a canonical decimal integer, got \"-0\""},
    {"{\"names\":{\"\":\"a\"}}", "names.",
     "invalid map key: expected a canonical decimal integer, got \"\""},
    {"{\"names\":{\"2147483648\":\"a\"}}", "names.2147483648", "invalid map key: " RANGE_I32},
    {"{\"names\":{\"1\":5}}", "names.1", "expected a string, got a number"},
};

static void test_bad_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < CN_ARRAY_LEN(bad_cases); i++)
        expect_error(ALL, bad_cases[i].in, bad_cases[i].field, bad_cases[i].message);
}

/* A document is read to its length, not to a NUL; a NUL byte inside is an error. */
static void test_length_is_respected(void **state)
{
    (void)state;
    char *out = roundtrip_len(ALL, "{\"i32\":5}garbage", 9);
    assert_non_null(strstr(out, "\"i32\":5,"));
    free(out);
    expect_error_len(ALL, "{\"i32\":5}\0", 10, "", "~invalid JSON");
    expect_error_len(ALL, "{\"s\":\"a\0b\"}", 11, "", "~invalid JSON");
}

/* 64 levels of objects and arrays are fine, 65 are not; far deeper input is refused
 * by the parser itself without exhausting the stack. */
static void test_depth_limit(void **state)
{
    (void)state;
    char *doc = nested("child", 64);
    ProtobufCMessage *m = parse_ok(INNER, doc, strlen(doc), NULL);
    protobuf_c_message_free_unpacked(m, NULL);
    free(doc);

    doc = nested("child", 65);
    struct cn_json_error err;
    assert_int_equal(cn_json_to_proto(doc, strlen(doc), INNER, NULL, &m, &err), CN_EINVAL);
    assert_string_equal(err.message, "nesting deeper than 64 levels");
    assert_int_equal(strncmp(err.field, "child.child.child.", 18), 0);
    assert_int_equal(strlen(err.field), sizeof err.field - 1); /* truncated, not overrun */
    free(doc);

    /* An array is a level too: items[0] sits at depth 3. */
    struct cn_buf b = {0};
    cn_buf_puts(&b, "{\"items\":[");
    char *inner = nested("child", 62);
    cn_buf_puts(&b, inner);
    cn_buf_puts(&b, "]}");
    m = parse_ok(ALL, b.data, b.len, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
    free(inner);
    cn_buf_reset(&b);
    cn_buf_puts(&b, "{\"items\":[");
    inner = nested("child", 63);
    cn_buf_puts(&b, inner);
    cn_buf_puts(&b, "]}");
    assert_int_equal(cn_json_to_proto(b.data, b.len, ALL, NULL, &m, &err), CN_EINVAL);
    assert_string_equal(err.message, "nesting deeper than 64 levels");
    free(inner);

    cn_buf_reset(&b);
    for (int i = 0; i < 100000; i++)
        cn_buf_puts(&b, "{\"a\":[");
    assert_int_equal(cn_json_to_proto(b.data, b.len, ALL, NULL, &m, &err), CN_EINVAL);
    assert_string_equal(err.field, "");
    assert_non_null(strstr(err.message, "invalid JSON"));
    cn_buf_free(&b);
}

/* ---- cn_json_set_field ---- */

static const struct {
    const char *name, *value, *fragment; /* fragment NULL: refused with message */
    const char *message;
} set_cases[] = {
    {"i32", "-42", "\"i32\":-42,", NULL},
    {"i32", "2147483648", NULL, RANGE_I32},
    {"i32", "12x", NULL, "expected a decimal integer, got \"12x\""},
    {"i32", "", NULL, "expected a decimal integer, got \"\""},
    {"i32", "1.0", NULL, "expected a decimal integer, got \"1.0\""},
    {"si32", "-7", "\"si32\":-7,", NULL},
    {"sf32", "7", "\"sf32\":7,", NULL},
    {"i64", "-9223372036854775808", "\"i64\":-9223372036854775808,", NULL},
    {"i64", "9223372036854775808", NULL, RANGE_I64},
    {"si64", "5", "\"si64\":5,", NULL},
    {"sf64", "-5", "\"sf64\":-5,", NULL},
    {"u32", "4294967295", "\"u32\":4294967295,", NULL},
    {"u32", "-1", NULL, RANGE_U32},
    {"f32", "1", "\"f32\":1,", NULL},
    {"u64", "18446744073709551615", "\"u64\":\"18446744073709551615\",", NULL},
    {"u64", "18446744073709551616", NULL, RANGE_U64},
    {"f64", "3", "\"f64\":3,", NULL},
    {"fl", "1.5", "\"fl\":1.5,", NULL},
    {"fl", "-Infinity", "\"fl\":\"-Infinity\",", NULL},
    {"fl", "1e39", NULL, "number out of range for float (magnitude at most 3.4028235e+38)"},
    {"db", "NaN", "\"db\":\"NaN\",", NULL},
    {"db", "-2.5e-3", "\"db\":-0.0025000000000000001,", NULL},
    {"db", "1e999", NULL, "number out of range for double"},
    {"db", "0x10", NULL, "expected a number, got \"0x10\""},
    {"db", "inf", NULL, "expected a number, got \"inf\""},
    {"db", " 1", NULL, "expected a number, got \" 1\""},
    {"db", "1.", NULL, "expected a number, got \"1.\""},
    {"b", "true", "\"b\":true,", NULL},
    {"b", "false", "\"b\":false,", NULL},
    {"b", "yes", NULL, "expected true or false, got \"yes\""},
    {"b", "1", NULL, "expected true or false, got \"1\""},
    {"s", "h\xc3\xa9llo", "\"s\":\"h\xc3\xa9llo\",", NULL},
    {"s", "", "\"s\":\"\",", NULL},
    {"s", "\xff", NULL, "expected text in UTF-8 without NUL characters"},
    {"s", "\xed\xa0\x80", NULL, "expected text in UTF-8 without NUL characters"},
    {"by", "AAEC", "\"by\":\"AAEC\",", NULL},
    {"by", "_w", "\"by\":\"/w==\",", NULL},
    {"by", "A", NULL, "invalid base64: truncated input"},
    {"colour", "red", "\"colour\":\"red\",", NULL},
    {"colour", "COLOUR_DARK_BLUE", "\"colour\":\"dark_blue\",", NULL},
    {"colour", "1", "\"colour\":\"red\",", NULL},
    {"colour", "purple", NULL, "unknown value \"purple\" " COLOURS},
    {"colour", "9", NULL, "unknown value 9 " COLOURS},
    {"r_i32", "3", "\"r_i32\":[3],", NULL},
    {"r_s", "x", "\"r_s\":[\"x\"],", NULL},
    {"r_by", "AA==", "\"r_by\":[\"AA==\"],", NULL},
    {"r_colour", "dark_blue", "\"r_colour\":[\"dark_blue\"],", NULL},
    {"pick_name", "bob", "\"pick_name\":\"bob\",", NULL},
    {"pick_id", "-1", "\"pick_id\":-1,", NULL},
    {"pick_inner", "{}", NULL,
     "this field holds a message and cannot be set from a path or query parameter"},
    {"inner", "{}", NULL,
     "this field holds a message and cannot be set from a path or query parameter"},
    {"items", "{}", NULL, "this field holds a message and cannot be set from a path or query parameter"},
    {"counts", "a", NULL, "this field holds a map and cannot be set from a path or query parameter"},
};

static void test_set_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < CN_ARRAY_LEN(set_cases); i++) {
        for (int arena = 0; arena < 2; arena++) {
            struct cn_arena *a = arena ? cn_arena_new(0) : NULL;
            ProtobufCAllocator alloc;
            ProtobufCAllocator *ap = NULL;
            struct cn_json_error err;
            if (a) {
                cn_arena_allocator(a, &alloc);
                ap = &alloc;
            }
            ProtobufCMessage *m = parse_ok(ALL, "{}", 2, ap);
            const char *v = set_cases[i].value;
            int rc = cn_json_set_field(m, set_cases[i].name, v, strlen(v), ap, &err);
            char *out = emit(m);
            if (set_cases[i].fragment) {
                if (rc != 0)
                    fail_msg("%s=%s refused: %s", set_cases[i].name, v, err.message);
                if (strstr(out, set_cases[i].fragment) == NULL)
                    fail_msg("%s=%s -> %s", set_cases[i].name, v, out);
                ProtobufCMessage *u = wire_copy(m);
                char *after = emit(u);
                assert_string_equal(out, after);
                free(after);
                protobuf_c_message_free_unpacked(u, NULL);
            } else {
                if (rc != CN_EINVAL)
                    fail_msg("%s=%s accepted (rc %d)", set_cases[i].name, v, rc);
                assert_string_equal(err.field, set_cases[i].name);
                if (strcmp(err.message, set_cases[i].message) != 0)
                    fail_msg("%s=%s: \"%s\"", set_cases[i].name, v, err.message);
                assert_string_equal(out, ALL_EMPTY); /* untouched */
            }
            free(out);
            if (a)
                cn_arena_free(a);
            else
                protobuf_c_message_free_unpacked(m, NULL);
        }
    }
}

/* Setting twice replaces (the old value freed), repeated fields append, a oneof takes
 * one member, and length rather than NUL bounds the text. */
static void test_set_sequences(void **state)
{
    (void)state;
    struct cn_json_error err;
    const char *doc = "{\"s\":\"body\",\"r_s\":[\"a\"],\"by\":\"AA==\"}";
    ProtobufCMessage *m = parse_ok(ALL, doc, strlen(doc), NULL);
    Cairn__Test__AllTypes *t = (Cairn__Test__AllTypes *)m;

    assert_int_equal(cn_json_set_field(m, "s", "path", 4, NULL, &err), CN_OK);
    assert_int_equal(cn_json_set_field(m, "s", "query-extra", 5, NULL, &err), CN_OK);
    assert_string_equal(t->s, "query");
    assert_int_equal(cn_json_set_field(m, "by", "AQI=", 4, NULL, &err), CN_OK);
    assert_int_equal(t->by.len, 2);
    assert_int_equal(cn_json_set_field(m, "r_s", "b", 1, NULL, &err), CN_OK);
    assert_int_equal(cn_json_set_field(m, "r_s", "c", 1, NULL, &err), CN_OK);
    assert_int_equal(cn_json_set_field(m, "r_i32", "1", 1, NULL, &err), CN_OK);
    assert_int_equal(cn_json_set_field(m, "r_i32", "2", 1, NULL, &err), CN_OK);
    assert_int_equal(cn_json_set_field(m, "s", "a\0b", 3, NULL, &err), CN_EINVAL);
    assert_string_equal(err.message, "expected text in UTF-8 without NUL characters");
    assert_string_equal(t->s, "query");

    assert_int_equal(cn_json_set_field(m, "pick_name", "x", 1, NULL, &err), CN_OK);
    assert_int_equal(cn_json_set_field(m, "pick_name", "y", 1, NULL, &err), CN_OK);
    assert_int_equal(cn_json_set_field(m, "pick_id", "5", 1, NULL, &err), CN_EINVAL);
    assert_string_equal(err.field, "pick_id");
    assert_string_equal(err.message,
                        "conflicts with \"pick_name\": both are in one oneof; set only one");
    assert_int_equal(t->choice_case, CAIRN__TEST__ALL_TYPES__CHOICE_PICK_NAME);
    assert_string_equal(t->pick_name, "y");

    assert_int_equal(cn_json_set_field(m, "nope", "1", 1, NULL, &err), CN_ENOTFOUND);
    assert_string_equal(err.field, "nope");
    assert_string_equal(err.message, "unknown field");

    char *out = emit(m);
    assert_non_null(strstr(out, "\"s\":\"query\","));
    assert_non_null(strstr(out, "\"by\":\"AQI=\","));
    assert_non_null(strstr(out, "\"r_i32\":[1,2],"));
    assert_non_null(strstr(out, "\"r_s\":[\"a\",\"b\",\"c\"],"));
    assert_non_null(strstr(out, "\"pick_name\":\"y\","));
    free(out);
    protobuf_c_message_free_unpacked(m, NULL);

    /* The same on a set oneof member from the body, and on the proto2 static defaults,
     * which must be replaced, never freed. */
    m = parse_ok(ALL, "{\"pick_id\":3}", 13, NULL);
    assert_int_equal(cn_json_set_field(m, "pick_name", "n", 1, NULL, &err), CN_EINVAL);
    assert_int_equal(cn_json_set_field(m, "pick_id", "4", 1, NULL, &err), CN_OK);
    assert_int_equal(((Cairn__Test__AllTypes *)m)->pick_id, 4);
    protobuf_c_message_free_unpacked(m, NULL);

    m = parse_ok(LEGACY, "{\"id\":1}", 8, NULL);
    Cairn__Test__Legacy *l = (Cairn__Test__Legacy *)m;
    assert_int_equal(cn_json_set_field(m, "name", "z", 1, NULL, &err), CN_OK);
    assert_int_equal(cn_json_set_field(m, "blob", "AA==", 4, NULL, &err), CN_OK);
    assert_int_equal(cn_json_set_field(m, "big", "9", 1, NULL, &err), CN_OK);
    assert_int_equal(cn_json_set_field(m, "level", "low", 3, NULL, &err), CN_OK);
    assert_int_equal(cn_json_set_field(m, "plain", NULL, 0, NULL, &err), CN_OK);
    assert_string_equal(l->plain, "");
    assert_int_equal(cn_json_set_field(m, "plain", "p", 1, NULL, &err), CN_OK);
    assert_int_equal(cn_json_set_field(m, "tags", "t", 1, NULL, &err), CN_OK);
    assert_true(l->has_big && l->has_blob && l->has_level);
    out = emit(m);
    assert_string_equal(out, "{\"id\":1,\"name\":\"z\",\"big\":9,\"ratio\":0.5,\"flag\":true,"
                             "\"blob\":\"AA==\",\"level\":\"low\",\"u\":0,\"tags\":[\"t\"],"
                             "\"sub\":null,\"plain\":\"p\"}");
    free(out);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_field_lookup(void **state)
{
    (void)state;
    const ProtobufCFieldDescriptor *f = cn_json_field(ALL, "r_colour");
    assert_non_null(f);
    assert_int_equal(f->id, 36);
    assert_null(cn_json_field(ALL, "rColour"));
    assert_null(cn_json_field(ALL, ""));
}

/* ---- internals ---- */

static void test_enum_prefix(void **state)
{
    (void)state;
    assert_int_equal(enum_prefix("JobStatus", "JOB_STATUS_PENDING"), 11);
    assert_int_equal(enum_prefix("Colour", "COLOUR_DARK_BLUE"), 7);
    assert_int_equal(enum_prefix("HTTPCode", "HTTP_CODE_OK"), 10);
    assert_int_equal(enum_prefix("V2Kind", "V2_KIND_A"), 8);
    assert_int_equal(enum_prefix("Colour", "RED"), 0);
    assert_int_equal(enum_prefix("Colour", "COLOUR_"), 0);
    assert_int_equal(enum_prefix("Colour", "COLOUR"), 0);
    assert_int_equal(enum_prefix("Colour", "COLOURS_X"), 0);
}

/* Only the shape protoc gives a map counts as one; a plain repeated message does not. */
static void test_is_map(void **state)
{
    (void)state;
    assert_true(is_map(ALL, cn_json_field(ALL, "counts")));
    assert_true(is_map(ALL, cn_json_field(ALL, "names")));
    assert_false(is_map(ALL, cn_json_field(ALL, "items")));
    assert_false(is_map(ALL, cn_json_field(ALL, "inner")));
    assert_false(is_map(INNER, cn_json_field(ALL, "counts"))); /* wrong parent */
    assert_true(is_entry_name("ByUserEntry", "by_user"));
    assert_false(is_entry_name("ByuserEntry", "by_user"));
    assert_false(is_entry_name("Counts", "counts"));
}

/* Every length of every byte pattern encodes and decodes back exactly. */
static void test_base64_all_lengths(void **state)
{
    (void)state;
    uint8_t in[64];
    struct cn_json_error err;
    struct ctx c = {.alloc = &sys_allocator, .err = &err};
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (uint8_t)(i * 37 + 200);
    for (size_t n = 0; n <= sizeof in; n++) {
        struct cn_buf b = {0};
        ProtobufCBinaryData out;
        b64_encode(&b, in, n);
        assert_int_equal(b.len, 2 + (n + 2) / 3 * 4);
        assert_int_equal(b64_decode(&c, b.data + 1, b.len - 2, &out), CN_OK);
        assert_int_equal(out.len, n);
        assert_memory_equal(out.data, in, n);
        free(out.data);
        cn_buf_free(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type_roundtrip),
        cmocka_unit_test(test_good_cases),
        cmocka_unit_test(test_null_and_empty),
        cmocka_unit_test(test_proto2),
        cmocka_unit_test(test_bad_cases),
        cmocka_unit_test(test_length_is_respected),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_set_cases),
        cmocka_unit_test(test_set_sequences),
        cmocka_unit_test(test_field_lookup),
        cmocka_unit_test(test_enum_prefix),
        cmocka_unit_test(test_is_map),
        cmocka_unit_test(test_base64_all_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
