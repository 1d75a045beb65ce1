-- vm_helpers_test.lua -- require("cspdns.vm"), the helpers the built-in policy is built from and
-- policies may use. Must not: depend on the default policy's naming rules; only the helpers.

local vmlib = require("cspdns.vm")

local ACME = { name = "acme", networkdomain = "acme.example.net" }
local BETA = { name = "beta" }
local CUSTOMERS = { name = "customers", networkdomain = "customers.example.net" }

local TWO_NICS = {
    nic = {
        { id = "a8e2d5b1", ipaddress = "10.2.0.57", isdefault = false },
        { id = "e1c4a7f2", ipaddress = "10.1.1.23", isdefault = true },
    },
}

test("gone: Destroyed, Expunging and Error VMs; a Stopped one keeps its names", function()
    for _, state in ipairs({ "Destroyed", "Expunging", "Error" }) do
        expect_eq(vmlib.gone({ state = state }), true)
    end
    for _, state in ipairs({ "Running", "Stopped", "Starting", "Migrating" }) do
        expect_eq(vmlib.gone({ state = state }), false)
    end
end)

test("default_nic picks isdefault, not the first NIC", function()
    expect_eq(vmlib.default_nic(TWO_NICS).ipaddress, "10.1.1.23")
    expect_eq(vmlib.default_nic({ nic = { { isdefault = false } } }), nil)
    expect_eq(vmlib.default_nic({}), nil)
end)

test("suffix: account, then domain, then nothing", function()
    expect_eq(vmlib.suffix({ account = ACME, domain = CUSTOMERS }), "acme.example.net")
    expect_eq(vmlib.suffix({ account = BETA, domain = CUSTOMERS }), "customers.example.net")
    expect_eq(vmlib.suffix({ account = { networkdomain = "" } }), nil)
    expect_eq(vmlib.suffix({}), nil)
end)

test("host_label keeps a hostname, makes anything else one", function()
    expect_eq(vmlib.host_label("web-01"), "web-01")
    expect_eq(vmlib.host_label("Web_01"), "web-01")
    expect_eq(vmlib.host_label(nil), "")
    expect_eq(vmlib.host_label("!!!"), "")
end)

test("addresses skips what is not an address", function()
    expect_eq(vmlib.addresses({ ipaddress = "10.1.1.23", ip6address = "2001:db8::1" }),
        { { type = "A", address = "10.1.1.23" }, { type = "AAAA", address = "2001:db8::1" } })
    expect_eq(vmlib.addresses({ ipaddress = "10.1.1.256", ip6address = "" }), {})
end)
