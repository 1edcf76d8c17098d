// The daemon's control socket: a unix stream socket served by an event loop of its own, on a
// thread the server owns (`start`, `stop`), so that a slow or stuck client never touches
// forwarding. Each client sends one request and gets one answer; its buffers are bounded
// (HTTPReader's limits) and it has `clientTimeout` for the whole exchange.
//
// Who may talk to it: the socket file is made mode 0660 (group `--control-group` if given), and
// each peer is checked again with SO_PEERCRED: root, berth's own user, or a member of the
// control group. Anyone else gets 403. Whoever passes may make the daemon listen on host ports
// and connect to any target its policy allows: access to the socket is access to what the
// daemon's capabilities reach.
//
// What a careless or hostile client cannot do:
// - Stall the API with a scrape: `GET /metrics` is rendered on a thread of its own, at most once
//   per `metricsInterval`, and concurrent scrapers share that one rendering (and its bytes).
// - Hold every descriptor: each listener serves at most `maxClients` connections at once; the
//   rest wait in its backlog, and the listener is watched again when one ends.
// - Spin the thread at EMFILE: the listener is level-triggered, so an accept that fails for want
//   of descriptors stops watching it for `descriptorPause` (one log line an episode, with a count
//   at its end). One descriptor is kept in reserve for the control socket: at EMFILE it is given
//   up to accept one client, so an operator can still list and remove ports while the relay's
//   clients hold all the others.
// - Make the daemon delete or chown what is not its own: only a socket file that nobody answers
//   on is replaced, modes are set at bind time and groups without following links, and a
//   directory that others may write is refused (see `prepare`).

import Glibc
import LinuxIO
import Logging
import Mappings

