// The UDP flow table: client address → slot, bounded, each flow expiring after the idle time of
// its lifetime (conntrack's), least recently active out first.
//
// Slots live in one array allocated up front; a flow keeps its slot number for its whole
// life, so the relay keeps what else a flow owns (its backend socket, its reply source) in
// arrays of its own, indexed by slot. Nothing here knows about sockets, so the table can be
// tested and benchmarked alone.
//
// Index: open addressing with linear probing over a power-of-two array of buckets, at most
// half full. A bucket holds 32 bits of the key's hash (most mismatches are settled without
// touching the slot) and slot + 1 (0 is empty). Removal shifts the buckets after it back
// into place instead of leaving tombstones, so lookups do not slow down as flows come and
// go. The hash is Swift's seeded SipHash (`Hasher`): clients choose their addresses and
// ports, and a predictable hash would let them pile every flow into one probe chain.
//
// Lifetimes, as the kernel's conntrack keeps UDP: a new flow is *unreplied* and lives
// `unreplied` (30 s by default, nf_conntrack_udp_timeout) after its last datagram. It becomes
// *assured*, and lives `assured` (120 s, nf_conntrack_udp_timeout_stream) after its last
// datagram, on a datagram either way that comes after its first reply and at least
// `assuredAfter` (2 s) after it opened. So a DNS query and its answer, or a resolver's A and
// AAAA queries and their answers from one port, stay short, and a flow that goes on both ways
// (QUIC, WireGuard, a game, RTP) keeps the long timeout. conntrack's rule is the same but for
// the first reply itself: a reply later than 2 s assures there; here it takes one more datagram,
// so a slow single answer does not hold a flow for two minutes.
//
// Answered: an unassured flow whose last datagram was a reply and that has had as many reply
// datagrams as requests (a DNS, NTP or SNMP exchange that is over) is *answered*. A stub resolver
// takes a new source port per query, so under one-shot load nearly every flow is an answered one
// that will never see another datagram; holding each for its 30 s would fill the cap, and the cap
// would set berth's descriptors. So answered flows are a bounded pool of their own
// (`answeredLimit`, `--udp-max-answered`, a quarter of the cap by default): past it the oldest
// answered flow closes. A datagram from the client makes the flow waiting again (it expects an
// answer), and a second reply to one request (a stream, a multi-part answer) keeps it out of
// the pool: only flows that are over are closed early.
//
// Recency: three intrusive doubly-linked lists through the slots, waiting (no reply yet, or a
// request since), answered and assured, least recently active at the head. Touching a flow
// moves it to the tail of its list; eviction and expiry take from a head; all O(1). Every flow
// of one list has the same timeout (waiting and answered share the short one) and the relay
// touches with the loop's clock, which never goes back, so each head is the first of its list
// to expire, and expiry looks at the three heads only. Eviction takes answered flows first,
// then waiting ones, like conntrack's early drop: a flood of one-shot flows pushes out its own
// kind, never a flow awaiting its answer or one that carries a conversation while those remain.
//
// Memory: nothing is allocated after `init`. The buckets come from calloc and slots are
// used from the front, so pages are touched only as flows arrive: a table sized for a
// million flows costs little until it holds them.

import Glibc
import LinuxIO

/// A client's address (IP and port) as a compact hashable value, read straight from a `sockaddr`.
public struct FlowKey: Hashable, Sendable, CustomStringConvertible {
    /// The address as raw network-order memory: IPv6 in both words, IPv4 in the first 4 bytes of `high`.
    package var high: UInt64
    package var low: UInt64
    /// In network byte order, as in the `sockaddr`.
    package var rawPort: UInt16
    package var family: UInt16
    /// sin6_scope_id: fe80::1%eth0 and fe80::1%eth1 are different clients.
    package var scope: UInt32

