/* text_file.h -- reading a whole, bounded file into memory (policies, fixtures, secret files).
 * Must not: interpret what it reads, or cut a file short: one over the bound is an error. */
#ifndef CSPDNS_TEXT_FILE_H
#define CSPDNS_TEXT_FILE_H

#include <stddef.h>

/* Reads the file at path into a malloc'ed buffer with a NUL after its *len bytes, which the
 * caller frees. It may hold NUL bytes of its own. A file of more than max_bytes is refused,
 * since every caller's files are small and a large one is the wrong file. Works on pipes and
 * other unseekable files. Returns 0, or -1 with err naming path and the problem ("cannot read
 * PATH: REASON" or "PATH is larger than N KB") and *out NULL. */
int text_file_read(const char *path, size_t max_bytes, char **out, size_t *len, char *err,
                   size_t errlen);

#endif
