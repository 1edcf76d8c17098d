import Logging
import Mappings

/// Counters of one served mapping on one loop: one `TCPAcceptor` (and the connections it let
/// in) or one `UDPRelay`. Plain integers, written only on the loop's thread, no atomics; a
/// scrape copies them on that thread (`Publisher.metrics()`) and sums them over the loops.
/// The loop's `RelayCounters` still count the same events for the whole loop.
public struct MappingCounters: Sendable, Equatable {
    // TCP
    public var accepted: UInt64 = 0
    public var active: Int = 0
    public var closed: UInt64 = 0
    /// The backend refused (or its socket could not be made): the client was reset.
    public var refused: UInt64 = 0
    /// Reset after the data, because one side reset.
    public var resets: UInt64 = 0
    public var connectTimeouts: UInt64 = 0
    public var halfCloseTimeouts: UInt64 = 0
    /// Still open when a removed port's drain time was up, and reset.
    public var drainResets: UInt64 = 0
    /// Open on a bulk loop now (see `RelayConfig.bulkAfter`).
    public var bulk: Int = 0
    /// Handed from one loop to another: to a bulk loop or back.
    public var moves: UInt64 = 0
    // Both: TCP bytes spliced or copied, UDP payload bytes.
    public var bytesToBackend: UInt64 = 0
    public var bytesToClient: UInt64 = 0
    // UDP
    public var datagramsToBackend: UInt64 = 0
    public var datagramsToClient: UInt64 = 0
    public var flowsActive: Int = 0
    public var flowsCreated: UInt64 = 0
    public var flowsExpired: UInt64 = 0
    public var flowsEvicted: UInt64 = 0
    /// Answered flows closed beyond `--udp-max-answered`.
    public var answeredEvicted: UInt64 = 0
    /// Flows that became assured: traffic both ways past 2 s, the long timeout.
    public var flowsAssured: UInt64 = 0
    /// Datagrams larger than the buffer (MSG_TRUNC), dropped.
    public var truncated: UInt64 = 0
    /// Datagrams dropped for other reasons (full send buffer, no descriptor for a flow).
    public var dropped: UInt64 = 0
    /// Errors the backend's side reported (ICMP port unreachable): counted, the flow goes on.
    public var backendErrors: UInt64 = 0

    public init() {}

    public static func + (a: MappingCounters, b: MappingCounters) -> MappingCounters {
        var s = a
        s += b
        return s
    }

    public static func += (s: inout MappingCounters, b: MappingCounters) {
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
        s.flowsAssured &+= b.flowsAssured
        s.truncated &+= b.truncated
        s.dropped &+= b.dropped
        s.backendErrors &+= b.backendErrors
    }
}

/// A `MappingCounters` at a fixed address, shared by an acceptor and its connections (each holds
/// the box). Written through `pointer`, a `let`: no exclusivity check, no retain per count.
/// A connection that outlives its acceptor (stopped, draining) keeps the box alive.
public final class MappingCounterBox {
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
    public var value: MappingCounters { pointer.pointee }
}

/// What one mapping asks of the relay beyond the loop's settings.
public struct MappingOptions: Sendable, Equatable {
    /// A PROXY protocol header to each backend connection, before any client byte.
    public var proxyProtocol: ProxyProtocol?
    /// A v2 header in front of each datagram to the backend.
    public var proxyProtocolUDP = false
    /// How log lines name the mapping (`mapping=...`); nil: they do not.
    public var name: String?

    public init(proxyProtocol: ProxyProtocol? = nil, proxyProtocolUDP: Bool = false, name: String? = nil) {
        self.proxyProtocol = proxyProtocol
        self.proxyProtocolUDP = proxyProtocolUDP
        self.name = name
    }
}
