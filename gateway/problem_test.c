/* problem_test.c — the code->status table, the problem+json shape and the Open
 * Inference Protocol's {"error"} body. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>

#include "problem.c"

static void test_codes(void **state)
{
    (void)state;
    assert_int_equal(gw_code_status(CAIRN__V1__CODE__INVALID_ARGUMENT), 400);
    assert_int_equal(gw_code_status(CAIRN__V1__CODE__UNAUTHENTICATED), 401);
    assert_int_equal(gw_code_status(CAIRN__V1__CODE__PERMISSION_DENIED), 403);
    assert_int_equal(gw_code_status(CAIRN__V1__CODE__NOT_FOUND), 404);
    assert_int_equal(gw_code_status(CAIRN__V1__CODE__ALREADY_EXISTS), 409);
    assert_int_equal(gw_code_status(CAIRN__V1__CODE__FAILED_PRECONDITION), 412);
    assert_int_equal(gw_code_status(CAIRN__V1__CODE__RESOURCE_EXHAUSTED), 429);
    assert_int_equal(gw_code_status(CAIRN__V1__CODE__CANCELLED), 499);
    assert_int_equal(gw_code_status(CAIRN__V1__CODE__UNIMPLEMENTED), 501);
    assert_int_equal(gw_code_status(CAIRN__V1__CODE__UNAVAILABLE), 503);
    assert_int_equal(gw_code_status(CAIRN__V1__CODE__DEADLINE_EXCEEDED), 504);
    assert_int_equal(gw_code_status((Cairn__V1__Code)99), 500);
    assert_string_equal(gw_status_reason(404), "Not Found");
    assert_string_equal(gw_status_reason(299), "Error");
    /* the gateway's own 502, and statuses only an injected fault gives */
    assert_string_equal(gw_status_reason(502), "Bad Gateway");
    assert_string_equal(gw_status_reason(422), "Unprocessable Content");
    struct cn_buf b = {0};
    gw_problem_body(&b, 502, NULL, "r", NULL, 0);
    assert_non_null(strstr(b.data, "\"type\":\"urn:cairn:problem:bad-gateway\",\"title\":\"Bad Gateway\""));
    cn_buf_reset(&b);
    gw_problem_body(&b, 418, "fault injected", "r", NULL, 0);
    assert_non_null(strstr(b.data, "\"type\":\"urn:cairn:problem:status-418\",\"title\":\"Error\",\"status\":418"));
    cn_buf_free(&b);
    /* every status a code maps to has a reason phrase */
    for (int c = 0; c <= 16; c++)
        assert_string_not_equal(gw_status_reason(gw_code_status((Cairn__V1__Code)c)), "Error");
}

static void test_body(void **state)
{
    (void)state;
    struct cn_buf b = {0};
    Cairn__V1__FieldError fe = CAIRN__V1__FIELD_ERROR__INIT;
    fe.field = "email";
    fe.message = "must contain \"@\"";
    Cairn__V1__FieldError *v[1] = {&fe};
    gw_problem_body(&b, 400, "invalid request", "rid-1", v, 1);
    json_error_t je;
    json_t *j = json_loads(b.data, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "urn:cairn:problem:bad-request");
    assert_string_equal(json_string_value(json_object_get(j, "title")), "Bad Request");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 400);
    assert_string_equal(json_string_value(json_object_get(j, "detail")), "invalid request");
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), "rid-1");
    json_t *e = json_array_get(json_object_get(j, "errors"), 0);
    assert_string_equal(json_string_value(json_object_get(e, "field")), "email");
    assert_string_equal(json_string_value(json_object_get(e, "message")), "must contain \"@\"");
    json_decref(j);

    cn_buf_reset(&b);
    gw_problem_body(&b, 503, NULL, NULL, NULL, 0);
    j = json_loads(b.data, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "detail")), "Service Unavailable");
    assert_int_equal(json_array_size(json_object_get(j, "errors")), 0);
    json_decref(j);
    cn_buf_free(&b);
}

/* Parses b as JSON and returns its "error" string (the object must have no other key). */
static const char *oip_error(struct cn_buf *b, json_t **j)
{
    json_error_t je;
    *j = json_loadb(b->data, b->len, 0, &je);
    assert_non_null(*j);
    assert_true(json_is_object(*j));
    assert_int_equal(json_object_size(*j), 1);
    assert_true(json_is_string(json_object_get(*j, "error")));
    return json_string_value(json_object_get(*j, "error"));
}

static void test_oip_body(void **state)
{
    (void)state;
    struct cn_buf b = {0};
    json_t *j;
    gw_oip_error_body(&b, 404, "model \"iris\" not found", NULL, 0);
    assert_string_equal(oip_error(&b, &j), "model \"iris\" not found");
    json_decref(j);

    /* No detail: the reason phrase, never an empty message. */
    cn_buf_reset(&b);
    gw_oip_error_body(&b, 503, NULL, NULL, 0);
    assert_string_equal(oip_error(&b, &j), "Service Unavailable");
    json_decref(j);
    cn_buf_reset(&b);
    gw_oip_error_body(&b, 413, "", NULL, 0);
    assert_string_equal(oip_error(&b, &j), "Content Too Large");
    json_decref(j);

    /* Field errors folded into the one message, in order; an empty field name leaves
     * just the message. */
    Cairn__V1__FieldError a = CAIRN__V1__FIELD_ERROR__INIT, c = CAIRN__V1__FIELD_ERROR__INIT,
                          d = CAIRN__V1__FIELD_ERROR__INIT;
    a.field = "inputs[0].shape";
    a.message = "expected [N, 4]";
    c.field = "";
    c.message = "too many rows";
    d.field = "inputs[0].data[7]";
    d.message = "not a number";
    Cairn__V1__FieldError *v[3] = {&a, &c, &d};
    cn_buf_reset(&b);
    gw_oip_error_body(&b, 400, "invalid request", v, 3);
    assert_string_equal(oip_error(&b, &j), "invalid request: inputs[0].shape: expected [N, 4]; too many rows; "
                                           "inputs[0].data[7]: not a number");
    json_decref(j);

    /* Control characters and quotes in a message stay inside the string. */
    a.field = "x\n\"y";
    a.message = "bad\tvalue";
    cn_buf_reset(&b);
    gw_oip_error_body(&b, 400, "invalid", v, 1);
    assert_string_equal(oip_error(&b, &j), "invalid: x\n\"y: bad\tvalue");
    json_decref(j);
    cn_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes),
        cmocka_unit_test(test_body),
        cmocka_unit_test(test_oip_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
