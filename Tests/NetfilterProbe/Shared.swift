import Glibc
import Mappings
import Netfilter

/// SharedNatTable: a table with no owner that outlives its socket, elements tagged by owner,
/// an add of a taken key refused whole, and removal by tag. Prints `key: value` lines.
func sharedScenario() {
    let name = "berth_shared"
    let a = [rule(.tcp, nil, 8080, "198.18.1.2", 80), rule(.udp, "198.18.0.1", 5353, "198.18.1.2", 53)]
    let b = [rule(.tcp, nil, 8081, "fd00:b::3", 80)]
    do {
        let table = tryOrFail("open") { () throws(NetfilterError) in try SharedNatTable(name: name) }
        print("rules-before-create: \(tryOrFail("rules") { () throws(NetfilterError) in try table.rules() }.count)")
        tryOrFail("create") { () throws(NetfilterError) in try table.create() }
        tryOrFail("create again") { () throws(NetfilterError) in try table.create() }
        tryOrFail("add a") { () throws(NetfilterError) in try table.add(a, tag: "cni/net/a/eth0") }
    }
    // A new socket (the next plugin call) sees what the last one left.
    let table = tryOrFail("reopen") { () throws(NetfilterError) in try SharedNatTable(name: name) }
    tryOrFail("add b") { () throws(NetfilterError) in try table.add(b, tag: "cni/net/b/eth0") }
    let text = must(["nft", "list", "table", "inet", name])
    print("owner-flag: \(text.contains("flags owner"))")
    print("comment-a: \(text.contains(#"comment "cni/net/a/eth0""#))")
    let listed = tryOrFail("rules") { () throws(NetfilterError) in try table.rules() }
    let expected = Set(
        a.map { TaggedRule(rule: $0, tag: "cni/net/a/eth0") } + b.map { TaggedRule(rule: $0, tag: "cni/net/b/eth0") }
    )
    print("round-trip: \(Set(listed) == expected)")
    if Set(listed) != expected { print("listed: \(listed)") }

    // A batch with one new element and one taken key leaves neither.
    let clash = expectError("add a taken key") { () throws(NetfilterError) in
        try table.add(
            [rule(.tcp, nil, 9090, "198.18.1.9", 80), rule(.tcp, nil, 8080, "198.18.1.9", 80)],
            tag: "cni/net/c/eth0"
        )
    }
    print("clash-errno: \(clash.errno == EEXIST)")
    print("clash: \(clash)")
    let afterClash = tryOrFail("rules") { () throws(NetfilterError) in try table.rules() }
    print("after-clash: \(afterClash.count) \(afterClash.contains { $0.rule.hostPort == 9090 })")

    let removed = tryOrFail("remove a") { () throws(NetfilterError) in try table.remove { $0 == "cni/net/a/eth0" } }
    print("removed: \(removed.count)")
    let left = tryOrFail("rules") { () throws(NetfilterError) in try table.rules() }
    print("left: \(left.map { $0.tag ?? "-" }.joined(separator: ","))")
    print("hairpins-left: \(elementCount(name, "hairpin4")) \(elementCount(name, "hairpin6"))")
    let again = tryOrFail("remove a again") { () throws(NetfilterError) in try table.remove { $0 == "cni/net/a/eth0" } }
    print("removed-again: \(again.count)")
    tryOrFail("delete") { () throws(NetfilterError) in try table.delete() }
    tryOrFail("delete again") { () throws(NetfilterError) in try table.delete() }
    print("table-after-delete: \(tables().contains(name))")
}
