// nftables batches: NFNL_MSG_BATCH_BEGIN, the messages, NFNL_MSG_BATCH_END, sent in one sendmsg.
//
// The kernel applies the whole batch inside that sendmsg and rolls all of it back when any
// message fails. It answers every message that asked for an ACK (NLM_F_ACK) and every message
// that failed, ACK or not, in message order, after the whole batch was processed. So:
// - each message gets its own sequence number, and `items` remembers what each one does, so an
//   error names the object (`add map inet berth_1 dnat4`, `add element ... 198.18.0.1 . tcp . 8080`);
// - table, chain, set and rule messages ask for an ACK; element messages do not, except the last
//   message of the batch, whose ACK tells us the kernel is done with it. (An ACK for each of
//   thousands of elements would overflow the receive buffer and cost a reply each.)
// - an error naming the BEGIN message's sequence is about the batch as a whole (no permission,
//   out of memory, the commit itself).
import CNetfilter

#if canImport(Glibc)
import Glibc
#endif

/// What one message of a batch does, for error text: `add map inet berth_1 dnat4`,
/// `add element 198.18.0.1 . tcp . 8080 : 198.18.0.2 . 80 to map inet berth_1 dnat4`.
enum BatchItem {
    case object(String)
    case element(add: Bool, key: String, kind: String, table: String, set: String)

    var description: String {
        switch self {
        case .object(let text): return text
        case .element(let add, let key, let kind, let table, let set):
            return "\(add ? "add" : "delete") element \(key) \(add ? "to" : "from") \(kind) inet \(table) \(set)"
        }
    }
}

/// One batch under construction: a growing byte buffer of netlink messages.
struct Batch: ~Copyable {
    private var storage: UnsafeMutableRawPointer
    private var capacity: Int
    private(set) var length = 0
    private(set) var items: [UInt32: BatchItem] = [:]
    let beginSequence: UInt32
    private(set) var nextSequence: UInt32
    /// The sequence of the last message that asked for an ACK.
    private(set) var lastAcked: UInt32?
    private(set) var messageCount = 0
    private var ended = false

    init(firstSequence: UInt32, capacity: Int = 16 * 1024) {
        self.capacity = capacity
        storage = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 8)
        beginSequence = firstSequence
        nextSequence = firstSequence
        reserve(64)
        _ = nftnl_batch_begin(cursor, nextSequence)
        advance()
        nextSequence &+= 1
    }

    deinit { storage.deallocate() }

    private var cursor: UnsafeMutablePointer<CChar> {
        (storage + length).assumingMemoryBound(to: CChar.self)
    }

    private mutating func reserve(_ bytes: Int) {
        guard length + bytes > capacity else { return }
        var newCapacity = capacity * 2
        while length + bytes > newCapacity { newCapacity *= 2 }
        let grown = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 8)
        grown.copyMemory(from: storage, byteCount: length)
        storage.deallocate()
        storage = grown
        capacity = newCapacity
    }

    /// Moves past the message just written at the cursor.
    private mutating func advance() {
        let header = UnsafeRawPointer(storage + length).assumingMemoryBound(to: nlmsghdr.self)
        length += Int(cnetfilter_nlmsg_align(header.pointee.nlmsg_len))
    }

    /// Appends one nftables message. `build` fills the payload after the header; libnftnl does not
    /// bounds-check, so `maxBytes` must cover the whole message (checked afterwards).
    mutating func append(
        _ item: BatchItem,
        type: UInt32,
        flags: Int32,
        ack: Bool,
        maxBytes: Int = 4096,
        _ build: (UnsafeMutablePointer<nlmsghdr>) -> Void
    ) {
        precondition(!ended, "message appended after the batch ended")
        reserve(maxBytes)
        let sequence = nextSequence
        nextSequence &+= 1
        let header = nftnl_nlmsg_build_hdr(
            cursor,
            UInt16(type),
            UInt16(NFPROTO_INET_VALUE),
            UInt16(flags | (ack ? NLM_F_ACK : 0)),
            sequence
        )!
        build(header)
        precondition(Int(header.pointee.nlmsg_len) <= maxBytes, "netlink message overran its reservation")
        advance()
        items[sequence] = item
        if ack { lastAcked = sequence }
        messageCount += 1
    }

    mutating func end() {
        reserve(64)
        _ = nftnl_batch_end(cursor, nextSequence)
        advance()
        nextSequence &+= 1
        ended = true
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: storage, count: length) }
}

/// NFPROTO_INET: <linux/netfilter.h> stays out of CNetfilter (it clashes with Glibc).
let NFPROTO_INET_VALUE: UInt8 = 1
let NFPROTO_IPV4_VALUE: UInt8 = 2
let NFPROTO_IPV6_VALUE: UInt8 = 10

extension NetlinkSocket {
    /// Sends a finished batch and reads every reply. Throws the first error in message order,
    /// naming the object its message touched. Nothing of a failed batch stays in the kernel.
    mutating func commit(_ batch: borrowing Batch, _ what: String) throws(NetfilterError) {
        precondition(batch.lastAcked != nil, "a batch needs at least one message that asks for an ACK")
        advanceSequence(past: batch.nextSequence)
        // A netlink message larger than the send buffer fails with EMSGSIZE.
        ensureSendBuffer(batch.length + 4096)
        if batch.length + 32 > sendBufferSize {
            throw NetfilterError(
                "nftables: \(what)",
                errno: EMSGSIZE,
                extra: "batch of \(batch.length) bytes, send buffer \(sendBufferSize) bytes: "
                    + "raise net.core.wmem_max or run with CAP_NET_ADMIN in the initial namespace"
            )
        }
        try send(batch.bytes, "nftables: \(what): send batch of \(batch.messageCount) messages")

        var errors: [(sequence: UInt32, errno: Int32, message: String?)] = []
        var done = false
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 8)
        defer { buffer.deallocate() }
        while !done {
            let got = try receive(into: buffer, timeoutMs: 5_000, "nftables: \(what): read ACKs")
            if got == 0 {
                throw NetfilterError("nftables: \(what)", reason: "no ACK from the kernel within 5 s")
            }
            for message in NetlinkMessages(UnsafeRawBufferPointer(rebasing: buffer[..<got])) {
                guard let reply = message.errorReply else { continue }
                if reply.errno != 0 { errors.append((reply.sequence, reply.errno, reply.message)) }
                if reply.sequence == batch.lastAcked || (reply.errno != 0 && reply.sequence == batch.beginSequence) {
                    done = true
                }
            }
        }
        guard let first = errors.first else { return }
        let object = batch.items[first.sequence]?.description ?? what
        var notes: [String] = first.message.map { [$0] } ?? []
        if errors.count > 1 { notes.append("\(errors.count - 1) later message(s) failed too") }
        throw NetfilterError(
            "nftables: \(object)",
            errno: first.errno,
            extra: notes.isEmpty ? nil : notes.joined(separator: "; ")
        )
    }
}
