-- policy.lua -- the built-in policy, wrapped: the original tool's names, plus an opt-out tag.
-- Must not: copy the built-in rules; it asks require("cspdns.default") so they stay in one place.
--
-- Start here when the built-in names are right and you want to change one thing. Everything the
-- built-in policy does (lua/policy.lua, README "Defaults") happens unchanged, and then:
--
--   * a VM tagged  dns=off  has no records (they are removed at its next event);
--   * a VM tagged  dns-ttl=<seconds>  gets that TTL on all of its records.
--
-- CloudStack emits no VM event when only a tag changes (createTags is not a VM.* event), so a
-- new tag takes effect at the VM's next event (start, stop, NIC change, ...).

local default = require("cspdns.default")

-- tags is a list of { key=, value=, resourcetype=, resourceid=, ... } in CloudStack's answer
local function tag(vm, key)
    for _, t in ipairs(vm.tags or {}) do
        if t.key == key then
            return t.value
        end
    end
    return nil
end

local function records(vm, ctx)
    if tag(vm, "dns") == "off" then
        log.info("vm=%s (%s): tagged dns=off, so no records", tostring(vm.id), tostring(vm.name))
        return {}
    end
    local out = default.records(vm, ctx)
    local ttl = tag(vm, "dns-ttl")
    if ttl then
        local seconds = math.tointeger(tonumber(ttl))
        if seconds and seconds >= 1 and seconds <= 604800 then
            for _, r in ipairs(out) do
                r.ttl = seconds
            end
        else
            -- a customer's typo must not cost the VM its names: keep the default TTL
            log.warn("vm=%s: ignoring tag dns-ttl=%q, not a whole number of seconds 1..604800",
                tostring(vm.id), ttl)
        end
    end
    return out
end

return { name = "default-tags", version = "1", records = records }
