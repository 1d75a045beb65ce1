-- split_test.lua -- the split policy: its modules on their own, then the rules end to end.
-- Must not: change site.lua's values; tests read them, so they stay true for your edits too.

-- a test file can require the policy's modules as the policy does
local naming = require("naming")
local site = require("site")

local ACME = { id = "3b8e2c4d-1f6a-4e7b-9c0d-2a5f8e1b7c63", name = "acme",
    networkdomain = "acme.example.net" }
local BETA = { id = "6f2a9c5e-3b1d-4e8a-a7c0-9d2e5f8b1c4a", name = "beta" }
local CUSTOMERS = { id = "4f1c7d2e-8a3b-4c5d-9e6f-0a1b2c3d4e5f", name = "customers",
    networkdomain = "customers.example.net" }

local function vm(name, zonename)
    return {
        id = "9c2f4e1a-6b3d-4f8e-a1c2-7d5e9b0f3a41", name = name, account = "acme",
        zonename = zonename, state = "Running",
        nic = {
            { id = "a8e2d5b1", ipaddress = "10.2.0.57", isdefault = false },
            { id = "e1c4a7f2", ipaddress = "10.1.1.23", ip6address = "2001:db8:1::23",
                isdefault = true },
        },
    }
end

local function lines(list)
    local out = {}
    for _, r in ipairs(list) do
        out[#out + 1] = string.format("%s %s %s %d", r.name, r.type, r.content, r.ttl)
    end
    return out
end

test("naming.host_label", function()
    expect_eq(naming.host_label({ name = "Web_01" }), "web-01")
    expect_eq(naming.host_label({}), "")
end)

test("naming.fqdn puts the site label between host and suffix", function()
    expect_eq(naming.fqdn("web-01", "fra1", "acme.example.net"), "web-01.fra1.acme.example.net")
    expect_eq(naming.fqdn("web-01", nil, "acme.example.net"), "web-01.acme.example.net")
end)

test("a VM in a mapped zone: <vm>.<site>.<suffix>, with the account's TTL", function()
    expect_eq(site.sites["zone-a"], "fra1")
    expect_eq(site.ttl.acme, 300)
    local fqdn = "web-01.fra1.acme.example.net"
    expect_eq(lines(records(vm("web-01", "zone-a"), { account = ACME })), {
        "23.1.1.10.in-addr.arpa PTR " .. fqdn .. " 300",
        "3.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa PTR "
            .. fqdn .. " 300",
        fqdn .. " A 10.1.1.23 300",
        fqdn .. " AAAA 2001:db8:1::23 300",
    })
end)

test("an unmapped zone: no site label; another account: the default TTL", function()
    local got = records(vm("web-01", "zone-x"), { account = BETA, domain = CUSTOMERS,
        settings = { ttl = 120 } })
    expect_eq(got[3].name, "web-01.customers.example.net")
    expect_eq(got[3].ttl, 120)
end)

test("a zone name with spaces maps to its label", function()
    expect_eq(records(vm("db-02", "Zone C (lab)"), { account = ACME })[3].name,
        "db-02.lab.acme.example.net")
end)

test("manual accounts: records left as they are", function()
    expect_eq(records(vm("mx-01", "zone-a"), { account = { name = "legacy-mail",
        networkdomain = "mail.example.net" } }), false)
end)

test("gone VMs, no default NIC, no suffix: no records", function()
    local gone = vm("web-01", "zone-a")
    gone.state = "Expunging"
    expect_eq(records(gone, { account = ACME }), {})
    local nonic = vm("web-01", "zone-a")
    nonic.nic[2].isdefault = false
    expect_eq(records(nonic, { account = ACME }), {})
    expect_eq(records(vm("web-01", "zone-a"), { account = BETA }), {})
end)
