// The nftables messages berth's tables are made of, for NatTable (a table of its own) and
// SharedNatTable (berth-cni's shared one): the table's layout, its elements with their comments,
// the table's deletion, and the element dump that reads them back.
import CNetfilter
import Mappings

#if canImport(Glibc)
import Glibc
#endif

enum TableMessages {

    static func appendDeleteTable(into batch: inout Batch, table name: String) {
        batch.append(.object("delete table inet \(name)"), type: NFT_MSG_DELTABLE.rawValue, flags: 0, ack: true) {
            header in
            let table = nftnl_table_alloc()!
            defer { nftnl_table_free(table) }
            _ = nftnl_table_set_str(table, UInt16(NFTNL_TABLE_NAME.rawValue), name)
            nftnl_table_nlmsg_build_payload(header, table)
        }
    }

    /// The table, its chains, maps and rules; `owner` ties the table to the socket that sends this.
    static func buildLayout(into batch: inout Batch, table name: String, owner: Bool) {
        batch.append(
            .object("add table inet \(name)"),
            type: NFT_MSG_NEWTABLE.rawValue,
            flags: NLM_F_CREATE | NLM_F_EXCL,
            ack: true
        ) { header in
            let table = nftnl_table_alloc()!
            defer { nftnl_table_free(table) }
            _ = nftnl_table_set_str(table, UInt16(NFTNL_TABLE_NAME.rawValue), name)
            nftnl_table_set_u32(table, UInt16(NFTNL_TABLE_FLAGS.rawValue), owner ? cnetfilter_table_flag_owner() : 0)
            nftnl_table_nlmsg_build_payload(header, table)
        }
        for chain in BerthChain.allCases {
            batch.append(
                .object("add chain inet \(name) \(chain.name)"),
                type: NFT_MSG_NEWCHAIN.rawValue,
                flags: NLM_F_CREATE | NLM_F_EXCL,
                ack: true
            ) { header in
                let c = nftnl_chain_alloc()!
                defer { nftnl_chain_free(c) }
                _ = nftnl_chain_set_str(c, UInt16(NFTNL_CHAIN_TABLE.rawValue), name)
                _ = nftnl_chain_set_str(c, UInt16(NFTNL_CHAIN_NAME.rawValue), chain.name)
                _ = nftnl_chain_set_str(c, UInt16(NFTNL_CHAIN_TYPE.rawValue), "nat")
                nftnl_chain_set_u32(c, UInt16(NFTNL_CHAIN_HOOKNUM.rawValue), chain.hook)
                nftnl_chain_set_s32(c, UInt16(NFTNL_CHAIN_PRIO.rawValue), chain.priority)
                nftnl_chain_set_u32(c, UInt16(NFTNL_CHAIN_POLICY.rawValue), 1)  // NF_ACCEPT
                nftnl_chain_nlmsg_build_payload(header, c)
            }
        }
        for map in BerthMap.allCases {
            batch.append(
                .object("add \(map.kind) inet \(name) \(map)"),
                type: NFT_MSG_NEWSET.rawValue,
                flags: NLM_F_CREATE | NLM_F_EXCL,
                ack: true
            ) { header in
                let set = nftnl_set_alloc()!
                defer { nftnl_set_free(set) }
                _ = nftnl_set_set_str(set, UInt16(NFTNL_SET_TABLE.rawValue), name)
                _ = nftnl_set_set_str(set, UInt16(NFTNL_SET_NAME.rawValue), map.description)
                nftnl_set_set_u32(set, UInt16(NFTNL_SET_ID.rawValue), map.id)
                let key = NftType.concat(map.key)
                nftnl_set_set_u32(set, UInt16(NFTNL_SET_KEY_TYPE.rawValue), key.type)
                nftnl_set_set_u32(set, UInt16(NFTNL_SET_KEY_LEN.rawValue), key.length)
                if let dataTypes = map.data {
                    let data = NftType.concat(dataTypes)
                    nftnl_set_set_u32(set, UInt16(NFTNL_SET_FLAGS.rawValue), NFT_SET_MAP.rawValue)
                    nftnl_set_set_u32(set, UInt16(NFTNL_SET_DATA_TYPE.rawValue), data.type)
                    nftnl_set_set_u32(set, UInt16(NFTNL_SET_DATA_LEN.rawValue), data.length)
                    // `counter` on the set: the kernel gives every element its own counter.
                    nftnl_set_add_expr(set, nftnl_expr_alloc("counter"))
                } else {
                    nftnl_set_set_u32(set, UInt16(NFTNL_SET_FLAGS.rawValue), 0)
                }
                nftnl_set_nlmsg_build_payload(header, set)
            }
        }
        for rule in Layout.rules() {
            batch.append(
                .object("add rule inet \(name) \(rule.chain.name) '\(rule.text)'"),
                type: NFT_MSG_NEWRULE.rawValue,
                flags: NLM_F_CREATE | NLM_F_APPEND,
                ack: true
            ) { header in
                let r = nftnl_rule_alloc()!
                defer { nftnl_rule_free(r) }
                _ = nftnl_rule_set_str(r, UInt16(NFTNL_RULE_TABLE.rawValue), name)
                _ = nftnl_rule_set_str(r, UInt16(NFTNL_RULE_CHAIN.rawValue), rule.chain.name)
                for expr in rule.expressions() { nftnl_rule_add_expr(r, expr) }
                nftnl_rule_nlmsg_build_payload(header, r)
            }
        }
    }

