-- policy.lua -- the built-in naming policy: the records the original cs-powerdns-integration made,
-- with its bugs fixed. Must not: keep state between calls or call CloudStack; vm and ctx suffice.
--
-- For the default NIC (isdefault == true) of a VM named NAME:
--   A/AAAA  NAME.SUFFIX          SUFFIX = the owner account's networkdomain, else its domain's
--   A/AAAA  NAME.COMMON          when DNS_ADD_TO_COMMON_ZONE and DNS_COMMON_ZONE are set
--   PTR     address -> NAME.SUFFIX (NAME.COMMON when only the common zone applies)
--   A/AAAA  GROUP-ACCOUNT8.SUFFIX for a VM in an instance group (round robin over the group)
-- A destroyed, expunging or failed VM has no records; a stopped one keeps them.

local vmlib = require("cspdns.vm")

-- The first 8 characters of the account id make a group name unique per account.
local ACCOUNT_ID_CHARS = 8

-- "Web Servers!" -> "webservers-3b8e2c4d"; nil when nothing of the group name is usable.
local function group_label(group, account_id)
    local cleaned = group:gsub("[^0-9A-Za-z]", ""):lower()
    if cleaned == "" then
        return nil
    end
    -- keep the label within 63 characters: the cleaned name, "-", the account part
    cleaned = cleaned:sub(1, 63 - 1 - ACCOUNT_ID_CHARS)
    return cleaned .. "-" .. account_id:sub(1, ACCOUNT_ID_CHARS):lower()
end

local function records(vm, ctx)
    local settings = ctx.settings
    if vmlib.gone(vm) then
        return {}
    end
    local label = vmlib.host_label(vm.name)
    if label == "" then
        log.info("vm=%s: name %q gives no usable DNS label, so no records", tostring(vm.id),
            tostring(vm.name))
        return {}
    end
    local nic = vmlib.default_nic(vm)
    if not nic then
        log.info("vm=%s (%s): no default NIC, so no records", tostring(vm.id), label)
        return {}
    end

    local suffix = vmlib.suffix(ctx)
    local common = settings.add_to_common_zone and settings.common_zone or nil
    if not suffix and not common then
        log.info("vm=%s (%s): neither its account nor its domain has a network domain and no "
            .. "common zone is configured, so no records", tostring(vm.id), label)
        return {}
    end

    local ipv4 = dns.ip_version(nic.ipaddress) == 4 and nic.ipaddress or nil
    local ipv6 = dns.ip_version(nic.ip6address) == 6 and nic.ip6address or nil
    local ttl = settings.ttl
    local out = {}
    local n = 0
    -- A and AAAA records of name for the NIC's addresses; n counts the records so far.
    local function addresses(name)
        if ipv4 then
            n = n + 1
            out[n] = { name = name, type = "A", content = ipv4, ttl = ttl }
        end
        if ipv6 then
            n = n + 1
            out[n] = { name = name, type = "AAAA", content = ipv6, ttl = ttl }
        end
    end

    local fqdn
    if suffix then
        fqdn = dns.fqdn(label, suffix)
        addresses(fqdn)
    end
    if common then
        local in_common = dns.fqdn(label, common)
        addresses(in_common)
        fqdn = fqdn or in_common
    end

    if ipv4 then
        n = n + 1
        out[n] = { name = dns.ptr(ipv4), type = "PTR", content = fqdn, ttl = ttl }
    end
    if ipv6 then
        n = n + 1
        out[n] = { name = dns.ptr(ipv6), type = "PTR", content = fqdn, ttl = ttl }
    end

    local account_id = ctx.account and ctx.account.id
    if suffix and type(vm.group) == "string" and type(account_id) == "string" then
        local group = group_label(vm.group, account_id)
        if group then
            addresses(dns.fqdn(group, suffix))
        end
    end
    return out
end

return { name = "default", version = "1", records = records }
