import LinuxIO
import Logging
import Mappings

/// Tunables of the userspace relay. Defaults suit a port publisher: generous, never infinite.
public struct RelayConfig: Sendable {
    /// How long a backend may take to accept a connection before the client is reset.
    public var connectTimeout: Duration = .seconds(5)
    /// How long a half-closed TCP connection (one direction done) may sit with nothing moving.
    public var halfCloseTimeout: Duration = .seconds(3600)
    /// Bytes per pipe (F_SETPIPE_SZ); the kernel may round it or keep its default, and the
    /// per-wake budget follows what it granted (`PipePool.budget`).
    public var pipeSize: Int = RunArguments.defaultPipeSize
    /// Empty pipes a loop keeps for reuse; beyond that they are closed.
    public var pipePoolLimit: Int = 64
    /// Connections accepted per wake-up of a listener, so one busy port cannot starve the rest.
    public var acceptBatch: Int = 64
    /// TCP moves bytes with splice(2) through pipes; off, every stream copies through the
    /// loop's buffer (peek, send, consume), as it does anyway when no pipe can be had.
    public var splice = true
    /// A PROXY protocol header to each backend connection, before any byte of the client's.
    public var proxyProtocol: ProxyProtocol?
    /// A PROXY protocol v2 header (DGRAM) in front of each datagram to the backend.
    public var proxyProtocolUDP = false
    /// How long accepting pauses when the process runs out of descriptors.
    public var descriptorPause: Duration = .milliseconds(100)
    /// How long an assured UDP flow (traffic both ways, going on: see `UDPFlowTable`) lives with
    /// no datagram in either direction: nf_conntrack_udp_timeout_stream's 120 s.
    /// docker-proxy holds every flow 90 s.
    public var udpTimeout: Duration = .seconds(120)
    /// How long a UDP flow that is not assured (no reply, or one exchange: a DNS query) lives
    /// idle: nf_conntrack_udp_timeout's 30 s. Never longer than `udpTimeout`.
    public var udpTimeoutUnreplied: Duration = .seconds(30)
    /// UDP flows per mapping (a listener's group over all loops, both families of an all-address
    /// mapping together, as `UDPFlowBudget` counts them); when full, a new client evicts the
    /// least recently active unassured flow of its loop, else its least recently active one.
    /// docker-proxy has no bound. Each flow holds a socket, so this also bounds the descriptors
    /// one port can take: with 4,096, a flood of spoofed source addresses cannot use up a
    /// 65,536-descriptor limit through a few ports, while real clients active within one
    /// timeout (a busy DNS or game server) still fit. Each loop's table and per-flow arrays take
    /// about 0.5 MiB for 4,096, touched only as flows arrive.
    public var udpMaxFlows: Int = 4096
    /// Answered UDP flows (an exchange that is over: one request, its reply; see `UDPFlowTable`)
    /// a mapping keeps, over all loops; past it the oldest answered flow closes. A stub resolver
    /// takes a new port per query, so under DNS-style load nearly every flow is one of these, and
    /// this, not `udpMaxFlows`, bounds the descriptors it takes. nil: a quarter of `udpMaxFlows`.
    public var udpMaxAnswered: Int?

    /// A TCP connection that moves this many bytes (both directions together) within one
    /// `bulkWindow` is bulk: it moves to a bulk loop (`RelayContext.bulkLoops`), whose thread runs
    /// at a lower scheduling weight, so that it cannot delay the interactive connections of its
    /// loop; back on its own loop after a whole window with less. 0, or no bulk loops: never.
    public var bulkAfter: Int = 1 << 20
    public var bulkWindow: Duration = .milliseconds(100)

    /// The flow table's lifetimes from the two timeouts.
    public var udpLifetimes: UDPFlowLifetimes {
        UDPFlowLifetimes(unreplied: min(udpTimeoutUnreplied, udpTimeout), assured: udpTimeout)
    }

    public init() {}
}

