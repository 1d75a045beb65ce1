-- designate_test.lua -- the Designate-style template policy: keys, templates, records.
-- Must not: depend on the environment; each ctx a test relies on is spelled out.

local ACME = { id = "3b8e2c4d-1f6a-4e7b-9c0d-2a5f8e1b7c63", name = "acme",
    networkdomain = "acme.example.net" }

local function web01()
    return {
        id = "9c2f4e1a-6b3d-4f8e-a1c2-7d5e9b0f3a41", name = "web-01",
        displayname = "Web Server 01", account = "acme", zonename = "zone-a",
        state = "Running",
        nic = {
            { id = "e1c4a7f2", networkname = "frontend", ipaddress = "192.0.2.23",
                ip6address = "2001:db8:1::23", isdefault = true, deviceid = "0" },
            { id = "a8e2d5b1", networkname = "Backend Net", ipaddress = "10.2.0.57",
                isdefault = false, deviceid = "1" },
        },
    }
end

local function lines(list)
    local out = {}
    for _, r in ipairs(list) do
        out[#out + 1] = r.type .. " " .. r.name .. " " .. r.content
    end
    table.sort(out)
    return out
end

test("shipped settings: <host>.<zone> and <host>.<network>.<zone>, PTR to the first", function()
    -- as with nova_fixed, every NIC's address is also at <host>.<zone> (round robin)
    expect_eq(lines(records(web01(), { account = ACME })), {
        "A web-01.acme.example.net 10.2.0.57",
        "A web-01.acme.example.net 192.0.2.23",
        "A web-01.backend-net.acme.example.net 10.2.0.57",
        "A web-01.frontend.acme.example.net 192.0.2.23",
        "AAAA web-01.acme.example.net 2001:db8:1::23",
        "PTR 23.2.0.192.in-addr.arpa web-01.acme.example.net",
        "PTR 3.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa "
            .. "web-01.acme.example.net",
        "PTR 57.0.2.10.in-addr.arpa web-01.acme.example.net",
    })
end)

test("Designate's octet template, a fixed zone, no PTRs, default NIC only", function()
    local records_fn = policy.make({
        zone = "vms.example.net",
        formatv4 = { "%(octet0)s-%(octet1)s-%(octet2)s-%(octet3)s.%(zone)s" },
        formatv6 = { "%(ip_address)s.%(zone)s", "%(instance_id)s.%(domain)s" },
        all_nics = false, ptr = false,
    })
    expect_eq(lines(records_fn(web01(), { account = ACME })), {
        "A 192-0-2-23.vms.example.net 192.0.2.23",
        "AAAA 2001-0db8-0001-0000-0000-0000-0000-0023.vms.example.net 2001:db8:1::23",
        "AAAA 9c2f4e1a-6b3d-4f8e-a1c2-7d5e9b0f3a41.vms.example.net 2001:db8:1::23",
    })
end)

test("every key has a value", function()
    local vm = web01()
    vm.projectid, vm.project = "8e1b4d7a", "Web Shop"
    local all = "%(hostname)s.%(display_name)s.%(instance_id)s.%(tenant_id)s.%(tenant_name)s."
        .. "%(project_id)s.%(project_name)s.%(availability_zone)s.%(label)s.%(ip_version)s."
        .. "%(ip_address)s.%(octet0)s.%(octet3)s.%(zone)s"
    policy.check_template(all, true)
    local got = policy.make({ formatv4 = { all }, formatv6 = {}, all_nics = false })(vm,
        { account = ACME, project = { id = "8e1b4d7a", name = "Web Shop" } })
    expect_eq(got[1].name, "web-01.web-server-01.9c2f4e1a-6b3d-4f8e-a1c2-7d5e9b0f3a41.8e1b4d7a."
        .. "web-shop.8e1b4d7a.web-shop.zone-a.frontend.4.192-0-2-23.192.23.acme.example.net")
end)

test("an unknown key, or an octet in formatv6, is refused with the template", function()
    expect_error(function() policy.check_template("%(hostnme)s.%(zone)s", true) end,
        'template "%%%(hostnme%)s%.%%%(zone%)s": unknown key %%%(hostnme%)s')
    expect_error(function() policy.check_template("%(octet0)s.%(zone)s", false) end,
        "unknown key %%%(octet0%)s %(only in formatv4%)")
    expect_error(function() policy.check_template("%(hostname)d.%(zone)s", true) end,
        "only %%%(key%)s placeholders are allowed")
    expect_error(function() policy.check_template(42, true) end, "not a string")
end)

test("free text in values cannot break a name", function()
    local vm = web01()
    vm.displayname = "x'); DROP TABLE records; --"
    local got = policy.make({ formatv4 = { "%(display_name)s.%(zone)s" }, formatv6 = {},
        all_nics = false })(vm, { account = ACME })
    expect_eq(got[1].name, "x-drop-table-records.acme.example.net")
end)

test("a template that gives an invalid name is skipped, the others still apply", function()
    local vm = web01()
    vm.displayname = "!!!" -- nothing usable: an empty label
    local got = policy.make({ formatv4 = { "%(display_name)s.%(zone)s", "%(hostname)s.%(zone)s" },
        formatv6 = {}, all_nics = false, ptr = true })(vm, { account = ACME })
    expect_eq(lines(got), {
        "A web-01.acme.example.net 192.0.2.23",
        "PTR 23.2.0.192.in-addr.arpa web-01.acme.example.net",
    })
end)

test("address labels never start or end with a hyphen", function()
    expect_eq(policy.address_label("::1", 6), "0000-0000-0000-0000-0000-0000-0000-0001")
    expect_eq(policy.address_label("192.0.2.1", 4), "192-0-2-1")
end)

test("no zone, or a gone VM: no records", function()
    expect_eq(records(web01(), { account = { name = "beta" } }), {})
    local vm = web01()
    vm.state = "Destroyed"
    expect_eq(records(vm, { account = ACME }), {})
end)

test("the policy's self_test passes with the shipped settings", function()
    policy.self_test()
end)
