/* test_strpool.c -- the string pool: copies stay where they are while more are added (also
 * past a block, and longer than one), and clearing frees them all for reuse.
 * Must not: assume where copies land; the pool promises only that they do not move. */
#include <stdio.h>
#include <string.h>

#include "strpool.h"
#include "unit.h"

static void test_copies_stay(void)
{
    struct strpool p = STRPOOL_INIT;
    static char big[20000];
    const char *copies[3000];
    char want[32];
    memset(big, 'x', sizeof big - 1);
    for (int i = 0; i < 3000; i++) {
        snprintf(want, sizeof want, "name-%d.example.com", i);
        copies[i] = strpool_dup(&p, i == 1500 ? big : want);
        CHECK(copies[i] != NULL);
    }
    int all = 1;
    for (int i = 0; i < 3000; i++) {
        snprintf(want, sizeof want, "name-%d.example.com", i);
        all &= strcmp(copies[i], i == 1500 ? big : want) == 0;
    }
    CHECK(all);
    CHECK(copies[1] != copies[2]);
    CHECK_INT((int)strlen(strpool_dup(&p, "")), 0);
    strpool_clear(&p);
    CHECK(p.blocks == NULL);
    CHECK_INT(strcmp(strpool_dup(&p, "again"), "again"), 0);
    strpool_clear(&p);
    strpool_clear(&p);
}

int main(void)
{
    test_copies_stay();
    return unit_done("strpool");
}
