// NetfilterProbe: runs one scenario of NetfilterTests. The tests start it under `unshare -rn`,
// so everything it does (tables, veths, more namespaces) lives in a private user and network
// namespace that disappears when it exits; it never sees the host's ruleset.
//
// Output: `key: value` lines the tests read, `FAIL: ...` and exit 1 on a failed check.
import Glibc
import Mappings
import Netfilter
import TestSupport

func ip(_ text: String) -> IPAddress { IPAddress(text)! }

func rule(
    _ proto: Proto,
    _ host: String?,
    _ hostPort: UInt16,
    _ container: String,
    _ containerPort: UInt16
) -> DNATRule {
    DNATRule(
        proto: proto,
        hostIP: host.map(ip),
        hostPort: hostPort,
        containerIP: ip(container),
        containerPort: containerPort
    )
}

func tryOrFail<T>(_ what: String, _ body: () throws(NetfilterError) -> T) -> T {
    do { return try body() } catch { fail("\(what): \(error)") }
}

func expectError(_ what: String, _ body: () throws(NetfilterError) -> Void) -> NetfilterError {
    do {
        try body()
    } catch {
        return error
    }
    fail("\(what) succeeded but should have failed")
}

/// Elements of one map, as `nft -j` reports them.
func elementCount(_ table: String, _ map: String) -> Int {
    if map.hasPrefix("hairpin") {  // a set: `"elem": [{"concat": [...]}, ...]`
        return must(["nft", "-j", "list", "set", "inet", table, map]).ranges(of: "{\"concat\"").count
    }
    // a map with counters: `[{"elem": {"val": ..., "counter": ...}}, {"concat": ...}]` per element
    return must(["nft", "-j", "list", "map", "inet", table, map]).ranges(of: "\"elem\": {").count
}

func tables() -> String { must(["nft", "list", "tables"]) }

let layoutRules = [
    rule(.tcp, "198.18.0.1", 8080, "198.18.0.2", 80),
    rule(.udp, nil, 5353, "198.18.0.2", 53),
    rule(.tcp, "fd00:b::1", 8080, "fd00:b::2", 80),
    rule(.tcp, nil, 8081, "fd00:b::2", 80),
]

