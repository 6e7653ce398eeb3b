/* auth_admin.c — how the first admin comes to be.
 *
 *   cairn-auth create-admin --email X
 *       The operator's way (svc's command hook; runs after migrations, before init). The
 *       password comes from CAIRN_ADMIN_PASSWORD when that is set and not empty, else
 *       from one line on stdin. Both are checked as SignUp checks them. A new address
 *       becomes a new admin; an existing user is promoted (and re-enabled), and gets the
 *       password only if one was given. Prints "admin <email> ready (id <uuid>)", exits 0;
 *       bad input exits 2, a database failure 1. Audited as admin.created.
 *   CAIRN_BOOTSTRAP_ADMIN_EMAIL / CAIRN_BOOTSTRAP_ADMIN_PASSWORD
 *       The unattended way (a fresh deployment): at init, when both are set and no admin
 *       exists yet, the same as above, under an advisory lock so replicas starting
 *       together make one admin. Once any admin exists the settings do nothing, so they
 *       may stay set. Logged as AUTH-BOOTSTRAP-ADMIN, audited as user.bootstrap.
 *
 * auth_command also dispatches `cairn-auth rotate-keys`, which lives with the keys in
 * auth_keys.c. To add a subcommand: a branch in auth_command, its usage line, and
 * README.md.
 */
#include "auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "err.h"
#include "log.h"
#include "util.h"

#define HASH_WAIT_MS 10000
/* A password line: AUTH_PASSWORD_MAX code points of up to 4 bytes, CR, LF, NUL. */
#define LINE_MAX_BYTES (AUTH_PASSWORD_MAX * 4 + 3)

static const char *const outcome_words[] = {
    [AUTH_ADMIN_CREATED] = "created",
    [AUTH_ADMIN_PROMOTED] = "promoted to admin",
    [AUTH_ADMIN_UPDATED] = "confirmed as admin",
    [AUTH_ADMIN_SKIPPED] = "skipped",
};

static int usage(void)
{
    fprintf(stderr, "usage: cairn-auth create-admin --email ADDRESS\n"
                    "  the password is read from CAIRN_ADMIN_PASSWORD if set, else as one line "
                    "from stdin\n"
                    "  (an empty line keeps an existing user's password)\n");
    return 2;
}

/* Reads one line from stdin into pw (cap LINE_MAX_BYTES) without its line end. 0, or 2
 * (after saying why) for a line too long to be a password. */
static int read_password_line(char *pw, size_t cap)
{
    size_t n;

    pw[0] = '\0';
    if (fgets(pw, (int)cap, stdin) == NULL)
        return 0; /* end of input: no password given */
    n = strlen(pw);
    if (n > 0 && pw[n - 1] != '\n' && !feof(stdin)) {
        fprintf(stderr, "cairn-auth create-admin: the password line is too long\n");
        return 2;
    }
    while (n > 0 && (pw[n - 1] == '\n' || pw[n - 1] == '\r'))
        pw[--n] = '\0';
    return 0;
}

/* Hashes pw on a one-slot pool of our own (init has not run in a subcommand). */
static int hash_alone(const char *pw, char *hash, size_t cap)
{
    int rc = auth_password_init(1, 0);

    if (rc == CN_OK)
        rc = auth_password_hash(pw, HASH_WAIT_MS, hash, cap);
    auth_password_fini();
    return rc;
}

static int create_admin(int argc, char **argv)
{
    char email[AUTH_EMAIL_MAX + 1], hash[AUTH_HASH_MAX], detail[128];
    char *pw = cn_calloc(1, LINE_MAX_BYTES);
    const char *email_in = NULL, *env, *why;
    enum auth_admin_outcome outcome;
    struct auth_user u;
    struct cn_pg *pg = NULL;
    bool bad = false, given;
    int rc, code = 2;

    memset(&u, 0, sizeof u);
    hash[0] = '\0';
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--email") == 0 && i + 1 < argc)
            email_in = argv[++i];
        else if (strncmp(argv[i], "--email=", 8) == 0)
            email_in = argv[i] + 8;
        else
            goto usage;
    }
    if (email_in == NULL)
        goto usage;

    env = getenv("CAIRN_ADMIN_PASSWORD");
    if (env != NULL && env[0] != '\0') {
        if (strlen(env) >= LINE_MAX_BYTES) {
            fprintf(stderr, "cairn-auth create-admin: CAIRN_ADMIN_PASSWORD is too long\n");
            goto out;
        }
        snprintf(pw, LINE_MAX_BYTES, "%s", env);
    } else if (read_password_line(pw, LINE_MAX_BYTES) != 0) {
        goto out;
    }
    given = pw[0] != '\0';

    if (auth_email_normalize(email_in, email, sizeof email, &why) != CN_OK) {
        fprintf(stderr, "cairn-auth create-admin: email %s\n", why);
        bad = true;
    }
    if (given && auth_password_check(pw, &why) != CN_OK) {
        fprintf(stderr, "cairn-auth create-admin: password %s\n", why);
        bad = true;
    }
    if (bad)
        goto out;
    if (given && hash_alone(pw, hash, sizeof hash) != CN_OK) {
        fprintf(stderr, "cairn-auth create-admin: cannot hash the password\n");
        code = 1;
        goto out;
    }

    pg = cn_pg_new(auth_svc.common.pg_dsn);
    rc = auth_db_admin_ensure(pg, email, given ? hash : NULL, false, &outcome, &u);
    if (rc == CN_ENOTFOUND) {
        fprintf(stderr,
                "cairn-auth create-admin: there is no user %s yet, and a new admin needs a "
                "password (CAIRN_ADMIN_PASSWORD or a line on stdin)\n",
                email);
        goto out;
    }
    if (rc != CN_OK) {
        fprintf(stderr, "cairn-auth create-admin: database: %s %s\n", cn_strerror(rc),
                cn_pg_errmsg(pg));
        code = 1;
        goto out;
    }
    snprintf(detail, sizeof detail, "%s by cairn-auth create-admin%s", outcome_words[outcome],
             given && outcome != AUTH_ADMIN_CREATED ? "; password set" : "");
    if (auth_db_audit_insert(pg, "admin.created", NULL, u.id, NULL, NULL, detail) != CN_OK)
        cn_log_error("AUTH-AUDIT-FAILED", "cannot record admin.created for %s: %s", u.id,
                     cn_pg_errmsg(pg));
    cn_log_info("AUTH-ADMIN", "user %s %s", u.id, detail);
    printf("admin %s ready (id %s)\n", u.email, u.id);
    fflush(stdout);
    code = 0;
    goto out;

