-- policy.lua -- Designate-style naming: formatv4/formatv6 lists of %(key)s templates, as in
-- designate-sink's nova_fixed handler, for teams moving from OpenStack. Must not: accept a
-- template it cannot fill; a typo fails when the policy loads, not at the next VM.
--
-- designate.conf                               this file
--   [handler:nova_fixed]                         SETTINGS = {
--   zone_id = <id of vms.example.net.>             zone = "vms.example.net",
--   formatv4 = '%(hostname)s.%(zone)s'             formatv4 = { "%(hostname)s.%(zone)s",
--   formatv4 = '%(octet0)s-%(octet1)s-...'                      "%(octet0)s-...%(zone)s" },
--   formatv6 = '%(hostname)s.%(zone)s'             formatv6 = { "%(hostname)s.%(zone)s" },
--
-- Every template gives one A (formatv4) or AAAA (formatv6) record per address. The keys:
--
--   hostname           the VM's name (CloudStack's hostname)
--   display_name       its display name, made into a label
--   instance_id        the VM's id
--   tenant_id          project id for project VMs, else the owner account's id
--   tenant_name        project name, else the account name (also: project_id, project_name)
--   availability_zone  the CloudStack zone's name
--   label              the name of the NIC's network (nova's network label)
--   zone               the DNS zone (domain is its old Designate name)
--   ip_version         4 or 6
--   ip_address         the address with '.' and ':' as '-' (IPv6 written out in full)
--   octet0 .. octet3   the IPv4 address's octets (formatv4 only)
--
-- Values other than zone are made into DNS labels first, so free text cannot break a name.
-- Unlike designate-sink this policy can also write PTRs (ptr = true): each address points to
-- the first name its templates gave it. Set ptr = false for Designate's behaviour.

local SETTINGS = {
    -- nil: the owner account's network domain, else its CloudStack domain's; a string: one
    -- fixed zone for every VM, as Designate's zone_id
    zone = nil,
    formatv4 = { "%(hostname)s.%(zone)s", "%(hostname)s.%(label)s.%(zone)s" },
    formatv6 = { "%(hostname)s.%(zone)s" },
    all_nics = true, -- nova_fixed names every fixed IP; false: the default NIC only
    ptr = true,
}

local vmlib = require("cspdns.vm")

local KEYS = {
    hostname = true, display_name = true, instance_id = true, tenant_id = true,
    tenant_name = true, project_id = true, project_name = true, availability_zone = true,
    label = true, zone = true, domain = true, ip_version = true, ip_address = true,
}
local V4_KEYS = { octet0 = true, octet1 = true, octet2 = true, octet3 = true }

-- Raises unless every placeholder of template is a known key; v4 allows the octets.
local function check_template(template, v4)
    if type(template) ~= "string" then
        error(string.format("template %s is not a string", tostring(template)), 2)
    end
    local rest = template:gsub("%%%(([%w_]+)%)s", function(key)
        if not KEYS[key] and not (v4 and V4_KEYS[key]) then
            error(string.format("template %q: unknown key %%(%s)s%s", template, key,
                V4_KEYS[key] and " (only in formatv4)" or ""), 0)
        end
        return ""
    end)
    if rest:find("%", 1, true) then
        error(string.format("template %q: only %%(key)s placeholders are allowed", template), 0)
    end
end

-- template with every %(key)s replaced by data[key]
local function expand(template, data)
    return (template:gsub("%%%(([%w_]+)%)s", function(key)
        local value = data[key]
        if value == nil then
            error(string.format("template %q: no value for %%(%s)s", template, key), 0)
        end
        return tostring(value)
    end))
end

-- Both lists are checked when the policy loads: a bad edit keeps the old policy running.
for _, t in ipairs(SETTINGS.formatv4) do check_template(t, true) end
for _, t in ipairs(SETTINGS.formatv6) do check_template(t, false) end