package final class ControlServer {
    package struct Options: Sendable {
        /// Members may use the control socket too (besides root and the daemon's own user).
        package var group: gid_t?
        /// Also a TCP listener here that answers `GET /metrics` to anyone who can reach it
        /// (choose its address accordingly: 127.0.0.1, or a management network).
        package var metrics: SocketAddress?
        /// For one client's whole exchange.
        package var clientTimeout: Duration = .seconds(10)
        /// Connections each listener serves at once.
        package var maxClients = 64
        /// `/metrics` is rendered at most this often; scrapers in between share a rendering.
        package var metricsInterval: Duration = .seconds(1)
        /// How long a listener stops accepting after EMFILE or ENFILE.
        package var descriptorPause: Duration = .milliseconds(250)
        package init() {}
    }

    package let path: String
    private let loop: EventLoop
    private let listener: ControlListener
    private var metricsListener: ControlListener?
    private let metrics: MetricsCache
    private let renderer: MetricsRenderer
    private var thread: LoopThread?
    private let logger: Logger

    /// Makes the socket at `path` (see `prepare`) and the listeners; serves from `start()`.
    /// `render` makes `/metrics`'s body; it runs on the metrics thread (PortService's by default).
    package convenience init(
        path: String,
        service: PortService,
        logger: Logger,
        options: Options = Options()
    ) throws(ControlError) {
        let handover = Handover(service)
        try self.init(path: path, service: service, logger: logger, options: options) {
            handover.value.metricsText()
        }
    }

    package init(
        path: String,
        service: PortService,
        logger: Logger,
        options: Options,
        render: @escaping @Sendable () -> [UInt8]
    ) throws(ControlError) {
        self.path = path
        self.logger = logger
        let socket = try Self.prepare(path, group: options.group)
        do { loop = try EventLoop() } catch { throw ControlError("control socket \(path): \(error)") }
        metrics = MetricsCache(interval: options.metricsInterval)
        let renderer: MetricsRenderer
        do {
            renderer = try MetricsRenderer(render: render, loop: loop, cache: metrics)
        } catch {
            throw ControlError("control socket \(path): \(error)")
        }
        self.renderer = renderer
        // A listener that cannot start ends the start: the metrics thread goes with it.
        var started = false
        defer { if !started { renderer.stop() } }
        let shared = ControlListener.Shared(
            service: service,
            metrics: metrics,
            renderer: renderer,
            logger: logger,
            timeout: options.clientTimeout,
            maxClients: options.maxClients,
            descriptorPause: options.descriptorPause
        )
        listener = ControlListener(
            socket: socket,
            name: "control socket \(path)",
            policy: PeerPolicy(uid: geteuid(), group: options.group),
            shared: shared,
            keepsReserve: true
        )
        do { try listener.start(on: loop) } catch { throw ControlError("control socket \(path): \(error)") }
        if let address = options.metrics {
            let socket = try Self.listenTCP(address)
            let open = ControlListener(
                socket: socket,
                name: "--metrics \(address)",
                policy: nil,
                shared: shared,
                keepsReserve: false,
                metricsOnly: true
            )
            do { try open.start(on: loop) } catch { throw ControlError("--metrics \(address): \(error)") }
            metricsListener = open
        }
        started = true
    }

    private static func listenTCP(_ address: SocketAddress) throws(ControlError) -> Descriptor {
        do {
            return try Socket.tcpListener(address, backlog: 64)
        } catch {
            throw ControlError("--metrics: \(error)")
        }
    }

    /// The socket file at `path`, bound and listening. Its directory is made if missing (mode
    /// 0755, or 0750 and owned by `group`, whatever the umask); an existing one that others may
    /// write is refused (anyone could swap the socket for a link). Something already at `path`:
    /// a socket that nobody answers on within 1 s is a dead daemon's and is replaced; one that
    /// answers, one whose queue stays full, and anything but a socket are refused, untouched.
    static func prepare(_ path: String, group: gid_t?) throws(ControlError) -> Descriptor {
        let directory = path.lastIndex(of: "/").map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        do {
            let made = try FileSystem.makeDirectory(directory, exactMode: group == nil ? 0o755 : 0o750, group: group)
            if !made, try FileSystem.directoryInfo(directory).othersMayWrite {
                throw ControlError(
                    "control socket \(path): its directory \(directory) may be written by anyone: choose a directory of its own, such as /run/berth"
                )
            }
            switch try FileSystem.kind(path) {
            case nil:
                break
            case .socket?:
                switch try UnixSocket.probe(path: path, timeoutSeconds: 1) {
                case .stale: try FileSystem.remove(path)
                case .answers: throw ControlError("another berth daemon answers on \(path)")
                case .silent:
                    throw ControlError("something listens on \(path) and does not answer: left as it is")
                }
            case let kind?:
                let what = kind == .link ? "a symbolic link" : (kind == .directory ? "a directory" : "a file")
                throw ControlError(
                    "\(path) is \(what), not a socket: left as it is; remove it or choose another --control"
                )
            }
            let socket = try UnixSocket.listen(path: path, mode: 0o660)
            if let group { try FileSystem.setGroupOfLink(path, group) }
            return socket
        } catch let error as ControlError {
            throw error
        } catch {
            throw ControlError("control socket \(path): \(error)")
        }
    }

    /// Serves on a thread of the server's own until `stop()`.
    package func start() throws(ControlError) {
        guard thread == nil else { return }
        let handover = Handover(self)
        do {
            thread = try LoopThread(name: "berth-control") {
                do { try handover.value.loop.run() } catch { handover.value.logger.critical("control loop: \(error)") }
            }
        } catch {
            throw ControlError("control socket \(path): \(error)")
        }
    }

    /// Stops serving, waits for both threads, and removes the socket file. From the thread that
    /// called `start`; more calls do nothing.
    package func stop() {
        loop.waker.stop()
        thread?.join()
        thread = nil
        renderer.stop()
        try? FileSystem.remove(path)
    }

    deinit { stop() }
}

extension ControlServer.Options {
    /// What `berth daemon`'s command line asks; a `--control-group` that names no group is an error.
    package init(_ arguments: DaemonArguments) throws(ControlError) {
        self.init()
        if let name = arguments.controlGroup {
            guard let gid = FileSystem.groupID(name) else {
                throw ControlError("--control-group \(quoted(name)): no such group")
            }
            group = gid
        }
        metrics = arguments.metricsAddress.map { SocketAddress(ip: $0.bytes, port: arguments.metricsPort) }
        maxClients = arguments.maxControlClients
        clientTimeout = .milliseconds(Int(arguments.clientTimeout * 1000))
    }
}

/// Who may use the control socket.
struct PeerPolicy {
    let uid: uid_t
    let group: gid_t?

    func allows(_ peer: UnixSocket.Credentials) -> Bool {
        if peer.uid == 0 || peer.uid == uid { return true }
        guard let group else { return false }
        return peer.gid == group || FileSystem.groups(ofProcess: peer.pid).contains(group)
    }
}

