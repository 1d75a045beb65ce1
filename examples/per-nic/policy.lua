-- policy.lua -- one name per NIC: <vm>.<network name>.<suffix> for every NIC of a multi-NIC VM.
-- Must not: guess which NIC a client means; each address gets its own name and its own PTR.
--
-- For a VM web-01 of account acme (network domain acme.example.net) with NICs on the networks
-- "frontend" (default, 10.1.1.23 and 2001:db8:1::23) and "Backend Net" (10.2.0.57):
--
--   web-01.frontend.acme.example.net     A 10.1.1.23, AAAA 2001:db8:1::23
--   web-01.backend-net.acme.example.net  A 10.2.0.57
--   web-01.acme.example.net              A 10.1.1.23, AAAA 2001:db8:1::23  (the default NIC)
--   PTR of each address -> the NIC's own name, so a reverse lookup tells the networks apart
--
-- The suffix is the owner account's network domain, else its CloudStack domain's (project VMs
-- have no account, so theirs is the domain's). Secondary IPs are left out: they are usually
-- floating service addresses that do not belong to one VM's name.

local vmlib = require("cspdns.vm")

-- Also name the default NIC's addresses <vm>.<suffix>, as the built-in policy does.
local NAME_DEFAULT_NIC = true

-- The label for a NIC's network. CloudStack network names are free text ("Backend Net",
-- "prod_db"), so they are made into labels; a NIC without a usable name is "nic<deviceid>".
local function network_label(nic)
    local label = dns.label(nic.networkname or "")
    if label == "" then
        label = "nic" .. dns.label(tostring(nic.deviceid or "x"))
    end
    return label
end

local function records(vm, ctx)
    if vmlib.gone(vm) then
        return {}
    end
    local host = dns.label(vm.name or "")
    local suffix = vmlib.suffix(ctx)
    if host == "" or not suffix then
        log.info("vm=%s: no usable name or no network domain, so no records", tostring(vm.id))
        return {}
    end

    local out, used = {}, {}
    local function add(name, rtype, content)
        out[#out + 1] = { name = name, type = rtype, content = content }
    end

    -- deviceid order, so that when two networks give the same label the first NIC keeps it
    -- and the suffixes do not depend on the order CloudStack happened to list the NICs in
    local nics = {}
    for _, nic in ipairs(vm.nic or {}) do
        nics[#nics + 1] = nic
    end
    table.sort(nics, function(a, b)
        return (tonumber(a.deviceid) or 0) < (tonumber(b.deviceid) or 0)
    end)

    for _, nic in ipairs(nics) do
        local v4 = dns.ip_version(nic.ipaddress) == 4 and nic.ipaddress or nil
        local v6 = dns.ip_version(nic.ip6address) == 6 and nic.ip6address or nil
        if v4 or v6 then -- a NIC on an L2 network has no address and no name
            local label = network_label(nic)
            if used[label] then
                label = label:sub(1, 50):gsub("%-+$", "") .. "-" ..
                    dns.label(tostring(nic.deviceid or #out))
            end
            used[label] = true
            local fqdn = host .. "." .. label .. "." .. suffix
            if #fqdn > 253 then
                -- dns.fqdn would raise and fail the whole VM; its other names are still good
                log.warn("vm=%s: %s is longer than 253 octets, so that NIC has no name of its own",
                    tostring(vm.id), fqdn)
                fqdn = nil
            else
                fqdn = dns.fqdn(host .. "." .. label, suffix) -- checks every label
            end
            for _, addr in ipairs({ v4 or false, v6 or false }) do
                local rtype = addr == v4 and "A" or "AAAA"
                if addr and fqdn then
                    add(fqdn, rtype, addr)
                    add(dns.ptr(addr), "PTR", fqdn)
                end
                if addr and NAME_DEFAULT_NIC and nic.isdefault == true then
                    add(dns.fqdn(host, suffix), rtype, addr)
                end
            end
        end
    end
    return out
end

return {
    name = "per-nic",
    version = "1",
    records = records,
    network_label = network_label, -- for the tests
}
