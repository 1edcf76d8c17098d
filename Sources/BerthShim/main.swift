// berth-proxy: the docker-proxy drop-in at a range's cost. dockerd starts one userland proxy per
// port, protocol and address family; as berth itself each costs a full Swift process (~700 KiB of
// private memory). This one is Embedded Swift linked with cc, no Swift runtime, and touches little:
//
// 1. It reads docker-proxy's flags (-proto -host-ip -host-port -container-ip -container-port
//    [-use-listen-fd]), asks the berth daemon on its control socket ($BERTH_CONTROL, or
//    /run/berth/berth.sock), binds the host side itself (or takes fd 4), and hands the socket over
//    (SCM_RIGHTS, `POST /v1/berth/shims`). Once the daemon answers 201 it writes "0\n" on fd 3, as
//    dockerd expects, and waits, keeping its own copy of the socket and its connection.
// 2. SIGINT or SIGTERM (dockerd stopping the port): it half-closes the connection, the daemon
//    removes the port (stops accepting at once, drains what is open) and closes; then exit 0.
//    Killed, its connection ends and the daemon removes the port the same way.
// 3. The daemon goes away: the shim reconnects every 50 ms to 500 ms and hands its socket over
//    again. Meanwhile clients wait in the listen backlog (the shim's copy keeps it), none is
//    refused. After $BERTH_PROXY_FALLBACK seconds (60) without a daemon it execs berth, which
//    serves the socket itself as the standalone drop-in (-use-listen-fd, fd 4).
// 4. Anything else (no daemon at the start, a flag it does not know, -h, -v, a bind that fails,
//    a daemon that refuses): it execs berth with the same arguments and descriptors untouched,
//    so the output and every error are the standalone drop-in's, unchanged.
//
// berth is found as $BERTH_BINARY, or `berth` beside this program.

import CBerthShim

struct Flags {
    var proto: [UInt8] = Array("tcp".utf8)
    var hostIP: [UInt8] = []
    var hostPort = 0
    var containerIP: [UInt8] = []
    var containerPort = 0
    var useListenFD = false
}

/// Go's `flag` syntax as dockerd writes it: `-name value`, `-name=value`, `--name`; nil for
/// anything else, which berth then reads (and reports) itself.
func parse(_ args: [[UInt8]]) -> Flags? {
    var flags = Flags()
    var i = 0
    while i < args.count {
        var arg = args[i]
        i += 1
        guard arg.count > 1, arg[0] == UInt8(ascii: "-") else { return nil }
        arg.removeFirst()
        if arg.first == UInt8(ascii: "-") { arg.removeFirst() }
        var value: [UInt8]?
        if let equals = arg.firstIndex(of: UInt8(ascii: "=")) {
            value = Array(arg[(equals + 1)...])
            arg = Array(arg[..<equals])
        }
        if arg == Array("use-listen-fd".utf8) {
            guard value == nil || value! == Array("true".utf8) else { return nil }
            flags.useListenFD = true
            continue
        }
        if value == nil {
            guard i < args.count else { return nil }
            value = args[i]
            i += 1
        }
        guard let text = value else { return nil }
        switch arg {
        case Array("proto".utf8): flags.proto = text
        case Array("host-ip".utf8): flags.hostIP = text
        case Array("container-ip".utf8): flags.containerIP = text
        case Array("host-port".utf8):
            guard let n = number(text) else { return nil }
            flags.hostPort = n
        case Array("container-port".utf8):
            guard let n = number(text) else { return nil }
            flags.containerPort = n
        default: return nil
        }
    }
    let known = flags.proto == Array("tcp".utf8) || flags.proto == Array("udp".utf8)
    // Port 0 (ephemeral) and missing addresses: berth's own handling.
    guard known, !flags.hostIP.isEmpty, !flags.containerIP.isEmpty, flags.hostPort > 0, flags.containerPort > 0
    else { return nil }
    return flags
}

func number(_ text: [UInt8]) -> Int? {
    guard !text.isEmpty, text.count <= 5 else { return nil }
    var n = 0
    for b in text {
        guard b >= 48 && b <= 57 else { return nil }
        n = n * 10 + Int(b - 48)
    }
    return n <= 65535 ? n : nil
}

func isV6(_ ip: [UInt8]) -> Bool { ip.contains(UInt8(ascii: ":")) }

/// A C string of `bytes`, for the call in `body`.
func withCString<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
    var z = bytes
    z.append(0)
    return z.withUnsafeBufferPointer { buffer in
        buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: z.count) { body($0) }
    }
}

