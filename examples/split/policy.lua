-- policy.lua -- a policy split into files: the rules here, settings in site.lua, name spelling in
-- naming.lua, VM questions in the built-in cspdns.vm. Must not: hard-code site settings.
--
-- require("x") loads x.lua from this directory (only from here, text only, once per Lua state),
-- so mount or copy the whole directory and point POLICY_FILE at this file:
--
--   docker run -v ./split:/etc/cs-pdns/policy -e POLICY_FILE=/etc/cs-pdns/policy/policy.lua ...
--
-- Rules, for the default NIC of a VM named web-01 in CloudStack zone zone-a (site fra1) of
-- account acme (network domain acme.example.net):
--
--   web-01.fra1.acme.example.net   A/AAAA     (web-01.acme.example.net when the zone has no site)
--   PTR of each address -> that name (when site.ptr)
--   TTL from site.ttl for the account, else DNS_RECORD_TTL
--   accounts in site.manual_accounts: records left as they are
--   Destroyed, Expunging and Error VMs: no records

local site = require("site")
local naming = require("naming")
local vmlib = require("cspdns.vm")

-- Settings are checked when the policy loads, so a typo in site.lua is refused at SIGHUP and
-- the running policy stays.
for zone, label in pairs(site.sites) do
    if type(label) ~= "string" or dns.label(label) ~= label then
        error(string.format("site.lua: sites[%q] = %q is not a lower-case DNS label", zone,
            tostring(label)), 0)
    end
end
for account, ttl in pairs(site.ttl) do
    if math.type(ttl) ~= "integer" or ttl < 1 or ttl > 604800 then
        error(string.format("site.lua: ttl[%q] must be whole seconds 1..604800", account), 0)
    end
end

local function records(vm, ctx)
    local account = ctx.account and ctx.account.name
    if account and site.manual_accounts[account] then
        return false
    end
    if vmlib.gone(vm) then
        return {}
    end
    local host, nic, suffix = naming.host_label(vm), vmlib.default_nic(vm), vmlib.suffix(ctx)
    if host == "" or not nic or not suffix then
        return {}
    end
    local fqdn = naming.fqdn(host, site.sites[vm.zonename], suffix)
    local ttl = account and site.ttl[account] or ctx.settings.ttl

    local out = {}
    for _, a in ipairs(vmlib.addresses(nic)) do
        out[#out + 1] = { name = fqdn, type = a.type, content = a.address, ttl = ttl }
        if site.ptr then
            out[#out + 1] = { name = dns.ptr(a.address), type = "PTR", content = fqdn, ttl = ttl }
        end
    end
    return out
end

return { name = "split", version = "1", records = records }
