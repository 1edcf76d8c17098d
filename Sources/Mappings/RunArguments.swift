// `berth run`'s command line, read by hand in one pass: thousands of `-p` (one process for every port)
// parse in milliseconds, and the binary carries no argument-parsing library.

/// What `berth run` is asked to do. The defaults are those of `berth run --help`.
package struct RunArguments: Sendable, Equatable {
    /// The `-p` values in the order given, unparsed (`PortSpec(parsing:)` reads them).
    package var specs: [String]
    /// The container's address.
    package var target: IPAddress
    package var connectTimeout: Double = 5
    package var halfCloseTimeout: Double = 3600
    /// An assured UDP flow's idle lifetime (conntrack's udp_timeout_stream).
    package var udpTimeout: Double = 120
    /// An unassured UDP flow's (conntrack's udp_timeout); nil: 30, or `udpTimeout` if shorter.
    package var udpTimeoutUnreplied: Double?
    /// Per mapping, over all loops.
    package var udpMaxFlows = 4096
    /// Answered UDP flows kept per mapping, over all loops; nil: a quarter of `udpMaxFlows`.
    package var udpMaxAnswered: Int?
    /// nil: one event loop per CPU berth may run on.
    package var threads: Int?
    /// Bytes within 100 ms that make a TCP connection bulk; 0: none is.
    package var bulkAfter = 1 << 20
    /// Loops for bulk connections, besides `threads`; 0: none; nil: as many as `threads`.
    package var bulkLoops: Int?
    /// The bulk loops' nice value.
    package var bulkNice = 10
    /// Microseconds.
    package var busyPoll = 0
    package var pipeSize = Self.defaultPipeSize
    /// nil lets berth pick.
    package var mode: Mode?
    /// nil: `berth_<pid>`.
    package var nftTable: String?
    /// One of `logLevels`.
    package var logLevel = "notice"
    /// A PROXY protocol header ahead of each relayed TCP connection; nil: none.
    package var proxyProtocol: ProxyProtocol?
    /// A PROXY protocol v2 header ahead of each relayed UDP datagram.
    package var proxyProtocolUDP = false
    /// `--log-file`: log lines appended to this file (reopened on SIGHUP) instead of stderr.
    package var logFile: String?
    /// `--log-syslog` (/dev/log) or `--log-syslog-socket PATH`: log lines to this syslog socket
    /// instead of stderr; nil: not to syslog.
    package var logSyslog: String?

    package init(specs: [String], target: IPAddress) {
        self.specs = specs
        self.target = target
    }

    /// Bytes asked of F_SETPIPE_SZ per splice pipe: the relay's default too (`RelayConfig`).
    package static let defaultPipeSize = 1 << 20

    /// The names of swift-log's `Logger.Level`.
    package static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
    /// Longer timeouts overflow `Duration` and the event loop's nanosecond clock; about 31 years is plenty.
    static let maximumSeconds: Double = 1_000_000_000
}

/// What a `berth run` command line asks for.
package enum RunCommand: Sendable, Equatable {
    case run(RunArguments)
    /// `-h` or `--help`: print `RunArguments.help` to stdout and exit 0.
    case help
    /// `--version`: print the version line and exit 0.
    case version
}

/// A `berth run` command line that does not parse or asks for something out of range: print
/// `berth: <description>` to stderr and exit 2.
package struct RunArgumentError: Error, Sendable, Equatable, CustomStringConvertible {
    /// One lowercase line.
    package let message: String

    package init(_ message: String) { self.message = message }

    package var description: String { message }
}

