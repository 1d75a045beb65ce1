-- per_nic_test.lua -- every rule of the per-NIC policy, on CloudStack-shaped VMs.
-- Must not: depend on the environment; each ctx a test relies on is spelled out.

local ACME = { id = "3b8e2c4d-1f6a-4e7b-9c0d-2a5f8e1b7c63", name = "acme",
    networkdomain = "acme.example.net" }
local BETA = { id = "6f2a9c5e-3b1d-4e8a-a7c0-9d2e5f8b1c4a", name = "beta" } -- no networkdomain
local CUSTOMERS = { id = "4f1c7d2e-8a3b-4c5d-9e6f-0a1b2c3d4e5f", name = "customers",
    networkdomain = "customers.example.net" }

local function nic(deviceid, networkname, ipaddress, extra)
    local n = { id = "e1c4a7f2-3b6d-4a9e-8f1c-5d2b7e0a3c6" .. deviceid, deviceid = deviceid,
        networkid = "5b9d2f7a-1c4e-4a8b-b3d6-0e2f5a8c1d7" .. deviceid, networkname = networkname,
        ipaddress = ipaddress, isdefault = false, traffictype = "Guest", type = "Isolated",
        secondaryip = {} }
    for k, v in pairs(extra or {}) do
        n[k] = v
    end
    return n
end

-- web-01: the default NIC is listed second, as CloudStack may do
local function web01()
    return {
        id = "9c2f4e1a-6b3d-4f8e-a1c2-7d5e9b0f3a41", name = "web-01", displayname = "web-01",
        account = "acme", domainid = CUSTOMERS.id, state = "Running",
        nic = {
            nic("1", "Backend Net", "10.2.0.57",
                { secondaryip = { { id = "c3f6a9d2", ipaddress = "10.2.0.58" } } }),
            nic("0", "frontend", "10.1.1.23", { isdefault = true,
                ip6address = "2001:db8:1::23", ip6cidr = "2001:db8:1::/64" }),
            nic("2", "storage_vlan", "172.16.5.9"),
        },
    }
end

local function rr(name, rtype, content)
    return { name = name, type = rtype, content = content, ttl = 60 }
end

-- records() returns the host's order: by name, then type, then content.
local function sorted(list)
    table.sort(list, function(a, b)
        if a.name ~= b.name then return a.name < b.name end
        if a.type ~= b.type then return a.type < b.type end
        return a.content < b.content
    end)
    return list
end

local function names(list, rtype)
    local out = {}
    for _, r in ipairs(list) do
        if r.type == rtype then out[#out + 1] = r.name end
    end
    return out
end

test("every NIC gets <vm>.<network>.<suffix>, the default NIC also <vm>.<suffix>", function()
    local front = "web-01.frontend.acme.example.net"
    local back = "web-01.backend-net.acme.example.net"
    local storage = "web-01.storage-vlan.acme.example.net"
    expect_eq(records(web01(), { account = ACME, domain = CUSTOMERS }), sorted {
        rr(front, "A", "10.1.1.23"),
        rr(front, "AAAA", "2001:db8:1::23"),
        rr("web-01.acme.example.net", "A", "10.1.1.23"),
        rr("web-01.acme.example.net", "AAAA", "2001:db8:1::23"),
        rr(back, "A", "10.2.0.57"),
        rr(storage, "A", "172.16.5.9"),
        rr("23.1.1.10.in-addr.arpa", "PTR", front),
        rr("3.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR",
            front),
        rr("57.0.2.10.in-addr.arpa", "PTR", back),
        rr("9.5.16.172.in-addr.arpa", "PTR", storage),
    })
end)

test("secondary IPs get no names", function()
    for _, r in ipairs(records(web01(), { account = ACME, domain = CUSTOMERS })) do
        expect_eq(r.content ~= "10.2.0.58" and r.name ~= "58.0.2.10.in-addr.arpa", true)
    end
end)

test("the account's network domain wins over the domain's; else the domain's", function()
    local vm = web01()
    expect_eq(names(records(vm, { account = BETA, domain = CUSTOMERS }), "A")[1],
        "web-01.backend-net.customers.example.net")
    vm.account, vm.projectid = nil, "8e1b4d7a-0c3f-4e6b-a9d2-5f8c1b4e7a03" -- a project VM
    expect_eq(names(records(vm, { domain = CUSTOMERS, project = { name = "webshop" } }), "A")[1],
        "web-01.backend-net.customers.example.net")
end)

test("no network domain anywhere: no records", function()
    expect_eq(records(web01(), { account = BETA, domain = { name = "internal" } }), {})
    expect_eq(records(web01(), {}), {})
end)

test("a NIC without an address (L2 network) has no name", function()
    local vm = web01()
    vm.nic[3].ipaddress = nil
    for _, r in ipairs(records(vm, { account = ACME })) do
        expect_eq(r.name:find("storage", 1, true), nil)
    end
    expect_eq(#records(vm, { account = ACME }), 8)
end)

test("a NIC without a network name is nic<deviceid>", function()
    local vm = web01()
    vm.nic[3].networkname = nil
    expect_eq(policy.network_label(vm.nic[3]), "nic2")
    vm.nic[3].networkname = "!!!"
    expect_eq(names(records(vm, { account = ACME }), "A"), {
        "web-01.acme.example.net", "web-01.backend-net.acme.example.net",
        "web-01.frontend.acme.example.net", "web-01.nic2.acme.example.net" })
end)

test("two networks with the same label: the later NIC gets -<deviceid>", function()
    local vm = web01()
    vm.nic[3].networkname = "backend net" -- deviceid 2, same label as deviceid 1
    local got = names(records(vm, { account = ACME }), "A")
    expect_eq(got, {
        "web-01.acme.example.net", "web-01.backend-net-2.acme.example.net",
        "web-01.backend-net.acme.example.net", "web-01.frontend.acme.example.net" })
    -- and the listing order does not matter
    vm.nic = { vm.nic[3], vm.nic[2], vm.nic[1] }
    expect_eq(names(records(vm, { account = ACME }), "A"), got)
end)

test("a name longer than 253 octets is left out, the VM keeps its other names", function()
    local vm = web01()
    vm.name = string.rep("h", 63)
    vm.nic[1].networkname = string.rep("n", 63)
    local long = { id = ACME.id, networkdomain = string.rep("z", 60) .. "." ..
        string.rep("y", 60) .. ".example.net" }
    local got = records(vm, { account = long })
    for _, r in ipairs(got) do
        expect_eq(#r.name <= 253 and (r.type ~= "PTR" or #r.content <= 253), true)
        expect_eq(r.content ~= "10.2.0.57", true) -- the long NIC's address is not named
    end
    expect_eq(#names(got, "A"), 3) -- frontend, storage and the plain default name
end)

test("network names are cleaned and cut to 63 characters", function()
    expect_eq(policy.network_label({ networkname = "Prod DB (Frankfurt)" }), "prod-db-frankfurt")
    expect_eq(#policy.network_label({ networkname = string.rep("x", 100) }), 63)
end)

test("Destroyed, Expunging and Error VMs have no records; Stopped ones keep them", function()
    for _, state in ipairs({ "Destroyed", "Expunging", "Error" }) do
        local vm = web01()
        vm.state = state
        expect_eq(records(vm, { account = ACME }), {})
    end
    local vm = web01()
    vm.state = "Stopped"
    expect_eq(#records(vm, { account = ACME }), 10)
end)

test("a VM without NICs has no records", function()
    local vm = web01()
    vm.nic = nil
    expect_eq(records(vm, { account = ACME }), {})
end)
