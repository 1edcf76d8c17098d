// docker-proxy compatible mode: what dockerd runs as its userland proxy (see the README section
// "Using berth as Docker's userland proxy").
//
// dockerd (28, 29, daemon/libnetwork/portmapper/proxy_linux.go) execs
//   PROXY -proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip 172.17.0.2 -container-port 80 [-use-listen-fd]
// with the write end of a pipe as fd 3 and, with -use-listen-fd, the bound socket as fd 4. It reads two
// bytes from the pipe: "0\n" means the proxy is ready; anything else is a failure whose text follows
// ("1\n<error>"), read to end of file. It stops the proxy with SIGINT.
//
// berth keeps docker-proxy's contract and its exit codes (0 after SIGINT/SIGTERM, 1 for a failed start,
// 2 for a bad command line), with one event loop thread and berth's relay behind it.

import Glibc
import LinuxIO
import Logging
import Mappings
import Publishing

/// What dockerd hands its userland proxy besides argv. Probed first thing in `main.swift`, before berth
/// opens a descriptor of its own: once berth has made a socket, that socket may be number 3 or 4 itself.
struct InheritedDescriptors: Sendable {
    static let statusFD: Int32 = 3
    static let listenFD: Int32 = 4

    /// fd 3 is open and a pipe or FIFO: someone waits for the readiness report on it. Anything else on
    /// fd 3 (a terminal, a file a shell left open) is not ours to write to.
    let hasStatusPipe: Bool
    /// What fd 4 is: nil when it is an open socket, else why it cannot be the `-use-listen-fd` socket.
    let listenFDProblem: String?

    static func probe() -> InheritedDescriptors {
        InheritedDescriptors(
            hasStatusPipe: fileType(statusFD) == S_IFIFO,
            listenFDProblem: {
                switch fileType(listenFD) {
                case nil: return "fd \(listenFD) is not open"
                case S_IFSOCK: return nil
                default: return "fd \(listenFD) is not a socket"
                }
            }()
        )
    }

    /// `S_IFMT` bits of an open descriptor, nil when it is not open.
    private static func fileType(_ fd: Int32) -> mode_t? {
        guard fcntl(fd, F_GETFD) != -1 else { return nil }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return nil }
        return info.st_mode & S_IFMT
    }
}

/// dockerd's status pipe on fd 3: one report, then closed, so that dockerd reads it to end of file.
struct StatusPipe: ~Copyable {
    private let descriptor: Descriptor

    /// Takes fd 3 when it is an inherited pipe (close-on-exec from now on); nil when run by hand.
    init?(_ inherited: InheritedDescriptors) {
        guard inherited.hasStatusPipe else { return nil }
        try? File.setCloseOnExec(InheritedDescriptors.statusFD)
        descriptor = Descriptor(taking: InheritedDescriptors.statusFD)
    }

    /// Writes `text` whole and closes the pipe. A reader that is gone (EPIPE) is not an error here:
    /// SIGPIPE is ignored (main.swift, for every mode), as a Go program ignores it on descriptors other than 1 and 2.
    consuming func report(_ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(descriptor.raw, $0.baseAddress! + offset, bytes.count - offset) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            offset += n
        }
    }
}

/// docker-proxy compatible mode: one mapping, readiness on fd 3.
enum ProxyMode {
    static let stopSignals = [SIGINT, SIGTERM]

    static func main(_ arguments: [String], inherited: InheritedDescriptors) -> Int32 {
        let program = CommandLine.arguments.first ?? "berth"
        let command: ProxyCommand
        do {
            command = try ProxyFlags.parse(arguments)
        } catch {
            // As Go's flag package: the problem, the usage, exit 2. Nothing goes to fd 3.
            writeStderr("\(error.message)\n" + ProxyFlags.usage(program: program))
            return 2
        }
        switch command {
        case .version:
            say(berthVersion)
            return 0
        case .help:
            writeStderr(ProxyFlags.usage(program: program))
            return 0
        case .run(let invocation):
            return run(invocation, inherited: inherited)
        }
    }

    /// Where log lines go in this mode, since dockerd passes no extra flags (README, "Logs").
    static let logVariable = "BERTH_LOG"

