/* main.c — cairn-auth: users, password login, signing keys and JWKS, refresh-token
 * families, API keys, roles and the audit log (README.md). Everything but this table is
 * in the auth_*.c files and lib/svc.c.
 *
 * Workers default to 8 so that the password-hash pool (2 hashing + 4 waiting by default)
 * always leaves workers for Refresh, Me and GetJwks during a login flood.
 */
#include "auth.h"

struct cn_svc auth_svc = {
    .name = "auth",
    .rpc_port = 7101,
    .admin_port = 9101,
    .workers = 8,
    .service = &auth_service.base,
    .migrations = auth_migrations,
    .conf = auth_conf_defs,
    .conf_values = &auth_conf,
    .command = auth_command,
    .init = auth_init,
    .fini = auth_fini,
};

int main(int argc, char **argv)
{
    auth_svc.nmigrations = auth_migrations_count;
    auth_svc.nconf = auth_conf_ndefs;
    return cn_svc_main(&auth_svc, argc, argv);
}
