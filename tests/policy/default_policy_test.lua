-- default_policy_test.lua -- every rule of the built-in policy, on CloudStack-shaped fixtures.
-- Must not: depend on the environment; each setting a test relies on is given in ctx.settings.

local function vm_from(file)
    return fixture("fixtures/" .. file).listvirtualmachinesresponse.virtualmachine[1]
end

local function account_from(file)
    return fixture("fixtures/" .. file).listaccountsresponse.account[1]
end

local function domain_from(file)
    return fixture("fixtures/" .. file).listdomainsresponse.domain[1]
end

local function copy(v)
    if type(v) ~= "table" then
        return v
    end
    local c = {}
    for k, item in pairs(v) do
        c[k] = copy(item)
    end
    return c
end

-- records() hands back what the host would write, ordered by name, type, content.
local function sorted(list)
    table.sort(list, function(a, b)
        if a.name ~= b.name then
            return a.name < b.name
        end
        if a.type ~= b.type then
            return a.type < b.type
        end
        return a.content < b.content
    end)
    return list
end

local function rr(name, rtype, content, ttl)
    return { name = name, type = rtype, content = content, ttl = ttl or 60 }
end

-- The names of the A records in list, in order.
local function a_names(list)
    local names = {}
    for _, r in ipairs(list) do
        if r.type == "A" then
            names[#names + 1] = r.name
        end
    end
    return names
end

local ACME = account_from("listAccounts_acme.json") -- networkdomain acme.cloud.example.net
local GLOBEX = account_from("listAccounts_globex.json") -- no networkdomain
local ADMIN = account_from("listAccounts_admin.json") -- root admin, admin.cloud.example.net
local CUSTOMERS = domain_from("listDomains_customers.json") -- customers.cloud.example.net
local INTERNAL = domain_from("listDomains_internal.json") -- no networkdomain

local WEB01 = vm_from("listVirtualMachines_web-01.json") -- group www, default NIC first, IPv6
local DB01 = vm_from("listVirtualMachines_db-01.json") -- default NIC second
local APP02 = vm_from("listVirtualMachines_app-02.json") -- globex, IPv4-only NIC
local SHOP = vm_from("listVirtualMachines_project.json") -- project VM: no account, group shop

local WEB01_V6 = "2001:db8:100:10:0:3cff:fe5e:1"
local WEB01_PTR6 = "1.0.0.0.e.5.e.f.f.f.c.3.0.0.0.0.0.1.0.0.0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa"
local COMMON = { common_zone = "vms.example.net", add_to_common_zone = true }

test("the built-in policy declares its name and version", function()
    expect_eq({ policy.name, policy.version }, { "default", "1" })
end)

test("default NIC: A, AAAA and both PTRs under the account's network domain", function()
    local fqdn = "web-01.acme.cloud.example.net"
    expect_eq(records(WEB01, { account = ACME, domain = CUSTOMERS }), sorted {
        rr(fqdn, "A", "10.1.1.23"),
        rr(fqdn, "AAAA", WEB01_V6),
        rr("23.1.1.10.in-addr.arpa", "PTR", fqdn),
        rr(WEB01_PTR6, "PTR", fqdn),
        rr("www-3b8e2c4d.acme.cloud.example.net", "A", "10.1.1.23"),
        rr("www-3b8e2c4d.acme.cloud.example.net", "AAAA", WEB01_V6),
    })
end)

test("the domain's network domain when the account has none", function()
    local fqdn = "app-02.customers.cloud.example.net"
    expect_eq(records(APP02, { account = GLOBEX, domain = CUSTOMERS }), sorted {
        rr(fqdn, "A", "10.3.0.12"),
        rr("12.0.3.10.in-addr.arpa", "PTR", fqdn),
    })
end)

test("an IPv4-only default NIC gets A and its PTR, no AAAA", function()
    local vm = copy(WEB01)
    vm.nic[1].ip6address, vm.nic[1].ip6cidr, vm.nic[1].ip6gateway = nil, nil, nil
    local fqdn = "web-01.acme.cloud.example.net"
    expect_eq(records(vm, { account = ACME, domain = CUSTOMERS }), sorted {
        rr(fqdn, "A", "10.1.1.23"),
        rr("23.1.1.10.in-addr.arpa", "PTR", fqdn),
        rr("www-3b8e2c4d.acme.cloud.example.net", "A", "10.1.1.23"),
    })
end)

test("the default NIC is the one marked isdefault, not the first", function()
    local fqdn = "db-01.acme.cloud.example.net"
    expect_eq(records(DB01, { account = ACME, domain = CUSTOMERS }), sorted {
        rr(fqdn, "A", "10.1.1.31"),
        rr(fqdn, "AAAA", "2001:db8:100:10:0:3cff:fe5e:4"),
        rr("31.1.1.10.in-addr.arpa", "PTR", fqdn),
        rr("4.0.0.0.e.5.e.f.f.f.c.3.0.0.0.0.0.1.0.0.0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR",
            fqdn),
    })
end)

test("no default NIC: no records", function()
    local vm = copy(DB01)
    vm.nic[2].isdefault = false
    expect_eq(records(vm, { account = ACME, domain = CUSTOMERS }), {})
end)

test("common zone on: names in both zones, PTRs to the network-domain name", function()
    local fqdn = "app-02.customers.cloud.example.net"
    expect_eq(records(APP02, { account = GLOBEX, domain = CUSTOMERS, settings = COMMON }), sorted {
        rr(fqdn, "A", "10.3.0.12"),
        rr("app-02.vms.example.net", "A", "10.3.0.12"),
        rr("12.0.3.10.in-addr.arpa", "PTR", fqdn),
    })
end)

test("common zone configured but add_to_common_zone off: network domain only", function()
    local fqdn = "app-02.customers.cloud.example.net"
    local settings = { common_zone = "vms.example.net", add_to_common_zone = false }
    expect_eq(records(APP02, { account = GLOBEX, domain = CUSTOMERS, settings = settings }),
        sorted {
            rr(fqdn, "A", "10.3.0.12"),
            rr("12.0.3.10.in-addr.arpa", "PTR", fqdn),
        })
end)

test("only the common zone applies: A/AAAA there and PTRs to that name, no group", function()
    local fqdn = "web-01.vms.example.net"
    local vm = copy(WEB01)
    expect_eq(records(vm, { account = GLOBEX, domain = INTERNAL, settings = COMMON }), sorted {
        rr(fqdn, "A", "10.1.1.23"),
        rr(fqdn, "AAAA", WEB01_V6),
        rr("23.1.1.10.in-addr.arpa", "PTR", fqdn),
        rr(WEB01_PTR6, "PTR", fqdn),
    })
end)

test("no network domain and no common zone: no records", function()
    expect_eq(records(APP02, { account = GLOBEX, domain = INTERNAL }), {})
    local off = { common_zone = "vms.example.net", add_to_common_zone = false }
    expect_eq(records(APP02, { account = GLOBEX, domain = INTERNAL, settings = off }), {})
    expect_eq(records(APP02, {}), {})
end)

test("group record: group name cleaned to [0-9a-z], then the account id's first 8", function()
    local vm = copy(WEB01)
    vm.group = "Web Servers!"
    local got = records(vm, { account = ACME, domain = CUSTOMERS })
    local group = {}
    for _, r in ipairs(got) do
        if r.name:find("^webservers%-") then
            group[#group + 1] = r
        end
    end
    expect_eq(group, sorted {
        rr("webservers-3b8e2c4d.acme.cloud.example.net", "A", "10.1.1.23"),
        rr("webservers-3b8e2c4d.acme.cloud.example.net", "AAAA", WEB01_V6),
    })
end)

test("a group name with nothing usable in it gives no group record", function()
    local vm = copy(WEB01)
    vm.group = "!!! ---"
    local fqdn = "web-01.acme.cloud.example.net"
    expect_eq(records(vm, { account = ACME, domain = CUSTOMERS }), sorted {
        rr(fqdn, "A", "10.1.1.23"),
        rr(fqdn, "AAAA", WEB01_V6),
        rr("23.1.1.10.in-addr.arpa", "PTR", fqdn),
        rr(WEB01_PTR6, "PTR", fqdn),
    })
end)

test("a long group name is cut so the label stays within 63 characters", function()
    local vm = copy(APP02)
    vm.group = string.rep("g", 80)
    expect_eq(a_names(records(vm, { account = GLOBEX, domain = CUSTOMERS })), {
        "app-02.customers.cloud.example.net",
        string.rep("g", 54) .. "-6f2a9c5e.customers.cloud.example.net",
    })
end)

test("project VM without an account: the domain's network domain, no group record", function()
    local fqdn = "shop-web.customers.cloud.example.net"
    expect_eq(records(SHOP, { domain = CUSTOMERS, project = { id = SHOP.projectid,
        name = "webshop" } }), sorted {
        rr(fqdn, "A", "10.4.0.20"),
        rr(fqdn, "AAAA", "2001:db8:200:20::14"),
        rr("20.0.4.10.in-addr.arpa", "PTR", fqdn),
        rr("4.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.0.2.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR", fqdn),
    })
end)

test("admin-deployed VM: named after its owner (ctx.account), not the event's caller", function()
    local event = fixture("fixtures/event_deploy_by_admin.json")
    expect_eq(event.account, ADMIN.id) -- the caller is the admin...
    local vm = event.jobResult
    expect_eq(vm.account, ACME.name)   -- ...the owner is acme, which the host puts in ctx
    local fqdn = "web-03.acme.cloud.example.net"
    local ctx = { account = ACME, domain = CUSTOMERS, event = event, trigger = "event",
        kafka = { topic = "cloudstack", partition = 0, offset = 42 } }
    expect_eq(records(vm, ctx), sorted {
        rr(fqdn, "A", "10.1.1.40"),
        rr(fqdn, "AAAA", "2001:db8:100:10:0:3cff:fe5e:9"),
        rr("40.1.1.10.in-addr.arpa", "PTR", fqdn),
        rr("9.0.0.0.e.5.e.f.f.f.c.3.0.0.0.0.0.1.0.0.0.0.1.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR", fqdn),
        rr("webservers-3b8e2c4d.acme.cloud.example.net", "A", "10.1.1.40"),
        rr("webservers-3b8e2c4d.acme.cloud.example.net", "AAAA", "2001:db8:100:10:0:3cff:fe5e:9"),
    })
end)

test("Destroyed, Expunging and Error VMs have no records", function()
    for _, state in ipairs({ "Destroyed", "Expunging", "Error" }) do
        local vm = copy(WEB01)
        vm.state = state
        expect_eq(records(vm, { account = ACME, domain = CUSTOMERS }), {})
    end
end)

test("a Stopped VM keeps its records", function()
    local vm = copy(WEB01)
    vm.state = "Stopped"
    expect_eq(records(vm, { account = ACME, domain = CUSTOMERS }),
        records(WEB01, { account = ACME, domain = CUSTOMERS }))
    expect_eq(#records(vm, { account = ACME, domain = CUSTOMERS }), 6)
end)

test("TTL comes from the settings", function()
    local got = records(APP02, { account = GLOBEX, domain = CUSTOMERS, settings = { ttl = 300 } })
    expect_eq(#got, 2)
    for _, r in ipairs(got) do
        expect_eq(r.ttl, 300)
    end
end)

test("the VM name is lower-cased, and made into a label when it is not one", function()
    local vm = copy(APP02)
    vm.name = "APP-02"
    expect_eq(a_names(records(vm, { domain = CUSTOMERS })),
        { "app-02.customers.cloud.example.net" })
    vm.name = "App_02 (old)"
    expect_eq(a_names(records(vm, { domain = CUSTOMERS })),
        { "app-02-old.customers.cloud.example.net" })
end)

test("a VM name with nothing usable gives no records", function()
    local vm = copy(APP02)
    vm.name = "!!!"
    expect_eq(records(vm, { domain = CUSTOMERS }), {})
    vm.name = nil
    expect_eq(records(vm, { domain = CUSTOMERS }), {})
end)
