/* test_pdns_serial.c -- unit tests of the pure SOA helpers pdns_serial_next and pdns_soa_bump.
 * Must not: open a database connection; the store's SQL paths are tested in tests/e2e. */
#include <stdint.h>
#include <string.h>

#include "pdns_store.h"
#include "unit.h"

static void test_plain_serials(void)
{
    CHECK_INT(pdns_serial_next(0, 20261125), 1);
    CHECK_INT(pdns_serial_next(1, 20261125), 2);
    CHECK_INT(pdns_serial_next(12345, 20261125), 12346);
    /* mod 2^32, and 0 is skipped */
    CHECK_INT(pdns_serial_next(UINT32_MAX, 20261125), 1);
    CHECK_INT(pdns_serial_next(UINT32_MAX - 1, 20261125), UINT32_MAX);
    /* epoch-style serials stay counters */
    CHECK_INT(pdns_serial_next(1732500000, 20261125), 1732500001);
}

static void test_date_serials(void)
{
    /* an older date moves to today's revision 00 */
    CHECK_INT(pdns_serial_next(2024010101, 20261125), 2026112500);
    /* today already: next revision */
    CHECK_INT(pdns_serial_next(2026112500, 20261125), 2026112501);
    CHECK_INT(pdns_serial_next(2026112503, 20261125), 2026112504);
    /* revision 99 rolls into tomorrow's 00, which is still larger than anything earlier */
    CHECK_INT(pdns_serial_next(2026112599, 20261125), 2026112600);
    /* a serial already in the future only counts up */
    CHECK_INT(pdns_serial_next(2027010100, 20261125), 2027010101);
    CHECK_INT(pdns_serial_next(2026112600, 20261125), 2026112601);
}

static void test_date_range_edges(void)
{
    /* the lowest date-looking value, and just below it (day 00: not a date) */
    CHECK_INT(pdns_serial_next(1979010100, 20261125), 2026112500);
    CHECK_INT(pdns_serial_next(1979010099, 20261125), 1979010100);
    /* the highest date-looking value still counts up by one */
    CHECK_INT(pdns_serial_next(2999123199, 20261125), 2999123200);
    /* year 3000 is outside the range: +1 even when today*100 would be larger */
    CHECK_INT(pdns_serial_next(3000010100, 30000102), 3000010101);
    CHECK_INT(pdns_serial_next(2999123199, 30000102), 3000010200);
    /* today*100 beyond 2^32 never wraps into a smaller serial */
    CHECK_INT(pdns_serial_next(2026112501, 50000101), 2026112502);
}

static void test_implausible_dates(void)
{
    /* Each would become 2026112500 if it were read as a date. */
    CHECK_INT(pdns_serial_next(2026003101, 20261125), 2026003102); /* month 00 */
    CHECK_INT(pdns_serial_next(2026133101, 20261125), 2026133102); /* month 13 */
    CHECK_INT(pdns_serial_next(2026010001, 20261125), 2026010002); /* day 00 */
    CHECK_INT(pdns_serial_next(2026013201, 20261125), 2026013202); /* Jan 32 */
    CHECK_INT(pdns_serial_next(2026043101, 20261125), 2026043102); /* Apr 31 */
    CHECK_INT(pdns_serial_next(2026023001, 20261125), 2026023002); /* Feb 30 */
    CHECK_INT(pdns_serial_next(2023022901, 20261125), 2023022902); /* Feb 29, common year */
    /* leap years: divisible by 4, centuries only when divisible by 400 */
    CHECK_INT(pdns_serial_next(2024022901, 20261125), 2026112500);
    CHECK_INT(pdns_serial_next(2000022901, 20261125), 2026112500);
    CHECK_INT(pdns_serial_next(2100022901, 21000301), 2100022902);
    CHECK_INT(pdns_serial_next(2100022801, 21000301), 2100030100);
    /* valid month ends */
    CHECK_INT(pdns_serial_next(2026013101, 20261125), 2026112500);
    CHECK_INT(pdns_serial_next(2025123199, 20261125), 2026112500);
}

static void test_soa_bump(void)
{
    char out[256];

    CHECK_INT(pdns_soa_bump("ns1.example.com. hostmaster.example.com. 1 10800 3600 604800 60",
                            20261125, out, sizeof out),
              0);
    CHECK_STR(out, "ns1.example.com. hostmaster.example.com. 2 10800 3600 604800 60");

    CHECK_INT(pdns_soa_bump("a.test b.test 2024010101 1 2 3 4", 20261125, out, sizeof out), 0);
    CHECK_STR(out, "a.test b.test 2026112500 1 2 3 4");

    CHECK_INT(pdns_soa_bump("a.test b.test 4294967295 1 2 3 4", 20261125, out, sizeof out), 0);
    CHECK_STR(out, "a.test b.test 1 1 2 3 4");

    /* everything but the serial is kept byte for byte, spacing included */
    CHECK_INT(pdns_soa_bump(" a.test\tb.test  7  1 2 3 4 ", 20261125, out, sizeof out), 0);
    CHECK_STR(out, " a.test\tb.test  8  1 2 3 4 ");

    /* the result must fit: exactly, and one byte short */
    const char *soa = "a b 9 1 2 3 4";
    CHECK_INT(pdns_soa_bump(soa, 20261125, out, strlen("a b 10 1 2 3 4") + 1), 0);
    CHECK_STR(out, "a b 10 1 2 3 4");
    CHECK_INT(pdns_soa_bump(soa, 20261125, out, strlen("a b 10 1 2 3 4")), -1);
}

static void test_soa_malformed(void)
{
    char out[256];
    static const char *const bad[] = {
        "",
        "   ",
        "a b 1 2 3 4",             /* six fields */
        "a b 1 2 3 4 5 6",         /* eight fields */
        "a b x 2 3 4 5",           /* serial not a number */
        "a b -1 2 3 4 5",          /* negative */
        "a b 4294967296 2 3 4 5",  /* beyond 32 bits */
        "a b 12345678901 2 3 4 5", /* eleven digits */
        "a b 1 2h 3 4 5",          /* refresh with a unit */
        "a b 1 2 3 4 5x",          /* minimum not a number */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        strcpy(out, "untouched");
        int rc = pdns_soa_bump(bad[i], 20261125, out, sizeof out);
        CHECK_INT(rc, -1);
        if (rc != -1)
            fprintf(stderr, "  accepted: \"%s\" -> \"%s\"\n", bad[i], out);
    }
    CHECK_INT(pdns_soa_bump(NULL, 20261125, out, sizeof out), -1);
}

int main(void)
{
    test_plain_serials();
    test_date_serials();
    test_date_range_edges();
    test_implausible_dates();
    test_soa_bump();
    test_soa_malformed();
    return unit_done("pdns_serial");
}
