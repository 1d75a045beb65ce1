-- naming.lua -- how this site spells a VM's name: the host label and where the site label goes.
-- Must not: read site settings itself or decide which records exist; the rules in policy.lua do.

local naming = {}

-- The VM's host label: CloudStack's name, lower case, made safe; "" when nothing is usable.
function naming.host_label(vm)
    return dns.label(type(vm.name) == "string" and vm.name or "")
end

-- web-01 + fra1 + acme.example.net -> web-01.fra1.acme.example.net; without a site label the
-- site level is left out (web-01.acme.example.net).
function naming.fqdn(host, site_label, suffix)
    return dns.fqdn(site_label and host .. "." .. site_label or host, suffix)
end

return naming
