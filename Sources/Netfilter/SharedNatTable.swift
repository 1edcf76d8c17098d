// SharedNatTable: a berth table that outlives the process that changes it, for programs that
// exit after each change (the CNI plugin). Same layout as NatTable (Layout.swift), without the
// owner flag; the kernel's table is the only state. Each element carries a tag (nft's element
// comment) that says whose it is, so one owner's elements can be listed and removed exactly.

import CNetfilter
import Mappings

#if canImport(Glibc)
import Glibc
#endif

/// A rule in a shared table and the tag it was added with.
package struct TaggedRule: Sendable, Hashable, CustomStringConvertible {
    package var rule: DNATRule
    package var tag: String?

    package init(rule: DNATRule, tag: String?) {
        self.rule = rule
        self.tag = tag
    }

    package var description: String { "\(rule) (\(tag ?? "no tag"))" }
}

/// A berth table without the owner flag: it stays when this process exits, and any process with
/// CAP_NET_ADMIN in this network namespace may change it. Changes are single batches: an add
/// whose element exists already fails as a whole (EEXIST), so two adds of one key cannot both win.
package final class SharedNatTable {
    /// The table's name, in the `inet` family.
    package let name: String
    private var socket: NetlinkSocket

    /// Opens a netlink socket for the table; nothing changes in the kernel yet.
    package init(name: String) throws(NetfilterError) {
        self.name = name
        socket = try NetlinkSocket("nftables")
        socket.ensureReceiveBuffer(1 << 20)
    }

    /// Makes the table with berth's chains, maps and rules, unless a table of that name exists.
    package func create() throws(NetfilterError) {
        var batch = Batch(firstSequence: socket.nextSequence)
        TableMessages.buildLayout(into: &batch, table: name, owner: false)
        batch.end()
        do {
            try socket.commit(batch, "create table inet \(name)")
        } catch  where error.errno == EEXIST {
            // Made by an earlier call (or a concurrent one, whose batch won): it is there.
        }
    }

    /// Every rule in the table with its tag; none when there is no table.
    package func rules() throws(NetfilterError) -> [TaggedRule] {
        try elements().compactMap { map, element in
            DNATRule(map: map, key: element.key, data: element.data).map { TaggedRule(rule: $0, tag: element.comment) }
        }
    }

    /// Adds `rules` tagged `tag` in one batch, with the hairpin elements they need. A rule whose
    /// host side is in the table already fails the whole batch with EEXIST, naming the element.
    package func add(_ rules: [DNATRule], tag: String) throws(NetfilterError) {
        for rule in rules {
            if let reason = rule.unsupportedReason {
                throw NetfilterError("nftables: add \(rule) to table inet \(name)", reason: reason)
            }
        }
        guard !rules.isEmpty else { return }
        var batch = Batch(firstSequence: socket.nextSequence, capacity: 256 + 320 * rules.count)
        var hairpins: [ElementKey: DNATRule] = [:]
        for rule in rules { hairpins[rule.hairpin] = rule }
        for rule in rules {
            TableMessages.appendElement(
                into: &batch,
                add: true,
                table: name,
                key: rule.element,
                data: rule.elementData,
                text: rule.elementText,
                ack: false,
                comment: tag
            )
        }
        // A hairpin element may be there already (another mapping to the same container port).
        let pins = Array(hairpins)
        for (index, (key, rule)) in pins.enumerated() {
            TableMessages.appendElement(
                into: &batch,
                add: true,
                table: name,
                key: key,
                data: nil,
                text: rule.hairpinText,
                ack: index == pins.count - 1,
                exclusive: false,
                comment: tag
            )
        }
        batch.end()
        try socket.commit(batch, "add \(rules.count) rule(s) to table inet \(name)")
    }

    /// Removes, in one batch, every element (map and hairpin alike) whose tag `matches` accepts,
    /// and returns the rules removed. No table, or nothing tagged so: nothing to do.
    @discardableResult
    package func remove(where matches: (String) -> Bool) throws(NetfilterError) -> [TaggedRule] {
        let chosen = try elements().filter { _, element in element.comment.map(matches) ?? false }
        guard !chosen.isEmpty else { return [] }
        var batch = Batch(firstSequence: socket.nextSequence, capacity: 256 + 160 * chosen.count)
        var removed: [TaggedRule] = []
        for (index, (map, element)) in chosen.enumerated() {
            let rule = DNATRule(map: map, key: element.key, data: element.data)
            if let rule { removed.append(TaggedRule(rule: rule, tag: element.comment)) }
            TableMessages.appendElement(
                into: &batch,
                add: false,
                table: name,
                key: ElementKey(map: map, key: element.key),
                data: nil,
                text: rule?.elementText ?? "\(element.key)",
                ack: index == chosen.count - 1
            )
        }
        batch.end()
        try socket.commit(batch, "remove \(chosen.count) element(s) from table inet \(name)")
        return removed
    }

    /// Deletes the whole table (for tests and for a user who wants it gone); no table is no error.
    package func delete() throws(NetfilterError) {
        var batch = Batch(firstSequence: socket.nextSequence)
        TableMessages.appendDeleteTable(into: &batch, table: name)
        batch.end()
        do {
            try socket.commit(batch, "delete table inet \(name)")
        } catch  where error.errno == ENOENT {}
    }

    /// The elements of every map and set; none when there is no table.
    private func elements() throws(NetfilterError) -> [(BerthMap, DumpedElement)] {
        var all: [(BerthMap, DumpedElement)] = []
        for map in BerthMap.allCases {
            do {
                try socket.dumpElements(table: name, map: map) { all.append((map, $0)) }
            } catch  where error.errno == ENOENT {
                return []
            }
        }
        return all
    }
}