/// Per-loop counters: plain integers, no atomics (one loop, one thread); summed when read.
public struct RelayCounters: Sendable, Equatable {
    public var accepted: UInt64 = 0
    public var active: Int = 0
    public var closed: UInt64 = 0
    public var refused: UInt64 = 0
    public var connectTimeouts: UInt64 = 0
    public var resets: UInt64 = 0
    public var halfCloseTimeouts: UInt64 = 0
    /// Connections of a removed port still open when its drain time was up, and reset.
    public var drainResets: UInt64 = 0
    public var bytesToBackend: UInt64 = 0
    public var bytesToClient: UInt64 = 0
    public var spliceCalls: UInt64 = 0
    /// Times a connection used up its budget with bytes still to move and waited its turn.
    public var yields: UInt64 = 0
    /// Streams that copied without a pipe because none could be had (out of descriptors).
    public var copyFallbacks: UInt64 = 0
    /// recv calls of the small-message copy path.
    public var copyCalls: UInt64 = 0
    /// Copies the target took only in part, the rest left in the pipe.
    public var copyStashes: UInt64 = 0
    public var acceptPauses: UInt64 = 0
    /// TCP connections handed to another loop (to a bulk loop, or back home), counted by the loop
    /// they left.
    public var moves: UInt64 = 0
    /// UDP datagrams and their payload bytes, client → backend and backend → client.
    public var udpDatagramsToBackend: UInt64 = 0
    public var udpDatagramsToClient: UInt64 = 0
    public var udpBytesToBackend: UInt64 = 0
    public var udpBytesToClient: UInt64 = 0
    public var udpFlowsCreated: UInt64 = 0
    public var udpFlowsActive: Int = 0
    public var udpFlowsExpired: UInt64 = 0
    public var udpFlowsEvicted: UInt64 = 0
    /// Answered flows closed beyond `udpMaxAnswered`.
    public var udpAnsweredEvicted: UInt64 = 0
    /// Segmented sends (UDP GSO) to backends, each of several datagrams.
    public var udpSegmentedSends: UInt64 = 0
    /// Flows that became assured (and got the long timeout).
    public var udpFlowsAssured: UInt64 = 0
    /// Errors the backend's side reported (ECONNREFUSED after an ICMP port unreachable,
    /// unreachable hosts): counted, the flow goes on.
    public var udpBackendErrors: UInt64 = 0
    /// Datagrams larger than the buffer (MSG_TRUNC), dropped rather than forwarded cut short.
    public var udpTruncated: UInt64 = 0
    /// Datagrams dropped for other reasons: a full send buffer, no descriptor for a new flow.
    public var udpDropped: UInt64 = 0

    public init() {}

    public static func + (a: RelayCounters, b: RelayCounters) -> RelayCounters {
        var s = RelayCounters()
        s.accepted = a.accepted + b.accepted
        s.active = a.active + b.active
        s.closed = a.closed + b.closed
        s.refused = a.refused + b.refused
        s.connectTimeouts = a.connectTimeouts + b.connectTimeouts
        s.resets = a.resets + b.resets
        s.halfCloseTimeouts = a.halfCloseTimeouts + b.halfCloseTimeouts
        s.drainResets = a.drainResets + b.drainResets
        s.bytesToBackend = a.bytesToBackend + b.bytesToBackend
        s.bytesToClient = a.bytesToClient + b.bytesToClient
        s.spliceCalls = a.spliceCalls + b.spliceCalls
        s.yields = a.yields + b.yields
        s.copyFallbacks = a.copyFallbacks + b.copyFallbacks
        s.copyCalls = a.copyCalls + b.copyCalls
        s.copyStashes = a.copyStashes + b.copyStashes
        s.acceptPauses = a.acceptPauses + b.acceptPauses
        s.moves = a.moves + b.moves
        s.udpDatagramsToBackend = a.udpDatagramsToBackend + b.udpDatagramsToBackend
        s.udpDatagramsToClient = a.udpDatagramsToClient + b.udpDatagramsToClient
        s.udpBytesToBackend = a.udpBytesToBackend + b.udpBytesToBackend
        s.udpBytesToClient = a.udpBytesToClient + b.udpBytesToClient
        s.udpFlowsCreated = a.udpFlowsCreated + b.udpFlowsCreated
        s.udpFlowsActive = a.udpFlowsActive + b.udpFlowsActive
        s.udpFlowsExpired = a.udpFlowsExpired + b.udpFlowsExpired
        s.udpFlowsEvicted = a.udpFlowsEvicted + b.udpFlowsEvicted
        s.udpAnsweredEvicted = a.udpAnsweredEvicted + b.udpAnsweredEvicted
        s.udpSegmentedSends = a.udpSegmentedSends + b.udpSegmentedSends
        s.udpFlowsAssured = a.udpFlowsAssured + b.udpFlowsAssured
        s.udpBackendErrors = a.udpBackendErrors + b.udpBackendErrors
        s.udpTruncated = a.udpTruncated + b.udpTruncated
        s.udpDropped = a.udpDropped + b.udpDropped
        return s
    }
}

