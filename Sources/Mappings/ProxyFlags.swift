// docker-proxy's command line, so that berth can stand in for it.
//
// dockerd (28, 29) runs
//   docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip 172.17.0.2 -container-port 80 -use-listen-fd
// with a status pipe on fd 3 and, with -use-listen-fd, the bound listening socket on fd 4. The flags are
// those of moby's cmd/docker-proxy/main_linux.go, parsed by Go's `flag` package.

/// One docker-proxy style run: forward `hostIP:hostPort` to `containerIP:containerPort`.
package struct ProxyInvocation: Sendable, Equatable {
    package var proto: Proto
    package var hostIP: IPAddress
    /// 0 asks for an ephemeral port. With `useListenFD` the inherited socket is already bound, and this
    /// only labels it (0 when `-host-port` was not given).
    package var hostPort: UInt16
    package var containerIP: IPAddress
    package var containerPort: UInt16
    /// `-use-listen-fd`: the listening socket is inherited as fd 4 rather than bound by us.
    package var useListenFD: Bool

    /// The defaults are docker-proxy's: tcp, host and container IP 0.0.0.0, no listen fd.
    package init(
        proto: Proto = .tcp,
        hostIP: IPAddress = .anyV4,
        hostPort: UInt16,
        containerIP: IPAddress = .anyV4,
        containerPort: UInt16,
        useListenFD: Bool = false
    ) {
        self.proto = proto
        self.hostIP = hostIP
        self.hostPort = hostPort
        self.containerIP = containerIP
        self.containerPort = containerPort
        self.useListenFD = useListenFD
    }

    /// The mapping to publish: `hostPort` as `.fixed(hostPort)`, except that 0 is `.ephemeral` (which is
    /// what binding port 0 means). The host IP is always explicit: `0.0.0.0` is IPv4 only, `::` IPv6 only,
    /// as docker-proxy binds them.
    package var mapping: PortMapping {
        PortMapping(
            proto: proto,
            hostIP: hostIP,
            hostPort: hostPort == 0 ? .ephemeral : .fixed(hostPort),
            containerIP: containerIP,
            containerPort: containerPort
        )
    }
}

/// What a docker-proxy style command line asks for.
package enum ProxyCommand: Sendable, Equatable {
    case run(ProxyInvocation)
    /// `-v` or `-version`: print one version line to stdout and exit 0.
    case version
    /// `-h` or `-help`: print `ProxyFlags.usage` to stderr and exit 0 (as Go's `flag` package does).
    case help
}

/// A docker-proxy style command line that does not parse. Print `message`, then `ProxyFlags.usage`, to
/// stderr and exit 2, as Go's `flag` package does.
package struct ProxyFlagError: Error, Sendable, Equatable, CustomStringConvertible {
    /// One lowercase line, worded as Go's `flag` package words it where it has a wording.
    package let message: String

    package init(_ message: String) { self.message = message }

    package var description: String { message }
}

