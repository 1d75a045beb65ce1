/* embedded_lua_find.c -- looks up a Lua file compiled into the binary by its stem.
 * Must not: read the file system; the point of embedding is that no installed files are needed. */
#include "embedded_lua.h"

#include <string.h>

const struct embedded_lua *embedded_lua_find(const char *name)
{
    if (!name)
        return NULL;
    for (const struct embedded_lua *e = embedded_lua_files; e->name; e++)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}
