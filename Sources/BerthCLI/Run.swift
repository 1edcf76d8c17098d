import ArgumentParser
import Glibc
import LinuxIO
import Logging
import Mappings
import Netfilter
import Publishing
import Relay

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish ports of one container address until SIGINT or SIGTERM.",
        discussion: """
            For every listener it binds, berth prints one line in `docker port` style, e.g.
              80/tcp -> 0.0.0.0:49153
              80/tcp -> [::]:49153
            which is how scripts learn an ephemeral port. Without a host IP berth binds all
            addresses on both families, each its own socket, as Docker does.

            Examples:
              berth run -p 80:80 172.17.0.2
              berth run -p 80 172.17.0.2
              berth run -p 127.0.0.1:80:80 172.17.0.2
            """
    )

    // Never filled by the parser: main.swift takes every -p out first (see PublishArguments).
    @Option(name: [.customShort("p"), .customLong("publish")], help: ArgumentHelp("Publish a port: [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO].", valueName: "spec"))
    var publish: [String] = []

    private var specs: [String] { publish + PublishArguments.specs }

    @Argument(help: ArgumentHelp("The container's address (IPv4 or IPv6).", valueName: "target-ip"))
    var target: String

    @Option(help: ArgumentHelp("Seconds to wait for the container to accept a connection.", valueName: "seconds"))
    var connectTimeout: Double = 5

    @Option(help: ArgumentHelp("Seconds a half-closed TCP connection may sit with nothing moving.", valueName: "seconds"))
    var halfCloseTimeout: Double = 3600

    @Option(help: ArgumentHelp("Seconds a UDP flow lives with no datagram either way.", valueName: "seconds"))
    var udpTimeout: Double = 90

    @Option(help: ArgumentHelp("UDP flows per listener; when full, the least recently active is evicted.", valueName: "n"))
    var udpMaxFlows: Int = 4096

    @Option(help: ArgumentHelp("Event loop threads. Default: the CPUs berth may run on.", valueName: "n"))
    var threads: Int?

    @Option(help: ArgumentHelp(
        "Microseconds each event loop polls before it sleeps (default 0). Lower latency where waking an idle CPU is slow (virtual machines), for CPU time while traffic pauses.",
        valueName: "us"))
    var busyPoll: Int = 0

    @Option(help: ArgumentHelp("Bytes per splice pipe.", valueName: "bytes"))
    var pipeSize: Int = 1 << 20

    @Option(help: ArgumentHelp(
        "userspace (berth's relay), kernel (nftables DNAT) or hybrid (DNAT, and the relay for loopback and IPv6 to IPv4). Default: hybrid with CAP_NET_ADMIN, else userspace.",
        valueName: "mode"))
    var mode: Mode?

    @Option(help: ArgumentHelp("berth's nftables table (inet family). Default: berth_<pid>.", valueName: "name"))
    var nftTable: String?

    @Option(help: ArgumentHelp("trace, debug, info, notice, warning, error or critical.", valueName: "level"))
    var logLevel: Logger.Level = .notice

    func validate() throws {
        if let nftTable, nftTable.isEmpty || nftTable.count > 64 || !nftTable.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) {
            throw ValidationError("--nft-table must be 1 to 64 letters, digits, _ or -")
        }
        if specs.isEmpty { throw ValidationError("nothing to publish: give at least one -p") }
        if !(connectTimeout > 0) { throw ValidationError("--connect-timeout must be more than 0 seconds") }
        if !(halfCloseTimeout > 0) { throw ValidationError("--half-close-timeout must be more than 0 seconds") }
        if !(udpTimeout > 0) { throw ValidationError("--udp-timeout must be more than 0 seconds") }
        if udpMaxFlows < 1 || udpMaxFlows > 1_000_000 { throw ValidationError("--udp-max-flows must be between 1 and 1000000") }
        if let threads, threads < 1 || threads > 1024 { throw ValidationError("--threads must be between 1 and 1024") }
        if busyPoll < 0 || busyPoll > 1_000_000 { throw ValidationError("--busy-poll must be between 0 and 1000000 microseconds") }
        if pipeSize < 4096 { throw ValidationError("--pipe-size must be at least 4096 bytes") }
    }

    func run() throws {
        // Blocked before any port is reported, so a SIGTERM right after the report is not lost
        // (the loop's signalfd picks it up once it runs).
        EventLoop.blockSignals([SIGINT, SIGTERM])
        bootstrapLogging(logLevel)
        guard let targetIP = IPAddress(target) else {
            complain("target IP \"\(target)\" is not an IPv4 or IPv6 address")
            throw ExitCode(2)
        }
        var mappings: [PortMapping] = []
        for text in specs {
            do {
                mappings += try PortSpec(parsing: text).mappings(to: targetIP)
            } catch {
                complain("\(error)")
                throw ExitCode(2)
            }
        }
        var options = PublishOptions()
        var automatic = false
        if let mode {
            if mode != .userspace && !Capability.hasNetAdmin() {
                complain("--mode \(mode) needs CAP_NET_ADMIN to program nftables (run as root, or use --mode userspace)")
                throw ExitCode(1)
            }
            options.mode = mode
        } else {
            let (picked, notice) = Mode.automatic()
            if let notice { complain("notice: \(notice)") }
            options.mode = picked
            automatic = true
        }
        options.tableName = nftTable
        options.threads = threads ?? usableCPUs()
        options.relay.connectTimeout = .seconds(connectTimeout)
        options.relay.halfCloseTimeout = .seconds(halfCloseTimeout)
        options.relay.pipeSize = pipeSize
        options.busyPoll = .microseconds(busyPoll)
        options.relay.udpTimeout = .seconds(udpTimeout)
        options.relay.udpMaxFlows = udpMaxFlows
        var publisher = Publisher(options: options, logger: Logger(label: "berth"))
        do {
            let ports: [BoundPort]
            do {
                ports = try publisher.bind(mappings)
            } catch where error.isKernelPathFailure && automatic {
                complain("notice: no kernel fast path (\(error)): forwarding in userspace only")
                options.mode = .userspace
                publisher = Publisher(options: options, logger: Logger(label: "berth"))
                ports = try publisher.bind(mappings)
            }
            for port in ports { say(port.line) }
            try publisher.run()
            publisher.close()
        } catch {
            complain("\(error)")
            throw ExitCode(1)
        }
    }
}

/// The `-p` values of `berth run`, taken out of argv before swift-argument-parser sees it.
enum PublishArguments {
    nonisolated(unsafe) static var specs: [String] = []

    /// `-p SPEC`, `--publish SPEC` and `--publish=SPEC` out; everything else stays, in order.
    /// A `-p` with no value stays too, for the parser to report.
    static func extract(_ arguments: [String]) -> (specs: [String], rest: [String]) {
        var specs: [String] = []
        var rest: [String] = []
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            if a == "--" {
                rest += arguments[i...]
                break
            }
            if (a == "-p" || a == "--publish") && i + 1 < arguments.count {
                specs.append(arguments[i + 1])
                i += 2
                continue
            }
            if a.hasPrefix("--publish=") {
                specs.append(String(a.dropFirst("--publish=".count)))
            } else {
                rest.append(a)
            }
            i += 1
        }
        return (specs, rest)
    }
}
