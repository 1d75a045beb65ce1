-- testing.lua -- the helpers `cs-pdns test` gives every *_test.lua: test, expect_eq, expect_error,
-- fixture, records, cs.mock. Must not: reach past the sandbox; files and the C path are host's.

local host, policy_module = ...

local error, ipairs, pairs, pcall, rawget, rawset, tonumber, tostring, type, xpcall =
    error, ipairs, pairs, pcall, rawget, rawset, tonumber, tostring, type, xpcall
local concat, sort = table.concat, table.sort
local format = string.format
local math_type = math.type

-- ---- rendering values for messages ----

local function quote(s)
    local escaped = s:gsub('[%c"\\]', function(c)
        local named = { ["\n"] = "\\n", ["\t"] = "\\t", ['"'] = '\\"', ["\\"] = "\\\\" }
        return named[c] or format("\\%03d", c:byte())
    end)
    return '"' .. escaped .. '"'
end

-- Integer keys first in order, then strings, then anything else, so diffs read the same each run.
local function key_less(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then
        local rank = { number = 1, string = 2 }
        return (rank[ta] or 3) < (rank[tb] or 3) or
            ((rank[ta] or 3) == (rank[tb] or 3) and ta < tb)
    end
    if ta == "number" or ta == "string" then
        return a < b
    end
    return tostring(a) < tostring(b)
end

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = k
    end
    sort(keys, key_less)
    return keys
end

local function is_identifier(k)
    return type(k) == "string" and k:find("^[%a_][%w_]*$") ~= nil
end

local function render(v, depth)
    local t = type(v)
    if t == "string" then
        return quote(v)
    elseif t == "number" and math_type(v) == "float" then
        local s = format("%.14g", v)
        if tonumber(s) ~= v then
            s = format("%.17g", v)
        end
        return s:find("[%.eEn]") and s or s .. ".0"
    elseif t ~= "table" then
        return tostring(v)
    end
    depth = depth or 0
    if depth > 2 then
        return "{...}"
    end
    local parts = {}
    for i, k in ipairs(sorted_keys(v)) do
        if i > 8 then
            parts[#parts + 1] = "..."
            break
        end
        local prefix = ""
        if k ~= i then
            prefix = (is_identifier(k) and k or "[" .. render(k, 3) .. "]") .. " = "
        end
        parts[#parts + 1] = prefix .. render(v[k], depth + 1)
    end
    return "{" .. concat(parts, ", ") .. "}"
end

-- ---- failures ----

-- Expectation failures carry their own location and no traceback; test() tells them apart.
local function fail(level, message)
    error({ expectation = host.where(level + 1) .. ": " .. message }, 0)
end

local function join(path, k)
    if math_type(k) == "integer" then
        return path .. "[" .. k .. "]"
    elseif is_identifier(k) then
        return path == "" and k or path .. "." .. k
    end
    return path .. "[" .. render(k, 3) .. "]"
end

local MAX_DIFFS = 20

local function diff(got, want, path, out, depth)
    if #out >= MAX_DIFFS then
        return
    end
    local tg, tw = type(got), type(want)
    local same_kind = tg == tw and (tg ~= "number" or math_type(got) == math_type(want))
    if same_kind and tg == "table" and got ~= want and depth < 50 then
        local keys = sorted_keys(want)
        for k in pairs(got) do
            if rawget(want, k) == nil then
                keys[#keys + 1] = k
            end
        end
        for _, k in ipairs(keys) do
            diff(rawget(got, k), rawget(want, k), join(path, k), out, depth + 1)
        end
    elseif not same_kind or (got ~= want and tg ~= "table") then
        out[#out + 1] = (path == "" and "" or path .. ": ") .. "got " .. render(got) ..
            " want " .. render(want)
    end
end

-- ---- mocks for cs.call ----

local mocks = {}

local function params_match(subset, params)
    for k, v in pairs(subset) do
        if params[tostring(k):lower()] ~= tostring(v) then
            return false
        end
    end
    return true
end

local harness = {}

-- Called by the host for every cs.call while a test runs: "ok", response | "error", message,
-- status, transient | "unmocked", message.
function harness.answer(command, params)
    local wanted = command:lower()
    for i = #mocks, 1, -1 do
        local m = mocks[i]
        if m.command == wanted and params_match(m.params, params) then
            local r = m.response
            if r.err ~= nil then
                return "error", tostring(r.err), r.status or 431, r.transient == true
            end
            return "ok", r
        end
    end
    local shown = {}
    for _, k in ipairs(sorted_keys(params)) do
        shown[#shown + 1] = k .. "=" .. quote(params[k])
    end
    return "unmocked", format("no cs.mock answers cs.call(%s, {%s})", command, concat(shown, ", "))
end

rawset(cs, "mock", function(command, params_subset, response)
    if type(command) ~= "string" or type(response) ~= "table" then
        error("cs.mock(command, params_subset, response): command is a string, response a table "
            .. "(the <command>response object, or {err=, status=, transient=})", 2)
    end
    if params_subset ~= nil and type(params_subset) ~= "table" then
        error("cs.mock: params_subset must be a table or nil", 2)
    end
    mocks[#mocks + 1] = {
        command = command:lower(),
        params = params_subset or {},
        response = response,
    }
end)

-- ---- the helpers ----

local helpers = {}

local function handler(e)
    if type(e) == "table" and e.expectation then
        return e.expectation
    end
    return host.traceback(e)
end

helpers.test = function(name, fn)
    if type(name) ~= "string" or type(fn) ~= "function" then
        error("test(name, fn): a name string and a function", 2)
    end
    local kept = #mocks -- mocks made inside the test end with it
    local ok, message = xpcall(fn, handler)
    for i = #mocks, kept + 1, -1 do
        mocks[i] = nil
    end
    host.report(name, ok, ok and "" or tostring(message))
end

helpers.expect_eq = function(got, want)
    local out = {}
    diff(got, want, "", out, 0)
    if #out > 0 then
        if #out >= MAX_DIFFS then
            out[#out + 1] = "(more differences not shown)"
        end
        fail(2, "expect_eq failed\n" .. concat(out, "\n"))
    end
end

helpers.expect_error = function(fn, pattern)
    local ok, err = pcall(fn)
    if ok then
        fail(2, "expected an error" .. (pattern and " matching " .. quote(pattern) or "") ..
            ", but the call succeeded")
    end
    local message = type(err) == "table" and err.expectation or tostring(err)
    if pattern ~= nil and not message:find(pattern) then
        fail(2, "the error " .. quote(message) .. " does not match " .. quote(pattern))
    end
    return message
end

helpers.fixture = function(relpath)
    return host.fixture(relpath)
end

helpers.records = function(vm, ctx)
    return host.records(vm, ctx)
end

helpers.policy = policy_module

-- The host makes these globals: the sandbox refuses new globals from Lua.
return harness, helpers