extension RunArguments {
    /// Reads the arguments that follow `run`.
    ///
    /// Options take their value as `--name value` or `--name=value`; `-p` also as `-pSPEC` and `-p=SPEC`.
    /// The value is the next argument whatever it looks like (`--busy-poll -1` is a busy poll of -1, which
    /// is then out of range). `--` ends the options. A later option overrides an earlier one, except `-p`,
    /// which adds a spec. `-h`/`--help` and `--version` win over whatever follows them, not over an error
    /// before them.
    package static func parse(_ args: [String], requirePublish: Bool = true) throws(RunArgumentError) -> RunCommand {
        var parsed = RunArguments(specs: [], target: .anyV4)
        var target: String?
        var optionsEnded = false
        var index = args.startIndex
        while index < args.endIndex {
            let arg = args[index]
            index += 1
            if optionsEnded || arg == "-" || !arg.hasPrefix("-") {
                if let target {
                    throw RunArgumentError(
                        "unexpected argument \(quoted(arg)): the target IP is already \(quoted(target))"
                    )
                }
                target = arg
                continue
            }
            if arg == "--" {
                optionsEnded = true
                continue
            }

            var name = Substring(arg)
            var inlineValue: Substring?
            if arg.hasPrefix("--"), let equals = arg.firstIndex(of: "=") {
                name = arg[..<equals]
                inlineValue = arg[arg.index(after: equals)...]
            } else if arg.hasPrefix("-p"), arg != "-p" {
                name = "-p"
                let rest = arg.dropFirst(2)
                inlineValue = rest.first == "=" ? rest.dropFirst() : rest
            }
            func value() throws(RunArgumentError) -> String {
                if let inlineValue { return String(inlineValue) }
                guard index < args.endIndex else { throw RunArgumentError("missing value for \(name)") }
                index += 1
                return args[index - 1]
            }
            func noValue() throws(RunArgumentError) {
                if inlineValue != nil { throw RunArgumentError("\(name) takes no value") }
            }

            switch name {
            case "-h", "--help":
                try noValue()
                return .help
            case "--version":
                try noValue()
                return .version
            case "-p", "--publish": parsed.specs.append(try value())
            case "--connect-timeout": parsed.connectTimeout = try seconds(name, value())
            case "--half-close-timeout": parsed.halfCloseTimeout = try seconds(name, value())
            case "--udp-timeout": parsed.udpTimeout = try seconds(name, value())
            case "--udp-timeout-unreplied": parsed.udpTimeoutUnreplied = try seconds(name, value())
            case "--udp-max-flows": parsed.udpMaxFlows = try wholeNumber(name, value())
            case "--udp-max-answered": parsed.udpMaxAnswered = try wholeNumber(name, value())
            case "--threads": parsed.threads = try wholeNumber(name, value())
            case "--bulk-after": parsed.bulkAfter = try wholeNumber(name, value())
            case "--bulk-loops": parsed.bulkLoops = try wholeNumber(name, value())
            case "--bulk-nice": parsed.bulkNice = try wholeNumber(name, value())
            case "--busy-poll": parsed.busyPoll = try wholeNumber(name, value())
            case "--pipe-size": parsed.pipeSize = try wholeNumber(name, value())
            case "--mode": parsed.mode = Mode(rawValue: try oneOf(Mode.allCases.map(\.rawValue), name, value()))
            case "--nft-table": parsed.nftTable = try value()
            case "--log-level": parsed.logLevel = try oneOf(logLevels, name, value())
            case "--proxy-protocol":
                parsed.proxyProtocol = ProxyProtocol(
                    rawValue: try oneOf(ProxyProtocol.allCases.map(\.rawValue), name, value())
                )
            case "--proxy-protocol-udp": parsed.proxyProtocolUDP = try oneOf(["v2"], name, value()) == "v2"
            case "--log-file": parsed.logFile = try value()
            case "--log-syslog":
                try noValue()
                if parsed.logSyslog == nil { parsed.logSyslog = LogSettings.defaultSyslogSocket }
            case "--log-syslog-socket":
                let path = try value()
                guard path.hasPrefix("/") else { throw RunArgumentError("--log-syslog-socket needs an absolute path") }
                parsed.logSyslog = path
            default: throw RunArgumentError("unknown option \(quoted(name))")
            }
        }

        guard let target else { throw RunArgumentError("missing the target IP, the container's address") }
        try parsed.validate(requirePublish: requirePublish)
        guard let address = IPAddress(target) else {
            throw RunArgumentError("target IP \(quoted(target)) is not an IPv4 or IPv6 address")
        }
        parsed.target = address
        return .run(parsed)
    }

