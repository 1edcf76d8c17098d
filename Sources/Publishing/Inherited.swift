// What a berth process is handed by whoever started it, and the one path that adopts it:
// dockerd's status pipe (fd 3) and listening socket (fd 4, `-use-listen-fd`), systemd's sockets
// (LISTEN_FDS). The CLI reads its command line and reports; finding, checking and taking over
// these descriptors is here, next to the activation plan that decides what each socket serves.
//
// dockerd (moby's daemon/libnetwork/portmapper/proxy_linux.go) execs its userland proxy with the
// write end of a pipe as fd 3 and, with -use-listen-fd, the bound socket as fd 4. It reads two
// bytes from the pipe: "0\n" means the proxy is ready; anything else is a failure whose text
// follows ("1\n<error>"), read to end of file.

import Glibc
import LinuxIO
import Mappings

/// What dockerd hands its userland proxy besides argv. Probed first thing in `main`, before berth
/// opens a descriptor of its own: once berth has made a socket, that socket may be number 3 or 4 itself.
package struct InheritedDescriptors: Sendable {
    package static let statusFD: Int32 = 3
    package static let listenFD: Int32 = 4

    /// fd 3 is open and a pipe or FIFO: someone waits for the readiness report on it. Anything else on
    /// fd 3 (a terminal, a file a shell left open) is not ours to write to.
    package let hasStatusPipe: Bool
    /// What fd 4 is: nil when it is an open socket, else why it cannot be the `-use-listen-fd` socket.
    package let listenFDProblem: String?

    package static func probe() -> InheritedDescriptors {
        InheritedDescriptors(
            hasStatusPipe: File.type(inherited: statusFD) == S_IFIFO,
            listenFDProblem: {
                switch File.type(inherited: listenFD) {
                case nil: return "fd \(listenFD) is not open"
                case S_IFSOCK: return nil
                default: return "fd \(listenFD) is not a socket"
                }
            }()
        )
    }
}

/// dockerd's status pipe on fd 3: one report, then closed, so that dockerd reads it to end of file.
package struct StatusPipe: ~Copyable {
    private let descriptor: Descriptor

    /// Takes fd 3 when it is an inherited pipe (close-on-exec from now on); nil when run by hand.
    package init?(_ inherited: InheritedDescriptors) {
        guard inherited.hasStatusPipe else { return nil }
        try? File.setCloseOnExec(inherited: InheritedDescriptors.statusFD)
        descriptor = Descriptor(taking: InheritedDescriptors.statusFD)
    }

    /// Writes `text` whole and closes the pipe. A reader that is gone (EPIPE) is not an error here:
    /// SIGPIPE is ignored (`ProcessStart.ignoreBrokenPipes`), as a Go program ignores it on
    /// descriptors other than 1 and 2.
    package consuming func report(_ text: String) {
        File.writeAll(descriptor, text)
    }
}

extension Publisher {
    /// docker-proxy's host side: bound here, or dockerd's socket on fd 4 (`-use-listen-fd`),
    /// checked to be the protocol asked, made to listen if it only is bound, and adopted.
    package func serve(_ invocation: ProxyInvocation, inherited: InheritedDescriptors) throws(PublishError) -> BoundPort
    {
        if invocation.proto == .sctp {
            // Linux without the sctp module says "protocol not supported"; berth has no SCTP relay at all.
            throw PublishError("unsupported protocol sctp")
        }
        guard invocation.useListenFD else { return try bind([invocation.mapping])[0] }
        if let problem = inherited.listenFDProblem { throw PublishError("-use-listen-fd: \(problem)") }
        let socket = Descriptor(taking: InheritedDescriptors.listenFD)
        // What a service manager's socket is checked for, and then that it is the protocol asked;
        // -host-ip only told the family, which the socket knows.
        let found = try PassedSocket.inspect(socket, context: "-use-listen-fd")
        guard found.proto == invocation.proto else {
            throw PublishError(
                "-use-listen-fd: \(found.label) is a \(found.proto == .tcp ? "TCP" : "UDP") socket, not \(invocation.proto)"
            )
        }
        return try adopt(socket, as: found, mapping: invocation.mapping)
    }
}

/// sd_listen_fds(unset_environment: 1) with names: the sockets passed to this process, made
/// close-on-exec and owned; LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES are unset whatever they held.
package func takeListenSockets() throws(EnvironmentError) -> PassedSockets? {
    let values = ListenFDs.variables.map { ThisProcess.environment($0) }
    for name in ListenFDs.variables { ThisProcess.unsetEnvironment(name) }
    guard
        let passed = try ListenFDs.parse(
            listenPID: values[0],
            listenFDs: values[1],
            listenFDNames: values[2],
            pid: ThisProcess.id
        )
    else { return nil }
    for fd in passed.descriptors {
        do { try File.setCloseOnExec(inherited: fd) } catch { throw EnvironmentError("LISTEN_FDS: \(error)") }
    }
    return PassedSockets(taking: passed.descriptors, names: passed.names)
}

/// What every berth process does before anything else, and what its commands ask of the process.
package enum ProcessStart {
    /// ld.so is done with the relocation table: its pages are a tenth of berth's idle memory.
    package static func releaseRelocationTable() { Memory.releaseRelocationTable() }

    /// splice(2) has no MSG_NOSIGNAL: writing to a socket whose peer reset must be an EPIPE that the
    /// relay turns into a reset of the other side, never a signal that ends berth.
    package static func ignoreBrokenPipes() { signal(SIGPIPE, SIG_IGN) }

    /// Blocks `signals` in every thread started from now on, so that the loops' signalfd gets them.
    package static func blockSignals(_ signals: [Int32]) { EventLoop.blockSignals(signals) }

    /// The CPUs this process may run on (its affinity mask): one loop each by default.
    package static var usableCPUs: Int { LinuxIO.usableCPUs() }

    /// A variable of this process's environment.
    package static func environment(_ name: String) -> String? { ThisProcess.environment(name) }
}