final class ControlListener: EventHandler {
    /// What the listeners of one server share.
    struct Shared {
        let service: PortService
        let metrics: MetricsCache
        let renderer: MetricsRenderer
        let logger: Logger
        let timeout: Duration
        let maxClients: Int
        let descriptorPause: Duration
    }

    private let socket: Descriptor
    private let name: String
    /// nil: no peer check (the metrics listener, TCP).
    private let policy: PeerPolicy?
    let shared: Shared
    private let metricsOnly: Bool
    private var id = HandlerID.none
    private weak var loop: EventLoop?
    /// Connections open now.
    private var clients = 0
    /// Not watching the listener: full, or out of descriptors until the timer.
    private var fullPause = false
    private var descriptorPause = false
    /// EMFILE pauses in this episode; 0 when descriptors are not short.
    private var shortPauses = 0
    /// Given up at EMFILE to accept one client; made again when that client is gone.
    private var reserve: Descriptor?
    private let keepsReserve: Bool

    init(
        socket: consuming Descriptor,
        name: String,
        policy: PeerPolicy?,
        shared: Shared,
        keepsReserve: Bool,
        metricsOnly: Bool = false
    ) {
        self.socket = socket
        self.name = name
        self.policy = policy
        self.shared = shared
        self.metricsOnly = metricsOnly
        self.keepsReserve = keepsReserve
    }

    func start(on loop: EventLoop) throws(SyscallError) {
        self.loop = loop
        if keepsReserve { reserve = try Self.makeReserve() }
        id = loop.attach(self)
        try loop.add(socket, .read, for: id, tag: 0)
    }

    /// Any descriptor will do; an unbound datagram socket costs nothing.
    private static func makeReserve() throws(SyscallError) -> Descriptor {
        try Socket.make(family: AF_UNIX, type: Int32(SOCK_DGRAM.rawValue))
    }

    private func refillReserve() {
        if keepsReserve && reserve == nil { reserve = try? Self.makeReserve() }
    }

    private var watching: Bool { !fullPause && !descriptorPause }

    func ready(_ readiness: Readiness, tag: UInt8, loop: EventLoop) {
        for _ in 0..<16 {
            guard watching else { return }
            let client: Descriptor
            do {
                guard let accepted = try Socket.accept(socket) else {
                    endShortage()
                    return
                }
                client = accepted
            } catch {
                switch error.errno {
                case .tooManyOpenFiles, .tooManyOpenFilesInSystem, .noBufferSpace, .noMemory:
                    guard let client = acceptFromReserve() else {
                        pauseForDescriptors(error, loop: loop)
                        return
                    }
                    serve(client, onReserve: true, loop: loop)
                    pauseForDescriptors(error, loop: loop)
                    return
                default:
                    // The client gave up while queued (ECONNABORTED) and the like: it alone.
                    shared.logger.warning("\(name): \(error)")
                    continue
                }
            }
            endShortage()
            serve(client, onReserve: false, loop: loop)
        }
    }

    /// At EMFILE: one client, through the reserve descriptor, if it is still here.
    private func acceptFromReserve() -> Descriptor? {
        guard reserve != nil else { return nil }
        reserve = nil
        return (try? Socket.accept(socket)) ?? nil
    }

    private func serve(_ client: consuming Descriptor, onReserve: Bool, loop: EventLoop) {
        var allowed = true
        var peer: UnixSocket.Credentials?
        if let policy {
            peer = try? UnixSocket.peerCredentials(client)
            allowed = peer.map(policy.allows) ?? false
        }
        clients += 1
        let connection = ControlConnection(client, listener: self, metricsOnly: metricsOnly, peer: peer)
        connection.start(on: loop, refuse: !allowed)
        if clients >= shared.maxClients && watching {
            fullPause = true
            loop.remove(socket)
        }
    }

    /// A connection of this listener has closed, or holds a shim's port from now on (it no
    /// longer counts towards `maxClients`: a shim's connection lasts as long as its port).
    func closed() {
        clients -= 1
        refillReserve()
        guard fullPause, clients < shared.maxClients else { return }
        fullPause = false
        if !descriptorPause { rewatch() }
    }

