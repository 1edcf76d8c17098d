// Conntrack: deleting the conntrack entries of flows that still go to a removed DNAT target.
//
// Removing a map element stops *new* flows; a UDP flow already in conntrack keeps its NAT
// binding and keeps going to the old target until its entry is deleted or times out (the
// default UDP stream timeout is 120 s, refreshed by every packet). ctnetlink has no "delete by
// reply source" request, so this dumps the table of one family (IPCTNL_MSG_CT_GET, NLM_F_DUMP),
// picks the entries, and deletes each by its original tuple (IPCTNL_MSG_CT_DELETE), as
// `conntrack -D -p udp --reply-src ... --reply-port-src ...` does.
import CNetfilter
import Mappings

#if canImport(Glibc)
import Glibc
#endif

package enum Conntrack {
    /// Deletes the conntrack entries of UDP flows to `containerIP:port`: entries whose reply
    /// comes from there (DNATed flows) or whose original destination is there (direct flows).
    /// The family follows `containerIP`. Returns how many entries were deleted; entries that
    /// expire while this runs are not counted and are not an error.
    package static func deleteUDPFlows(to containerIP: IPAddress, port: UInt16) throws(NetfilterError) -> Int {
        let target = containerIP.unmapped
        return try deleteEntries(
            family: UInt8(target.isV6 ? AF_INET6 : AF_INET),
            "conntrack: delete udp flows to \(target.bracketed):\(port)"
        ) { entry in
            entry.proto == 17
                && ((entry.replySource == target.bytes && entry.replySourcePort == port)
                    || (entry.originalDestination == target.bytes && entry.originalDestinationPort == port))
        }
    }

    /// Deletes the conntrack entries of UDP flows to local port `port` that are not NATed: flows
    /// that began before a DNAT element for the port existed. nat sees only a flow's first packet,
    /// so without this a client that keeps sending (a DNS resolver, a game) would keep reaching the
    /// host, not the container, for as long as it sends. portmap does the same on ADD.
    package static func deleteUnNATedUDPFlows(toPort port: UInt16, v6: Bool) throws(NetfilterError) -> Int {
        try deleteEntries(family: UInt8(v6 ? AF_INET6 : AF_INET), "conntrack: delete udp flows to port \(port)") {
            entry in
            entry.proto == 17 && entry.originalDestinationPort == port && entry.replySourcePort == port
                && entry.replySource == entry.originalDestination
        }
    }

    private static func deleteEntries(
        family: UInt8,
        _ what: String,
        where matches: (Entry) -> Bool
    ) throws(NetfilterError) -> Int {
        var socket = try NetlinkSocket("conntrack")
        socket.ensureReceiveBuffer(1 << 20)
        let entries = try dump(&socket, family: family, what, where: matches)
        var deleted = 0
        var start = 0
        while start < entries.count {
            let chunk = entries[start..<Swift.min(start + 128, entries.count)]
            deleted += try delete(chunk, &socket, family: family, what)
            start += chunk.count
        }
        return deleted
    }

    /// One conntrack entry, as much of it as matching and deleting need.
    struct Entry {
        var proto: UInt8 = 0
        var originalDestination: [UInt8] = []
        var originalDestinationPort: UInt16 = 0
        var replySource: [UInt8] = []
        var replySourcePort: UInt16 = 0
        /// CTA_TUPLE_ORIG's payload, CTA_ZONE's and CTA_ID's: sent back to delete exactly this entry.
        var originalTuple: [UInt8] = []
        var zone: [UInt8]?
        var id: [UInt8]?
    }

    private static func messageType(_ message: UInt32) -> UInt16 {
        cnetfilter_nfnl_msg_type(UInt8(NFNL_SUBSYS_CTNETLINK), UInt8(message))
    }

    /// Puts a netlink header and a `struct nfgenmsg` at the start of `buffer`.
    private static func header(
        _ buffer: UnsafeMutableRawPointer,
        type: UInt16,
        flags: Int32,
        sequence: UInt32,
        family: UInt8
    ) -> UnsafeMutablePointer<nlmsghdr> {
        let header = mnl_nlmsg_put_header(buffer)!
        header.pointee.nlmsg_type = type
        header.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | flags)
        header.pointee.nlmsg_seq = sequence
        let nfg = mnl_nlmsg_put_extra_header(header, MemoryLayout<nfgenmsg>.size)!
            .assumingMemoryBound(to: nfgenmsg.self)
        nfg.pointee.nfgen_family = family
        nfg.pointee.version = UInt8(NFNETLINK_V0)
        nfg.pointee.res_id = 0
        return header
    }

    private static func dump(
        _ socket: inout NetlinkSocket,
        family: UInt8,
        _ what: String,
        where matches: (Entry) -> Bool
    ) throws(NetfilterError) -> [Entry] {
        let sequence = socket.nextSequence
        socket.advanceSequence(past: sequence &+ 1)
        let request = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
        defer { request.deallocate() }
        let req = header(
            request.baseAddress!,
            type: messageType(IPCTNL_MSG_CT_GET.rawValue),
            flags: NLM_F_DUMP,
            sequence: sequence,
            family: family
        )
        try socket.send(UnsafeRawBufferPointer(start: request.baseAddress, count: Int(req.pointee.nlmsg_len)), what)

        var found: [Entry] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            let got = try socket.receive(into: buffer, timeoutMs: 5_000, what + ": list entries")
            if got == 0 { throw NetfilterError(what + ": list entries", reason: "no reply within 5 s") }
            for message in NetlinkMessages(UnsafeRawBufferPointer(rebasing: buffer[..<got]))
            where message.sequence == sequence {
                if message.type == UInt16(NLMSG_DONE) { return found }
                if let reply = message.errorReply {
                    if reply.errno != 0 {
                        throw NetfilterError(what + ": list entries", errno: reply.errno, extra: reply.message)
                    }
                    return found
                }
                let entry = parse(message)
                if matches(entry) { found.append(entry) }
            }
        }
    }

    private static func parse(_ message: NetlinkMessage) -> Entry {
        var entry = Entry()
        for attr in message.nfAttributes {
            switch Int32(attr.type) {
            case Int32(CTA_TUPLE_ORIG.rawValue):
                entry.originalTuple = attr.bytes
                let tuple = parseTuple(attr.nested)
                entry.proto = tuple.proto
                entry.originalDestination = tuple.destination
                entry.originalDestinationPort = tuple.destinationPort
            case Int32(CTA_TUPLE_REPLY.rawValue):
                let tuple = parseTuple(attr.nested)
                entry.replySource = tuple.source
                entry.replySourcePort = tuple.sourcePort
            case Int32(CTA_ZONE.rawValue): entry.zone = attr.bytes
            case Int32(CTA_ID.rawValue): entry.id = attr.bytes
            default: break
            }
        }
        return entry
    }

    private static func parseTuple(
        _ attributes: NetlinkAttributes
    ) -> (proto: UInt8, source: [UInt8], sourcePort: UInt16, destination: [UInt8], destinationPort: UInt16) {
        var result: (proto: UInt8, source: [UInt8], sourcePort: UInt16, destination: [UInt8], destinationPort: UInt16) =
            (0, [], 0, [], 0)
        for attr in attributes {
            switch Int32(attr.type) {
            case Int32(CTA_TUPLE_IP.rawValue):
                for ip in attr.nested {
                    switch Int32(ip.type) {
                    case Int32(CTA_IP_V4_SRC.rawValue), Int32(CTA_IP_V6_SRC.rawValue): result.source = ip.bytes
                    case Int32(CTA_IP_V4_DST.rawValue), Int32(CTA_IP_V6_DST.rawValue): result.destination = ip.bytes
                    default: break
                    }
                }
            case Int32(CTA_TUPLE_PROTO.rawValue):
                for p in attr.nested {
                    switch Int32(p.type) {
                    case Int32(CTA_PROTO_NUM.rawValue): result.proto = p.u8 ?? 0
                    case Int32(CTA_PROTO_SRC_PORT.rawValue): result.sourcePort = p.be16 ?? 0
                    case Int32(CTA_PROTO_DST_PORT.rawValue): result.destinationPort = p.be16 ?? 0
                    default: break
                    }
                }
            default: break
            }
        }
        return result
    }

    /// Deletes entries by original tuple (plus zone and id), one message each, all in one send.
    private static func delete(
        _ entries: ArraySlice<Entry>,
        _ socket: inout NetlinkSocket,
        family: UInt8,
        _ what: String
    ) throws(NetfilterError) -> Int {
        let first = socket.nextSequence
        socket.advanceSequence(past: first &+ UInt32(entries.count))
        let capacity = entries.reduce(0) { $0 + 64 + $1.originalTuple.count + 32 }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 8)
        defer { buffer.deallocate() }
        var length = 0
        for (index, entry) in entries.enumerated() {
            let message = header(
                buffer.baseAddress! + length,
                type: messageType(IPCTNL_MSG_CT_DELETE.rawValue),
                flags: NLM_F_ACK,
                sequence: first &+ UInt32(index),
                family: family
            )
            let nested = UInt16(NLA_F_NESTED)
            entry.originalTuple.withUnsafeBytes {
                mnl_attr_put(message, UInt16(CTA_TUPLE_ORIG.rawValue) | nested, $0.count, $0.baseAddress)
            }
            if let zone = entry.zone {
                zone.withUnsafeBytes { mnl_attr_put(message, UInt16(CTA_ZONE.rawValue), $0.count, $0.baseAddress) }
            }
            if let id = entry.id {
                id.withUnsafeBytes { mnl_attr_put(message, UInt16(CTA_ID.rawValue), $0.count, $0.baseAddress) }
            }
            length += Int(cnetfilter_nlmsg_align(message.pointee.nlmsg_len))
        }
        try socket.send(UnsafeRawBufferPointer(rebasing: buffer[..<length]), what)

        var deleted = 0
        var answered = 0
        let replies = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 8)
        defer { replies.deallocate() }
        while answered < entries.count {
            let got = try socket.receive(into: replies, timeoutMs: 5_000, what)
            if got == 0 { throw NetfilterError(what, reason: "no ACK within 5 s") }
            for message in NetlinkMessages(UnsafeRawBufferPointer(rebasing: replies[..<got])) {
                guard let reply = message.errorReply, reply.sequence &- first < UInt32(entries.count) else { continue }
                answered += 1
                switch reply.errno {
                case 0: deleted += 1
                case ENOENT: break  // expired or deleted meanwhile
                default: throw NetfilterError(what, errno: reply.errno, extra: reply.message)
                }
            }
        }
        return deleted
    }
}