/// What every handler of one loop shares: settings, the pipe pool, counters, the logger.
/// Owned by one loop's thread; never touched from another.
public final class RelayContext {
    public let config: RelayConfig
    public let loop: EventLoop
    public var counters = RelayCounters()
    let pipes: PipePool
    let logger: Logger
    /// Copy buffer for the no-pipe fallback; one per loop, never per event.
    let scratch: UnsafeMutableRawBufferPointer
    /// recvmmsg/sendmmsg buffers shared by the loop's UDP relays (it runs one handler at a
    /// time), made when the first one starts: 32 datagrams of up to 64 KiB.
    private(set) lazy var datagrams = DatagramBatch(capacity: 32, bufferSize: 1 << 16)
    /// TCP connections waiting for their backend to answer, and half-closed ones, each against
    /// its timeout.
    private(set) lazy var connecting = TimeoutQueue(
        loop: loop,
        timeout: config.connectTimeout,
        tag: TCPConnection.connectTimerTag
    )
    private(set) lazy var halfClosed = TimeoutQueue(
        loop: loop,
        timeout: config.halfCloseTimeout,
        tag: TCPConnection.halfCloseTimerTag
    )

    /// A bulk loop (`RelayConfig.bulkAfter`): it serves no listener, only connections that moved
    /// to it, and hands them back to their home loops when they go quiet.
    public let isBulk: Bool
    /// The bulk loops this loop's bulk connections move to, in turn; empty: none. Set before the
    /// loops run, then only read: of another loop's context a connection reads the waker only.
    public var bulkLoops: [RelayContext] = []
    private var nextBulk = 0
    /// On a bulk loop: the connections of each mapping that moved here, by their acceptor's box.
    private var arrivals: [ObjectIdentifier: Arrivals] = [:]

    public init(
        loop: EventLoop,
        config: RelayConfig = RelayConfig(),
        logger: Logger = Logger(label: "berth"),
        bulk: Bool = false
    ) {
        self.loop = loop
        self.config = config
        self.logger = logger
        isBulk = bulk
        pipes = PipePool(size: config.pipeSize, limit: config.pipePoolLimit)
        scratch = .allocate(byteCount: 1 << 16, alignment: 16)
    }

    /// Empty pipes the loop's pool keeps for reuse; on the loop's thread.
    package var idlePipes: Int { pipes.idle }
    /// Pipes the loop's pool has made; on the loop's thread.
    package var pipesMade: UInt64 { pipes.created }
    /// Bytes one stream may move per wake-up (`PipePool.budget`).
    package var wakeBudget: Int { pipes.budget }

    deinit { scratch.deallocate() }

    /// Whether its connections may move between loops at all.
    var movesBulk: Bool { config.bulkAfter > 0 && (isBulk || !bulkLoops.isEmpty) }

    func nextBulkLoop() -> RelayContext {
        nextBulk = nextBulk &+ 1
        return bulkLoops[nextBulk % bulkLoops.count]
    }

    /// On a bulk loop: where the connections of `origin`'s mapping count here. Entries whose
    /// mapping is gone (nothing holds its box any more) are dropped first.
    func arrivals(from origin: MappingCounterBox) -> Arrivals {
        arrivals = arrivals.filter { $0.value.origin != nil }
        if let known = arrivals[ObjectIdentifier(origin)], known.origin === origin { return known }
        let made = Arrivals(origin: origin, loop: loop)
        arrivals[ObjectIdentifier(origin)] = made
        return made
    }

    /// On a bulk loop: `origin`'s port was removed. Its connections here drain for `drain` (nil:
    /// they go on untracked), as those on its home loop do.
    func settleArrivals(from origin: MappingCounterBox, drain: Duration?) {
        guard let known = arrivals[ObjectIdentifier(origin)], known.origin === origin else { return }
        if let drain { known.group.drain(for: drain) } else { known.group.release() }
    }

    /// On a bulk loop: per mapping whose connections moved here (`TCPAcceptor.countersID`), what
    /// they counted here; a scrape adds it to the mapping's own.
    public func movedInCounters() -> [(countersID: ObjectIdentifier, counters: MappingCounters)] {
        arrivals.compactMap { key, value in value.origin == nil ? nil : (key, value.mapping.value) }
    }
}

/// The connections of one mapping on a bulk loop: their counters and their group.
final class Arrivals {
    weak var origin: MappingCounterBox?
    let mapping: MappingCounterBox
    let group: ConnectionGroup

    init(origin: MappingCounterBox, loop: EventLoop) {
        self.origin = origin
        mapping = MappingCounterBox(options: origin.options, logger: origin.logger)
        group = ConnectionGroup(loop: loop)
    }
}
