/* test_text_file.c -- unit tests for text_file_read: bounds, empty files, pipes, errors.
 * Must not: depend on files outside a temporary directory it creates and removes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "text_file.h"
#include "unit.h"

static char dir[] = "/tmp/cspdns-text-file-XXXXXX";

static void write_file(const char *path, size_t n, char fill)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        fputc(fill, f);
    fclose(f);
}

/* A file of exactly the bound is read whole; one byte more is refused, never cut short. The
 * sizes straddle the reader's 4096-byte first chunk and its doublings. */
static void test_bounds(void)
{
    static const size_t sizes[] = {1, 4095, 4096, 4097, 8192, 65536, 100000};
    char path[64], err[256];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i], len = 1;
        char *buf = NULL;
        snprintf(path, sizeof path, "%s/f", dir);
        write_file(path, n, 'x');
        CHECK_INT(text_file_read(path, n, &buf, &len, err, sizeof err), 0);
        CHECK_INT(len, n);
        CHECK(buf && buf[n] == '\0' && buf[0] == 'x' && buf[n - 1] == 'x');
        free(buf);
        buf = (char *)1;
        CHECK_INT(text_file_read(path, n - 1, &buf, &len, err, sizeof err), -1);
        CHECK(buf == NULL);
        char want[128];
        snprintf(want, sizeof want, "%s is larger than %zu KB", path, (n - 1) / 1024);
        CHECK_STR(err, want);
    }
}

static void test_empty_and_nul(void)
{
    char path[64], err[256];
    snprintf(path, sizeof path, "%s/empty", dir);
    write_file(path, 0, 0);
    char *buf = NULL;
    size_t len = 1;
    CHECK_INT(text_file_read(path, 100, &buf, &len, err, sizeof err), 0);
    CHECK_INT(len, 0);
    CHECK(buf && buf[0] == '\0');
    free(buf);
    /* NUL bytes are content: the length, not strlen, says where the file ends. */
    snprintf(path, sizeof path, "%s/nul", dir);
    write_file(path, 10, 0);
    CHECK_INT(text_file_read(path, 100, &buf, &len, err, sizeof err), 0);
    CHECK_INT(len, 10);
    free(buf);
}

/* Secret mounts and process substitution give files without a size; a pipe is one. */
static void test_pipe(void)
{
    int fds[2];
    if (pipe(fds) != 0) {
        perror("pipe");
        exit(1);
    }
    const char msg[] = "s3cret\n";
    CHECK_INT(write(fds[1], msg, sizeof msg - 1), (long long)(sizeof msg - 1));
    close(fds[1]);
    char path[64], err[256];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fds[0]);
    char *buf = NULL;
    size_t len = 0;
    CHECK_INT(text_file_read(path, 64, &buf, &len, err, sizeof err), 0);
    CHECK_STR(buf, msg);
    free(buf);
    close(fds[0]);
}

static void test_missing(void)
{
    char path[64], err[256];
    snprintf(path, sizeof path, "%s/missing", dir);
    char *buf = (char *)1;
    size_t len = 1;
    CHECK_INT(text_file_read(path, 100, &buf, &len, err, sizeof err), -1);
    CHECK(buf == NULL && len == 0);
    char want[128];
    snprintf(want, sizeof want, "cannot read %s: No such file or directory", path);
    CHECK_STR(err, want);
    /* A directory opens but does not read. */
    CHECK_INT(text_file_read(dir, 100, &buf, &len, err, sizeof err), -1);
    CHECK(buf == NULL);
    CHECK(strstr(err, "cannot read") == err);
}

int main(void)
{
    unit_tmpdir(dir);
    test_bounds();
    test_empty_and_nul();
    test_pipe();
    test_missing();
    unit_tmpdir_remove(dir);
    return unit_done("text_file");
}