    private func pauseForDescriptors(_ error: SyscallError, loop: EventLoop) {
        if shortPauses == 0 {
            shared.logger.warning(
                "\(name): accept: \(SyscallError.text(error.errno)); pausing accept for \(shared.descriptorPause) at a time until descriptors are back (raise the open files limit, ulimit -n)"
            )
        }
        shortPauses += 1
        if watching { loop.remove(socket) }
        descriptorPause = true
        loop.schedule(at: loop.now + shared.descriptorPause, for: id, tag: 0)
    }

    private func endShortage() {
        guard shortPauses > 0 else { return }
        shared.logger.notice("\(name): accepting again after \(shortPauses) pauses for descriptors")
        shortPauses = 0
    }

    func timer(tag: UInt8, loop: EventLoop) {
        guard descriptorPause else { return }
        descriptorPause = false
        refillReserve()
        if !fullPause { rewatch() }
    }

    /// Level-triggered: clients that waited are reported at the next wait.
    private func rewatch() {
        guard let loop else { return }
        do { try loop.add(socket, .read, for: id, tag: 0) } catch {
            shared.logger.error("\(name): cannot watch the listener again: \(error)")
        }
    }
}

/// One client: read a request, answer, close.
final class ControlConnection: EventHandler {
    /// Open until `close()`; every call on it goes through `withSocket`.
    private var socket: Descriptor?
    private let listener: ControlListener
    private let reader: HTTPReader
    private let metricsOnly: Bool
    /// The status line and headers, then the body: a `/metrics` body is shared by every scraper
    /// it is sent to, never copied per client.
    private var head: [UInt8] = []
    private var body: [UInt8] = []
    private var sent = 0
    private enum State {
        case reading, waitingForMetrics, writing
        /// A docker-proxy shim's: its port is served while this connection lasts.
        case holding(entry: Int)
    }
    private var state = State.reading
    private var watchingWrite = false
    private var id = HandlerID.none
    private weak var loop: EventLoop?
    /// Who is on the other end (unix socket only).
    private let peer: UnixSocket.Credentials?
    /// A descriptor the peer passed with its request (SCM_RIGHTS): a shim's socket.
    private var passed: Descriptor?
    /// Counted in the listener's clients.
    private var counted = true

    init(_ socket: consuming Descriptor, listener: ControlListener, metricsOnly: Bool, peer: UnixSocket.Credentials?) {
        self.metricsOnly = metricsOnly
        self.listener = listener
        self.peer = peer
        // A scrape has no body to send.
        reader = HTTPReader(maximumBody: metricsOnly ? 0 : HTTPReader.maximumBody)
        self.socket = consume socket
    }

    func start(on loop: EventLoop, refuse: Bool) {
        self.loop = loop
        id = loop.attach(self)
        loop.schedule(at: loop.now + listener.shared.timeout, for: id, tag: 0)
        if refuse {
            answer(.error(403, "permission denied: the control socket takes root, berth's own user or --control-group"))
            return
        }
        do { try withSocket { (s) throws(SyscallError) in try loop.add(s, .read, for: id, tag: 0) } } catch { close() }
    }

    /// `body` with the socket, while it is open (nil once closed).
    private func withSocket<R>(_ body: (borrowing Descriptor) throws(SyscallError) -> R) throws(SyscallError) -> R? {
        switch socket {
        case .some(let s): return try body(s)
        case .none: return nil
        }
    }