-- "2001:db8::1" -> "2001-0db8-0000-...-0001": a compressed address could start or end in '-'
local function address_label(ip, version)
    if version == 4 then
        return (dns.canonical(ip):gsub("%.", "-"))
    end
    local hex = dns.ptr(ip):sub(1, -#".ip6.arpa" - 1):gsub("%.", ""):reverse()
    return (hex:gsub("(%x%x%x%x)", "%1-"):sub(1, -2))
end

-- The template data of one address of one NIC.
local function template_data(vm, ctx, nic, zone, ip, version)
    local owner = ctx.project or ctx.account or {}
    local data = {
        hostname = dns.label(vm.name or ""),
        display_name = dns.label(vm.displayname or vm.name or ""),
        instance_id = dns.label(vm.id or ""),
        tenant_id = dns.label(vm.projectid or owner.id or ""),
        tenant_name = dns.label(vm.project or owner.name or vm.account or ""),
        availability_zone = dns.label(vm.zonename or ""),
        label = dns.label(nic.networkname or ""),
        zone = zone,
        domain = zone,
        ip_version = version,
        ip_address = address_label(ip, version),
    }
    data.project_id, data.project_name = data.tenant_id, data.tenant_name
    if version == 4 then
        local o = {}
        for octet in dns.canonical(ip):gmatch("%d+") do o[#o + 1] = octet end
        data.octet0, data.octet1, data.octet2, data.octet3 = o[1], o[2], o[3], o[4]
    end
    return data
end

-- The normalised name, or nil (and a log line) when the template gave no valid name, e.g.
-- because a value it uses was empty: one bad template must not cost the VM its other names.
local function valid_name(vm, name)
    local head, rest = name:match("^([^.]*)%.(.+)$")
    local ok, fqdn = pcall(dns.fqdn, head or "", rest or "")
    if ok then
        return fqdn
    end
    log.warn("vm=%s: template gave %q, not a valid name, skipped: %s", tostring(vm.id), name,
        tostring(fqdn))
    return nil
end

-- records() for a given settings table; the policy uses SETTINGS.
local function make(settings)
    return function(vm, ctx)
        if vmlib.gone(vm) then
            return {}
        end
        local zone = settings.zone or vmlib.suffix(ctx)
        if not zone then
            return {}
        end
        local out = {}
        for _, nic in ipairs(vm.nic or {}) do
            if settings.all_nics or nic.isdefault == true then
                for _, ip in ipairs({ nic.ipaddress or false, nic.ip6address or false }) do
                    local version = ip and dns.ip_version(ip)
                    if version then
                        local data = template_data(vm, ctx, nic, zone, ip, version)
                        local formats = version == 4 and settings.formatv4 or settings.formatv6
                        local rtype = version == 4 and "A" or "AAAA"
                        local first
                        for _, t in ipairs(formats) do
                            local name = valid_name(vm, expand(t, data))
                            if name then
                                out[#out + 1] = { name = name, type = rtype, content = ip }
                                first = first or name
                            end
                        end
                        if settings.ptr and first then
                            out[#out + 1] = { name = dns.ptr(ip), type = "PTR", content = first }
                        end
                    end
                end
            end
        end
        return out
    end
end

return {
    name = "designate",
    version = "1",
    records = make(SETTINGS),
    -- for the tests
    make = make,
    expand = expand,
    check_template = check_template,
    address_label = address_label,
    -- run at start, on SIGHUP and by `cs-pdns check`: every template must give a valid name
    -- for a plain dual-stack VM, or the new policy is refused
    self_test = function()
        local vm = { id = "c4ec0000-1b2c-4d3e-8f4a-5b6c7d8e9f01", name = "web-01",
            displayname = "Web 01", zonename = "zone-a", account = "acme",
            nic = { { networkname = "net", ipaddress = "192.0.2.10", ip6address = "2001:db8::10",
                isdefault = true } } }
        local ctx = { account = { id = "a1", name = "acme", networkdomain = "example.net" } }
        local got = make(SETTINGS)(vm, ctx)
        local want = #SETTINGS.formatv4 + #SETTINGS.formatv6 + (SETTINGS.ptr and 2 or 0)
        assert(#got == want, string.format("the templates gave %d records for a sample VM, "
            .. "want %d: see the warnings above", #got, want))
    end,
}
