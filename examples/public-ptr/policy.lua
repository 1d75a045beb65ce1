-- policy.lua -- dual-stack names, with PTRs only for public addresses: the built-in A and AAAA
-- records, minus the PTRs of private, shared and link-local ranges. Must not: publish reverse
-- names for addresses that only mean something inside one site.
--
-- Typical dual-stack clouds give VMs an RFC 1918 IPv4 address behind NAT and a global IPv6
-- address. Both get forward names, but a PTR for 10.1.1.23 would land in a 10.in-addr.arpa zone
-- shared by every site that uses 10/8, so only the global address gets one:
--
--   web-01.acme.example.net   A     10.1.1.23          (kept)
--   web-01.acme.example.net   AAAA  2001:db8:1::23     (kept)
--   23.1.1.10.in-addr.arpa    PTR   web-01...          (dropped: 10.0.0.0/8 is private)
--   3.2.0.0...ip6.arpa        PTR   web-01...          (kept: global unicast)
--
-- Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) are not
-- in the list: they stand in for public space in examples and tests, this file's included.

local default = require("cspdns.default")

-- Ranges that never get a PTR (RFC 6890 special-purpose space a VM can be given).
local NOT_PUBLIC = {
    "0.0.0.0/8",       -- "this network"
    "10.0.0.0/8",      -- RFC 1918 private
    "100.64.0.0/10",   -- RFC 6598 shared (carrier-grade NAT)
    "127.0.0.0/8",     -- loopback
    "169.254.0.0/16",  -- link-local
    "172.16.0.0/12",   -- RFC 1918 private
    "192.168.0.0/16",  -- RFC 1918 private
    "198.18.0.0/15",   -- benchmarking
    "::1/128",         -- loopback
    "::ffff:0:0/96",   -- IPv4-mapped
    "64:ff9b:1::/48",  -- local-use NAT64
    "fc00::/7",        -- unique local addresses (ULA)
    "fe80::/10",       -- link-local
}

-- An address as a list of byte values (4 or 16), or nil when it is not an address.
local function address_bytes(ip)
    local version = dns.ip_version(ip)
    local bytes = {}
    if version == 4 then
        for octet in dns.canonical(ip):gmatch("%d+") do
            bytes[#bytes + 1] = tonumber(octet)
        end
    elseif version == 6 then
        -- dns.ptr spells out all 32 nibbles, last first: "3.2.0.0....ip6.arpa"
        local nibbles = {}
        for nibble in dns.ptr(ip):sub(1, -#".ip6.arpa" - 1):gmatch("%x") do
            table.insert(nibbles, 1, tonumber(nibble, 16))
        end
        for i = 1, 32, 2 do
            bytes[#bytes + 1] = nibbles[i] * 16 + nibbles[i + 1]
        end
    else
        return nil
    end
    return bytes
end

-- "10.0.0.0/8" -> { bytes = {10, 0, 0, 0}, bits = 8 }; raises on a typo, so a bad edit of
-- NOT_PUBLIC fails when the policy loads and the old policy keeps running.
local function parse_prefix(text)
    local addr, bits = text:match("^([^/]+)/(%d+)$")
    local bytes = addr and address_bytes(addr)
    bits = tonumber(bits)
    if not bytes or bits > #bytes * 8 then
        error(string.format("NOT_PUBLIC: %q is not an address/length prefix", text), 2)
    end
    return { bytes = bytes, bits = bits }
end

local function in_prefix(bytes, prefix)
    if #bytes ~= #prefix.bytes then
        return false -- IPv4 never matches an IPv6 prefix, and the other way round
    end
    local bits = prefix.bits
    for i = 1, #bytes do
        if bits <= 0 then
            return true
        end
        local take = math.min(bits, 8)
        local mask = (0xFF << (8 - take)) & 0xFF
        if bytes[i] & mask ~= prefix.bytes[i] & mask then
            return false
        end
        bits = bits - take
    end
    return true
end

local PREFIXES = {}
for i, text in ipairs(NOT_PUBLIC) do
    PREFIXES[i] = parse_prefix(text)
end

-- true when ip may have a PTR
local function is_public(ip)
    local bytes = address_bytes(ip)
    if not bytes then
        return false
    end
    for _, prefix in ipairs(PREFIXES) do
        if in_prefix(bytes, prefix) then
            return false
        end
    end
    return true
end

-- The address a reverse name stands for: the PTR records carry only the name.
local function ptr_address(name)
    local v4 = name:match("^(%d+%.%d+%.%d+%.%d+)%.in%-addr%.arpa$")
    if v4 then
        local a, b, c, d = v4:match("(%d+)%.(%d+)%.(%d+)%.(%d+)")
        return d .. "." .. c .. "." .. b .. "." .. a
    end
    local nibbles = name:match("^([%x%.]+)%.ip6%.arpa$")
    if nibbles then
        local hex = nibbles:gsub("%.", ""):reverse()
        local groups = {}
        for i = 1, #hex, 4 do
            groups[#groups + 1] = hex:sub(i, i + 3)
        end
        return table.concat(groups, ":")
    end
    return nil
end

local function records(vm, ctx)
    local out = {}
    for _, r in ipairs(default.records(vm, ctx)) do
        if r.type ~= "PTR" or is_public(ptr_address(r.name) or "") then
            out[#out + 1] = r
        end
    end
    return out
end

return {
    name = "public-ptr",
    version = "1",
    records = records,
    is_public = is_public, -- for the tests
}