    /// Ranges, in the order and with the words berth has always used.
    func validate(requirePublish: Bool = true) throws(RunArgumentError) {
        if let nftTable,
            nftTable.isEmpty || nftTable.count > 64
                || !nftTable.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" })
        {
            throw RunArgumentError("--nft-table must be 1 to 64 letters, digits, _ or -")
        }
        if specs.isEmpty && requirePublish { throw RunArgumentError("nothing to publish: give at least one -p") }
        for (name, value) in [
            ("--connect-timeout", connectTimeout), ("--half-close-timeout", halfCloseTimeout),
            ("--udp-timeout", udpTimeout), ("--udp-timeout-unreplied", udpTimeoutUnreplied ?? 1),
        ] {
            if !(value > 0) { throw RunArgumentError("\(name) must be more than 0 seconds") }
            if value > Self.maximumSeconds {
                throw RunArgumentError("\(name) must be at most \(Int(Self.maximumSeconds)) seconds")
            }
        }
        if let udpTimeoutUnreplied, udpTimeoutUnreplied > udpTimeout {
            throw RunArgumentError("--udp-timeout-unreplied must be at most --udp-timeout")
        }
        if udpMaxFlows < 1 || udpMaxFlows > 1_000_000 {
            throw RunArgumentError("--udp-max-flows must be between 1 and 1000000")
        }
        if let udpMaxAnswered, udpMaxAnswered < 0 || udpMaxAnswered > udpMaxFlows {
            throw RunArgumentError("--udp-max-answered must be between 0 and --udp-max-flows (\(udpMaxFlows))")
        }
        if let threads, threads < 1 || threads > 1024 { throw RunArgumentError("--threads must be between 1 and 1024") }
        if bulkAfter < 0 || bulkAfter > 1 << 40 {
            throw RunArgumentError("--bulk-after must be between 0 and \(1 << 40) bytes")
        }
        if let bulkLoops, bulkLoops < 0 || bulkLoops > 1024 {
            throw RunArgumentError("--bulk-loops must be between 0 and 1024")
        }
        if bulkNice < 0 || bulkNice > 19 { throw RunArgumentError("--bulk-nice must be between 0 and 19") }
        if busyPoll < 0 || busyPoll > 1_000_000 {
            throw RunArgumentError("--busy-poll must be between 0 and 1000000 microseconds")
        }
        if pipeSize < 4096 { throw RunArgumentError("--pipe-size must be at least 4096 bytes") }
        // The kernel's own bound (fs/pipe.c rounds at most 2^31); more than a GiB per pipe is a typo.
        if pipeSize > 1 << 30 { throw RunArgumentError("--pipe-size must be at most 1073741824 bytes (1 GiB)") }
        if logFile?.isEmpty == true { throw RunArgumentError("--log-file needs a path") }
    }

    /// The unassured UDP flows' timeout that applies: as given, else 30 s or `udpTimeout` if shorter.
    package var effectiveUDPTimeoutUnreplied: Double { udpTimeoutUnreplied ?? min(30, udpTimeout) }

    static func seconds(_ name: Substring, _ text: String) throws(RunArgumentError) -> Double {
        guard let value = Double(text) else {
            throw RunArgumentError("invalid value \(quoted(text)) for \(name): must be a number")
        }
        return value
    }

    static func wholeNumber(_ name: Substring, _ text: String) throws(RunArgumentError) -> Int {
        guard let value = Int(text) else {
            throw RunArgumentError("invalid value \(quoted(text)) for \(name): must be a whole number")
        }
        return value
    }

    static func oneOf(_ names: [String], _ name: Substring, _ text: String) throws(RunArgumentError) -> String {
        guard names.contains(text) else {
            let choices =
                names.count == 1 ? names[0] : names.dropLast().joined(separator: ", ") + " or " + (names.last ?? "")
            throw RunArgumentError("invalid value \(quoted(text)) for \(name): must be \(choices)")
        }
        return text
    }

