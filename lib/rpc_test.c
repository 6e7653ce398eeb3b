/* rpc_test.c — the RPC server and blocking client over inproc:// with a test service
 * (tests/proto/cairn/test/echo.proto): round trip, principal passing, field errors,
 * unknown method, malformed envelope and body, deadline expiry before start, load
 * shedding when the queue is full, a handler that forgets to reply, drain on stop,
 * inline methods (run on nng's receiving thread, still bounded by the worker slots), and
 * a reply sent before its handler returns (cn_call_send_now). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "rpc.c"

#include "cairn/test/echo.pb-c.h"

/* Where the last Say ran: its thread and the worker state it was given. */
static pthread_t say_thread;
static void *say_state;

static void echo_say(Cairn__Test__Echo_Service *svc, const Cairn__Test__SayRequest *in,
                     Cairn__Test__SayReply_Closure done, void *cd)
{
    (void)svc;
    struct cn_call *call = cd;
    say_thread = pthread_self();
    say_state = call->worker;
    Cairn__Test__SayReply r = CAIRN__TEST__SAY_REPLY__INIT;
    r.text = cn_arena_printf(call->arena, "echo:%s", in->text);
    const Cairn__V1__Principal *p = cn_call_principal(call);
    r.subject = p ? p->subject : (char *)"";
    r.worker = call->worker_index;
    done(&r, cd);
}

static void echo_sleep(Cairn__Test__Echo_Service *svc, const Cairn__Test__SleepRequest *in,
                       Cairn__Test__SayReply_Closure done, void *cd)
{
    (void)svc;
    nng_msleep(in->ms);
    Cairn__Test__SayReply r = CAIRN__TEST__SAY_REPLY__INIT;
    r.text = "slept";
    done(&r, cd);
}

static void echo_reject(Cairn__Test__Echo_Service *svc, const Cairn__Test__SayRequest *in,
                        Cairn__Test__SayReply_Closure done, void *cd)
{
    (void)svc;
    (void)in;
    cn_call_field_error(cd, "text", "must be %s", "polite");
    done(NULL, cd);
}

static void echo_forget(Cairn__Test__Echo_Service *svc, const Cairn__Test__SayRequest *in,
                        Cairn__Test__SayReply_Closure done, void *cd)
{
    (void)svc;
    (void)in;
    (void)done;
    (void)cd;
}

static atomic_int linger_done;
static pthread_t linger_thread;

static void echo_linger(Cairn__Test__Echo_Service *svc, const Cairn__Test__SleepRequest *in,
                        Cairn__Test__SayReply_Closure done, void *cd)
{
    (void)svc;
    Cairn__Test__SayReply r = CAIRN__TEST__SAY_REPLY__INIT;
    r.text = "early";
    linger_thread = pthread_self();
    done(&r, cd);
    cn_call_send_now(cd);
    cn_call_send_now(cd); /* the second time does nothing */
    nng_msleep(in->ms);
    atomic_store(&linger_done, 1);
}

static Cairn__Test__Echo_Service echo_service = CAIRN__TEST__ECHO__INIT(echo_);

static int worker_inits, worker_finis;
static void *w_init(int i, void *arg)
{
    (void)arg;
    __atomic_fetch_add(&worker_inits, 1, __ATOMIC_SEQ_CST);
    return (void *)(intptr_t)(i + 1);
}
static void w_fini(void *w, void *arg)
{
    (void)w;
    (void)arg;
    __atomic_fetch_add(&worker_finis, 1, __ATOMIC_SEQ_CST);
}

static struct cn_rpc_server *start(const char *addr, int workers, int queue)
{
    struct cn_rpc_server *s = NULL;
    struct cn_rpc_server_opts o = {
        .listen = addr, .service = &echo_service.base, .workers = workers, .queue = queue,
        .worker_init = w_init, .worker_fini = w_fini, .name = "echo",
    };
    assert_int_equal(cn_rpc_server_start(&s, &o), CN_OK);
    return s;
}