    /// One element per message: an error then names exactly the element the kernel refused.
    /// One message per map element of `rules` (with its target when adding) and per hairpin
    /// element of `hairpins`; an ACK only on the very last message, when `ackLast`.
    static func appendElements(
        into batch: inout Batch,
        table name: String,
        add: Bool,
        rules: [(key: ElementKey, rule: DNATRule)],
        hairpins: [(key: ElementKey, rule: DNATRule)],
        ackLast: Bool
    ) {
        let total = rules.count + hairpins.count
        for (index, (key, rule)) in rules.enumerated() {
            appendElement(
                into: &batch,
                add: add,
                table: name,
                key: key,
                data: add ? rule.elementData : nil,
                text: rule.elementText,
                ack: ackLast && index == total - 1
            )
        }
        for (index, (key, rule)) in hairpins.enumerated() {
            appendElement(
                into: &batch,
                add: add,
                table: name,
                key: key,
                data: nil,
                text: rule.hairpinText,
                ack: ackLast && rules.count + index == total - 1
            )
        }
    }

    /// One element message. `exclusive` makes adding an element that exists an error (EEXIST);
    /// `comment` is stored with the element as nft's `comment "..."` (at most 127 bytes).
    static func appendElement(
        into batch: inout Batch,
        add: Bool,
        table: String,
        key: ElementKey,
        data: [UInt8]?,
        text: String,
        ack: Bool,
        exclusive: Bool = true,
        comment: String? = nil
    ) {
        batch.append(
            .element(add: add, key: text, kind: key.map.kind, table: table, set: key.map.description),
            type: add ? NFT_MSG_NEWSETELEM.rawValue : NFT_MSG_DELSETELEM.rawValue,
            flags: add ? NLM_F_CREATE | (exclusive ? NLM_F_EXCL : 0) : 0,
            ack: ack,
            maxBytes: 512
        ) { header in
            elementPayload(header, table: table, set: key.map.description, key: key.key, data: data, comment: comment)
        }
    }

    static func elementPayload(
        _ header: UnsafeMutablePointer<nlmsghdr>,
        table: String,
        set name: String,
        key: [UInt8],
        data: [UInt8]?,
        comment: String? = nil
    ) {
        let set = nftnl_set_alloc()!
        defer { nftnl_set_free(set) }
        _ = nftnl_set_set_str(set, UInt16(NFTNL_SET_TABLE.rawValue), table)
        _ = nftnl_set_set_str(set, UInt16(NFTNL_SET_NAME.rawValue), name)
        let element = nftnl_set_elem_alloc()!
        _ = key.withUnsafeBytes {
            nftnl_set_elem_set(element, UInt16(NFTNL_SET_ELEM_KEY), $0.baseAddress, UInt32($0.count))
        }
        if let data {
            _ = data.withUnsafeBytes {
                nftnl_set_elem_set(element, UInt16(NFTNL_SET_ELEM_DATA), $0.baseAddress, UInt32($0.count))
            }
        }
        if let comment {
            let userData = ElementComment.encode(comment)
            _ = userData.withUnsafeBytes {
                nftnl_set_elem_set(element, UInt16(NFTNL_SET_ELEM_USERDATA), $0.baseAddress, UInt32($0.count))
            }
        }
        nftnl_set_elem_add(set, element)
        nftnl_set_elems_nlmsg_build_payload(header, set)
    }
}

/// One element as the kernel lists it.
struct DumpedElement {
    var key: [UInt8]
    var data: [UInt8]?
    var packets: UInt64 = 0
    var bytes: UInt64 = 0
    var comment: String?
}

