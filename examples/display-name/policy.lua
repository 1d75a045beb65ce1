-- policy.lua -- names from the VM's display name, made safe: "Web Server #1 (prod)" becomes
-- web-server-1-prod.<suffix>. Must not: trust the display name; it is free text from users.
--
-- CloudStack's `name` is the VM's hostname and is already a label; `displayname` is what people
-- see in the UI and may hold spaces, punctuation, accents or anything else. This policy gives:
--
--   <display label>.<suffix>   A/AAAA of the default NIC; PTRs point here
--   <name>.<suffix>            A/AAAA too, when it differs, so the hostname still resolves
--
-- The display label: common accented Latin letters transliterated (ä -> ae, é -> e, ß -> ss),
-- everything else that is not a letter or digit becomes one hyphen, lower case, at most 63
-- characters. A display name with nothing usable left falls back to the name.
--
-- Two VMs whose display names clean to the same label share the name (round-robin A records)
-- and each PTR points to it; give your VMs distinct display names or keep the built-in policy.

local vmlib = require("cspdns.vm")

-- UTF-8 sequences and their ASCII spelling. Extend it for your users' languages.
local TRANSLIT = {
    ["ä"] = "ae", ["ö"] = "oe", ["ü"] = "ue", ["Ä"] = "ae", ["Ö"] = "oe", ["Ü"] = "ue",
    ["ß"] = "ss", ["æ"] = "ae", ["Æ"] = "ae", ["ø"] = "o", ["Ø"] = "o", ["å"] = "a", ["Å"] = "a",
    ["á"] = "a", ["à"] = "a", ["â"] = "a", ["ã"] = "a", ["ç"] = "c", ["č"] = "c", ["é"] = "e",
    ["è"] = "e", ["ê"] = "e", ["ë"] = "e", ["í"] = "i", ["ì"] = "i", ["î"] = "i", ["ï"] = "i",
    ["ñ"] = "n", ["ó"] = "o", ["ò"] = "o", ["ô"] = "o", ["õ"] = "o", ["ř"] = "r", ["š"] = "s",
    ["ú"] = "u", ["ù"] = "u", ["û"] = "u", ["ý"] = "y", ["ž"] = "z", ["ł"] = "l", ["Ł"] = "l",
}

-- The DNS label for a display name, or "" when nothing usable is left.
local function display_label(text)
    if type(text) ~= "string" then
        return ""
    end
    -- one UTF-8 character at a time: a lead byte and its continuation bytes
    local ascii = text:gsub("[\xC0-\xF7][\x80-\xBF]*", function(ch)
        return TRANSLIT[ch] or "-"
    end)
    -- dns.label lower-cases, turns runs of other characters into one hyphen and cuts at 63;
    -- runs of hyphens the user typed are kept by it, so squeeze those ("a -- b" -> "a-b")
    return (dns.label(ascii):gsub("%-%-+", "-"))
end

local function records(vm, ctx)
    if vmlib.gone(vm) then
        return {}
    end
    local suffix = vmlib.suffix(ctx)
    local nic = vmlib.default_nic(vm)
    local host = dns.label(vm.name or "")
    local shown = display_label(vm.displayname)
    if shown == "" then
        shown = host
    end
    if not suffix or not nic or shown == "" then
        return {}
    end

    local primary = dns.fqdn(shown, suffix)
    local names = { primary }
    if host ~= "" and host ~= shown then
        names[2] = dns.fqdn(host, suffix)
    end

    local out = {}
    for _, addr in ipairs({ nic.ipaddress or false, nic.ip6address or false }) do
        local version = addr and dns.ip_version(addr)
        if version then
            for _, name in ipairs(names) do
                out[#out + 1] = { name = name, type = version == 4 and "A" or "AAAA",
                    content = addr }
            end
            out[#out + 1] = { name = dns.ptr(addr), type = "PTR", content = primary }
        end
    end
    return out
end

return {
    name = "display-name",
    version = "1",
    records = records,
    display_label = display_label, -- for the tests
    -- run at start, on SIGHUP and by `cs-pdns check`: a broken TRANSLIT edit is refused there
    self_test = function()
        assert(display_label("Größe Straße #1") == "groesse-strasse-1", "transliteration")
    end,
}