    private static func run(_ invocation: ProxyInvocation, inherited: InheritedDescriptors) -> Int32 {
        let logSettings: Result<LogSettings, EnvironmentError> = Result { () throws(EnvironmentError) in
            try LogSettings.parse(berthLog: ThisProcess.environment(logVariable) ?? "")
        }
        // Before anything can fail or be waited on: a stop request between the readiness report and the
        // signalfd stays pending rather than killing berth, and a closed status pipe is not fatal. SIGHUP
        // too when there is a log file to reopen.
        let wantsHangup = (try? logSettings.get())?.wantsHangup ?? false
        EventLoop.blockSignals(stopSignals + (wantsHangup ? [SIGHUP] : []))
        let status = StatusPipe(inherited)
        // A bad BERTH_LOG or a log that cannot be opened is reported on fd 3 too: stderr is /dev/null
        // under dockerd, and fd 3 is what dockerd shows the user.
        let outputs: LogOutputs
        do {
            outputs = try LogOutputs.bootstrap(logSettings.get(), fileOrigin: logVariable, syslogOrigin: logVariable)
        } catch let error as EnvironmentError {
            complain(error.description)
            report(status, "1\n\(error)")
            return 2
        } catch {
            complain("\(error)")
            report(status, "1\n\(error)")
            return 1
        }

        var options = PublishOptions()
        options.threads = 1
        // dockerd programs its own DNAT rules; the userland proxy only relays.
        options.mode = .userspace
        // One mapping per process: every line, the relay's included, says which.
        var logger = Logger(label: "berth")
        logger[metadataKey: "mapping"] = "\(invocation.mapping)"
        let publisher = Publisher(options: options, logger: logger)
        do {
            let port = try listen(invocation, inherited: inherited, publisher: publisher)
            logger.debug("\(port.address) -> \(port.target)")
        } catch {
            complain("\(error)")
            // stderr is /dev/null under dockerd: the log file or syslog keeps the failure too.
            if outputs.file != nil || outputs.syslog != nil { logger.error("\(error)") }
            report(status, "1\n\(error)")
            return 1
        }
        report(status, "0\n")
        do {
            try publisher.run(signals: stopSignals, onHangup: wantsHangup ? { outputs.reopen(logger) } : nil)
        } catch {
            complain("\(error)")
            if outputs.file != nil || outputs.syslog != nil { logger.error("\(error)") }
            return 1
        }
        publisher.close()
        return 0
    }

    private static func report(_ status: consuming StatusPipe?, _ text: String) {
        switch consume status {
        case .some(let pipe): pipe.report(text)
        case .none: break
        }
    }

    /// Binds the host side, or takes dockerd's socket on fd 4.
    private static func listen(
        _ invocation: ProxyInvocation,
        inherited: InheritedDescriptors,
        publisher: Publisher
    ) throws(PublishError) -> BoundPort {
        if invocation.proto == .sctp {
            // Linux without the sctp module says "protocol not supported"; berth has no SCTP relay at all.
            throw PublishError("unsupported protocol sctp")
        }
        guard invocation.useListenFD else {
            return try publisher.bind([invocation.mapping])[0]
        }
        let fd = InheritedDescriptors.listenFD
        if let problem = inherited.listenFDProblem { throw PublishError("-use-listen-fd: \(problem)") }
        do {
            let family = try Socket.localAddress(fd).family
            guard family == AF_INET || family == AF_INET6 else {
                throw PublishError("-use-listen-fd: fd \(fd) is not an IPv4 or IPv6 socket")
            }
            let stream = Int32(SOCK_STREAM.rawValue)
            let datagram = Int32(SOCK_DGRAM.rawValue)
            let type = try Socket.type(fd)
            guard type == (invocation.proto == .tcp ? stream : datagram) else {
                let what = type == stream ? "a TCP" : type == datagram ? "a UDP" : "an unusable"
                throw PublishError("-use-listen-fd: fd \(fd) is \(what) socket, not \(invocation.proto)")
            }
            // dockerd listens before handing it over; a socket that is only bound is made to listen here.
            if invocation.proto == .tcp, try Socket.getOption(fd, SOL_SOCKET, SO_ACCEPTCONN) == 0 {
                try Socket.listen(fd, backlog: 4096)
            }
        } catch let error as PublishError {
            throw error
        } catch {
            throw PublishError("-use-listen-fd: fd \(fd): \(error)")
        }
        // Made non-blocking and close-on-exec; -host-ip only told the family, which the socket knows.
        return try publisher.adopt(fd, mapping: invocation.mapping)
    }
}