    /// Reads an AF_INET or AF_INET6 `sockaddr`.
    @inline(__always)
    package init(sockaddr raw: UnsafeRawPointer) {
        family = raw.loadUnaligned(as: UInt16.self)
        rawPort = raw.loadUnaligned(fromByteOffset: 2, as: UInt16.self)
        if Int32(family) == AF_INET6 {
            high = raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
            low = raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
            scope = raw.loadUnaligned(fromByteOffset: 24, as: UInt32.self)
        } else {
            high = UInt64(raw.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            low = 0
            scope = 0
        }
    }

    public init(_ address: SocketAddress) {
        self = address.withSockAddr { p, _ in FlowKey(sockaddr: UnsafeRawPointer(p)) }
    }

    package var isV6: Bool { Int32(family) == AF_INET6 }
    package var port: UInt16 { UInt16(bigEndian: rawPort) }

    /// Calls `body` with the key as a `sockaddr` the kernel can send to; nothing is allocated.
    @inline(__always)
    package func withSockAddr<R, E: Error>(_ body: (UnsafeRawPointer, socklen_t) throws(E) -> R) throws(E) -> R {
        if isV6 {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(family)
            sin6.sin6_port = rawPort
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in
                raw.storeBytes(of: high, as: UInt64.self)
                raw.storeBytes(of: low, toByteOffset: 8, as: UInt64.self)
            }
            sin6.sin6_scope_id = scope
            return try withUnsafeBytes(of: &sin6) { (raw) throws(E) -> R in
                try body(raw.baseAddress!, socklen_t(MemoryLayout<sockaddr_in6>.size))
            }
        }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(family)
        sin.sin_port = rawPort
        sin.sin_addr.s_addr = UInt32(truncatingIfNeeded: high)
        return try withUnsafeBytes(of: &sin) { (raw) throws(E) -> R in
            try body(raw.baseAddress!, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }

    package var address: SocketAddress {
        withSockAddr { p, _ in
            let bytes =
                isV6
                ? Array(UnsafeRawBufferPointer(start: p + 8, count: 16))
                : Array(UnsafeRawBufferPointer(start: p + 4, count: 4))
            return SocketAddress(ip: bytes, port: port)
        }
    }

    public var description: String { address.description }
}

/// How long flows live idle, by lifetime; see the file's comment.
public struct UDPFlowLifetimes: Sendable, Equatable {
    /// No reply yet, or no datagram since the first reply: nf_conntrack_udp_timeout.
    package var unreplied: Duration = .seconds(30)
    /// Traffic both ways, going on: nf_conntrack_udp_timeout_stream.
    package var assured: Duration = .seconds(120)
    /// How long after it opened a flow can become assured.
    package var assuredAfter: Duration = .seconds(2)

    public init(unreplied: Duration = .seconds(30), assured: Duration = .seconds(120)) {
        self.unreplied = unreplied
        self.assured = assured
    }
}

/// Bounded map from client address to flow slot with least-recently-active eviction and idle
/// expiry by lifetime, all O(1). Owned by one loop; not thread-safe.
public final class UDPFlowTable {
    private struct Entry {
        var key: FlowKey
        var hash: UInt64
        var lastActive: UInt64
        var opened: UInt64
        var previous: Int32
        var next: Int32
        /// Request datagrams less reply datagrams while unassured; 0 after a reply: answered.
        var balance: Int32
        /// Which list: `waitingList`, `assuredList` or `answeredList`.
        var list: UInt8
        var replied: Bool
    }

    private static let waitingList = 0
    private static let assuredList = 1
    private static let answeredList = 2

    /// What `insert` did: the flow's slot, and the flow evicted to make room, if the table was full.
    public struct Insertion: Sendable {
        package let slot: Int
        package let evicted: FlowKey?
    }

    package let capacity: Int
    package let lifetimes: UDPFlowLifetimes
    package private(set) var count = 0
    /// Flows that are assured now.
    package private(set) var assuredCount = 0
    /// Flows that are answered now (see the file's comment).
    package private(set) var answeredCount = 0
    /// The answered flows the relay keeps; beyond, `overAnswered` names one to close.
    package let answeredLimit: Int

    private let entries: UnsafeMutablePointer<Entry>
    private let buckets: UnsafeMutablePointer<UInt64>
    private let mask: Int
    /// Slots below this have been used at least once; from it on they are untouched memory.
    private var used = 0
    /// Slots freed by `remove`, linked through `next`.
    private var freeHead: Int32 = -1
    /// Per list (waiting, assured, answered): least recently active, most recently active.
    private var heads: (Int32, Int32, Int32) = (-1, -1, -1)
    private var tails: (Int32, Int32, Int32) = (-1, -1, -1)
    private let timeouts: (UInt64, UInt64)
    private let assuredAfter: UInt64

    /// `answeredLimit` nil: as many as the capacity (no pool of its own).
    public init(capacity: Int, lifetimes: UDPFlowLifetimes = UDPFlowLifetimes(), answeredLimit: Int? = nil) {
        precondition(capacity > 0 && capacity < Int(Int32.max) / 2, "flow table capacity \(capacity)")
        self.capacity = capacity
        self.answeredLimit = min(capacity, max(0, answeredLimit ?? capacity))
        self.lifetimes = lifetimes
        timeouts = (lifetimes.unreplied.nanosecondsClamped, lifetimes.assured.nanosecondsClamped)
        assuredAfter = lifetimes.assuredAfter.nanosecondsClamped
        var size = 16
        while size < 2 * capacity { size <<= 1 }
        mask = size - 1
        entries = .allocate(capacity: capacity)
        guard let zeroed = calloc(size, MemoryLayout<UInt64>.size) else { fatalError("flow table: out of memory") }
        buckets = zeroed.assumingMemoryBound(to: UInt64.self)
    }

    deinit {
        entries.deallocate()
        free(buckets)
    }

    package var isEmpty: Bool { count == 0 }
    package var isFull: Bool { count == capacity }

    /// The slot of `key`'s flow, if there is one. Does not count as activity.
    @inline(__always)
    public func lookup(_ key: FlowKey) -> Int? {
        let hash = UInt64(UInt(bitPattern: key.hashValue))
        let tag = hash >> 32
        var i = Int(truncatingIfNeeded: hash) & mask
        while true {
            let bucket = buckets[i]
            if bucket == 0 { return nil }
            if bucket >> 32 == tag {
                let slot = Int(UInt32(truncatingIfNeeded: bucket)) - 1
                if entries[slot].key == key { return slot }
            }
            i = (i + 1) & mask
        }
    }

    /// Adds a flow for `key`, which must not have one, unreplied and the most recently active.
    /// When the table is full the flow `oldest` names makes room: its slot is reused, and its
    /// key is returned so that the caller can release what it held.
    @discardableResult
    public func insert(_ key: FlowKey, now: Instant) -> Insertion {
        assert(lookup(key) == nil, "\(key) is in the flow table already")
        var evicted: FlowKey?
        let slot: Int
        if count == capacity, let victim = oldest {
            slot = victim
            evicted = entries[slot].key
            uncount(slot)
            unindex(slot)
            unlink(slot)
            count -= 1
        } else if freeHead >= 0 {
            slot = Int(freeHead)
            freeHead = entries[slot].next
        } else {
            slot = used
            used += 1
        }
        let hash = UInt64(UInt(bitPattern: key.hashValue))
        (entries + slot).initialize(
            to: Entry(
                key: key,
                hash: hash,
                lastActive: now.nanoseconds,
                opened: now.nanoseconds,
                previous: -1,
                next: -1,
                balance: 0,
                list: UInt8(Self.waitingList),
                replied: false
            )
        )
        var i = Int(truncatingIfNeeded: hash) & mask
        while buckets[i] != 0 { i = (i + 1) & mask }
        buckets[i] = (hash >> 32) << 32 | UInt64(slot + 1)
        linkAtTail(slot)
        count += 1
        return Insertion(slot: slot, evicted: evicted)
    }

    /// Marks the flow in `slot` active at `now`: `datagrams` from the backend (`reply`), or one
    /// from the client. It becomes the most recently active of its list, which may change (see
    /// the file's comment). True when this made it assured.
    @inline(__always)
    @discardableResult
    package func touch(_ slot: Int, now: Instant, reply: Bool = false, datagrams: Int = 1) -> Bool {
        entries[slot].lastActive = now.nanoseconds
        let list = Int(entries[slot].list)
        var target = list
        if list != Self.assuredList {
            let balance = entries[slot].balance
            entries[slot].balance = reply ? balance &- Int32(truncatingIfNeeded: datagrams) : balance &+ 1
            if entries[slot].replied && now.nanoseconds >= entries[slot].opened &+ assuredAfter {
                target = Self.assuredList
            } else if reply {
                entries[slot].replied = true
                target = entries[slot].balance == 0 ? Self.answeredList : Self.waitingList
            } else {
                target = Self.waitingList
            }
        }
        if target == list {
            if tail(list) == slot { return false }
            unlink(slot)
        } else {
            unlink(slot)
            uncount(slot)
            entries[slot].list = UInt8(target)
            if target == Self.assuredList { assuredCount += 1 }
            if target == Self.answeredList { answeredCount += 1 }
        }
        linkAtTail(slot)
        return target == Self.assuredList && list != Self.assuredList
    }

    /// Forgets the flow in `slot`; the slot may be handed out again by the next `insert`.
    public func remove(_ slot: Int) {
        uncount(slot)
        unindex(slot)
        unlink(slot)
        entries[slot].next = freeHead
        freeHead = Int32(slot)
        count -= 1
    }

    /// The flow to evict first: the least recently active answered one, else the least recently
    /// active waiting one, else the least recently active assured one.
    package var oldest: Int? {
        if heads.2 >= 0 { return Int(heads.2) }
        if heads.0 >= 0 { return Int(heads.0) }
        return heads.1 < 0 ? nil : Int(heads.1)
    }

    /// The oldest answered flow while there are more than `answeredLimit`: the one to close.
    @inline(__always)
    package var overAnswered: Int? { answeredCount > answeredLimit && heads.2 >= 0 ? Int(heads.2) : nil }

    public func isAssured(_ slot: Int) -> Bool { Int(entries[slot].list) == Self.assuredList }
    public func isAnswered(_ slot: Int) -> Bool { Int(entries[slot].list) == Self.answeredList }

    /// A flow whose idle time ran out at `now`, if any: the head of some list.
    @inline(__always)
    public func expired(now: Instant) -> Int? {
        if heads.0 >= 0 && deadline(Int(heads.0)) <= now.nanoseconds { return Int(heads.0) }
        if heads.2 >= 0 && deadline(Int(heads.2)) <= now.nanoseconds { return Int(heads.2) }
        if heads.1 >= 0 && deadline(Int(heads.1)) <= now.nanoseconds { return Int(heads.1) }
        return nil
    }

    /// When the next flow expires if nothing happens before; nil if never.
    package func nextExpiry() -> Instant? {
        switch (nextExpiry(assured: false), nextExpiry(assured: true)) {
        case let (unassured?, assured?): return min(unassured, assured)
        case let (unassured, assured): return unassured ?? assured
        }
    }

    /// When the next flow of one lifetime expires if nothing happens before; nil if never. Never
    /// earlier than it said before while the lifetime had flows, and no earlier than a deadline it
    /// gave before it had none: the relay keeps one timer per lifetime. (Unassured covers the
    /// waiting and the answered list: one timeout, and a flow moving between them only ever
    /// moves its deadline later.)
    package func nextExpiry(assured: Bool) -> Instant? {
        var next = UInt64.max
        if assured {
            if heads.1 >= 0 { next = deadline(Int(heads.1)) }
        } else {
            if heads.0 >= 0 { next = deadline(Int(heads.0)) }
            if heads.2 >= 0 { next = min(next, deadline(Int(heads.2))) }
        }
        return next == .max ? nil : Instant(nanoseconds: next)
    }

    /// `lastActive + timeout`, saturating: an idle time too long to add up means never.
    @inline(__always)
    private func deadline(_ slot: Int) -> UInt64 {
        let timeout = Int(entries[slot].list) == Self.assuredList ? timeouts.1 : timeouts.0
        let (sum, overflow) = entries[slot].lastActive.addingReportingOverflow(timeout)
        return overflow ? .max : sum
    }

    package func key(at slot: Int) -> FlowKey { entries[slot].key }
    package func lastActive(at slot: Int) -> Instant { Instant(nanoseconds: entries[slot].lastActive) }

    /// Keys in the order they would be evicted (answered, waiting, then assured, each least
    /// recently active first), for tests and debugging (this one allocates).
    package func keysByRecency() -> [FlowKey] {
        var keys: [FlowKey] = []
        keys.reserveCapacity(count)
        for list in [Self.answeredList, Self.waitingList, Self.assuredList] {
            var slot = head(list)
            while slot >= 0 {
                keys.append(entries[slot].key)
                slot = Int(entries[slot].next)
            }
        }
        return keys
    }

    /// Takes `slot`'s flow out of its list's count, before it leaves the list.
    @inline(__always)
    private func uncount(_ slot: Int) {
        switch Int(entries[slot].list) {
        case Self.assuredList: assuredCount -= 1
        case Self.answeredList: answeredCount -= 1
        default: break
        }
    }

    // MARK: the index

    /// Removes `slot`'s bucket and shifts the buckets after it back to where probing finds them.
    private func unindex(_ slot: Int) {
        var hole = Int(truncatingIfNeeded: entries[slot].hash) & mask
        let wanted = UInt64(slot + 1)
        while buckets[hole] & 0xFFFF_FFFF != wanted { hole = (hole + 1) & mask }
        var j = hole
        while true {
            j = (j + 1) & mask
            let bucket = buckets[j]
            if bucket == 0 { break }
            let home = Int(truncatingIfNeeded: entries[Int(UInt32(truncatingIfNeeded: bucket)) - 1].hash) & mask
            // The bucket at j may fill the hole if its home is not in (hole, j], cyclically.
            if (j &- home) & mask >= (j &- hole) & mask {
                buckets[hole] = bucket
                hole = j
            }
        }
        buckets[hole] = 0
    }

    // MARK: the recency lists

    @inline(__always)
    private func head(_ list: Int) -> Int {
        switch list {
        case Self.waitingList: Int(heads.0)
        case Self.assuredList: Int(heads.1)
        default: Int(heads.2)
        }
    }

    @inline(__always)
    private func tail(_ list: Int) -> Int {
        switch list {
        case Self.waitingList: Int(tails.0)
        case Self.assuredList: Int(tails.1)
        default: Int(tails.2)
        }
    }

    @inline(__always)
    private func setHead(_ list: Int, _ slot: Int32) {
        switch list {
        case Self.waitingList: heads.0 = slot
        case Self.assuredList: heads.1 = slot
        default: heads.2 = slot
        }
    }

    @inline(__always)
    private func setTail(_ list: Int, _ slot: Int32) {
        switch list {
        case Self.waitingList: tails.0 = slot
        case Self.assuredList: tails.1 = slot
        default: tails.2 = slot
        }
    }

    @inline(__always)
    private func unlink(_ slot: Int) {
        let list = Int(entries[slot].list)
        let previous = entries[slot].previous
        let next = entries[slot].next
        if previous >= 0 { entries[Int(previous)].next = next } else { setHead(list, next) }
        if next >= 0 { entries[Int(next)].previous = previous } else { setTail(list, previous) }
        entries[slot].previous = -1
        entries[slot].next = -1
    }

    @inline(__always)
    private func linkAtTail(_ slot: Int) {
        let list = Int(entries[slot].list)
        let last = tail(list)
        entries[slot].previous = Int32(last)
        entries[slot].next = -1
        if last >= 0 { entries[last].next = Int32(slot) } else { setHead(list, Int32(slot)) }
        setTail(list, Int32(slot))
    }
}
