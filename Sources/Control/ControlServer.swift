// The daemon's control socket: a unix stream socket served by an event loop of its own, on its
// own thread, so that a slow or stuck client never touches forwarding. Each client sends one
// request and gets one answer; its buffers are bounded (HTTPReader's limits) and it has
// `clientTimeout` for the whole exchange.
//
// Who may talk to it: the socket file is mode 0660 (group `--control-group` if given), and
// each peer is checked again with SO_PEERCRED: root, berth's own user, or a member of the
// control group. Anyone else gets 403.

import Glibc
import LinuxIO
import Logging

public struct ControlError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public final class ControlServer {
    public let path: String
    private let loop: EventLoop
    private let listener: ControlListener

    private var metricsListener: ControlListener?

    /// Makes the socket at `path` (its directory too, 0755, if missing). A socket file left by
    /// a daemon that is gone is replaced; one that answers is another daemon's: an error.
    /// With `metrics`, also a TCP listener there that answers `GET /metrics` to anyone who can
    /// reach it (choose its address accordingly: 127.0.0.1, or a management network).
    public init(
        path: String,
        group: gid_t?,
        service: PortService,
        logger: Logger,
        metrics: SocketAddress? = nil,
        clientTimeout: Duration = .seconds(10)
    ) throws(ControlError) {
        self.path = path
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            do { try FileSystem.makeDirectory(String(path[..<slash]), mode: 0o755) } catch {
                throw ControlError("\(error)")
            }
        }
        if FileSystem.exists(path) {
            if (try? UnixSocket.connect(path: path)) != nil {
                throw ControlError("another berth daemon answers on \(path)")
            }
            do { try FileSystem.remove(path) } catch { throw ControlError("\(error)") }
        }
        let socket = try Self.listen(path, group: group)
        do { loop = try EventLoop() } catch { throw ControlError("control socket \(path): \(error)") }
        let policy = PeerPolicy(uid: geteuid(), group: group)
        listener = ControlListener(
            socket: socket,
            policy: policy,
            service: service,
            logger: logger,
            timeout: clientTimeout
        )
        do { try listener.start(on: loop) } catch { throw ControlError("control socket \(path): \(error)") }
        if let metrics {
            let socket = try Self.listenTCP(metrics)
            let open = ControlListener(
                socket: socket,
                policy: nil,
                service: service,
                logger: logger,
                timeout: clientTimeout,
                metricsOnly: true
            )
            do { try open.start(on: loop) } catch { throw ControlError("--metrics \(metrics): \(error)") }
            metricsListener = open
        }
    }

    private static func listenTCP(_ address: SocketAddress) throws(ControlError) -> Descriptor {
        do {
            let socket = try Socket.make(family: address.family, type: Int32(SOCK_STREAM.rawValue))
            try Socket.setOption(socket.raw, SOL_SOCKET, SO_REUSEADDR, 1)
            try Socket.bind(socket.raw, address)
            try Socket.listen(socket.raw, backlog: 64)
            return socket
        } catch {
            throw ControlError("--metrics: \(error)")
        }
    }

    private static func listen(_ path: String, group: gid_t?) throws(ControlError) -> Descriptor {
        do {
            let socket = try UnixSocket.listen(path: path)
            try FileSystem.setMode(path, 0o660)
            if let group { try FileSystem.setGroup(path, group) }
            return socket
        } catch {
            throw ControlError("control socket \(path): \(error)")
        }
    }

    /// Serves until `stop()`, on the calling thread; removes the socket file when it returns.
    public func run() throws(ControlError) {
        defer { try? FileSystem.remove(path) }
        do { try loop.run() } catch { throw ControlError("control loop: \(error)") }
    }

    /// From any thread.
    public func stop() { loop.waker.stop() }

    /// A stop-only handle for other threads.
    public var waker: LoopWaker { loop.waker }
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
    private let socket: Descriptor
    /// nil: no peer check (the metrics listener, TCP).
    private let policy: PeerPolicy?
    private let service: PortService
    private let logger: Logger
    private let timeout: Duration
    private let metricsOnly: Bool
    private var id = HandlerID.none

    init(
        socket: consuming Descriptor,
        policy: PeerPolicy?,
        service: PortService,
        logger: Logger,
        timeout: Duration,
        metricsOnly: Bool = false
    ) {
        self.socket = socket
        self.policy = policy
        self.service = service
        self.logger = logger
        self.timeout = timeout
        self.metricsOnly = metricsOnly
    }

    func start(on loop: EventLoop) throws(SyscallError) {
        id = loop.attach(self)
        try loop.add(socket.raw, .read, for: id, tag: 0)
    }

    func ready(_ readiness: Readiness, tag: UInt8, loop: EventLoop) {
        for _ in 0..<16 {
            let client: Descriptor
            do {
                guard let fd = try Socket.accept(socket.raw) else { return }
                client = Descriptor(taking: fd)
            } catch {
                logger.warning("control socket: \(error)")
                return
            }
            var allowed = true
            if let policy { allowed = (try? UnixSocket.peerCredentials(client.raw)).map(policy.allows) ?? false }
            let connection = ControlConnection(client, service: service, logger: logger, metricsOnly: metricsOnly)
            connection.start(on: loop, timeout: timeout, refuse: !allowed)
        }
    }
}