static void test_round_trip(void **state)
{
    (void)state;
    worker_inits = worker_finis = 0;
    struct cn_rpc_server *s = start("inproc://rt", 2, 4);
    struct cn_rpc_client *c = NULL;
    assert_int_equal(cn_rpc_client_open(&c, "inproc://rt"), CN_OK);

    Cairn__Test__SayRequest req = CAIRN__TEST__SAY_REQUEST__INIT;
    req.text = "hi";
    Cairn__V1__Principal p = CAIRN__V1__PRINCIPAL__INIT;
    p.subject = "user-1";
    Cairn__V1__Result *res;
    ProtobufCMessage *resp;
    assert_int_equal(cn_rpc_client_call(c, "Say", &p, &req.base, &cairn__test__say_reply__descriptor,
                                        1000, &res, &resp), CN_OK);
    assert_int_equal(res->code, CAIRN__V1__CODE__OK);
    Cairn__Test__SayReply *r = (Cairn__Test__SayReply *)resp;
    assert_string_equal(r->text, "echo:hi");
    assert_string_equal(r->subject, "user-1");
    cairn__v1__result__free_unpacked(res, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);

    /* anonymous */
    assert_int_equal(cn_rpc_client_call(c, "Say", NULL, &req.base, &cairn__test__say_reply__descriptor,
                                        1000, &res, &resp), CN_OK);
    assert_string_equal(((Cairn__Test__SayReply *)resp)->subject, "");
    cairn__v1__result__free_unpacked(res, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);

    cn_rpc_client_close(c);
    assert_int_equal(cn_rpc_server_stop(s, 1000), 0);
    assert_int_equal(worker_inits, 2);
    assert_int_equal(worker_finis, 2);
}

static void test_errors(void **state)
{
    (void)state;
    struct cn_rpc_server *s = start("inproc://err", 1, 1);
    struct cn_rpc_client *c = NULL;
    assert_int_equal(cn_rpc_client_open(&c, "inproc://err"), CN_OK);
    Cairn__Test__SayRequest req = CAIRN__TEST__SAY_REQUEST__INIT;
    Cairn__V1__Result *res;
    ProtobufCMessage *resp;

    assert_int_equal(cn_rpc_client_call(c, "Reject", NULL, &req.base, &cairn__test__say_reply__descriptor,
                                        1000, &res, &resp), CN_OK);
    assert_int_equal(res->code, CAIRN__V1__CODE__INVALID_ARGUMENT);
    assert_null(resp);
    assert_int_equal(res->n_field_errors, 1);
    assert_string_equal(res->field_errors[0]->field, "text");
    assert_string_equal(res->field_errors[0]->message, "must be polite");
    cairn__v1__result__free_unpacked(res, NULL);

    assert_int_equal(cn_rpc_client_call(c, "Nope", NULL, &req.base, NULL, 1000, &res, NULL), CN_OK);
    assert_int_equal(res->code, CAIRN__V1__CODE__UNIMPLEMENTED);
    cairn__v1__result__free_unpacked(res, NULL);

    assert_int_equal(cn_rpc_client_call(c, "Forget", NULL, &req.base, NULL, 1000, &res, NULL), CN_OK);
    assert_int_equal(res->code, CAIRN__V1__CODE__INTERNAL);
    cairn__v1__result__free_unpacked(res, NULL);

    cn_rpc_client_close(c);
    assert_int_equal(cn_rpc_server_stop(s, 1000), 0);
}

/* Sends raw bytes on a fresh REQ socket and returns the decoded Result. */
static Cairn__V1__Result *raw_call(const char *addr, const void *data, size_t len)
{
    nng_socket sock;
    assert_int_equal(cn_rpc_req_open(&sock, addr, 0), CN_OK);
    nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, 2000);
    assert_int_equal(nng_send(sock, (void *)data, len, 0), 0);
    nng_msg *m;
    assert_int_equal(nng_recvmsg(sock, &m, 0), 0);
    Cairn__V1__Result *r = cn_rpc_result_decode(m, NULL);
    nng_msg_free(m);
    nng_close(sock);
    assert_non_null(r);
    return r;
}

static void test_malformed(void **state)
{
    (void)state;
    struct cn_rpc_server *s = start("inproc://bad", 1, 1);
    Cairn__V1__Result *r = raw_call("inproc://bad", "\xff\xff\xff", 3);
    assert_int_equal(r->code, CAIRN__V1__CODE__INVALID_ARGUMENT);
    cairn__v1__result__free_unpacked(r, NULL);

    /* a valid envelope whose body is not a SayRequest */
    nng_msg *m;
    assert_int_equal(cn_rpc_call_encode_raw("Say", "r", 1000, NULL, NULL, (const uint8_t *)"\x0a\xff", 2, &m), CN_OK);
    r = raw_call("inproc://bad", nng_msg_body(m), nng_msg_len(m));
    nng_msg_free(m);
    assert_int_equal(r->code, CAIRN__V1__CODE__INVALID_ARGUMENT);
    assert_string_equal(r->message, "malformed request body");
    cairn__v1__result__free_unpacked(r, NULL);
    assert_int_equal(cn_rpc_server_stop(s, 1000), 0);
}

