// NatTable: berth's own nftables table (see Layout.swift for what is in it), programmed over
// netlink in batches, on one socket that lives as long as the table.
import CNetfilter
import Mappings

#if canImport(Glibc)
import Glibc
#endif

/// Berth's nftables table. It owns the netlink socket that created it for its whole life: the
/// table carries NFT_TABLE_F_OWNER, so the kernel removes it when this socket closes (also when
/// the process dies, even by SIGKILL), and no other socket or process can change it.
///
/// Not thread-safe: use one table from one thread (or under one lock).
package final class NatTable {
    /// The table's name, in the `inet` family: `nft list table inet <name>`.
    package let name: String
    private var socket: NetlinkSocket
    /// What the kernel holds, by element key: map elements and hairpin references.
    private var installed: [ElementKey: DNATRule] = [:]
    private var hairpins: [ElementKey: Int] = [:]
    /// True from the moment the kernel holds our table until `delete()`. A class whose throwing
    /// init fails after its stored properties are set still runs `deinit`: without this flag, a
    /// failed init ("File exists") would delete the *other* table of that name.
    private var live = false

    /// `berth_<pid>`: each berth process gets its own table, so several coexist.
    package static func defaultName(pid: Int32 = getpid()) -> String { "berth_\(pid)" }

    /// Creates the table, its chains, maps and rules in one batch. If anything fails, the kernel
    /// rolls the whole batch back: nothing is left behind. Fails with EEXIST if a table of that
    /// name exists, EPERM if another socket owns it.
    package init(name: String) throws(NetfilterError) {
        self.name = name
        socket = try NetlinkSocket("nftables")
        socket.ensureReceiveBuffer(1 << 20)
        var batch = Batch(firstSequence: socket.nextSequence)
        TableMessages.buildLayout(into: &batch, table: name, owner: true)
        batch.end()
        try socket.commit(batch, "create table inet \(name)")
        live = true
    }

    deinit {
        // Closing the socket would remove the owned table anyway; say so explicitly first.
        if live { try? delete() }
    }

    /// The rules the kernel serves now.
    package var rules: [DNATRule] { Array(installed.values) }

    /// Adds rules in one batch. A rule already installed is left alone (its counters too);
    /// existing elements are never rewritten. A rule whose host side is taken by a different
    /// target fails the whole call, as does any rule the kernel path cannot serve (loopback host
    /// address, a protocol other than tcp/udp, mixed families).
    package func add(_ rules: [DNATRule]) throws(NetfilterError) {
        try checkAlive("add rules")
        var additions: [(key: ElementKey, rule: DNATRule)] = []
        var pending: [ElementKey: DNATRule] = [:]
        var newHairpins: [(key: ElementKey, rule: DNATRule)] = []
        var hairpinDelta: [ElementKey: Int] = [:]
        for rule in rules {
            if let reason = rule.unsupportedReason {
                throw NetfilterError("nftables: add \(rule) to table inet \(name)", reason: reason)
            }
            let key = rule.element
            if let existing = installed[key] ?? pending[key] {
                if existing == rule { continue }
                throw NetfilterError(
                    "nftables: add element \(rule.elementText) to map inet \(name) \(key.map)",
                    reason: "already mapped to \(existing.containerIP.bracketed):\(existing.containerPort)"
                )
            }
            pending[key] = rule
            additions.append((key, rule))
            let hairpin = rule.hairpin
            if hairpins[hairpin, default: 0] + hairpinDelta[hairpin, default: 0] == 0 {
                newHairpins.append((hairpin, rule))
            }
            hairpinDelta[hairpin, default: 0] += 1
        }
        guard !additions.isEmpty else { return }

        var batch = Batch(
            firstSequence: socket.nextSequence,
            capacity: 256 + 160 * (additions.count + newHairpins.count)
        )
        TableMessages.appendElements(
            into: &batch,
            table: name,
            add: true,
            rules: additions,
            hairpins: newHairpins,
            ackLast: true
        )
        batch.end()
        try socket.commit(batch, "add \(additions.count) rule(s) to table inet \(name)")

        for (key, rule) in additions { installed[key] = rule }
        for (key, delta) in hairpinDelta { hairpins[key, default: 0] += delta }
    }

    /// Removes rules in one batch. Rules that are not installed are ignored. Conntrack entries of
    /// flows already going to the old target stay: see `Conntrack.deleteUDPFlows`.
    package func remove(_ rules: [DNATRule]) throws(NetfilterError) {
        try checkAlive("remove rules")
        var removals: [(key: ElementKey, rule: DNATRule)] = []
        var seen: Set<ElementKey> = []
        var goneHairpins: [(key: ElementKey, rule: DNATRule)] = []
        var hairpinDelta: [ElementKey: Int] = [:]
        for rule in rules {
            let key = rule.element
            guard installed[key] == rule, seen.insert(key).inserted else { continue }
            removals.append((key, rule))
            let hairpin = rule.hairpin
            hairpinDelta[hairpin, default: 0] -= 1
            if hairpins[hairpin, default: 0] + hairpinDelta[hairpin, default: 0] == 0 {
                goneHairpins.append((hairpin, rule))
            }
        }
        guard !removals.isEmpty else { return }

        var batch = Batch(
            firstSequence: socket.nextSequence,
            capacity: 256 + 160 * (removals.count + goneHairpins.count)
        )
        TableMessages.appendElements(
            into: &batch,
            table: name,
            add: false,
            rules: removals,
            hairpins: goneHairpins,
            ackLast: true
        )
        batch.end()
        try socket.commit(batch, "remove \(removals.count) rule(s) from table inet \(name)")

        for (key, _) in removals { installed[key] = nil }
        for (key, delta) in hairpinDelta {
            let count = hairpins[key, default: 0] + delta
            hairpins[key] = count > 0 ? count : nil
        }
    }

    /// Packets and bytes per installed rule, read from the map elements' counters. The maps are
    /// looked up in nat chains, which see the first packet of each connection or UDP flow only:
    /// `packets` counts new connections/flows, `bytes` the size of those first packets.
    package func counters() throws(NetfilterError) -> [DNATRule: (packets: UInt64, bytes: UInt64)] {
        try checkAlive("read counters")
        var result: [DNATRule: (packets: UInt64, bytes: UInt64)] = [:]
        let maps = Set(installed.keys.map(\.map))
        for map in BerthMap.allCases where maps.contains(map) {
            try dumpElements(of: map) { key, packets, bytes in
                if let rule = installed[ElementKey(map: map, key: key)] { result[rule] = (packets, bytes) }
            }
        }
        return result
    }

    /// Removes the whole table (chains, maps, rules) in one batch. The table is unusable afterwards.
    package func delete() throws(NetfilterError) {
        try checkAlive("delete table")
        var batch = Batch(firstSequence: socket.nextSequence)
        TableMessages.appendDeleteTable(into: &batch, table: name)
        batch.end()
        try socket.commit(batch, "delete table inet \(name)")
        live = false
        installed = [:]
        hairpins = [:]
    }

    private func checkAlive(_ what: String) throws(NetfilterError) {
        if !live { throw NetfilterError("nftables: \(what) in table inet \(name)", reason: "the table was deleted") }
    }

    // MARK: - Dumps

    /// Lists the elements of one map and hands each key and counter to `body`.
    private func dumpElements(of map: BerthMap, _ body: ([UInt8], UInt64, UInt64) -> Void) throws(NetfilterError) {
        try socket.dumpElements(table: name, map: map) { body($0.key, $0.packets, $0.bytes) }
    }
}
