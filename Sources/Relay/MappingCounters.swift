import Logging
import Mappings

/// Counters of one served mapping on one loop: one `TCPAcceptor` (and the connections it let
/// in) or one `UDPRelay`. Plain integers, written only on the loop's thread, no atomics; a
/// scrape copies them on that thread (`Publisher.metrics()`) and sums them over the loops.
/// The one counter set: a loop's totals are the sum of its mappings' (`RelayContext.counters`).
public struct MappingCounters: Sendable, Equatable {
    // TCP
    package var accepted: UInt64 = 0
    package var active: Int = 0
    public var closed: UInt64 = 0
    /// The backend refused (or its socket could not be made): the client was reset.
    public var refused: UInt64 = 0
    /// Reset after the data, because one side reset.
    package var resets: UInt64 = 0
    package var connectTimeouts: UInt64 = 0
    package var halfCloseTimeouts: UInt64 = 0
    /// Still open when a removed port's drain time was up, and reset.
    package var drainResets: UInt64 = 0
    /// Open on a bulk loop now (see `RelayConfig.bulkAfter`).
    package var bulk: Int = 0
    /// Handed from one loop to another: to a bulk loop or back.
    package var moves: UInt64 = 0
    // Both: TCP bytes spliced or copied, UDP payload bytes.
    public var bytesToBackend: UInt64 = 0
    package var bytesToClient: UInt64 = 0
    // UDP
    public var datagramsToBackend: UInt64 = 0
    public var datagramsToClient: UInt64 = 0
    package var flowsActive: Int = 0
    package var flowsCreated: UInt64 = 0
    package var flowsExpired: UInt64 = 0
    package var flowsEvicted: UInt64 = 0
    /// Answered flows closed beyond `--udp-max-answered`.
    package var answeredEvicted: UInt64 = 0
    /// Segmented sends (UDP GSO) to backends, each of several datagrams.
    package var segmentedSends: UInt64 = 0
    /// Flows that became assured: traffic both ways past 2 s, the long timeout.
    package var flowsAssured: UInt64 = 0
    /// Datagrams larger than the buffer (MSG_TRUNC), dropped.
    package var truncated: UInt64 = 0
    /// Datagrams dropped for other reasons (full send buffer, no descriptor for a flow).
    package var dropped: UInt64 = 0
    /// Errors the backend's side reported (ICMP port unreachable): counted, the flow goes on.
    package var backendErrors: UInt64 = 0
    // How the TCP relay worked, for tests and benchmarks (not exported as metrics).
    public var spliceCalls: UInt64 = 0
    /// Times a connection used up its budget with bytes still to move and waited its turn.
    public var yields: UInt64 = 0
    /// Streams that copied without a pipe because none could be had (out of descriptors).
    package var copyFallbacks: UInt64 = 0
    /// recv calls of the small-message copy path.
    package var copyCalls: UInt64 = 0
    /// Copies the target took only in part, the rest left in the pipe.
    package var copyStashes: UInt64 = 0
    /// Times the acceptor stopped accepting for want of descriptors.
    package var acceptPauses: UInt64 = 0

    package init() {}

    package static func + (a: MappingCounters, b: MappingCounters) -> MappingCounters {
        var s = a
        s += b
        return s
    }

    package static func += (s: inout MappingCounters, b: MappingCounters) {
        s.accepted &+= b.accepted
        s.active += b.active
        s.closed &+= b.closed
        s.refused &+= b.refused
        s.resets &+= b.resets
        s.connectTimeouts &+= b.connectTimeouts
        s.halfCloseTimeouts &+= b.halfCloseTimeouts
        s.drainResets &+= b.drainResets
        s.bulk += b.bulk
        s.moves &+= b.moves
        s.bytesToBackend &+= b.bytesToBackend
        s.bytesToClient &+= b.bytesToClient
        s.datagramsToBackend &+= b.datagramsToBackend
        s.datagramsToClient &+= b.datagramsToClient
        s.flowsActive += b.flowsActive
        s.flowsCreated &+= b.flowsCreated
        s.flowsExpired &+= b.flowsExpired
        s.flowsEvicted &+= b.flowsEvicted
        s.answeredEvicted &+= b.answeredEvicted
        s.segmentedSends &+= b.segmentedSends
        s.flowsAssured &+= b.flowsAssured
        s.truncated &+= b.truncated
        s.dropped &+= b.dropped
        s.backendErrors &+= b.backendErrors
        s.spliceCalls &+= b.spliceCalls
        s.yields &+= b.yields
        s.copyFallbacks &+= b.copyFallbacks
        s.copyCalls &+= b.copyCalls
        s.copyStashes &+= b.copyStashes
        s.acceptPauses &+= b.acceptPauses
    }
}

/// A `MappingCounters` at a fixed address, shared by an acceptor and its connections (each holds
/// the box). Written through `pointer`, a `let`: no exclusivity check, no retain per count.
/// A connection that outlives its acceptor (stopped, draining) keeps the box alive. Made by the
/// loop's `RelayContext.counterBox`, which holds every box of its loop until nothing else does.
package final class MappingCounterBox {
    let pointer: UnsafeMutablePointer<MappingCounters>
    /// The mapping's own settings and logger (its lines carry `mapping=...`), for the acceptor or
    /// relay and every connection it let in: one reference a connection holds anyway.
    let options: MappingOptions
    let logger: Logger

    init(options: MappingOptions, logger: Logger) {
        pointer = .allocate(capacity: 1)
        pointer.initialize(to: MappingCounters())
        self.options = options
        var logger = logger
        if let name = options.name { logger[metadataKey: "mapping"] = "\(name)" }
        self.logger = logger
    }

    deinit {
        pointer.deinitialize(count: 1)
        pointer.deallocate()
    }

    /// A copy; on the loop's thread only.
    package var value: MappingCounters { pointer.pointee }
}

/// What one mapping asks of the relay beyond the loop's settings.
public struct MappingOptions: Sendable, Equatable {
    /// A PROXY protocol header to each backend connection, before any client byte.
    public var proxyProtocol: ProxyProtocol?
    /// A v2 header in front of each datagram to the backend.
    package var proxyProtocolUDP = false
    /// How log lines name the mapping (`mapping=...`); nil: they do not.
    package var name: String?

    package init(proxyProtocol: ProxyProtocol? = nil, proxyProtocolUDP: Bool = false, name: String? = nil) {
        self.proxyProtocol = proxyProtocol
        self.proxyProtocolUDP = proxyProtocolUDP
        self.name = name
    }
}

/// Every counter box of one loop, for the loop's totals. A box that only this list still holds
/// (its acceptor or relay and all their connections are gone) is folded into `retired` and let
/// go, so a daemon that adds and removes ports keeps one box per live mapping, not one per
/// mapping it ever served. On the loop's thread only.
struct CounterBoxes {
    private var boxes: [MappingCounterBox] = []
    private var retired = MappingCounters()

    mutating func add(_ box: MappingCounterBox) {
        fold()
        boxes.append(box)
    }

    /// The loop's totals: its live mappings' counters and those of mappings gone.
    mutating func total() -> MappingCounters {
        fold()
        return boxes.reduce(retired) { $0 + $1.value }
    }

    private mutating func fold() {
        var i = 0
        while i < boxes.count {
            if isKnownUniquelyReferenced(&boxes[i]) {
                retired += boxes[i].value
                boxes.swapAt(i, boxes.count - 1)
                boxes.removeLast()
            } else {
                i += 1
            }
        }
    }
}
