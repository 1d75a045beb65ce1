/* test_textbuf.c -- unit tests for the growable string buffer.
 * Must not: depend on anything but textbuf and the C library. */
#include <stdlib.h>
#include <string.h>

#include "textbuf.h"
#include "unit.h"

static void test_empty(void)
{
    textbuf sb = TEXTBUF_INIT;
    CHECK(sb.buf == NULL);
    CHECK_STR(textbuf_str(&sb), "");
    CHECK_INT(sb.len, 0);
    textbuf_reset(&sb); /* on a never-used buffer */
    CHECK_STR(textbuf_str(&sb), "");
    textbuf_free(&sb);
    textbuf_free(&sb); /* twice is harmless */
    textbuf_free(NULL);
    CHECK(sb.buf == NULL);
}

static void test_append(void)
{
    textbuf sb = TEXTBUF_INIT;
    CHECK_INT(textbuf_puts(&sb, "hello"), 0);
    CHECK_INT(textbuf_putc(&sb, ','), 0);
    CHECK_INT(textbuf_append(&sb, " world!!!", 6), 0);
    CHECK_STR(textbuf_str(&sb), "hello, world");
    CHECK_INT(sb.len, 12);
    CHECK(sb.cap > sb.len);
    CHECK_INT(textbuf_append(&sb, NULL, 0), 0);
    CHECK_INT(sb.len, 12);

    /* Embedded NUL bytes are kept, and the buffer stays terminated after them. */
    CHECK_INT(textbuf_append(&sb, "a\0b", 3), 0);
    CHECK_INT(sb.len, 15);
    CHECK(memcmp(sb.buf + 12, "a\0b", 4) == 0);

    size_t cap = sb.cap;
    textbuf_reset(&sb);
    CHECK_INT(sb.len, 0);
    CHECK_INT(sb.cap, cap);
    CHECK_STR(textbuf_str(&sb), "");
    textbuf_free(&sb);
    CHECK(sb.buf == NULL && sb.len == 0 && sb.cap == 0);
}

static void test_growth(void)
{
    textbuf sb = TEXTBUF_INIT;
    for (int i = 0; i < 100000; i++)
        if (textbuf_putc(&sb, (char)('a' + i % 26)) != 0)
            break;
    CHECK_INT(sb.len, 100000);
    CHECK_INT(strlen(textbuf_str(&sb)), 100000);
    CHECK(sb.buf[25] == 'z' && sb.buf[26] == 'a' && sb.buf[99999] == 'a' + 99999 % 26);
    textbuf_free(&sb);
}

static void test_printf(void)
{
    textbuf sb = TEXTBUF_INIT;
    CHECK_INT(textbuf_printf(&sb, "%d-%s", 42, "x"), 0);
    CHECK_STR(textbuf_str(&sb), "42-x");
    CHECK_INT(textbuf_printf(&sb, "%s", ""), 0);
    CHECK_STR(textbuf_str(&sb), "42-x");

    /* Longer than the room left: must grow and keep what was there. */
    char big[5000];
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK_INT(textbuf_printf(&sb, "[%s]", big), 0);
    CHECK_INT(sb.len, 4 + 1 + 4999 + 1);
    CHECK(memcmp(sb.buf, "42-x[qqq", 8) == 0);
    CHECK(sb.buf[sb.len - 1] == ']' && sb.buf[sb.len] == '\0');

    /* Exactly filling the remaining room (the NUL needs one more byte). */
    textbuf sb2 = TEXTBUF_INIT;
    CHECK_INT(textbuf_puts(&sb2, "x"), 0);
    size_t room = sb2.cap - sb2.len;
    char fill[4096];
    CHECK(room < sizeof(fill));
    memset(fill, 'f', room);
    fill[room] = '\0';
    CHECK_INT(textbuf_printf(&sb2, "%s", fill), 0);
    CHECK_INT(sb2.len, 1 + room);
    CHECK(sb2.buf[sb2.len] == '\0' && sb2.buf[sb2.len - 1] == 'f');
    fill[room - 1] = '\0';
    textbuf_reset(&sb2);
    CHECK_INT(textbuf_printf(&sb2, "x%s", fill), 0);
    CHECK_INT(sb2.len, room);
    textbuf_free(&sb2);
    textbuf_free(&sb);
}

int main(void)
{
    test_empty();
    test_append();
    test_growth();
    test_printf();
    return unit_done("test_textbuf");
}
