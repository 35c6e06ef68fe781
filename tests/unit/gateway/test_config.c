/*
 * test_config.c - configuration loading: defaults, environment, flags winning over the
 * environment, and refusal of bad values with a message naming the variable.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gateway/config.h"

struct env_pair {
    const char *name, *value;
};

static const char *table_env(const char *name, void *cls)
{
    for (const struct env_pair *p = cls; p->name; p++)
        if (!strcmp(p->name, name))
            return p->value;
    return NULL;
}

static int load(struct gw_config *cfg, const struct env_pair *env, int argc, char **argv, char *err)
{
    return gw_config_load(cfg, argc, argv, table_env, (void *)env, err, 256);
}

static const struct env_pair base_env[] = {{"JWT_SECRET", "0123456789abcdef0123"}, {NULL, NULL}};

static void test_defaults(void **state)
{
    struct gw_config cfg;
    char err[256] = "";
    char *argv[] = {"pg"};
    assert_int_equal(load(&cfg, base_env, 1, argv, err), GW_CONFIG_OK);
    assert_int_equal(cfg.port, 8000);
    assert_string_equal(cfg.host, "0.0.0.0");
    assert_string_equal(cfg.database_url, "sqlite:./data/presence.db");
    assert_int_equal(cfg.ping_interval_ms, 25000);
    assert_int_equal(cfg.ping_timeout_ms, 10000);
    assert_int_equal(cfg.connect_timeout_ms, 45000);
    assert_int_equal(cfg.activity_throttle_ms, 60000);
    assert_int_equal(cfg.offline_threshold_ms, 300000);
    assert_int_equal(cfg.maintenance_interval_ms, 60000);
    assert_int_equal(cfg.away_after_ms, 300000);
    assert_int_equal(cfg.offline_after_ms, 1800000);
    assert_int_equal(cfg.disconnect_grace_ms, 0);
    assert_int_equal(cfg.max_payload_bytes, 1000000);
    assert_int_equal(cfg.max_events_per_sec, 50);
    assert_int_equal(cfg.request_timeout_ms, 10000);
    assert_string_equal(cfg.log_level, "info");
    assert_string_equal(cfg.cors_origins, "");
    assert_false(cfg.single_session);
    assert_false(cfg.dev);
    assert_int_equal(cfg.jwt_secret_len, 20);
    gw_config_free(&cfg);
}

static void test_env_and_flags(void **state)
{
    const struct env_pair env[] = {{"JWT_SECRET", "0123456789abcdef0123"},
                                   {"PORT", "9000"},
                                   {"PING_INTERVAL_MS", "300"},
                                   {"SINGLE_SESSION", "1"},
                                   {"LOG_LEVEL", "debug"},
                                   {NULL, NULL}};
    struct gw_config cfg;
    char err[256] = "";
    char *argv[] = {"pg", "--port", "9100", "--ping-timeout-ms=200", "--dev", "--single-session"};
    assert_int_equal(load(&cfg, env, 6, argv, err), GW_CONFIG_OK);
    assert_int_equal(cfg.port, 9100); /* the flag wins */
    assert_int_equal(cfg.ping_interval_ms, 300);
    assert_int_equal(cfg.ping_timeout_ms, 200);
    assert_true(cfg.single_session);
    assert_true(cfg.dev);
    assert_string_equal(cfg.log_level, "debug");
    gw_config_free(&cfg);
}

static void expect_refused(const struct env_pair *env, int argc, char **argv, const char *name)
{
    struct gw_config cfg;
    char err[256] = "";
    assert_int_equal(load(&cfg, env, argc, argv, err), GW_CONFIG_ERR);
    assert_non_null(strstr(err, name));
}

static void test_refusals(void **state)
{
    char *argv1[] = {"pg"};
    const struct env_pair no_secret[] = {{NULL, NULL}};
    expect_refused(no_secret, 1, argv1, "JWT_SECRET");
    const struct env_pair short_secret[] = {{"JWT_SECRET", "short"}, {NULL, NULL}};
    expect_refused(short_secret, 1, argv1, "JWT_SECRET");
    const struct env_pair bad_port[] = {
        {"JWT_SECRET", "0123456789abcdef0123"}, {"PORT", "70000"}, {NULL, NULL}};
    expect_refused(bad_port, 1, argv1, "PORT");
    const struct env_pair bad_num[] = {
        {"JWT_SECRET", "0123456789abcdef0123"}, {"PING_INTERVAL_MS", "12abc"}, {NULL, NULL}};
    expect_refused(bad_num, 1, argv1, "PING_INTERVAL_MS");
    const struct env_pair neg[] = {
        {"JWT_SECRET", "0123456789abcdef0123"}, {"DISCONNECT_GRACE_MS", "-1"}, {NULL, NULL}};
    expect_refused(neg, 1, argv1, "DISCONNECT_GRACE_MS");
    const struct env_pair bad_bool[] = {
        {"JWT_SECRET", "0123456789abcdef0123"}, {"SINGLE_SESSION", "maybe"}, {NULL, NULL}};
    expect_refused(bad_bool, 1, argv1, "SINGLE_SESSION");
    const struct env_pair bad_level[] = {
        {"JWT_SECRET", "0123456789abcdef0123"}, {"LOG_LEVEL", "loud"}, {NULL, NULL}};
    expect_refused(bad_level, 1, argv1, "LOG_LEVEL");
    const struct env_pair bad_db[] = {
        {"JWT_SECRET", "0123456789abcdef0123"}, {"DATABASE_URL", "postgres://x"}, {NULL, NULL}};
    expect_refused(bad_db, 1, argv1, "DATABASE_URL");
    const struct env_pair thresholds[] = {{"JWT_SECRET", "0123456789abcdef0123"},
                                          {"AWAY_AFTER_MS", "5000"},
                                          {"OFFLINE_AFTER_MS", "4000"},
                                          {NULL, NULL}};
    expect_refused(thresholds, 1, argv1, "AWAY_AFTER_MS");
    char *argv2[] = {"pg", "--bogus", "1"};
    expect_refused(base_env, 3, argv2, "--bogus");
    char *argv3[] = {"pg", "--port"};
    expect_refused(base_env, 2, argv3, "PORT");
    char *argv4[] = {"pg", "--max-events-per-sec", "0"};
    expect_refused(base_env, 3, argv4, "MAX_EVENTS_PER_SEC");
}

static void test_dev_without_secret_and_help(void **state)
{
    const struct env_pair none[] = {{NULL, NULL}};
    struct gw_config cfg;
    char err[256] = "";
    char *argv[] = {"pg", "--dev"};
    assert_int_equal(load(&cfg, none, 2, argv, err), GW_CONFIG_OK);
    assert_null(cfg.jwt_secret); /* main generates one */
    gw_config_free(&cfg);
    char *argv2[] = {"pg", "--help"};
    assert_int_equal(load(&cfg, base_env, 2, argv2, err), GW_CONFIG_HELP);
    gw_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_env_and_flags),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_dev_without_secret_and_help),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