    /// `berth run --help`.
    package static let help = """
        OVERVIEW: Publish ports of one container address until SIGINT or SIGTERM.

        For every listener it binds, berth prints one line in `docker port` style, e.g.
          80/tcp -> 0.0.0.0:49153
          80/tcp -> [::]:49153
        which is how scripts learn an ephemeral port. Without a host IP berth binds all
        addresses on both families, each its own socket, as Docker does.

        Examples:
          berth run -p 80:80 172.17.0.2
          berth run -p 80 172.17.0.2
          berth run -p 127.0.0.1:80:80 172.17.0.2

        USAGE: berth run [-p <spec> ...] [<options>] <target-ip>

        ARGUMENTS:
          <target-ip>             The container's address (IPv4 or IPv6).

        OPTIONS:
          -p, --publish <spec>    Publish a port:
                                  [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO].
                                  Give it once for each port or range.
          --connect-timeout <seconds>
                                  Seconds to wait for the container to accept a
                                  connection. (default: 5)
          --half-close-timeout <seconds>
                                  Seconds a half-closed TCP connection may sit with
                                  nothing moving. (default: 3600)
          --udp-timeout <seconds> Seconds an assured UDP flow (datagrams both ways, then
                                  more 2 s or later after it began) lives with no
                                  datagram either way, as conntrack's
                                  udp_timeout_stream. (default: 120)
          --udp-timeout-unreplied <seconds>
                                  Seconds any other UDP flow (no reply, or one
                                  exchange such as a DNS query) lives with no
                                  datagram, as conntrack's udp_timeout. At most
                                  --udp-timeout. (default: 30, or --udp-timeout if
                                  shorter)
          --udp-max-flows <n>     UDP flows per mapping, over all threads; when full,
                                  a new client's thread evicts its least recently
                                  active flow: answered ones first, then those
                                  awaiting a reply, assured ones last. (default: 4096)
          --udp-max-answered <n>  Answered UDP flows (one request and its reply, such
                                  as a DNS query from a new port each time) kept per
                                  mapping; past it the oldest closes, so one-shot
                                  load holds few descriptors. 0: close each once
                                  answered. (default: a quarter of --udp-max-flows)
          --threads <n>           Event loop threads. Default: the CPUs berth may run
                                  on.
          --bulk-after <bytes>    A TCP connection that moves this many bytes within
                                  100 ms is bulk: it moves to a bulk loop, so that it
                                  cannot delay the other connections; back after
                                  100 ms with less. 0: never. (default: 1048576)
          --bulk-loops <n>        Threads for bulk connections, besides --threads;
                                  0 turns moving off. Default: as many as
                                  --threads.
          --bulk-nice <n>         The bulk threads' nice value, 0 to 19; they also
                                  run SCHED_BATCH. (default: 10)
          --busy-poll <us>        Microseconds each event loop polls before it sleeps.
                                  Lower latency where waking an idle CPU is slow
                                  (virtual machines), for CPU time while traffic
                                  pauses. (default: 0)
          --pipe-size <bytes>     Bytes per splice pipe. (default: 1048576)
          --mode <mode>           userspace (berth's relay), kernel (nftables DNAT) or
                                  hybrid (DNAT, and the relay for loopback and IPv6 to
                                  IPv4). Default: hybrid with CAP_NET_ADMIN, else
                                  userspace.
          --nft-table <name>      berth's nftables table (inet family). Default:
                                  berth_<pid>.
          --log-level <level>     trace, debug, info, notice, warning, error or
                                  critical. (default: notice)
          --proxy-protocol <version>
                                  v1 or v2: send a PROXY protocol header to the
                                  container ahead of each TCP connection, so it
                                  learns the client's address. Needs --mode
                                  userspace (DNAT sends no header). (default: none)
          --proxy-protocol-udp <version>
                                  v2: the same ahead of each UDP datagram.
                                  (default: none)
          --log-file <path>       Append log lines to this file (created 0640) instead
                                  of stderr; SIGHUP reopens it (for logrotate).
          --log-syslog            Send log lines to syslog (/dev/log, facility daemon,
                                  RFC 5424) instead of stderr.
          --log-syslog-socket <path>
                                  The same to another syslog socket (a unix datagram
                                  socket, e.g. /run/systemd/journal/syslog).
          --version               Show the version.
          -h, --help              Show help information.

        A value follows its option (--mode kernel) or is joined to it with =
        (--mode=kernel). -- ends the options.

        Socket activation: started by systemd with LISTEN_FDS, berth serves the sockets
        it was passed instead of binding; each must match a -p mapping by address,
        port and protocol, and every host address of a mapping needs one.

        """
}