let arguments = Array(CommandLine.arguments.dropFirst())
switch arguments.first {
case "layout":
    // The table as built, read back by nft: text, then JSON.
    let table = tryOrFail("create table") { () throws(NetfilterError) in try NatTable(name: "berth_layout") }
    tryOrFail("add") { () throws(NetfilterError) in try table.add(layoutRules) }
    print("=== text")
    print(must(["nft", "list", "table", "inet", "berth_layout"]))
    print("=== json")
    print(must(["nft", "-j", "list", "table", "inet", "berth_layout"]))
    print("=== end")

case "bulk":
    // 1 rule, then N rules in one batch each; timed; counters; removal; deletion.
    let count = Int(arguments[1]) ?? 1000
    let name = NatTable.defaultName()
    var start = monotonicMs()
    let table = tryOrFail("create table") { () throws(NetfilterError) in try NatTable(name: name) }
    print("time-create-ms: \(elapsed(since: start))")
    let one = rule(.tcp, "198.18.0.1", 1, "198.18.0.2", 1)
    start = monotonicMs()
    tryOrFail("add 1") { () throws(NetfilterError) in try table.add([one]) }
    print("time-add-1-ms: \(elapsed(since: start))")
    var many: [DNATRule] = []
    for i in 0..<count {
        let port = UInt16(10_000 + i / 2)
        let proto: Proto = i % 2 == 0 ? .tcp : .udp
        let container = "198.18.\(1 + (i / 250) % 200).\(1 + i % 250)"
        many.append(rule(proto, i % 10 == 9 ? nil : "198.18.0.1", port, container, 80))
    }
    start = monotonicMs()
    tryOrFail("add \(count)") { () throws(NetfilterError) in try table.add(many) }
    print("time-add-\(count)-ms: \(elapsed(since: start))")
    print("elements-dnat4: \(elementCount(name, "dnat4"))")
    print("elements-wild4: \(elementCount(name, "wild4"))")
    print("elements-hairpin4: \(elementCount(name, "hairpin4"))")
    start = monotonicMs()
    let counters = tryOrFail("counters") { () throws(NetfilterError) in try table.counters() }
    print("time-counters-ms: \(elapsed(since: start))")
    print("counters: \(counters.count)")
    print("counters-zero: \(counters.values.allSatisfy { $0.packets == 0 && $0.bytes == 0 })")
    // Adding the same rules again changes nothing (and rewrites nothing).
    tryOrFail("add again") { () throws(NetfilterError) in try table.add(Array(many.prefix(10))) }
    start = monotonicMs()
    tryOrFail("remove") { () throws(NetfilterError) in try table.remove(many) }
    print("time-remove-\(count)-ms: \(elapsed(since: start))")
    print("elements-after-remove: \(elementCount(name, "dnat4") + elementCount(name, "wild4"))")
    print("hairpin-after-remove: \(elementCount(name, "hairpin4"))")
    print("rules-after-remove: \(table.rules.count)")
    start = monotonicMs()
    tryOrFail("delete") { () throws(NetfilterError) in try table.delete() }
    print("time-delete-ms: \(elapsed(since: start))")
    print("table-after-delete: \(tables().contains(name))")

case "reject":
    // A second socket cannot take over an owned table; nothing of its batch stays.
    let owner = tryOrFail("create table") { () throws(NetfilterError) in try NatTable(name: "berth_dup") }
    let before = must(["nft", "list", "table", "inet", "berth_dup"])
    let duplicate = expectError("second table of the same name") { () throws(NetfilterError) in
        _ = try NatTable(name: "berth_dup")
    }
    print("duplicate-owned: \(duplicate)")
    check(must(["nft", "list", "table", "inet", "berth_dup"]) == before, "the owned table changed")
    print("tables-after-duplicate: \(tables().split(separator: "\n").count)")

    // A table someone else made (no owner) is not adopted either.
    must(["nft", "add", "table", "inet", "berth_foreign"])
    let foreign = expectError("table over a foreign one") { () throws(NetfilterError) in
        _ = try NatTable(name: "berth_foreign")
    }
    print("duplicate-foreign: \(foreign)")
    print("foreign-chains: \(must(["nft", "list", "table", "inet", "berth_foreign"]).contains("chain"))")

    let valid = [rule(.tcp, "198.18.0.1", 9000, "198.18.0.2", 80), rule(.udp, nil, 9001, "198.18.0.2", 53)]
    tryOrFail("add") { () throws(NetfilterError) in try owner.add(valid) }
    print("elements-after-add: \(elementCount("berth_dup", "dnat4") + elementCount("berth_dup", "wild4"))")

    // Refused before reaching the kernel.
    let conflict = expectError("a second target for the same host port") { () throws(NetfilterError) in
        try owner.add([rule(.tcp, "198.18.0.1", 9000, "198.18.0.3", 80)])
    }
    print("conflict: \(conflict)")
    let loopback = expectError("loopback host address") { () throws(NetfilterError) in
        try owner.add([rule(.tcp, "127.0.0.1", 9002, "198.18.0.2", 80)])
    }
    print("loopback: \(loopback)")
    tryOrFail("delete") { () throws(NetfilterError) in try owner.delete() }
    let afterDelete = expectError("add after delete") { () throws(NetfilterError) in try owner.add(valid) }
    print("after-delete: \(afterDelete)")

case "hold":
    // Creates a table and waits to be killed.
    let table = tryOrFail("create table") { () throws(NetfilterError) in try NatTable(name: arguments[1]) }
    tryOrFail("add") { () throws(NetfilterError) in try table.add(layoutRules) }
    print("ready")
    fflush(nil)
    while true { pause() }

case "owner":
    // A process that created the table and is SIGKILLed leaves no table behind.
    let name = "berth_killed"
    let holder = start([selfPath, "hold", name])
    let line = holder.waitForLines(1, seconds: 5).first
    check(line == "ready", "holder said \(line ?? "nothing")")
    print("table-while-alive: \(tables().contains(name))")
    holder.signal(SIGKILL)
    print("holder-status: \(holder.waitForExit().map { "\($0)" } ?? "still running")")
    let gone = eventually(seconds: 1) { !tables().contains(name) }
    print("table-after-kill: \(!gone)")

case "shared":
    sharedScenario()

case "dnat":
    dnatScenario()

case "serve":
    serve(arguments[1], address(arguments[2], arguments[3]))

case "client":
    client(arguments[1], address(arguments[2], arguments[3]), Int(arguments[4])!)

default:
    print("usage: NetfilterProbe layout | bulk N | reject | owner | shared | dnat")
    exit(2)
}
exit(0)
