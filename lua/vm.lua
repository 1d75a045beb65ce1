-- vm.lua -- require("cspdns.vm"): the questions every naming policy asks about a VM and its
-- owner, answered once for the built-in policy and for yours. Must not: decide names or records.

local M = {}

-- VMs in these states have no records; a Stopped VM keeps its names.
M.GONE = { Destroyed = true, Expunging = true, Error = true }

function M.gone(vm)
    return M.GONE[vm.state] == true
end

-- The NIC marked isdefault (CloudStack does not always list it first), or nil.
function M.default_nic(vm)
    for _, nic in ipairs(vm.nic or {}) do
        if nic.isdefault == true then
            return nic
        end
    end
    return nil
end

-- obj.networkdomain when it is a non-empty string, else nil (accounts, domains, networks).
function M.networkdomain(obj)
    local nd = obj and obj.networkdomain
    if type(nd) == "string" and nd ~= "" then
        return nd
    end
    return nil
end

-- The owner's DNS suffix: the account's network domain, else its CloudStack domain's, or nil.
function M.suffix(ctx)
    return M.networkdomain(ctx.account) or M.networkdomain(ctx.domain)
end

-- The VM's name as a DNS label: CloudStack's names are hostnames already and come back lower-cased;
-- anything else is turned into one ("" if nothing usable is left).
function M.host_label(name)
    if type(name) ~= "string" then
        return ""
    end
    return dns.label(name)
end

-- The NIC's valid addresses as { {type = "A", address = ...}, {type = "AAAA", address = ...} }.
function M.addresses(nic)
    local out = {}
    if dns.ip_version(nic.ipaddress) == 4 then
        out[#out + 1] = { type = "A", address = nic.ipaddress }
    end
    if dns.ip_version(nic.ip6address) == 6 then
        out[#out + 1] = { type = "AAAA", address = nic.ip6address }
    end
    return out
end

return M
