/*
 * test_util.c - ISO times, ObjectIds and the status computation at its thresholds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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

/* The arithmetic civil date against gmtime_r: day and month edges, leap days (2000 is one,
 * 2100 is not), before 1970, the last millisecond of 9999, and a spread of instants. */
static void iso_expect(int64_t ms)
{
    char got[ISO_TIME_LEN + 1], want[64];
    int64_t secs = ms / 1000, millis = ms % 1000;
    if (millis < 0) {
        millis += 1000;
        secs--;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)millis);
    util_iso_time(ms, got);
    if (strcmp(got, want) != 0)
        fail_msg("util_iso_time(%lld) = %s, gmtime_r says %s", (long long)ms, got, want);
}

static void test_iso_civil(void **state)
{
    (void)state;
    static const int64_t edges[] = {
        0,
        1,
        999,
        86399999,
        86400000,
        951782400000,
        951868799999,
        951868800000,
        4107542400000,
        4107628800000,
        -1,
        -86400000,
        -86400001,
        -2208988800000,
        253402300799999,
        1700000000123,
        1764318499123,
        978307199999,
        978307200000,
        -62135596800000,
    };
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++)
        iso_expect(edges[i]);
    /* one instant every 37 h 11 min 13.457 s over 1900..2300 */
    for (int64_t ms = -2208988800000; ms < 10413792000000; ms += 133873457)
        iso_expect(ms);
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
        cmocka_unit_test(test_iso_civil),
        cmocka_unit_test(test_oid),
        cmocka_unit_test(test_status_thresholds),
        cmocka_unit_test(test_header_has_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
