-- display_name_test.lua -- the display-name policy: cleaning rules, fallbacks, records.
-- Must not: depend on the environment; each ctx a test relies on is spelled out.

local ACME = { id = "3b8e2c4d-1f6a-4e7b-9c0d-2a5f8e1b7c63", name = "acme",
    networkdomain = "acme.example.net" }
local CUSTOMERS = { id = "4f1c7d2e-8a3b-4c5d-9e6f-0a1b2c3d4e5f", name = "customers",
    networkdomain = "customers.example.net" }

local function vm(displayname, name)
    return {
        id = "9c2f4e1a-6b3d-4f8e-a1c2-7d5e9b0f3a41", name = name or "i-2-51-VM",
        displayname = displayname, account = "acme", domainid = CUSTOMERS.id, state = "Running",
        nic = {
            { id = "a8e2d5b1", networkname = "backend", ipaddress = "10.2.0.57",
                isdefault = false, deviceid = "1" },
            { id = "e1c4a7f2", networkname = "frontend", ipaddress = "10.1.1.23",
                ip6address = "2001:db8:1::23", isdefault = true, deviceid = "0" },
        },
    }
end

local label = policy.display_label

test("display names become labels", function()
    local cases = {
        { "Web Server #1 (prod)", "web-server-1-prod" },
        { "web-01", "web-01" },
        { "DB_primary", "db-primary" },
        { "  leading and trailing  ", "leading-and-trailing" },
        { "a -- b", "a-b" },
        { "Größe Straße", "groesse-strasse" },
        { "Café Crème", "cafe-creme" },
        { "Øresund Åbo", "oresund-abo" },
        { "x'); DROP TABLE records; --", "x-drop-table-records" },
        { "服务器 7", "7" },
        { "\"quoted\"", "quoted" },
        { "", "" },
        { "!!! ---", "" },
    }
    for _, c in ipairs(cases) do
        expect_eq({ c[1], label(c[1]) }, { c[1], c[2] })
    end
end)

test("a label is at most 63 characters and never ends in a hyphen", function()
    local got = label(string.rep("ab ", 40))
    expect_eq(#got <= 63, true)
    expect_eq(got:sub(-1) ~= "-", true)
    expect_eq(#label(string.rep("x", 300)), 63)
end)

test("names: display label and hostname; PTRs to the display label", function()
    local shown, host = "web-server-1.acme.example.net", "i-2-51-vm.acme.example.net"
    expect_eq(records(vm("Web Server #1"), { account = ACME, domain = CUSTOMERS }), {
        { name = "23.1.1.10.in-addr.arpa", type = "PTR", content = shown, ttl = 60 },
        { name = "3.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
            type = "PTR", content = shown, ttl = 60 },
        { name = host, type = "A", content = "10.1.1.23", ttl = 60 },
        { name = host, type = "AAAA", content = "2001:db8:1::23", ttl = 60 },
        { name = shown, type = "A", content = "10.1.1.23", ttl = 60 },
        { name = shown, type = "AAAA", content = "2001:db8:1::23", ttl = 60 },
    })
end)

test("display name equal to the hostname: one name", function()
    local got = records(vm("web-01", "web-01"), { account = ACME })
    expect_eq(#got, 4)
    expect_eq(got[3].name, "web-01.acme.example.net")
end)

test("no display name, or nothing usable in it: the hostname", function()
    for _, shown in ipairs({ false, "", "!!!", "服务器" }) do
        local got = records(vm(shown or nil, "web-01"), { account = ACME })
        expect_eq({ shown, got[3].name, #got }, { shown, "web-01.acme.example.net", 4 })
    end
end)

test("the suffix is the account's network domain, else the domain's", function()
    local got = records(vm("Web"), { account = { name = "beta" }, domain = CUSTOMERS })
    expect_eq(got[1].content, "web.customers.example.net")
    expect_eq(records(vm("Web"), { account = { name = "beta" } }), {})
end)

test("no default NIC, or a gone VM: no records", function()
    local v = vm("Web")
    v.nic[2].isdefault = false
    expect_eq(records(v, { account = ACME }), {})
    v = vm("Web")
    v.state = "Expunging"
    expect_eq(records(v, { account = ACME }), {})
end)

test("the policy's self_test passes", function()
    policy.self_test()
end)