usage:
    code = usage();
out:
    cn_pg_free(pg);
    OPENSSL_cleanse(pw, LINE_MAX_BYTES);
    OPENSSL_cleanse(hash, sizeof hash);
    free(pw);
    return code;
}

int auth_command(int argc, char **argv)
{
    if (strcmp(argv[0], "create-admin") == 0)
        return create_admin(argc, argv);
    if (strcmp(argv[0], "rotate-keys") == 0)
        return auth_keys_rotate_command(argc, argv, auth_svc.common.pg_dsn, auth_conf.key_file,
                                        auth_conf.key_publish_s);
    return -1;
}

int auth_bootstrap_admin(struct cn_pg *pg)
{
    const char *email_in = auth_conf.bootstrap_email, *pw = auth_conf.bootstrap_password, *why;
    char email[AUTH_EMAIL_MAX + 1], hash[AUTH_HASH_MAX];
    enum auth_admin_outcome outcome;
    struct auth_user u;
    bool exists;
    int rc;

    if (email_in[0] == '\0' && pw[0] == '\0')
        return 0;
    if (email_in[0] == '\0' || pw[0] == '\0') {
        cn_log_warn("AUTH-CONF", "set both CAIRN_BOOTSTRAP_ADMIN_EMAIL and "
                                 "CAIRN_BOOTSTRAP_ADMIN_PASSWORD, or neither: no admin is made");
        return 0;
    }
    if (auth_email_normalize(email_in, email, sizeof email, &why) != CN_OK) {
        cn_log_error("AUTH-CONF", "CAIRN_BOOTSTRAP_ADMIN_EMAIL %s", why);
        return -1;
    }
    if (auth_password_check(pw, &why) != CN_OK) {
        cn_log_error("AUTH-CONF", "CAIRN_BOOTSTRAP_ADMIN_PASSWORD %s", why);
        return -1;
    }
    /* Checked before hashing so a normal start (an admin exists) costs no hash. */
    rc = auth_db_admin_exists(pg, &exists);
    if (rc != CN_OK)
        goto fail;
    if (exists) {
        cn_log(CN_LOG_DEBUG, "AUTH-BOOTSTRAP-ADMIN", NULL,
               "an admin exists; CAIRN_BOOTSTRAP_ADMIN_EMAIL is not used");
        return 0;
    }
    rc = auth_password_hash(pw, HASH_WAIT_MS, hash, sizeof hash);
    if (rc != CN_OK) {
        cn_log_error("AUTH-BOOTSTRAP-ADMIN", "cannot hash the bootstrap admin's password (%s)",
                     cn_strerror(rc));
        return -1;
    }
    memset(&u, 0, sizeof u);
    rc = auth_db_admin_ensure(pg, email, hash, true, &outcome, &u);
    OPENSSL_cleanse(hash, sizeof hash);
    if (rc != CN_OK)
        goto fail;
    if (outcome == AUTH_ADMIN_SKIPPED) {
        cn_log_info("AUTH-BOOTSTRAP-ADMIN", "another replica made the first admin");
        return 0;
    }
    cn_log_info("AUTH-BOOTSTRAP-ADMIN", "user %s %s from CAIRN_BOOTSTRAP_ADMIN_EMAIL", u.id,
                outcome_words[outcome]);
    if (auth_db_audit_insert(pg, "user.bootstrap", NULL, u.id, NULL, NULL,
                             outcome == AUTH_ADMIN_CREATED
                                 ? "first admin created from CAIRN_BOOTSTRAP_ADMIN_EMAIL"
                                 : "first admin promoted from CAIRN_BOOTSTRAP_ADMIN_EMAIL; "
                                   "password set") != CN_OK)
        cn_log_error("AUTH-AUDIT-FAILED", "cannot record user.bootstrap for %s: %s", u.id,
                     cn_pg_errmsg(pg));
    return 0;

fail:
    cn_log_error("AUTH-BOOTSTRAP-ADMIN", "cannot make the bootstrap admin (%s, sqlstate %s): %s",
                 cn_strerror(rc), cn_pg_sqlstate(pg), cn_pg_errmsg(pg));
    return -1;
}