struct bg {
    const char *addr;
    const char *method;
    int ms;
    int timeout;
    Cairn__V1__Code code;
};

static void *bg_call(void *arg)
{
    struct bg *b = arg;
    struct cn_rpc_client *c = NULL;
    if (cn_rpc_client_open(&c, b->addr) != CN_OK)
        return NULL;
    Cairn__Test__SleepRequest req = CAIRN__TEST__SLEEP_REQUEST__INIT;
    req.ms = b->ms;
    Cairn__V1__Result *res = NULL;
    if (cn_rpc_client_call(c, b->method, NULL, &req.base, NULL, b->timeout, &res, NULL) == CN_OK) {
        b->code = res->code;
        cairn__v1__result__free_unpacked(res, NULL);
    } else {
        b->code = (Cairn__V1__Code)-1;
    }
    cn_rpc_client_close(c);
    return NULL;
}

static void test_shedding_and_deadline(void **state)
{
    (void)state;
    /* One worker, one queue slot: a running call, a queued one, then shedding. */
    struct cn_rpc_server *s = start("inproc://shed", 1, 1);
    struct bg calls[4] = {
        {"inproc://shed", "Sleep", 300, 2000, 0},
        {"inproc://shed", "Sleep", 10, 2000, 0},
        {"inproc://shed", "Sleep", 10, 2000, 0},
        {"inproc://shed", "Sleep", 10, 100, 0}, /* expires while queued? see below */
    };
    pthread_t t[3];
    pthread_create(&t[0], NULL, bg_call, &calls[0]);
    nng_msleep(50);
    pthread_create(&t[1], NULL, bg_call, &calls[1]);
    nng_msleep(50);
    pthread_create(&t[2], NULL, bg_call, &calls[2]);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(calls[0].code, CAIRN__V1__CODE__OK);
    assert_int_equal(calls[1].code, CAIRN__V1__CODE__OK);
    assert_int_equal(calls[2].code, CAIRN__V1__CODE__RESOURCE_EXHAUSTED);
    assert_true(cn_series_value(s->shed) >= 1);
    assert_int_equal(cn_rpc_server_stop(s, 1000), 0);

    /* Deadline: a call queued behind a 300 ms call with 100 ms left is dropped unstarted. */
    s = start("inproc://dl", 1, 2);
    double expired_before = cn_series_value(s->expired);
    struct bg slow = {"inproc://dl", "Sleep", 300, 2000, 0};
    struct bg late = {"inproc://dl", "Sleep", 10, 100, 0};
    pthread_create(&t[0], NULL, bg_call, &slow);
    nng_msleep(50);
    pthread_create(&t[1], NULL, bg_call, &late);
    pthread_join(t[1], NULL);
    pthread_join(t[0], NULL);
    /* The client gave up at 100 ms (timeout), and the server did not run it. */
    assert_int_equal((int)late.code, -1);
    nng_msleep(50);
    assert_true(cn_series_value(s->expired) >= expired_before + 1);
    assert_int_equal(cn_rpc_server_stop(s, 1000), 0);
}

static void test_drain(void **state)
{
    (void)state;
    struct cn_rpc_server *s = start("inproc://drain", 1, 1);
    struct bg slow = {"inproc://drain", "Sleep", 200, 2000, 0};
    pthread_t t;
    pthread_create(&t, NULL, bg_call, &slow);
    nng_msleep(50);
    /* Stop waits for the running call to finish and reply. */
    assert_int_equal(cn_rpc_server_stop(s, 2000), 0);
    pthread_join(t, NULL);
    assert_int_equal(slow.code, CAIRN__V1__CODE__OK);
}

/* Injected faults: an abort answers its code before the handler (UNAVAILABLE marked
 * unprocessed), only for the methods named; a delay holds the call; clearing restores. */
