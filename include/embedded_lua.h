/* embedded_lua.h -- the lua/ files compiled into the binary (prelude, default policy, testing).
 * Must not: hold Lua code itself; cmake/embed_lua.cmake generates the table from lua/. */
#ifndef CSPDNS_EMBEDDED_LUA_H
#define CSPDNS_EMBEDDED_LUA_H

#include <stddef.h>

struct embedded_lua {
    const char *name; /* file stem: "policy" for lua/policy.lua */
    const char *src;  /* the file's bytes, NUL-terminated */
    size_t len;       /* bytes, without the NUL */
};

/* Every embedded file, terminated by an entry whose name is NULL. Generated at build time. */
extern const struct embedded_lua embedded_lua_files[];

/* The embedded file with this stem, or NULL. */
const struct embedded_lua *embedded_lua_find(const char *name);

#endif
