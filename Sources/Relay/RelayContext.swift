import LinuxIO
import Logging
import Mappings

/// Tunables of the userspace relay. Defaults suit a port publisher: generous, never infinite.
public struct RelayConfig: Sendable {
    /// How long a backend may take to accept a connection before the client is reset.
    package var connectTimeout: Duration = .seconds(5)
    /// How long a half-closed TCP connection (one direction done) may sit with nothing moving.
    package var halfCloseTimeout: Duration = .seconds(3600)
    /// Bytes per pipe (F_SETPIPE_SZ); the kernel may round it or keep its default, and the
    /// per-wake budget follows what it granted (`PipePool.budget`).
    package var pipeSize: Int = RunArguments.defaultPipeSize
    /// Empty pipes a loop keeps for reuse; beyond that they are closed.
    package var pipePoolLimit: Int = 64
    /// Connections accepted per wake-up of a listener, so one busy port cannot starve the rest.
    package var acceptBatch: Int = 64
    /// TCP moves bytes with splice(2) through pipes; off, every stream copies through the
    /// loop's buffer (peek, send, consume), as it does anyway when no pipe can be had.
    package var splice = true
    /// A PROXY protocol header to each backend connection, before any byte of the client's.
    package var proxyProtocol: ProxyProtocol?
    /// A PROXY protocol v2 header (DGRAM) in front of each datagram to the backend.
    package var proxyProtocolUDP = false
    /// How long accepting pauses when the process runs out of descriptors.
    package var descriptorPause: Duration = .milliseconds(100)
    /// How long an assured UDP flow (traffic both ways, going on: see `UDPFlowTable`) lives with
    /// no datagram in either direction: nf_conntrack_udp_timeout_stream's 120 s.
    /// docker-proxy holds every flow 90 s.
    package var udpTimeout: Duration = .seconds(120)
    /// How long a UDP flow that is not assured (no reply, or one exchange: a DNS query) lives
    /// idle: nf_conntrack_udp_timeout's 30 s. Never longer than `udpTimeout`.
    package var udpTimeoutUnreplied: Duration = .seconds(30)
    /// UDP flows per mapping (a listener's group over all loops, both families of an all-address
    /// mapping together, as `UDPFlowBudget` counts them); when full, a new client evicts the
    /// least recently active unassured flow of its loop, else its least recently active one.
    /// docker-proxy has no bound. Each flow holds a socket, so this also bounds the descriptors
    /// one port can take: with 4,096, a flood of spoofed source addresses cannot use up a
    /// 65,536-descriptor limit through a few ports, while real clients active within one
    /// timeout (a busy DNS or game server) still fit. Each loop's table and per-flow arrays take
    /// about 0.5 MiB for 4,096, touched only as flows arrive.
    package var udpMaxFlows: Int = 4096
    /// Answered UDP flows (an exchange that is over: one request, its reply; see `UDPFlowTable`)
    /// a mapping keeps, over all loops; past it the oldest answered flow closes. A stub resolver
    /// takes a new port per query, so under DNS-style load nearly every flow is one of these, and
    /// this, not `udpMaxFlows`, bounds the descriptors it takes. nil: a quarter of `udpMaxFlows`.
    package var udpMaxAnswered: Int?

    /// A TCP connection that moves this many bytes (both directions together) within one
    /// `bulkWindow` is bulk: it moves to a bulk loop (`RelayContext.bulkLoops`), whose thread runs
    /// at a lower scheduling weight, so that it cannot delay the interactive connections of its
    /// loop; back on its own loop after a whole window with less. 0, or no bulk loops: never.
    package var bulkAfter: Int = 1 << 20
    package var bulkWindow: Duration = .milliseconds(100)

    /// The flow table's lifetimes from the two timeouts.
    package var udpLifetimes: UDPFlowLifetimes {
        UDPFlowLifetimes(unreplied: min(udpTimeoutUnreplied, udpTimeout), assured: udpTimeout)
    }

    public init() {}
}

/// What every handler of one loop shares: settings, the pipe pool, counters, the logger.
/// Owned by one loop's thread; never touched from another.
public final class RelayContext {
    package let config: RelayConfig
    package let loop: EventLoop
    /// The counters of every mapping served here (`counterBox`), summed by `counters()`.
    private var boxes = CounterBoxes()
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
    package let isBulk: Bool
    /// The bulk loops this loop's bulk connections move to, in turn; empty: none. Set before the
    /// loops run, then only read: of another loop's context a connection reads the waker only.
    package var bulkLoops: [RelayContext] = []
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
    package var pipesCreated: UInt64 { pipes.created }
    /// Bytes one stream may move per wake-up (`PipePool.budget`).
    package var wakeBudget: Int { pipes.budget }

    deinit { scratch.deallocate() }

    /// A new mapping's counters on this loop.
    func counterBox(options: MappingOptions, logger: Logger) -> MappingCounterBox {
        let box = MappingCounterBox(options: options, logger: logger)
        boxes.add(box)
        return box
    }

    /// This loop's totals over every mapping it served, those removed included; on its thread.
    /// A sum over the loop's mappings, for a test, a benchmark or the end of a run: not per event.
    public var counters: MappingCounters { boxes.total() }

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
        let made = Arrivals(origin: origin, context: self)
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
    package func movedInCounters() -> [(countersID: ObjectIdentifier, counters: MappingCounters)] {
        arrivals.compactMap { key, value in value.origin == nil ? nil : (key, value.mapping.value) }
    }
}

/// The connections of one mapping on a bulk loop: their counters and their group.
final class Arrivals {
    weak var origin: MappingCounterBox?
    let mapping: MappingCounterBox
    let group: ConnectionGroup

    init(origin: MappingCounterBox, context: RelayContext) {
        self.origin = origin
        mapping = context.counterBox(options: origin.options, logger: origin.logger)
        group = ConnectionGroup(loop: context.loop)
    }
}