static void test_faults(void **state)
{
    (void)state;
    struct cn_rpc_server *s = start("inproc://faults", 2, 4);
    struct cn_rpc_client *c = NULL;
    assert_int_equal(cn_rpc_client_open(&c, "inproc://faults"), CN_OK);
    Cairn__Test__SayRequest req = CAIRN__TEST__SAY_REQUEST__INIT;
    req.text = "hi";
    Cairn__Test__SleepRequest sleep = CAIRN__TEST__SLEEP_REQUEST__INIT;
    Cairn__V1__Result *res;
    ProtobufCMessage *resp;

    Cairn__V1__Code code;
    assert_int_equal(cn_code_parse("UNAVAILABLE", &code), CN_OK);
    assert_int_equal(code, CAIRN__V1__CODE__UNAVAILABLE);
    assert_int_equal(cn_code_parse("unavailable", &code), CN_EINVAL);
    assert_int_equal(cn_code_parse(NULL, &code), CN_EINVAL);

    struct cn_rpc_faults f = {.abort_code = CAIRN__V1__CODE__UNAVAILABLE, .abort_percent = 100, .nmethods = 1};
    snprintf(f.methods[0], sizeof f.methods[0], "Say");
    cn_rpc_faults_set(&f);
    assert_int_equal(cn_rpc_client_call(c, "Say", NULL, &req.base, &cairn__test__say_reply__descriptor, 1000,
                                        &res, &resp), CN_OK);
    assert_int_equal(res->code, CAIRN__V1__CODE__UNAVAILABLE);
    assert_string_equal(res->message, "fault injected");
    assert_true(res->unprocessed);
    cairn__v1__result__free_unpacked(res, NULL);
    /* another method is untouched */
    assert_int_equal(cn_rpc_client_call(c, "Sleep", NULL, &sleep.base, &cairn__test__say_reply__descriptor,
                                        1000, &res, &resp), CN_OK);
    assert_int_equal(res->code, CAIRN__V1__CODE__OK);
    cairn__v1__result__free_unpacked(res, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);

    /* an INTERNAL abort is not marked unprocessed */
    f.abort_code = CAIRN__V1__CODE__INTERNAL;
    cn_rpc_faults_set(&f);
    assert_int_equal(cn_rpc_client_call(c, "Say", NULL, &req.base, &cairn__test__say_reply__descriptor, 1000,
                                        &res, &resp), CN_OK);
    assert_int_equal(res->code, CAIRN__V1__CODE__INTERNAL);
    assert_false(res->unprocessed);
    cairn__v1__result__free_unpacked(res, NULL);

    /* a delay on every method */
    struct cn_rpc_faults d = {.delay_ms = 60, .delay_percent = 100};
    cn_rpc_faults_set(&d);
    struct cn_rpc_faults got;
    cn_rpc_faults_get(&got);
    assert_int_equal(got.delay_ms, 60);
    int64_t t0 = cn_mono_ms();
    assert_int_equal(cn_rpc_client_call(c, "Say", NULL, &req.base, &cairn__test__say_reply__descriptor, 1000,
                                        &res, &resp), CN_OK);
    assert_int_equal(res->code, CAIRN__V1__CODE__OK);
    assert_true(cn_mono_ms() - t0 >= 60);
    cairn__v1__result__free_unpacked(res, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);

    cn_rpc_faults_set(NULL);
    cn_rpc_faults_get(&got);
    assert_int_equal(got.delay_ms, 0);
    assert_int_equal(got.abort_code, CAIRN__V1__CODE__OK);
    t0 = cn_mono_ms();
    assert_int_equal(cn_rpc_client_call(c, "Say", NULL, &req.base, &cairn__test__say_reply__descriptor, 1000,
                                        &res, &resp), CN_OK);
    assert_int_equal(res->code, CAIRN__V1__CODE__OK);
    assert_true(cn_mono_ms() - t0 < 60);
    cairn__v1__result__free_unpacked(res, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);

    cn_rpc_client_close(c);
    assert_int_equal(cn_rpc_server_stop(s, 1000), 0);
}

static bool on_worker_thread(const struct cn_rpc_server *s, pthread_t t)
{
    for (int i = 0; i < s->opts.workers; i++)
        if (pthread_equal(s->workers[i].thread, t))
            return true;
    return false;
}