/// One client: read a request, answer, close.
final class ControlConnection: EventHandler {
    private var socket: Descriptor?
    private let fd: Int32
    private let service: PortService
    private let logger: Logger
    private let reader = HTTPReader()
    private let metricsOnly: Bool
    private var output: [UInt8] = []
    private var sent = 0
    private var id = HandlerID.none
    private weak var loop: EventLoop?

    init(_ socket: consuming Descriptor, service: PortService, logger: Logger, metricsOnly: Bool) {
        self.metricsOnly = metricsOnly
        fd = socket.raw
        self.socket = consume socket
        self.service = service
        self.logger = logger
    }

    func start(on loop: EventLoop, timeout: Duration, refuse: Bool) {
        self.loop = loop
        id = loop.attach(self)
        loop.schedule(at: loop.now + timeout, for: id, tag: 0)
        if refuse {
            answer(.error(403, "permission denied: the control socket takes root, berth's own user or --control-group"))
            return
        }
        do { try loop.add(fd, .read, for: id, tag: 0) } catch { close() }
    }

    func ready(_ readiness: Readiness, tag: UInt8, loop: EventLoop) {
        if !output.isEmpty {
            flush()
            return
        }
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let got: Int
            do {
                switch try buffer.withUnsafeMutableBytes({ (raw) throws(SyscallError) -> IOResult<Int> in
                    guard let base = raw.baseAddress else { return .done(0) }
                    return try Socket.receive(fd, into: base, count: raw.count)
                }) {
                case .done(let n): got = n
                case .wouldBlock: return
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
                answer(metricsOnly ? service.handleMetricsOnly(request) : service.handle(request))
                return
            case .bad(let status, let message):
                answer(.error(status, message))
                return
            case .response:
                return close()
            }
        }
    }

    func timer(tag: UInt8, loop: EventLoop) {
        if output.isEmpty { answer(.error(408, "no whole request within the time allowed")) } else { close() }
    }

    func teardown(loop: EventLoop) { close() }

    private func answer(_ response: HTTPResponse) {
        output = response.serialized
        sent = 0
        loop?.remove(fd)
        flush()
    }

    private func flush() {
        while sent < output.count {
            let result = output.withUnsafeBytes { raw -> IOResult<Int>? in
                guard let base = raw.baseAddress else { return nil }
                return try? Socket.send(fd, from: base + sent, count: raw.count - sent)
            }
            switch result {
            case .done(let n)?: sent += n
            case .wouldBlock?:
                if let loop { try? loop.add(fd, .write, for: id, tag: 0) }
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
    }
}