func environment(_ name: StaticString) -> [UInt8]? {
    guard let value = getenv(UnsafeRawPointer(name.utf8Start).assumingMemoryBound(to: CChar.self)) else { return nil }
    return Array(
        UnsafeBufferPointer(start: UnsafeRawPointer(value).assumingMemoryBound(to: UInt8.self), count: strlen(value))
    )
}

func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) }
        if n < 0 && shim_errno() == EINTR { continue }
        if n <= 0 { return false }
        offset += n
    }
    return true
}

/// The full berth program: $BERTH_BINARY, or `berth` in this program's directory.
func berthPath() -> [UInt8] {
    if let path = environment("BERTH_BINARY"), !path.isEmpty { return path }
    var buffer = [UInt8](repeating: 0, count: 4096)
    let n = buffer.withUnsafeMutableBytes {
        readlink("/proc/self/exe", $0.baseAddress!.assumingMemoryBound(to: CChar.self), 4095)
    }
    guard n > 0 else { return Array("/usr/local/bin/berth".utf8) }
    var path = Array(buffer[..<n])
    while let last = path.last, last != UInt8(ascii: "/") { path.removeLast() }
    return path + Array("berth".utf8)
}

/// Runs berth in this process with `args` (argv[0] included); only returns if exec failed, then
/// reports that on fd 3 as the drop-in would report a failed start.
func execBerth(_ args: [[UInt8]]) -> Never {
    shim_unblock_stop_signals()
    let path = berthPath()
    // argv as C strings of their own (malloc'd, never freed: the process is replaced or exits).
    let argv = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: args.count + 1)
    for (i, arg) in args.enumerated() { argv[i] = withCString(i == 0 ? path : arg) { strdup($0) } }
    argv[args.count] = nil
    if let program = argv[0] { _ = execv(program, argv) }
    let why = Array("berth-proxy: cannot run ".utf8) + path + Array(" (set BERTH_BINARY)".utf8)
    if shim_file_type(3) == shim_fifo_type() { _ = writeAll(3, Array("1\n".utf8) + why) }
    _ = writeAll(2, why + [10])
    exit(1)
}

