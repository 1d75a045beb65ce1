-- testing_test.lua -- the harness itself: expect_eq diffs, expect_error, fixture, cs.mock, records.
-- Must not: test policy rules; default_policy_test.lua does that.

test("expect_eq passes on equal nested values", function()
    expect_eq({ 1, { a = "x", b = { true } } }, { 1, { a = "x", b = { true } } })
    expect_eq(nil, nil)
end)

test("expect_eq names the path of each difference", function()
    local msg = expect_error(function()
        expect_eq({ { content = "a" }, { content = "a", ttl = 60 } },
            { { content = "a" }, { content = "b", ttl = 60 } })
    end)
    expect_eq(msg:match("\n(.*)$"), '[2].content: got "a" want "b"')
    msg = expect_error(function() expect_eq({ name = "x" }, { name = "x", type = "A" }) end)
    expect_eq(msg:match("\n(.*)$"), 'type: got nil want "A"')
    msg = expect_error(function() expect_eq({ 1, 2, 3 }, { 1, 2 }) end)
    expect_eq(msg:match("\n(.*)$"), "[3]: got 3 want nil")
end)

test("expect_eq tells integers from floats and says where it failed", function()
    local msg = expect_error(function() expect_eq(60.0, 60) end)
    expect_eq(msg:match("\n(.*)$"), "got 60.0 want 60")
    expect_eq(msg:match("testing_test%.lua:%d+: expect_eq failed") ~= nil, true)
end)

test("expect_error checks the message against a pattern", function()
    expect_eq(expect_error(function() error("boom 42", 0) end, "boom %d+"), "boom 42")
    local msg = expect_error(function() expect_error(function() end) end)
    expect_eq(msg:find("but the call succeeded", 1, true) ~= nil, true)
    msg = expect_error(function() expect_error(function() error("x", 0) end, "y") end)
    expect_eq(msg:find('does not match "y"', 1, true) ~= nil, true)
end)

test("fixture() converts JSON as the host does: integers, floats, no null", function()
    local acme = fixture("fixtures/listAccounts_acme.json").listaccountsresponse
    expect_eq(math.type(acme.count), "integer")
    expect_eq(math.type(acme.account[1].secondarystoragetotal), "float")
    expect_eq(acme.account[1].groups, {})
    expect_error(function() fixture("fixtures/no-such.json") end, "no%-such%.json")
end)

test("cs.mock answers cs.call, matching a subset of the parameters", function()
    cs.mock("listNetworks", { id = "n1" }, { count = 1, network = { { id = "n1" } } })
    cs.mock("listNetworks", { id = "gone" }, { err = "entity does not exist", status = 431 })
    local r = cs.call("listNetworks", { id = "n1", listall = true })
    expect_eq(r, { count = 1, network = { { id = "n1" } } })
    local none, msg, status = cs.call("listNetworks", { id = "gone" })
    expect_eq({ none, msg, status }, { nil, "entity does not exist", 431 })
    expect_error(function() cs.call("listZones", { available = true }) end,
        'no cs.mock answers cs.call%(listZones, {available="true"}%)')
end)

test("mocks made in a test end with it", function()
    expect_error(function() cs.call("listNetworks", { id = "n1" }) end, "no cs.mock answers")
end)

test("records() goes through the host's checks and refuses unknown ctx keys", function()
    expect_error(function() records({}, { acount = {} }) end, "ctx has an unknown key acount")
    expect_error(function() records({}, { settings = { tll = 5 } }) end,
        "ctx.settings has an unknown key tll")
    expect_error(function() records({}, { settings = { ttl = 0 } }) end, "ttl 0")
    expect_eq(records({ name = "x" }), {})
end)

test("the policy under test is available as policy", function()
    expect_eq(type(policy.records), "function")
    expect_eq(policy.records({ state = "Destroyed" }, { settings = {} }), {})
end)
