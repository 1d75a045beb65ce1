-- naming.lua -- small naming helpers shared by the rules: labels, the default NIC, the owner's
-- DNS suffix. Must not: read site settings or decide policy; each function only answers a question.

local naming = {}

-- The VM's host label: CloudStack's name, lower case, made safe; "" when nothing is usable.
function naming.host_label(vm)
    return dns.label(type(vm.name) == "string" and vm.name or "")
end

-- The NIC marked isdefault (CloudStack does not list it first), or nil.
function naming.default_nic(vm)
    for _, nic in ipairs(vm.nic or {}) do
        if nic.isdefault == true then
            return nic
        end
    end
    return nil
end

-- The owner's DNS suffix: the account's network domain, else its CloudStack domain's.
function naming.suffix(ctx)
    for _, owner in ipairs({ ctx.account or false, ctx.domain or false }) do
        local nd = owner and owner.networkdomain
        if type(nd) == "string" and nd ~= "" then
            return nd
        end
    end
    return nil
end

-- The NIC's addresses as { {type="A", address=...}, {type="AAAA", address=...} }, valid only.
function naming.addresses(nic)
    local out = {}
    if dns.ip_version(nic.ipaddress) == 4 then
        out[#out + 1] = { type = "A", address = nic.ipaddress }
    end
    if dns.ip_version(nic.ip6address) == 6 then
        out[#out + 1] = { type = "AAAA", address = nic.ip6address }
    end
    return out
end

return naming
