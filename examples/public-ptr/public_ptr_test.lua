-- public_ptr_test.lua -- the public-PTR policy: which ranges are public, and the records.
-- Must not: depend on the environment; each ctx a test relies on is spelled out.

local ACME = { id = "3b8e2c4d-1f6a-4e7b-9c0d-2a5f8e1b7c63", name = "acme",
    networkdomain = "acme.example.net" }

local function vm(v4, v6)
    return {
        id = "9c2f4e1a-6b3d-4f8e-a1c2-7d5e9b0f3a41", name = "web-01", account = "acme",
        state = "Running",
        nic = { { id = "e1c4a7f2", ipaddress = v4, ip6address = v6, isdefault = true } },
    }
end

local function types(list)
    local out = {}
    for _, r in ipairs(list) do
        out[#out + 1] = r.type .. " " .. (r.type == "PTR" and r.name or r.content)
    end
    table.sort(out)
    return out
end

test("private IPv4 with global IPv6: A and AAAA, and only the IPv6 PTR", function()
    expect_eq(types(records(vm("10.1.1.23", "2001:db8:1::23"), { account = ACME })), {
        "A 10.1.1.23",
        "AAAA 2001:db8:1::23",
        "PTR 3.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
    })
end)

test("public IPv4 with ULA IPv6: only the IPv4 PTR", function()
    expect_eq(types(records(vm("203.0.113.7", "fd12:3456:789a::7"), { account = ACME })), {
        "A 203.0.113.7",
        "AAAA fd12:3456:789a::7",
        "PTR 7.113.0.203.in-addr.arpa",
    })
end)

test("both public: both PTRs, exactly as the built-in policy", function()
    local got = records(vm("198.51.100.20", "2001:db8:5::20"), { account = ACME })
    expect_eq(#got, 4)
    expect_eq(got[1].content, "web-01.acme.example.net")
end)

test("both private: forward names only", function()
    expect_eq(types(records(vm("192.168.10.5", "fe80::1"), { account = ACME })), {
        "A 192.168.10.5", "AAAA fe80::1" })
end)

test("range edges", function()
    local cases = {
        { "9.255.255.255", true }, { "10.0.0.0", false }, { "10.255.255.255", false },
        { "11.0.0.0", true },
        { "172.15.255.255", true }, { "172.16.0.1", false }, { "172.31.255.255", false },
        { "172.32.0.0", true },
        { "100.63.255.255", true }, { "100.64.0.1", false }, { "100.127.255.255", false },
        { "100.128.0.0", true },
        { "169.254.1.1", false }, { "192.168.0.1", false }, { "192.169.0.1", true },
        { "127.0.0.1", false }, { "0.1.2.3", false }, { "198.18.0.1", false },
        { "198.20.0.1", true },
        { "fc00::1", false }, { "fdff:ffff::1", false }, { "fe00::1", true },
        { "fe80::1", false }, { "febf::1", false }, { "fec0::1", true },
        { "::1", false }, { "::2", true }, { "::ffff:10.1.2.3", false },
        { "64:ff9b:1::a", false }, { "64:ff9b::a", true },
        { "2001:db8::1", true }, { "2a00:1450:4001::1", true }, { "8.8.8.8", true },
        { "not an address", false }, { "", false },
    }
    for _, c in ipairs(cases) do
        expect_eq({ c[1], policy.is_public(c[1]) }, { c[1], c[2] })
    end
end)

test("non-canonical IPv6 spellings are classified the same", function()
    expect_eq(policy.is_public("FD00:0:0:0:0:0:0:1"), false)
    expect_eq(policy.is_public("2001:DB8:0::1"), true)
end)

test("the built-in rules still apply: group records, gone VMs", function()
    local v = vm("10.1.1.23")
    v.group = "www"
    expect_eq(types(records(v, { account = ACME })), { "A 10.1.1.23", "A 10.1.1.23" })
    v.state = "Destroyed"
    expect_eq(records(v, { account = ACME }), {})
end)