/* Says text on c; returns the milliseconds it took. */
static int64_t say(struct cn_rpc_client *c, const char *text)
{
    Cairn__Test__SayRequest req = CAIRN__TEST__SAY_REQUEST__INIT;
    req.text = (char *)text;
    Cairn__V1__Result *res;
    ProtobufCMessage *resp;
    int64_t t0 = cn_mono_ms();
    assert_int_equal(cn_rpc_client_call(c, "Say", NULL, &req.base, &cairn__test__say_reply__descriptor, 2000,
                                        &res, &resp), CN_OK);
    assert_int_equal(res->code, CAIRN__V1__CODE__OK);
    Cairn__Test__SayReply *r = (Cairn__Test__SayReply *)resp;
    assert_true(r->worker >= 0 && r->worker < 2);
    /* the state worker_init made for the slot the call was given */
    assert_ptr_equal(say_state, (void *)(intptr_t)(r->worker + 1));
    cairn__v1__result__free_unpacked(res, NULL);
    protobuf_c_message_free_unpacked(resp, NULL);
    return cn_mono_ms() - t0;
}

static void test_inline(void **state)
{
    (void)state;
    static const char *const inl[] = {"Say", NULL};
    static const char *const bad[] = {"Say", "Shout", NULL};
    struct cn_rpc_server *s = NULL;
    struct cn_rpc_server_opts o = {
        .listen = "inproc://inline", .service = &echo_service.base, .workers = 1, .queue = 2,
        .worker_init = w_init, .worker_fini = w_fini, .name = "echo", .inline_methods = bad,
    };
    assert_int_equal(cn_rpc_server_start(&s, &o), CN_EINVAL); /* no method Shout */
    o.inline_methods = inl;
    o.inline_max = 64;
    worker_inits = worker_finis = 0;
    assert_int_equal(cn_rpc_server_start(&s, &o), CN_OK);
    struct cn_rpc_client *c = NULL;
    assert_int_equal(cn_rpc_client_open(&c, "inproc://inline"), CN_OK);

    /* A listed method runs on nng's thread, with the free worker's slot (once the worker
     * has made its state: until then the call waits on the queue for it). */
    for (int i = 0; i < 200; i++) {
        pthread_mutex_lock(&s->mtx);
        bool ready = s->free_slots != NULL;
        pthread_mutex_unlock(&s->mtx);
        if (ready)
            break;
        nng_msleep(5);
    }
    say(c, "hi");
    assert_false(on_worker_thread(s, say_thread));
    /* Over inline_max bytes, it is handed to a worker. */
    say(c, "a text long enough to make the call larger than sixty-four bytes in all");
    assert_true(on_worker_thread(s, say_thread));

    /* While the only slot is busy, a listed method waits for it on the queue. */
    struct bg slow = {"inproc://inline", "Sleep", 300, 2000, 0};
    pthread_t t;
    pthread_create(&t, NULL, bg_call, &slow);
    nng_msleep(50);
    assert_true(say(c, "hi") >= 200);
    assert_true(on_worker_thread(s, say_thread));
    pthread_join(t, NULL);
    assert_int_equal(slow.code, CAIRN__V1__CODE__OK);
    say(c, "hi");
    assert_false(on_worker_thread(s, say_thread));

    /* With a fault set (a delay would sleep nng's thread), nothing runs inline. */
    struct cn_rpc_faults f = {.delay_ms = 1, .delay_percent = 100};
    cn_rpc_faults_set(&f);
    say(c, "hi");
    assert_true(on_worker_thread(s, say_thread));
    cn_rpc_faults_set(NULL);

    cn_rpc_client_close(c);
    assert_int_equal(cn_rpc_server_stop(s, 1000), 0);
    assert_int_equal(worker_inits, 1);
    assert_int_equal(worker_finis, 1);
}

/* A call's count is gone before its reply leaves: a client calling one after another
 * always sees load 1 (its own call), inline or on a worker. The gateway balances on this
 * figure; a stale count made one replica look busy to a sequential client. */