    func ready(_ readiness: Readiness, tag: UInt8, loop: EventLoop) {
        switch state {
        case .writing: return flush()
        case .waitingForMetrics: return
        case .holding(let entry): return holdingReady(entry)
        case .reading: break
        }
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let got: Int
            do {
                switch try buffer.withUnsafeMutableBytes({ (raw) throws(SyscallError) -> IOResult<Int>? in
                    guard let base = raw.baseAddress else { return .done(0) }
                    return try withSocket { (fd) throws(SyscallError) in
                        guard peer != nil else { return try Socket.receive(fd, into: base, count: raw.count) }
                        // One passed descriptor per connection; a second one is closed with `received`.
                        return try UnixSocket.receive(fd, into: base, count: raw.count) {
                            (received: consuming Descriptor) in
                            if passed == nil { passed = .some(received) }
                        }
                    }
                }) {
                case .done(let n)?: got = n
                case .wouldBlock?, nil: return
                }
            } catch {
                close()
                return
            }
            switch buffer.withUnsafeBytes({ reader.feed(UnsafeRawBufferPointer(rebasing: $0[0..<got])) }) {
            case .needMore:
                if got == 0 { return close() }
                continue
            case .request(let request):
                route(request, loop: loop)
                return
            case .bad(let status, let message):
                answer(.error(status, message))
                return
            case .response:
                return close()
            }
        }
    }

    private func route(_ request: HTTPRequest, loop: EventLoop) {
        if request.path == "/metrics" {
            guard request.method == "GET" else {
                return answer(.error(405, "\(plain(request.method)) is not allowed on /metrics"))
            }
            // Nothing more to read; the answer comes when a rendering is ready.
            state = .waitingForMetrics
            _ = try? withSocket { loop.remove($0) }
            let shared = listener.shared
            if shared.metrics.request(now: loop.now, deliver: { [weak self] body in self?.answerMetrics(body) }) {
                shared.renderer.render()
            }
            return
        }
        if metricsOnly { return answer(.error(404, "only /metrics is served here")) }
        if request.path == "/v1/berth/shims" && request.method == "POST" { return adoptShim(request, loop: loop) }
        answer(listener.shared.service.handle(request))
    }

    /// A docker-proxy shim hands over its socket: the answer is written, then the connection
    /// stays, and the port with it, until the shim closes it (it stopped, was killed, or gave up).
    private func adoptShim(_ request: HTTPRequest, loop: EventLoop) {
        let (response, entry) = listener.shared.service.adoptShim(request, socket: passed.take(), pid: peer?.pid ?? 0)
        guard let entry else { return answer(response) }
        state = .holding(entry: entry)
        if counted {
            counted = false
            listener.closed()
        }
        head = response.serialized
        body = []
        sent = 0
        // Small: it fits the socket's buffer; a shim that does not read it is closed.
        let written = head.withUnsafeBytes { raw -> IOResult<Int>? in
            guard let base = raw.baseAddress else { return nil }
            return try? withSocket { (fd) throws(SyscallError) in try Socket.send(fd, from: base, count: raw.count) }
                ?? nil
        }
        guard case .done(head.count)? = written else { return close() }
        // Still watched for reading: the end of file is the shim's goodbye.
    }

    private func holdingReady(_ entry: Int) {
        var byte: UInt8 = 0
        let result =
            (try? withSocket { (fd) throws(SyscallError) in try Socket.receive(fd, into: &byte, count: 1) }) ?? nil
        if case .wouldBlock? = result { return }
        // End of file, an error, or bytes a shim never sends: the port goes.
        listener.shared.service.shimGone(entry)
        close()
    }

    private func answerMetrics(_ text: [UInt8]) {
        answer(
            HTTPResponse(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: []),
            body: text
        )
    }

    func timer(tag: UInt8, loop: EventLoop) {
        switch state {
        case .reading: answer(.error(408, "no whole request within the time allowed"))
        case .holding: break
        case .waitingForMetrics, .writing: close()
        }
    }

    func teardown(loop: EventLoop) { close() }

    /// `response`'s head, with `body` (shared) or the response's own.
    private func answer(_ response: HTTPResponse, body shared: [UInt8]? = nil) {
        guard socket != nil else { return }
        if case .writing = state { return }
        state = .writing
        let bodyBytes = shared ?? response.body
        head = response.head(contentLength: bodyBytes.count)
        body = bodyBytes
        sent = 0
        if let loop { _ = try? withSocket { loop.remove($0) } }
        flush()
    }

    private func flush() {
        guard socket != nil else { return }
        let total = head.count + body.count
        while sent < total {
            let inHead = sent < head.count
            let result = (inHead ? head : body).withUnsafeBytes { raw -> IOResult<Int>? in
                guard let base = raw.baseAddress else { return nil }
                let offset = inHead ? sent : sent - head.count
                return try? withSocket { (fd) throws(SyscallError) in
                    try Socket.send(fd, from: base + offset, count: raw.count - offset)
                } ?? nil
            }
            switch result {
            case .done(let n)?: sent += n
            case .wouldBlock?:
                if let loop, !watchingWrite {
                    watchingWrite = true
                    do { try withSocket { (s) throws(SyscallError) in try loop.add(s, .write, for: id, tag: 0) } } catch
                    {
                        return close()
                    }
                }
                return
            case nil:
                return close()
            }
        }
        close()
    }

    private func close() {
        guard socket != nil else { return }
        loop?.detach(id)
        socket = nil
        body = []
        passed = nil
        if counted { listener.closed() }
    }
}