extension NetlinkSocket {
    /// Lists the elements of one map or set (NFT_MSG_GETSETELEM, NLM_F_DUMP) of table `name`.
    mutating func dumpElements(
        table name: String,
        map: BerthMap,
        _ body: (DumpedElement) -> Void
    ) throws(NetfilterError) {
        let what = "nftables: list \(map.kind) inet \(name) \(map)"
        let sequence = nextSequence
        advanceSequence(past: sequence &+ 1)
        let request = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 8)
        defer { request.deallocate() }
        let header = nftnl_nlmsg_build_hdr(
            request.baseAddress!.assumingMemoryBound(to: CChar.self),
            UInt16(NFT_MSG_GETSETELEM.rawValue),
            UInt16(NFPROTO_INET_VALUE),
            UInt16(NLM_F_DUMP | NLM_F_ACK),
            sequence
        )!
        let set = nftnl_set_alloc()!
        defer { nftnl_set_free(set) }
        _ = nftnl_set_set_str(set, UInt16(NFTNL_SET_TABLE.rawValue), name)
        _ = nftnl_set_set_str(set, UInt16(NFTNL_SET_NAME.rawValue), map.description)
        nftnl_set_elems_nlmsg_build_payload(header, set)
        try send(UnsafeRawBufferPointer(start: request.baseAddress, count: Int(header.pointee.nlmsg_len)), what)

        let parsed = nftnl_set_alloc()!
        defer { nftnl_set_free(parsed) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 8)
        defer { buffer.deallocate() }
        var done = false
        while !done {
            let got = try receive(into: buffer, timeoutMs: 5_000, what)
            if got == 0 { throw NetfilterError(what, reason: "no reply from the kernel within 5 s") }
            for message in NetlinkMessages(UnsafeRawBufferPointer(rebasing: buffer[..<got]))
            where message.sequence == sequence {
                if message.type == UInt16(NLMSG_DONE) {
                    done = true
                } else if let reply = message.errorReply {
                    if reply.errno != 0 { throw NetfilterError(what, errno: reply.errno, extra: reply.message) }
                    done = true
                } else if message.type & 0xff == UInt16(NFT_MSG_NEWSETELEM.rawValue) {
                    if nftnl_set_elems_nlmsg_parse(message.header, parsed) < 0 {
                        throw NetfilterError(what, reason: "cannot parse the kernel's reply")
                    }
                }
            }
        }

        guard let iterator = nftnl_set_elems_iter_create(parsed) else { return }
        defer { nftnl_set_elems_iter_destroy(iterator) }
        while let element = nftnl_set_elems_iter_next(iterator) {
            var length: UInt32 = 0
            guard let keyPointer = nftnl_set_elem_get(element, UInt16(NFTNL_SET_ELEM_KEY), &length) else {
                continue
            }
            var dumped = DumpedElement(key: Array(UnsafeRawBufferPointer(start: keyPointer, count: Int(length))))
            if let dataPointer = nftnl_set_elem_get(element, UInt16(NFTNL_SET_ELEM_DATA), &length) {
                dumped.data = Array(UnsafeRawBufferPointer(start: dataPointer, count: Int(length)))
            }
            if let raw = nftnl_set_elem_get(element, UInt16(NFTNL_SET_ELEM_EXPR), &length) {
                let expr = OpaquePointer(raw)
                if let kind = nftnl_expr_get_str(expr, UInt16(NFTNL_EXPR_NAME)), String(cString: kind) == "counter" {
                    dumped.packets = nftnl_expr_get_u64(expr, UInt16(NFTNL_EXPR_CTR_PACKETS))
                    dumped.bytes = nftnl_expr_get_u64(expr, UInt16(NFTNL_EXPR_CTR_BYTES))
                }
            }
            if let raw = nftnl_set_elem_get(element, UInt16(NFTNL_SET_ELEM_USERDATA), &length) {
                dumped.comment = ElementComment.decode(UnsafeRawBufferPointer(start: raw, count: Int(length)))
            }
            body(dumped)
        }
    }
}

/// nft's element comments: user data holding one TLV, type NFTNL_UDATA_SET_ELEM_COMMENT (0),
/// a length byte, and the text with its trailing NUL, as `nft add element ... comment "x"` writes.
enum ElementComment {
    static let maxBytes = 127

    static func encode(_ text: String) -> [UInt8] {
        let bytes = Array(text.utf8.prefix(maxBytes)) + [0]
        return [0, UInt8(bytes.count)] + bytes
    }

    static func decode(_ data: UnsafeRawBufferPointer) -> String? {
        var offset = 0
        while offset + 2 <= data.count {
            let type = data[offset]
            let length = Int(data[offset + 1])
            guard offset + 2 + length <= data.count else { return nil }
            if type == 0 {
                let text = data[(offset + 2)..<(offset + 2 + length)].prefix { $0 != 0 }
                return String(decoding: text, as: UTF8.self)
            }
            offset += 2 + length
        }
        return nil
    }
}
