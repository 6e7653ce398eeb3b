/* main.c — cairn-inference: the model registry, XGBoost serving, aliases, experiments,
 * the prediction log and drift (README.md). Everything but this table is in the
 * inference_*.c files and lib/svc.c.
 *
 * `cairn-inference __validate-model` is the child process that checks an uploaded model
 * file (inference_model.c): it is dispatched before anything else starts, so the child
 * never reads settings, opens Postgres or starts a thread.
 *
 * Workers default to one per CPU it may run on (CAIRN_CPUS) plus two: prediction is CPU-bound (one booster
 * call per worker, nthread=1), and the two extra keep serving at full speed while
 * registry calls wait on Postgres or on a validating child.
 */
#include <string.h>

#include "inference.h"

struct cn_svc infer_svc = {
    .name = "inference",
    .rpc_port = 7104,
    .admin_port = 9104,
    .service = &infer_service.base,
    .migrations = inference_migrations,
    .conf = infer_conf_defs,
    .conf_values = &infer_conf,
    .init = infer_init,
    .fini = infer_fini,
    .max_msg = 64u << 20, /* a 32 MiB model file and its envelope */
    /* A warm predict is ~30-100 µs of CPU: run it on the thread that received it rather
     * than hand it to a worker (lib/rpc.c, "Inline calls"). Batches over 64 KiB still go
     * to the workers, so a long one never holds up nng's own threads. */
    .inline_methods = (const char *const[]){"Predict", "Infer", NULL},
    .workers = 2,
    .workers_per_cpu = 1,
};

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "__validate-model") == 0)
        return infer_model_validate_main(argc, argv);
    infer_svc.nmigrations = inference_migrations_count;
    infer_svc.nconf = infer_conf_ndefs;
    return cn_svc_main(&infer_svc, argc, argv);
}
