-- policy.lua -- project VMs named in their project network's DNS domain; account VMs as the
-- built-in policy names them. Must not: call CloudStack for anything but project VMs.
--
-- CloudStack projects have no network domain of their own, but their networks do: the
-- "Network domain" field of a network (listNetworks -> networkdomain). A VM of project webshop
-- whose default NIC is on a network with network domain shop.example.net gets:
--
--   shop-web.shop.example.net   A/AAAA of the default NIC
--   PTR of each of those addresses -> shop-web.shop.example.net
--
-- When the network has no network domain, or only CloudStack's generated one
-- (cs<account id in hex>cloud.internal), or the API answers with an error, the name falls back
-- to <vm>.<project>.<domain's network domain>, e.g. shop-web.webshop.customers.example.net.
--
-- cs.call is answered by CloudStack with the daemon's API key (read-only list* commands only)
-- and cached for the rest of this records() call. A transport failure (timeout, HTTP 5xx)
-- raises; the host then retries the whole event later, even if the policy caught the error,
-- so a flapping API never turns into a fallback name.

local default = require("cspdns.default")

local vmlib = require("cspdns.vm")

-- network domains that do not name anything in your DNS; CloudStack makes one up per account
-- from its guest.domain.suffix setting (default cloud.internal) when none is given
local GENERATED_DOMAIN = "^cs%x+cloud%.internal$"

local function usable_domain(nd)
    return type(nd) == "string" and nd ~= "" and not nd:find(GENERATED_DOMAIN) and nd or nil
end

-- The network domain of the project's network the NIC is on, or nil.
local function network_domain(vm, nic)
    if not nic.networkid then
        return nil
    end
    -- project resources are only listed when projectid is given
    local answer, err, status = cs.call("listNetworks",
        { id = nic.networkid, projectid = vm.projectid, listall = true })
    if not answer then
        log.warn("vm=%s: listNetworks id=%s failed (HTTP %s): %s; using the fallback name",
            tostring(vm.id), nic.networkid, tostring(status), tostring(err))
        return nil
    end
    local network = answer.network and answer.network[1]
    return network and usable_domain(network.networkdomain)
end

-- <project label>.<domain's network domain>, or nil
local function fallback_zone(vm, ctx)
    local project = (ctx.project and ctx.project.name) or vm.project
    local parent = ctx.domain and usable_domain(ctx.domain.networkdomain)
    local label = dns.label(project or "")
    if label == "" or not parent then
        return nil
    end
    return dns.fqdn(label, parent)
end

local function project_records(vm, ctx)
    if vmlib.gone(vm) then
        return {}
    end
    local host = dns.label(vm.name or "")
    local nic = vmlib.default_nic(vm)
    if host == "" or not nic then
        return {}
    end
    local zone = network_domain(vm, nic) or fallback_zone(vm, ctx)
    if not zone then
        log.info("vm=%s: project VM without a network domain, so no records", tostring(vm.id))
        return {}
    end
    local fqdn = dns.fqdn(host, zone)
    local out = {}
    for _, addr in ipairs({ nic.ipaddress or false, nic.ip6address or false }) do
        local version = addr and dns.ip_version(addr)
        if version then
            out[#out + 1] = { name = fqdn, type = version == 4 and "A" or "AAAA", content = addr }
            out[#out + 1] = { name = dns.ptr(addr), type = "PTR", content = fqdn }
        end
    end
    return out
end

local function records(vm, ctx)
    if vm.projectid then
        return project_records(vm, ctx)
    end
    return default.records(vm, ctx)
end

return { name = "project-domain", version = "1", records = records }