/// docker-proxy's flags, read as Go's `flag` package reads them.
///
/// Spellings: `-flag value`, `-flag=value`, `--flag value`, `--flag=value`; booleans as `-flag` or
/// `-flag=true|false` (also `1`, `t`, `T`, `TRUE`, `True` and their false counterparts, as Go's
/// `strconv.ParseBool`), never `-flag false`. `--` ends the flags. A later flag overrides an earlier one.
///
/// | flag | value | default |
/// | --- | --- | --- |
/// | `-proto` | `tcp`, `udp` or `sctp`, lower case as docker-proxy wants it | `tcp` |
/// | `-host-ip` | IPv4 or IPv6 literal | `0.0.0.0` |
/// | `-host-port` | 0...65535, 0 for an ephemeral port | required, unless `-use-listen-fd` |
/// | `-container-ip` | IPv4 or IPv6 literal | `0.0.0.0` |
/// | `-container-port` | 1...65535 | required |
/// | `-use-listen-fd` | boolean | false |
/// | `-v`, `-version` | boolean | false |
/// | `-h`, `-help` | (any) | |
///
/// Where berth is stricter than docker-proxy:
/// - An IP that does not parse, or is empty, is an error (older docker-proxy listened on all addresses).
///   IPv4-mapped IPv6 (`::ffff:10.0.0.1`) is read as IPv4, as Go's `net.IP` does.
/// - A port must be plain decimal without leading zeros. Go reads `0x50` and `0120` as 80; rather than
///   guess, berth accepts only spellings that mean the same in both.
/// - Ports are range-checked, and `-host-port`/`-container-port` must be given (docker-proxy's default -1
///   fails only later, when it binds or connects).
/// - A stray argument is an error: Go stops at it and docker-proxy ignores the rest, so
///   `-use-listen-fd false` silently meant true.
package enum ProxyFlags {
    /// Flags only docker-proxy has.
    static let proxyNames: Set<Substring> = [
        "proto", "host-ip", "host-port", "container-ip", "container-port", "use-listen-fd",
    ]
    static let booleanNames: Set<Substring> = ["use-listen-fd", "v", "version"]
    static let helpNames: Set<Substring> = ["h", "help"]
    /// Spellings that berth's own command line also has (`-h`, `--help`, `--version`).
    static let sharedSpellings: Set<String> = ["-h", "--help", "--version"]

    /// True when argv (without argv[0]) is docker-proxy style: its first argument is one of the known
    /// flags (-proto, -host-ip, -host-port, -container-ip, -container-port, -use-listen-fd, -v, -version,
    /// -h, -help), with one or two dashes, with or without `=value`.
    ///
    /// `-h`, `--help` and `--version` alone are berth's own help and version:
    /// they count as docker-proxy style only when a docker-proxy-only flag follows (`-h -proto tcp`).
    package static func looksLikeProxyInvocation(_ args: [String]) -> Bool {
        guard let first = args.first, let name = splitFlag(first)?.name else { return false }
        if sharedSpellings.contains(first) {
            return args.dropFirst().contains { arg in
                splitFlag(arg).map { proxyNames.contains($0.name) } ?? false
            }
        }
        return proxyNames.contains(name) || booleanNames.contains(name) || helpNames.contains(name)
    }

    /// Reads a docker-proxy command line (without argv[0]).
    package static func parse(_ args: [String]) throws(ProxyFlagError) -> ProxyCommand {
        var proto = "tcp"
        var hostIP = IPAddress.anyV4
        var hostPort: UInt16?
        var containerIP = IPAddress.anyV4
        var containerPort: UInt16?
        var useListenFD = false
        var printVersion = false

        var index = args.startIndex
        var previousBoolean: Substring?  // a boolean flag just given without "=value"
        while index < args.endIndex {
            let arg = args[index]
            index += 1
            if arg == "--" {
                if index < args.endIndex { throw unexpected(args[index], after: nil) }
                break
            }
            guard arg.count >= 2, arg.hasPrefix("-") else { throw unexpected(arg, after: previousBoolean) }
            guard let (name, inlineValue) = splitFlag(arg).map({ ($0.name, $0.value) }) else {
                throw ProxyFlagError("bad flag syntax: \(plain(arg))")
            }
            previousBoolean = nil
            if helpNames.contains(name) { return .help }

            if booleanNames.contains(name) {
                var value = true
                if let inlineValue {
                    guard let parsed = parseBool(inlineValue) else {
                        throw ProxyFlagError("invalid boolean value \(quoted(inlineValue)) for -\(name): parse error")
                    }
                    value = parsed
                } else {
                    previousBoolean = name
                }
                if name == "use-listen-fd" { useListenFD = value } else { printVersion = value }
                continue
            }

            guard proxyNames.contains(name) else {
                throw ProxyFlagError("flag provided but not defined: \(plain("-" + name))")
            }
            let value: Substring
            if let inlineValue {
                value = inlineValue
            } else if index < args.endIndex {
                value = Substring(args[index])
                index += 1
            } else {
                throw ProxyFlagError("flag needs an argument: -\(name)")
            }
            func invalid(_ why: String) -> ProxyFlagError {
                ProxyFlagError("invalid value \(quoted(value)) for flag -\(name): \(why)")
            }
            switch name {
            case "proto":
                proto = String(value)
            case "host-ip", "container-ip":
                guard !value.isEmpty else { throw invalid("empty IP address") }
                guard let address = IPAddress(String(value)) else {
                    throw invalid("invalid IP address: \(plain(value))")
                }
                if name == "host-ip" { hostIP = address.unmapped } else { containerIP = address.unmapped }
            case "host-port":
                hostPort = try port(value, lowest: 0, invalid: invalid)
            default:  // container-port
                containerPort = try port(value, lowest: 1, invalid: invalid)
            }
        }

        if printVersion { return .version }
        guard let known = Proto(rawValue: proto) else {
            throw ProxyFlagError(
                "invalid value \(quoted(proto)) for flag -proto: unsupported protocol (expected tcp, udp or sctp)"
            )
        }
        if useListenFD && hostPort == nil { hostPort = 0 }
        guard let hostPort, let containerPort else {
            let missing = [hostPort == nil ? "-host-port" : nil, containerPort == nil ? "-container-port" : nil]
                .compactMap { $0 }
            let noun = missing.count == 1 ? "flag" : "flags"
            throw ProxyFlagError("missing required \(noun): \(missing.joined(separator: ", "))")
        }
        return .run(
            ProxyInvocation(
                proto: known,
                hostIP: hostIP,
                hostPort: hostPort,
                containerIP: containerIP,
                containerPort: containerPort,
                useListenFD: useListenFD
            )
        )
    }

    /// The usage text, in the layout of Go's `flag.PrintDefaults`, headed `Usage of docker-proxy:`.
    package static let usage: String = usage(program: "docker-proxy")

    /// The usage text headed with `program` (Go prints `os.Args[0]` there).
    package static func usage(program: String) -> String {
        """
        Usage of \(program):
          -container-ip value
            \tcontainer ip (default 0.0.0.0)
          -container-port int
            \tcontainer port, 1-65535 (required)
          -host-ip value
            \thost ip (default 0.0.0.0)
          -host-port int
            \thost port, 0-65535, 0 for an ephemeral port (required without -use-listen-fd)
          -proto string
            \tproxy protocol: tcp, udp or sctp (default "tcp")
          -use-listen-fd
            \tuse the listening socket passed as fd 4 instead of binding host-ip:host-port
          -v\tprint version information and quit
          -version
            \tprint version information and quit

        """
    }

    /// `-name`, `--name`, `-name=value`, `--name=value` as (name, value); nil for what Go calls bad flag
    /// syntax (`---x`, `-=x`) or for something that is not a flag at all.
    static func splitFlag(_ arg: String) -> (name: Substring, value: Substring?)? {
        guard arg.count >= 2, arg.hasPrefix("-") else { return nil }
        var name = arg.dropFirst(arg.hasPrefix("--") ? 2 : 1)
        guard let first = name.first, first != "-", first != "=" else { return nil }
        var value: Substring?
        if let equals = name.firstIndex(of: "=") {
            value = name[name.index(after: equals)...]
            name = name[..<equals]
        }
        return (name, value)
    }

    static func parseBool(_ text: Substring) -> Bool? {
        switch text {
        case "1", "t", "T", "TRUE", "true", "True": return true
        case "0", "f", "F", "FALSE", "false", "False": return false
        default: return nil
        }
    }

    static func port(
        _ text: Substring,
        lowest: UInt16,
        invalid: (String) -> ProxyFlagError
    ) throws(ProxyFlagError) -> UInt16 {
        let range = "(\(lowest)-65535)"
        if text.hasPrefix("-"), DecimalPort(text.dropFirst()) != .notANumber { throw invalid("out of range \(range)") }
        guard text == "0" || !text.hasPrefix("0") else {
            throw invalid("must be a decimal number without leading zeros")
        }
        switch DecimalPort(text) {
        case .value(let port) where port >= lowest: return port
        case .value, .tooLarge: throw invalid("out of range \(range)")
        case .notANumber: throw invalid("must be a decimal number")
        }
    }

    static func unexpected(_ arg: String, after boolean: Substring?) -> ProxyFlagError {
        if let boolean, parseBool(Substring(arg)) != nil {
            return ProxyFlagError("unexpected argument \(quoted(arg)); write -\(boolean)=\(arg)")
        }
        return ProxyFlagError("unexpected argument \(quoted(arg))")
    }
}
