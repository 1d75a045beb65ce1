/* textbuf.h -- a growable, always NUL-terminated byte buffer.
 * Must not: know about JSON, SQL or HTTP; callers build those on top. */
#ifndef CSPDNS_TEXTBUF_H
#define CSPDNS_TEXTBUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct textbuf {
    char *buf; /* NULL until the first append; owned by the textbuf */
    size_t len;
    size_t cap;
} textbuf;

#define TEXTBUF_INIT                                                                               \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* All appenders return 0, or -1 when memory ran out (the buffer then keeps its old content). */
int textbuf_append(textbuf *sb, const char *data, size_t len);
int textbuf_puts(textbuf *sb, const char *s);
int textbuf_putc(textbuf *sb, char c);
int textbuf_printf(textbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int textbuf_vprintf(textbuf *sb, const char *fmt, va_list ap);
/* Empties the buffer but keeps its memory. */
void textbuf_reset(textbuf *sb);
/* Returns the content ("" for an empty buffer); valid until the next append. */
const char *textbuf_str(const textbuf *sb);
void textbuf_free(textbuf *sb);

#endif
