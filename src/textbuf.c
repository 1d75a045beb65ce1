/* textbuf.c -- the growable, always NUL-terminated byte buffer behind textbuf.h.
 * Must not: know any format built on top of it, or change a buffer when growing it failed. */
#include "textbuf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Makes room for extra more bytes plus the terminating NUL. Growth doubles so that a long series of
 * small appends stays linear; on failure nothing changes. */
static int textbuf_reserve(textbuf *sb, size_t extra)
{
    if (extra > SIZE_MAX - 1 - sb->len)
        return -1;
    size_t need = sb->len + extra + 1;
    if (need <= sb->cap)
        return 0;
    size_t cap = sb->cap ? sb->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    char *nb = realloc(sb->buf, cap);
    if (!nb)
        return -1;
    sb->buf = nb;
    sb->cap = cap;
    return 0;
}

int textbuf_append(textbuf *sb, const char *data, size_t len)
{
    if (textbuf_reserve(sb, len) != 0)
        return -1;
    if (len)
        memcpy(sb->buf + sb->len, data, len);
    sb->len += len;
    sb->buf[sb->len] = '\0';
    return 0;
}

int textbuf_puts(textbuf *sb, const char *s)
{
    return textbuf_append(sb, s, strlen(s));
}

int textbuf_putc(textbuf *sb, char c)
{
    return textbuf_append(sb, &c, 1);
}

int textbuf_vprintf(textbuf *sb, const char *fmt, va_list ap)
{
    /* Try the room already there first; most formatted appends are short and fit. */
    char empty[1];
    size_t room = sb->cap > sb->len ? sb->cap - sb->len : 0;
    char *dst = room ? sb->buf + sb->len : empty;
    if (!room)
        room = sizeof(empty);
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(dst, room, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        if (sb->buf)
            sb->buf[sb->len] = '\0';
        return -1;
    }
    if ((size_t)n < room && dst != empty) {
        sb->len += (size_t)n;
        return 0;
    }
    if (textbuf_reserve(sb, (size_t)n) != 0) {
        if (sb->buf)
            sb->buf[sb->len] = '\0'; /* vsnprintf may have written a partial result */
        return -1;
    }
    va_copy(ap2, ap);
    n = vsnprintf(sb->buf + sb->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        sb->buf[sb->len] = '\0';
        return -1;
    }
    sb->len += (size_t)n;
    return 0;
}

int textbuf_printf(textbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = textbuf_vprintf(sb, fmt, ap);
    va_end(ap);
    return rc;
}

void textbuf_reset(textbuf *sb)
{
    sb->len = 0;
    if (sb->buf)
        sb->buf[0] = '\0';
}

const char *textbuf_str(const textbuf *sb)
{
    return sb->buf ? sb->buf : "";
}

void textbuf_free(textbuf *sb)
{
    if (!sb)
        return;
    free(sb->buf);
    sb->buf = NULL;
    sb->len = 0;
    sb->cap = 0;
}
