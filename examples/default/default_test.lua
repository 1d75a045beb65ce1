-- default_test.lua -- the wrapped built-in policy: same records as the built-in, plus its tags.
-- Must not: restate the built-in rules; tests/policy/default_policy_test.lua covers those.

local builtin = require("cspdns.default")

local ACME = { id = "3b8e2c4d-1f6a-4e7b-9c0d-2a5f8e1b7c63", name = "acme",
    domainid = "4f1c7d2e-8a3b-4c5d-9e6f-0a1b2c3d4e5f", networkdomain = "acme.cloud.example.net" }
local GLOBEX = { id = "6f2a9c5e-3b1d-4e8a-a7c0-9d2e5f8b1c4a", name = "globex",
    domainid = "4f1c7d2e-8a3b-4c5d-9e6f-0a1b2c3d4e5f" }
local CUSTOMERS = { id = "4f1c7d2e-8a3b-4c5d-9e6f-0a1b2c3d4e5f", name = "customers",
    path = "ROOT/customers", networkdomain = "customers.cloud.example.net" }

-- A VM as listVirtualMachines returns it (the fields the policies read, and a few more).
local function vm(name, fields)
    local v = {
        id = "9c2f4e1a-6b3d-4f8e-a1c2-" .. string.format("%012x", #name * 7919),
        name = name, displayname = name, account = "acme", domain = "customers",
        domainid = CUSTOMERS.id, state = "Running", zonename = "zone-a", tags = {},
        nic = {
            { id = "e1c4a7f2-3b6d-4a9e-8f1c-5d2b7e0a3c69", networkname = "acme-net",
                ipaddress = "10.1.1.23", ip6address = "2001:db8:100:10:0:3cff:fe5e:1",
                isdefault = true, deviceid = "0", secondaryip = {} },
            { id = "a8e2d5b1-6f3c-4e7a-9b0d-1c4f8a2e5d37", networkname = "acme-backend",
                ipaddress = "10.2.0.57", isdefault = false, deviceid = "1", secondaryip = {} },
        },
    }
    for k, val in pairs(fields or {}) do
        v[k] = val
    end
    return v
end

-- What the host would write for the built-in policy's raw answer: checked, sorted, TTL filled.
local function expected(raw, ttl)
    local out = {}
    for _, r in ipairs(raw) do
        out[#out + 1] = { name = r.name, type = r.type, content = r.content, ttl = r.ttl or ttl }
    end
    table.sort(out, function(a, b)
        if a.name ~= b.name then return a.name < b.name end
        if a.type ~= b.type then return a.type < b.type end
        return a.content < b.content
    end)
    return out
end

-- The same ctx records() builds, for calling the built-in policy directly.
local function full_ctx(ctx)
    local c = {}
    for k, v in pairs(ctx) do c[k] = v end
    c.settings = c.settings or {}
    c.settings.ttl = c.settings.ttl or 60
    c.settings.add_to_common_zone = c.settings.add_to_common_zone or false
    c.trigger = c.trigger or "test"
    return c
end

test("without tags it writes exactly what the built-in policy writes", function()
    local project_vm = vm("shop-web", { projectid = "8e1b4d7a-0c3f-4e6b-a9d2-5f8c1b4e7a03" })
    project_vm.account = nil -- project VMs have no account
    local cases = {
        -- { vm, ctx, how many records the built-in policy gives it }
        { vm("web-01", { group = "www" }), { account = ACME, domain = CUSTOMERS }, 6 },
        { vm("app-02", { account = "globex" }), { account = GLOBEX, domain = CUSTOMERS }, 4 },
        { vm("gone-01", { state = "Destroyed" }), { account = ACME, domain = CUSTOMERS }, 0 },
        { vm("stopped-01", { state = "Stopped" }), { account = ACME, domain = CUSTOMERS }, 4 },
        { project_vm, { domain = CUSTOMERS, project = { id = project_vm.projectid,
            name = "webshop" } }, 4 },
        { vm("common-01"), { account = GLOBEX, domain = {},
            settings = { common_zone = "vms.example.net", add_to_common_zone = true } }, 4 },
    }
    for _, case in ipairs(cases) do
        local v, ctx, n = case[1], case[2], case[3]
        local want = expected(builtin.records(v, full_ctx(ctx)), 60)
        expect_eq(#want, n)
        expect_eq(records(v, ctx), want)
    end
end)

test("dns=off removes every record of the VM", function()
    local tagged = vm("web-01", { tags = { { key = "dns", value = "off",
        resourcetype = "UserVm" } } })
    expect_eq(records(tagged, { account = ACME, domain = CUSTOMERS }), {})
end)

test("other values of the dns tag change nothing", function()
    local tagged = vm("web-01", { tags = { { key = "dns", value = "on" } } })
    expect_eq(records(tagged, { account = ACME, domain = CUSTOMERS }),
        records(vm("web-01"), { account = ACME, domain = CUSTOMERS }))
end)

test("dns-ttl sets the TTL of every record", function()
    local tagged = vm("web-01", { tags = { { key = "dns-ttl", value = "3600" } } })
    local got = records(tagged, { account = ACME, domain = CUSTOMERS })
    expect_eq(#got, 4) -- A, AAAA and two PTRs for the default NIC
    for _, r in ipairs(got) do
        expect_eq(r.ttl, 3600)
    end
end)

test("a bad dns-ttl keeps the default TTL instead of failing the VM", function()
    for _, bad in ipairs({ "soon", "0", "1.5", "604801", "" }) do
        local tagged = vm("web-01", { tags = { { key = "dns-ttl", value = bad } } })
        local got = records(tagged, { account = ACME, domain = CUSTOMERS,
            settings = { ttl = 120 } })
        expect_eq(#got, 4)
        for _, r in ipairs(got) do
            expect_eq(r.ttl, 120)
        end
    end
end)