static void test_load_excludes_answered_calls(void **state)
{
    (void)state;
    static const char *const inl[] = {"Say", NULL};
    struct cn_rpc_server *s = NULL;
    struct cn_rpc_server_opts o = {
        .listen = "inproc://load", .service = &echo_service.base, .workers = 2, .queue = 2,
        .name = "echo", .inline_methods = inl,
    };
    assert_int_equal(cn_rpc_server_start(&s, &o), CN_OK);
    struct cn_rpc_client *c = NULL;
    assert_int_equal(cn_rpc_client_open(&c, "inproc://load"), CN_OK);
    Cairn__Test__SayRequest req = CAIRN__TEST__SAY_REQUEST__INIT;
    req.text = "hi";
    Cairn__Test__SleepRequest sleep = CAIRN__TEST__SLEEP_REQUEST__INIT;
    for (int i = 0; i < 400; i++) {
        Cairn__V1__Result *res;
        ProtobufCMessage *resp;
        bool inline_say = i % 2 == 0;
        assert_int_equal(cn_rpc_client_call(c, inline_say ? "Say" : "Sleep", NULL,
                                            inline_say ? &req.base : &sleep.base,
                                            &cairn__test__say_reply__descriptor, 1000, &res, &resp),
                         CN_OK);
        assert_int_equal(res->code, CAIRN__V1__CODE__OK);
        if (res->load != 1)
            fail_msg("call %d (%s) reported load %u", i, inline_say ? "inline" : "worker", res->load);
        cairn__v1__result__free_unpacked(res, NULL);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    cn_rpc_client_close(c);
    assert_int_equal(cn_rpc_server_stop(s, 1000), 0);
}

/* cn_call_send_now: the reply arrives while the handler still runs, the call no longer
 * counts in the load, but its worker is busy until the handler returns, and a stop waits
 * for it; on a worker and inline (as Predict and Infer run). */
static void send_now_case(bool inlined)
{
    static const char *const inl[] = {"Linger", NULL};
    struct cn_rpc_server *s = NULL;
    struct cn_rpc_server_opts o = {
        .listen = "inproc://sendnow", .service = &echo_service.base, .workers = 1, .queue = 2,
        .name = "echo", .inline_methods = inlined ? inl : NULL, .inline_max = 1024,
        .worker_init = w_init, .worker_fini = w_fini,
    };
    assert_int_equal(cn_rpc_server_start(&s, &o), CN_OK);
    /* Inline needs the worker's slot made (until then calls wait on the queue). */
    for (int i = 0; i < 200; i++) {
        pthread_mutex_lock(&s->mtx);
        bool ready = s->free_slots != NULL;
        pthread_mutex_unlock(&s->mtx);
        if (ready)
            break;
        nng_msleep(5);
    }
    struct cn_rpc_client *c = NULL;
    assert_int_equal(cn_rpc_client_open(&c, "inproc://sendnow"), CN_OK);
    Cairn__Test__SleepRequest req = CAIRN__TEST__SLEEP_REQUEST__INIT;
    req.ms = 300;
    Cairn__V1__Result *res;
    ProtobufCMessage *resp;

    for (int round = 0; round < 2; round++) {
        atomic_store(&linger_done, 0);
        int64_t t0 = cn_mono_ms();
        assert_int_equal(cn_rpc_client_call(c, "Linger", NULL, &req.base, &cairn__test__say_reply__descriptor,
                                            2000, &res, &resp),
                         CN_OK);
        assert_int_equal(res->code, CAIRN__V1__CODE__OK);
        assert_string_equal(((Cairn__Test__SayReply *)resp)->text, "early");
        assert_true(cn_mono_ms() - t0 < 250);
        assert_int_equal(atomic_load(&linger_done), 0);
        if (round == 0)
            assert_true(on_worker_thread(s, linger_thread) == !inlined);
        cairn__v1__result__free_unpacked(res, NULL);
        protobuf_c_message_free_unpacked(resp, NULL);
        assert_int_equal(atomic_load(&s->load), 0);
        if (round == 0) {
            /* The one worker is still lingering: the next call waits for it. */
            assert_true(say(c, "hi") >= 150);
            assert_int_equal(atomic_load(&linger_done), 1);
        }
    }
    /* A stop drains the second one, still lingering. */
    cn_rpc_client_close(c);
    assert_int_equal(cn_rpc_server_stop(s, 2000), 0);
    assert_int_equal(atomic_load(&linger_done), 1);
}

static void test_send_now(void **state)
{
    (void)state;
    send_now_case(false);
    send_now_case(true);
}

/* A drain that runs out of time leaves a call running inline with a worker's slot; that
 * worker exits but must not finish the slot (free its arena, close its state) under it. */
static void test_cut_drain_keeps_a_lent_slot(void **state)
{
    (void)state;
    static const char *const inl[] = {"Sleep", NULL};
    struct cn_rpc_server *s = NULL;
    struct cn_rpc_server_opts o = {
        .listen = "inproc://cut", .service = &echo_service.base, .workers = 1, .queue = 1,
        .worker_init = w_init, .worker_fini = w_fini, .name = "echo", .inline_methods = inl,
    };
    worker_inits = worker_finis = 0;
    assert_int_equal(cn_rpc_server_start(&s, &o), CN_OK);
    for (int i = 0; i < 200 && __atomic_load_n(&worker_inits, __ATOMIC_SEQ_CST) == 0; i++)
        nng_msleep(5);
    nng_msleep(20); /* the slot joins the free list just after worker_init */
    struct bg slow = {"inproc://cut", "Sleep", 300, 2000, 0};
    pthread_t t;
    pthread_create(&t, NULL, bg_call, &slow);
    nng_msleep(80);
    assert_int_equal(cn_rpc_server_stop(s, 50), 1); /* still running, inline */
    pthread_join(s->workers[0].thread, NULL);      /* the worker has left... */
    assert_int_equal(worker_finis, 0);              /* ...without finishing the slot */
    pthread_join(t, NULL);                          /* the call ends, using its arena */
    nng_msleep(50);
    /* Now nothing uses it: the test frees what the exiting process would have left. */
    assert_non_null(s->free_slots);
    cn_arena_free(s->workers[0].slot.arena);
    server_free(s);
}

/* The method is read off a packed Call without unpacking it, and anything odd is "no". */
static void test_peek_method(void **state)
{
    (void)state;
    nng_msg *m;
    assert_int_equal(cn_rpc_call_encode_raw("Predict", "r1", 100, NULL, NULL, (const uint8_t *)"x", 1, &m), CN_OK);
    const char *name;
    size_t len;
    assert_true(peek_method(nng_msg_body(m), nng_msg_len(m), &name, &len));
    assert_int_equal(len, 7);
    assert_memory_equal(name, "Predict", 7);
    nng_msg_free(m);

    static const uint8_t ok[] = {0x0a, 0x02, 'h', 'i'};
    assert_true(peek_method(ok, sizeof ok, &name, &len));
    assert_int_equal(len, 2);
    static const uint8_t empty[] = {0x0a, 0x00};
    assert_true(peek_method(empty, sizeof empty, &name, &len));
    assert_int_equal(len, 0);
    static const uint8_t short_body[] = {0x0a, 0x03, 'h', 'i'};  /* length past the end */
    assert_false(peek_method(short_body, sizeof short_body, &name, &len));
    static const uint8_t other_field[] = {0x12, 0x02, 'h', 'i'}; /* request_id first */
    assert_false(peek_method(other_field, sizeof other_field, &name, &len));
    static const uint8_t open_varint[] = {0x0a, 0x80, 0x80};     /* varint never ends */
    assert_false(peek_method(open_varint, sizeof open_varint, &name, &len));
    static const uint8_t long_varint[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_false(peek_method(long_varint, sizeof long_varint, &name, &len));
    static const uint8_t huge[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'h'};
    assert_false(peek_method(huge, sizeof huge, &name, &len));
    assert_false(peek_method(ok, 1, &name, &len));
    assert_false(peek_method(ok, 0, &name, &len));
}

static void test_bad_listen(void **state)
{
    (void)state;
    struct cn_rpc_server *s = NULL;
    struct cn_rpc_server_opts o = {.listen = "bogus://x", .service = &echo_service.base, .workers = 1};
    assert_int_not_equal(cn_rpc_server_start(&s, &o), CN_OK);
    struct cn_rpc_client *c = NULL;
    assert_int_equal(cn_rpc_client_open(&c, "nonsense"), CN_EINVAL);
    assert_string_equal(cn_code_name(CAIRN__V1__CODE__UNAUTHENTICATED), "UNAUTHENTICATED");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_shedding_and_deadline),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_inline),
        cmocka_unit_test(test_load_excludes_answered_calls),
        cmocka_unit_test(test_send_now),
        cmocka_unit_test(test_cut_drain_keeps_a_lent_slot),
        cmocka_unit_test(test_peek_method),
        cmocka_unit_test(test_bad_listen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
