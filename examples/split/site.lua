-- site.lua -- this site's naming settings, kept apart from the rules so that a change of
-- settings is a small, reviewable diff. Must not: hold logic; policy.lua reads these values.

return {
    -- CloudStack zone name (vm.zonename) -> the site label in names: web-01.fra1.acme.example.net.
    -- VMs in zones missing here are named without a site label: web-01.acme.example.net.
    sites = {
        ["zone-a"] = "fra1",
        ["zone-b"] = "ams1",
        ["Zone C (lab)"] = "lab",
    },

    -- Accounts whose records are kept by hand: cs-pdns leaves whatever records it wrote for
    -- their VMs as they are (records() returns false) and adds none.
    manual_accounts = {
        ["legacy-mail"] = true,
    },

    -- TTL per account name; the others get DNS_RECORD_TTL.
    ttl = {
        ["acme"] = 300,
    },

    -- Reverse records for the default NIC's addresses.
    ptr = true,
}