/// The host side: fd 4 with -use-listen-fd (listening if TCP), else a socket bound as berth binds
/// one (SO_REUSEADDR and TCP_NODELAY for TCP, IPV6_V6ONLY, a 4 MiB receive buffer for UDP).
func hostSocket(_ flags: Flags) -> Int32? {
    let tcp = flags.proto == Array("tcp".utf8)
    let stream = Int32(SOCK_STREAM.rawValue)
    let datagram = Int32(SOCK_DGRAM.rawValue)
    if flags.useListenFD {
        guard shim_file_type(4) == shim_socket_type() else { return nil }
        guard shim_getsockopt_int(4, SOL_SOCKET, SO_TYPE) == (tcp ? stream : datagram) else { return nil }
        // Left inheritable: berth gets it on exec, should the shim fall back.
        if tcp && shim_getsockopt_int(4, SOL_SOCKET, SO_ACCEPTCONN) == 0 && listen(4, 4096) != 0 { return nil }
        return 4
    }
    let v6 = isV6(flags.hostIP)
    let fd = shim_socket(v6 ? AF_INET6 : AF_INET, tcp ? stream : datagram)
    guard fd >= 0 else { return nil }
    if tcp { _ = shim_setsockopt_int(fd, SOL_SOCKET, SO_REUSEADDR, 1) }
    if v6 { _ = shim_setsockopt_int(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
    if tcp {
        _ = shim_setsockopt_int(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
    } else {
        _ = shim_setsockopt_int(fd, SOL_SOCKET, SO_RCVBUF, 4 << 20)
    }
    let bound = withCString(flags.hostIP) { shim_bind(fd, $0, v6 ? 1 : 0, UInt32(flags.hostPort)) }
    guard bound == 0, !tcp || listen(fd, 4096) == 0 else {
        close(fd)
        return nil
    }
    return fd
}

/// Connects to the daemon and hands `socket` over; the connection, once the daemon took it.
func handOver(_ socket: Int32, _ flags: Flags, control: [UInt8]) -> Int32? {
    let connection = withCString(control) { shim_connect_unix($0, 5) }
    guard connection >= 0 else { return nil }
    var body = Array("{\"proto\":\"".utf8) + flags.proto + Array("\",\"hostIP\":\"".utf8) + flags.hostIP
    body += Array("\",\"hostPort\":".utf8) + decimal(flags.hostPort) + Array(",\"containerIP\":\"".utf8)
    body += flags.containerIP + Array("\",\"containerPort\":".utf8) + decimal(flags.containerPort) + [UInt8(ascii: "}")]
    var request = Array("POST /v1/berth/shims HTTP/1.1\r\nHost: berth\r\nContent-Type: application/json\r\n".utf8)
    request += Array("Content-Length: ".utf8) + decimal(body.count) + Array("\r\n\r\n".utf8) + body
    let sent = request.withUnsafeBytes { shim_send_with_descriptor(connection, $0.baseAddress!, $0.count, socket) }
    // The whole request in one message: it is far below a unix socket's buffer.
    guard sent == request.count, answeredCreated(connection) else {
        close(connection)
        return nil
    }
    return connection
}

/// Reads the answer's head: true for 201. The body is not needed.
func answeredCreated(_ fd: Int32) -> Bool {
    var head: [UInt8] = []
    var byte: UInt8 = 0
    let end: [UInt8] = [13, 10, 13, 10]
    while head.count < 4096 {
        let n = read(fd, &byte, 1)
        if n < 0 && shim_errno() == EINTR { continue }
        if n <= 0 { return false }
        head.append(byte)
        if head.count >= 4 && Array(head[(head.count - 4)...]) == end { break }
    }
    let created = Array("HTTP/1.1 201 ".utf8)
    return head.count >= created.count && Array(head[..<created.count]) == created
}

func decimal(_ value: Int) -> [UInt8] {
    if value == 0 { return [48] }
    var digits: [UInt8] = []
    var n = value
    while n > 0 {
        digits.insert(UInt8(48 + n % 10), at: 0)
        n /= 10
    }
    return digits
}

/// Waits for one of `fds` to be readable (or hung up), `milliseconds` at most (-1: no limit).
func wait(_ fds: [Int32], milliseconds: Int32) -> [Bool] {
    var polls = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
    while true {
        let n = polls.withUnsafeMutableBufferPointer { poll($0.baseAddress!, nfds_t($0.count), milliseconds) }
        if n < 0 && shim_errno() == EINTR { continue }
        return polls.map { $0.revents != 0 }
    }
}

/// How long to wait for a daemon before serving alone, in milliseconds.
func fallbackAfter() -> Int64 {
    guard let text = environment("BERTH_PROXY_FALLBACK"), let seconds = number(text) else { return 60_000 }
    return Int64(seconds) * 1000
}

@_cdecl("berth_proxy_main")
func berthProxyMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    var args: [[UInt8]] = []
    for i in 0..<Int(argc) {
        guard let p = argv[i] else { continue }
        args.append(
            Array(UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p)))
        )
    }
    guard let flags = parse(Array(args.dropFirst())) else { execBerth(args) }
    let control = environment("BERTH_CONTROL") ?? Array("/run/berth/berth.sock".utf8)
    // Stop requests from now on wait in the signalfd rather than end the shim half-way.
    let signals = shim_stop_signals()
    guard signals >= 0, let socket = hostSocket(flags) else { execBerth(args) }
    guard var connection = handOver(socket, flags, control: control) else {
        // No daemon, or one that refused: the standalone drop-in binds and reports itself.
        if socket != 4 { close(socket) }
        close(signals)
        execBerth(args)
    }
    if shim_file_type(3) == shim_fifo_type() {
        _ = writeAll(3, Array("0\n".utf8))
        close(3)
    }
    while true {
        let ready = wait([connection, signals], milliseconds: -1)
        if ready[1] {
            // Stopped: the daemon removes the port when the connection half-closes, then closes it.
            shutdown(connection, Int32(SHUT_WR))
            _ = wait([connection], milliseconds: 10_000)
            return 0
        }
        // The rest of the daemon's answer (its body) is read and dropped; only the end matters.
        var chunk = [UInt8](repeating: 0, count: 512)
        let n = chunk.withUnsafeMutableBytes { read(connection, $0.baseAddress!, $0.count) }
        if n > 0 || (n < 0 && (shim_errno() == EINTR || shim_errno() == EAGAIN)) { continue }
        // The daemon is gone (or closed on us): hand the socket to the next one.
        close(connection)
        let deadline = shim_now_ms() + fallbackAfter()
        var backoff: Int32 = 50
        var next: Int32 = -1
        while next < 0 {
            if wait([signals], milliseconds: backoff)[0] { return 0 }
            if let again = handOver(socket, flags, control: control) {
                next = again
                break
            }
            backoff = backoff * 2 > 500 ? 500 : backoff * 2
            if shim_now_ms() > deadline {
                // Serve alone: berth adopts the socket as dockerd's -use-listen-fd, no status to report.
                if socket != 4 {
                    _ = dup2(socket, 4)
                }
                _ = shim_keep_on_exec(4)
                if shim_file_type(3) != 0 { close(3) }
                var standalone = args
                if !flags.useListenFD { standalone.append(Array("-use-listen-fd".utf8)) }
                execBerth(standalone)
            }
        }
        connection = next
    }
}
