-- project_domain_test.lua -- project VMs named by their network's domain, with cs.mock answering
-- listNetworks as CloudStack would. Must not: reach CloudStack; every cs.call here is mocked.

local PROJECT_ID = "8e1b4d7a-0c3f-4e6b-a9d2-5f8c1b4e7a03"
local NET_ID = "3f6a9d2c-5b8e-4f1a-a4c7-0d3f6a9c2e51"

local CUSTOMERS = { id = "4f1c7d2e-8a3b-4c5d-9e6f-0a1b2c3d4e5f", name = "customers",
    path = "ROOT/customers", networkdomain = "customers.example.net" }
local WEBSHOP = { id = PROJECT_ID, name = "webshop", displaytext = "Web shop",
    domainid = CUSTOMERS.id, domain = "customers", state = "Active" }
local ACME = { id = "3b8e2c4d-1f6a-4e7b-9c0d-2a5f8e1b7c63", name = "acme",
    networkdomain = "acme.example.net" }

local function shop_web()
    return {
        id = "6b9e2c5f-8a1d-4b4e-9f7a-0d3c6e9f2b81", name = "shop-web", displayname = "shop-web",
        projectid = PROJECT_ID, project = "webshop", domainid = CUSTOMERS.id,
        domain = "customers", state = "Running",
        nic = { { id = "a5d8b1e4", networkid = NET_ID, networkname = "webshop-net",
            ipaddress = "10.4.0.20", ip6address = "2001:db8:200:20::14", isdefault = true,
            deviceid = "0" } },
    }
end

local CTX = { domain = CUSTOMERS, project = WEBSHOP }

-- listNetworks' answer (the listnetworksresponse object) for the project's network
local function network(fields)
    local n = { id = NET_ID, name = "webshop-net", projectid = PROJECT_ID, project = "webshop",
        type = "Isolated", cidr = "10.4.0.0/24", state = "Implemented" }
    for k, v in pairs(fields or {}) do
        n[k] = v
    end
    return { count = 1, network = { n } }
end

local function names(list)
    local out = {}
    for _, r in ipairs(list) do
        out[#out + 1] = r.type .. " " .. r.name .. " " .. r.content
    end
    return out
end

test("a project VM is named in its network's network domain", function()
    cs.mock("listNetworks", { id = NET_ID, projectid = PROJECT_ID },
        network({ networkdomain = "shop.example.net" }))
    expect_eq(names(records(shop_web(), CTX)), {
        "PTR 20.0.4.10.in-addr.arpa shop-web.shop.example.net",
        "PTR 4.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.0.2.0.8.b.d.0.1.0.0.2.ip6.arpa "
            .. "shop-web.shop.example.net",
        "A shop-web.shop.example.net 10.4.0.20",
        "AAAA shop-web.shop.example.net 2001:db8:200:20::14",
    })
end)

local FALLBACK = "shop-web.webshop.customers.example.net"

test("no network domain on the network: <vm>.<project>.<domain's network domain>", function()
    cs.mock("listNetworks", { id = NET_ID }, network())
    expect_eq(records(shop_web(), CTX)[3].name, FALLBACK)
end)

test("CloudStack's generated network domain is not used", function()
    cs.mock("listNetworks", { id = NET_ID }, network({ networkdomain = "cs1fcloud.internal" }))
    expect_eq(records(shop_web(), CTX)[3].name, FALLBACK)
end)

test("the network is not found (an empty answer): fallback", function()
    cs.mock("listNetworks", { id = NET_ID }, {})
    expect_eq(records(shop_web(), CTX)[3].name, FALLBACK)
end)

test("an API error is an answer: logged, then the fallback name", function()
    cs.mock("listNetworks", { id = NET_ID },
        { err = "Unable to find network by id", status = 431 })
    expect_eq(records(shop_web(), CTX)[3].name, FALLBACK)
end)

test("a transient API failure makes the host retry the event, not fall back", function()
    cs.mock("listNetworks", { id = NET_ID }, { err = "HTTP 503", transient = true })
    expect_error(function() records(shop_web(), CTX) end,
        "transient CloudStack failure %(the host would retry%): cs.call%(listNetworks%): HTTP 503")
end)

test("the call asks for the project's network by id, with projectid", function()
    -- no mock: the error names the command and every parameter the policy sent
    local want = 'no cs.mock answers cs.call(listNetworks, {id="' .. NET_ID ..
        '", listall="true", projectid="' .. PROJECT_ID .. '"})'
    expect_error(function() records(shop_web(), CTX) end, (want:gsub("%p", "%%%0")))
end)

test("the project name comes from ctx.project, else from the VM", function()
    cs.mock("listNetworks", { id = NET_ID }, network())
    local ctx = { domain = CUSTOMERS, project = { id = PROJECT_ID, name = "Web Shop 2" } }
    expect_eq(records(shop_web(), ctx)[3].name, "shop-web.web-shop-2.customers.example.net")
    expect_eq(records(shop_web(), { domain = CUSTOMERS })[3].name, FALLBACK)
end)

test("no network domain anywhere: no records", function()
    cs.mock("listNetworks", { id = NET_ID }, network())
    expect_eq(records(shop_web(), { domain = { name = "internal" }, project = WEBSHOP }), {})
end)

test("gone project VMs have no records and cost no API call", function()
    local vm = shop_web()
    vm.state = "Destroyed"
    expect_eq(records(vm, CTX), {}) -- no mock: a call would fail this test
end)

test("account VMs are named as the built-in policy does, without API calls", function()
    local vm = shop_web()
    vm.projectid, vm.project, vm.account = nil, nil, "acme"
    expect_eq(names(records(vm, { account = ACME, domain = CUSTOMERS }))[3],
        "A shop-web.acme.example.net 10.4.0.20")
end)
