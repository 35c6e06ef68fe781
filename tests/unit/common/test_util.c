/*
 * test_util.c - ISO times, ObjectIds and the status computation at its thresholds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/util.h"

static void test_iso_roundtrip(void **state)
{
    char buf[ISO_TIME_LEN + 1];
    util_iso_time(1700000000123, buf);
    assert_string_equal(buf, "2023-11-14T22:13:20.123Z");
    int64_t ms = 0;
    assert_int_equal(util_parse_iso_time(buf, &ms), 0);
    assert_int_equal(ms, 1700000000123);
    assert_int_equal(util_parse_iso_time("2023-11-14T22:13:20Z", &ms), 0);
    assert_int_equal(ms, 1700000000000);
    assert_int_equal(util_parse_iso_time("2023-11-14T22:13:20.5", &ms), 0);
    assert_int_equal(ms, 1700000000500);
    assert_int_equal(util_parse_iso_time("garbage", &ms), -1);
    assert_int_equal(util_parse_iso_time("2023-11-14T22:13:20.123Zx", &ms), -1);
}

static void test_oid(void **state)
{
    char a[OID_HEX_LEN + 1], b[OID_HEX_LEN + 1];
    util_oid_new(a);
    util_oid_new(b);
    assert_true(util_oid_valid(a));
    assert_true(util_oid_valid(b));
    assert_string_not_equal(a, b);
    assert_true(util_oid_valid("507F1F77BCF86CD799439011"));
    assert_false(util_oid_valid("507f1f77bcf86cd79943901"));
    assert_false(util_oid_valid("507f1f77bcf86cd7994390111"));
    assert_false(util_oid_valid("507f1f77bcf86cd79943901g"));
    assert_false(util_oid_valid(NULL));
}

static void test_status_thresholds(void **state)
{
    const int64_t away = 300000, off = 1800000, now = 1700000000000;
    assert_int_equal(presence_compute(true, now, now, away, off), PRESENCE_ONLINE);
    assert_int_equal(presence_compute(true, now - away + 1, now, away, off), PRESENCE_ONLINE);
    assert_int_equal(presence_compute(true, now - away, now, away, off), PRESENCE_AWAY);
    assert_int_equal(presence_compute(true, now - off + 1, now, away, off), PRESENCE_AWAY);
    assert_int_equal(presence_compute(true, now - off, now, away, off), PRESENCE_OFFLINE);
    assert_int_equal(presence_compute(false, now, now, away, off), PRESENCE_AWAY);
    assert_int_equal(presence_compute(false, now - off + 1, now, away, off), PRESENCE_AWAY);
    assert_int_equal(presence_compute(false, now - off, now, away, off), PRESENCE_OFFLINE);
    assert_int_equal(presence_compute(true, 0, now, away, off), PRESENCE_OFFLINE);
    assert_int_equal(presence_compute(false, 0, now, away, off), PRESENCE_OFFLINE);
    assert_string_equal(presence_status_name(PRESENCE_AWAY), "away");
    assert_string_equal(presence_status_color(PRESENCE_ONLINE), "#10b981");
    assert_string_equal(presence_status_color(PRESENCE_AWAY), "#f59e0b");
    assert_string_equal(presence_status_color(PRESENCE_OFFLINE), "#6b7280");
}

static void test_header_has_token(void **state)
{
    assert_true(util_header_has_token("Upgrade", "upgrade"));
    assert_true(util_header_has_token("keep-alive, Upgrade", "upgrade"));
    assert_true(util_header_has_token(" keep-alive ,\tUPGRADE\t", "upgrade"));
    assert_false(util_header_has_token("keep-alive", "upgrade"));
    assert_false(util_header_has_token("upgraded, x-upgrade", "upgrade"));
    assert_false(util_header_has_token("", "upgrade"));
    assert_false(util_header_has_token(",,", "upgrade"));
    assert_false(util_header_has_token(NULL, "upgrade"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iso_roundtrip),
        cmocka_unit_test(test_oid),
        cmocka_unit_test(test_status_thresholds),
        cmocka_unit_test(test_header_has_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
