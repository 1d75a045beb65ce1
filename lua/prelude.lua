-- prelude.lua -- runs in every policy state before the policy: json, print, strict globals.
-- Must not: open anything the host did not; it only wraps what src/policy.c already provides.

-- fill(t) turns one of the host's lazily converted tables (vm, ctx.account, ...) into a plain
-- table, so code that looks behind metamethods sees every field; other values are left alone.
local cjson, fill = ...

local null = cjson.null
local cjson_encode, cjson_decode = cjson.encode, cjson.decode
local math_type, math_tointeger = math.type, math.tointeger
local error, next, pairs, rawget, rawlen, rawset, select, setmetatable, tostring, type =
    error, next, pairs, rawget, rawlen, rawset, select, setmetatable, tostring, type
local concat, format = table.concat, string.format
local log_info = log.info

-- cjson decodes every number as a float and null as a sentinel; the policy must see JSON the
-- way the host hands it the VM: integral numbers as integers, null absent, arrays as sequences.
local function normalise(v)
    if v == null then
        return nil
    end
    local t = type(v)
    if t == "number" then
        return math_type(v) == "float" and math_tointeger(v) or v
    end
    if t ~= "table" then
        return v
    end
    local n, count = rawlen(v), 0
    for _ in next, v do
        count = count + 1
    end
    if n > 0 and n == count then
        local out, j = {}, 0
        for i = 1, n do
            local item = normalise(v[i])
            if item ~= nil then
                j = j + 1
                out[j] = item
            end
        end
        return out
    end
    for k, item in pairs(v) do
        v[k] = normalise(item)
    end
    return v
end

-- cjson walks tables with lua_next, which sees only the fields of a lazy table read so far.
local function fill_all(v, seen)
    if type(v) ~= "table" or seen[v] then
        return
    end
    seen[v] = true
    fill(v)
    for _, item in next, v do
        fill_all(item, seen)
    end
end

json = {
    encode = function(value)
        fill_all(value, {})
        return cjson_encode(value)
    end,
    decode = function(text)
        return normalise(cjson_decode(text))
    end,
}

print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do
        parts[i] = tostring((select(i, ...)))
    end
    log_info("%s", concat(parts, "\t"))
end

-- Lua runs __gc finalizers with hooks off, so no limit could stop one that loops; an object is
-- only ever finalized if its metatable has __gc when setmetatable is called, so refuse it here.
_ENV.setmetatable = function(t, mt)
    if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
        error("setmetatable: __gc finalizers are not allowed in a policy (they would run "
            .. "outside its time and instruction limits)", 2)
    end
    fill(t)
    return setmetatable(t, mt)
end

-- rawset would slip past the strict globals below and let state outlive a call.
_ENV.rawset = function(t, k, v)
    if t == _ENV then
        error(format("rawset: cannot create the global '%s': keep policy state in locals",
            tostring(k)), 2)
    end
    return rawset(t, k, v)
end

-- Strict globals: a typo such as vm_nmae fails loudly in the first test instead of reading
-- nil, and state cannot leak between calls through globals.
setmetatable(_ENV, {
    __index = function(_, name)
        error(format("undefined global '%s'", tostring(name)), 2)
    end,
    __newindex = function(_, name)
        error(format("assignment to undefined global '%s': keep policy state in locals",
            tostring(name)), 2)
    end,
    __metatable = "strict globals",
})
