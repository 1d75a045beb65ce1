/* test_strmap.c -- the string map: add-if-absent, lookups, growth, clearing with value callbacks.
 * Must not: depend on iteration order; the map promises none. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strmap.h"
#include "unit.h"

static int freed;

static void count_free(void *v)
{
    freed++;
    free(v);
}

static void test_add_get(void)
{
    struct strmap *m;
    void *v = NULL;
    int one = 1, two = 2;
    CHECK_INT(strmap_new(&m), 0);
    CHECK_INT(strmap_get(m, "a", &v), 0);
    CHECK_INT(strmap_add(m, "a", &one), 1);
    CHECK_INT(strmap_add(m, "a", &two), 0); /* present: value kept */
    CHECK_INT(strmap_get(m, "a", &v), 1);
    CHECK(v == &one);
    CHECK_INT(strmap_get(m, "A", NULL), 0); /* keys are exact */
    CHECK_INT(strmap_add(m, "", NULL), 1);
    CHECK_INT(strmap_get(m, "", NULL), 1);
    CHECK_INT(strmap_count(m), 2);
    strmap_free(m, NULL);
}

static void test_growth_and_clear(void)
{
    struct strmap *m;
    char key[32];
    CHECK_INT(strmap_new(&m), 0);
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "vm-%d", i);
        int *v = malloc(sizeof *v);
        *v = i;
        CHECK_INT(strmap_add(m, key, v), 1);
    }
    CHECK_INT(strmap_count(m), 5000);
    int all = 1;
    for (int i = 0; i < 5000; i++) {
        void *v = NULL;
        snprintf(key, sizeof key, "vm-%d", i);
        all &= strmap_get(m, key, &v) == 1 && *(int *)v == i;
    }
    CHECK(all);
    CHECK_INT(strmap_get(m, "vm-5000", NULL), 0);
    freed = 0;
    strmap_clear(m, count_free);
    CHECK_INT(freed, 5000);
    CHECK_INT(strmap_count(m), 0);
    CHECK_INT(strmap_get(m, "vm-1", NULL), 0);
    CHECK_INT(strmap_add(m, "vm-1", NULL), 1);
    strmap_free(m, count_free); /* count_free(NULL) is free(NULL) */
    strmap_free(NULL, NULL);
}

/* Keys longer than the blocks the map copies keys into, between short ones. */
static void test_long_keys(void)
{
    struct strmap *m;
    static char big[3][20000];
    CHECK_INT(strmap_new(&m), 0);
    for (int i = 0; i < 3; i++) {
        memset(big[i], 'a' + i, sizeof big[i] - 1);
        big[i][sizeof big[i] - 1] = '\0';
        CHECK_INT(strmap_add(m, "short", NULL), i == 0);
        CHECK_INT(strmap_add(m, big[i], big[i]), 1);
    }
    int all = 1;
    for (int i = 0; i < 3; i++) {
        void *v = NULL;
        all &= strmap_get(m, big[i], &v) == 1 && v == big[i];
    }
    CHECK(all);
    big[1][100] = 'z';
    CHECK_INT(strmap_get(m, big[1], NULL), 0);
    CHECK_INT(strmap_get(m, "short", NULL), 1);
    strmap_free(m, NULL);
}

int main(void)
{
    test_add_get();
    test_growth_and_clear();
    test_long_keys();
    return unit_done("strmap");
}
