// `berth daemon` and `berth port`: the daemon's command line (berth run's options, the mappings
// optional, and the control socket's), and the client's.

/// `berth daemon [<run options>] [--control PATH] [--control-group NAME] [--drain-timeout S]
/// [-p SPEC ... TARGET]`.
package struct DaemonArguments: Sendable, Equatable {
    package static let defaultControl = "/run/berth/berth.sock"

    /// berth run's options; `specs` may be empty, and then `target` means nothing.
    package var run: RunArguments
    package var control = DaemonArguments.defaultControl
    package var controlGroup: String?
    /// Seconds a removed port's open connections get to finish.
    package var drainTimeout: Double = 10
    /// `--metrics ADDRESS:PORT`: a TCP listener for `GET /metrics`.
    package var metricsAddress: IPAddress?
    package var metricsPort: UInt16 = 0
    /// `--allow-target CIDR ...`: targets the API may publish towards besides containers'.
    package var targets = TargetPolicy()
    /// `--default-target ADDRESS`: where a rootlesskit add without `childIP` goes.
    package var defaultTarget: IPAddress?
    /// `--max-ports N`: host ports published at once, over every add.
    package var maxPorts = DaemonArguments.defaultMaxPorts
    /// `--max-control-clients N`: connections each control listener serves at once.
    package var maxControlClients = DaemonArguments.defaultMaxControlClients
    /// `--client-timeout S`: what one control client has for its request and answer.
    package var clientTimeout: Double = 10

    package static let defaultMaxPorts = 16384
    package static let defaultMaxControlClients = 64

    package enum Command: Sendable, Equatable {
        case daemon(DaemonArguments)
        case help
        case version
    }

    package static func parse(_ args: [String]) throws(RunArgumentError) -> Command {
        var control = defaultControl
        var group: String?
        var drain: Double = 10
        var metrics: (IPAddress, UInt16)?
        var allowed: [AddressRange] = []
        var defaultTarget: IPAddress?
        var maxPorts = defaultMaxPorts
        var maxClients = defaultMaxControlClients
        var clientTimeout: Double = 10
        var rest: [String] = []
        var index = 0
        while index < args.count {
            let arg = args[index]
            index += 1
            let (name, inline) = optionParts(arg)
            guard
                [
                    "--control", "--control-group", "--drain-timeout", "--metrics", "--allow-target",
                    "--default-target", "--max-ports", "--max-control-clients", "--client-timeout",
                ].contains(name)
            else {
                rest.append(arg)
                if arg == "--" {
                    rest += args[index...]
                    break
                }
                continue
            }
            let value: String
            if let inline {
                value = inline
            } else {
                guard index < args.count else { throw RunArgumentError("missing value for \(name)") }
                value = args[index]
                index += 1
            }
            switch name {
            case "--control":
                guard value.hasPrefix("/") else { throw RunArgumentError("--control must be an absolute path") }
                control = value
            case "--metrics":
                metrics = try metricsListener(value)
            case "--control-group":
                guard !value.isEmpty else { throw RunArgumentError("--control-group must name a group") }
                group = value
            case "--allow-target":
                guard let range = AddressRange(value) else {
                    throw RunArgumentError(
                        "--allow-target \(quoted(value)) must be an address or CIDR range, such as 127.0.0.0/8 or ::1/128"
                    )
                }
                allowed.append(range)
            case "--default-target":
                guard let ip = IPAddress(value) else {
                    throw RunArgumentError("--default-target \(quoted(value)) is not an IPv4 or IPv6 address")
                }
                defaultTarget = ip
            case "--max-ports":
                maxPorts = try count(name, value, upTo: 1 << 20)
            case "--max-control-clients":
                maxClients = try count(name, value, upTo: 1 << 16)
            case "--client-timeout":
                clientTimeout = try RunArguments.seconds("--client-timeout", value)
                guard clientTimeout > 0, clientTimeout <= 3600 else {
                    throw RunArgumentError("--client-timeout must be more than 0 and at most 3600 seconds")
                }
            default:
                drain = try RunArguments.seconds("--drain-timeout", value)
                if drain < 0 || drain > RunArguments.maximumSeconds {
                    throw RunArgumentError(
                        "--drain-timeout must be between 0 and \(Int(RunArguments.maximumSeconds)) seconds"
                    )
                }
            }
        }
        var parsed: RunCommand
        do {
            parsed = try RunArguments.parse(rest, requirePublish: false)
        } catch
            where error.message == "missing the target IP, the container's address" && !rest.contains(where: isPublish)
        {
            // No mapping to start with: then no target either.
            parsed = try RunArguments.parse(rest + ["0.0.0.0"], requirePublish: false)
        }
        switch parsed {
        case .help: return .help
        case .version: return .version
        case .run(let run):
            var daemon = DaemonArguments(run: run, control: control, controlGroup: group, drainTimeout: drain)
            daemon.metricsAddress = metrics?.0
            daemon.metricsPort = metrics?.1 ?? 0
            daemon.targets = TargetPolicy(allowed: allowed)
            daemon.defaultTarget = defaultTarget
            daemon.maxPorts = maxPorts
            daemon.maxControlClients = maxClients
            daemon.clientTimeout = clientTimeout
            return .daemon(daemon)
        }
    }

    /// A whole number from 1 to `limit`.
    private static func count(_ name: String, _ text: String, upTo limit: Int) throws(RunArgumentError) -> Int {
        guard let n = Int(text), n >= 1, n <= limit, text.allSatisfy(\.isASCII) else {
            throw RunArgumentError("\(name) must be a whole number from 1 to \(limit)")
        }
        return n
    }

    /// `127.0.0.1:9100` or `[::1]:9100`.
    static func metricsListener(_ text: String) throws(RunArgumentError) -> (IPAddress, UInt16) {
        let problem = RunArgumentError("--metrics must be ADDRESS:PORT, such as 127.0.0.1:9100 or [::1]:9100")
        guard let colon = text.lastIndex(of: ":") else { throw problem }
        var host = text[..<colon]
        if host.hasPrefix("[") && host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard let ip = IPAddress(String(host)), let port = UInt16(text[text.index(after: colon)...]), port > 0 else {
            throw problem
        }
        return (ip, port)
    }

    private static func isPublish(_ arg: String) -> Bool {
        arg == "-p" || arg.hasPrefix("-p") || arg.hasPrefix("--publish")
    }

    package static let help = """
        OVERVIEW: Run berth as a daemon: publish ports added and removed at run time
        through a control API on a unix socket (HTTP/1.1 and JSON).

        USAGE: berth daemon [<options>] [-p <spec> ... <target-ip>]

        OPTIONS:
          --control <path>        The control socket. (default: /run/berth/berth.sock)
          --control-group <name>  A group whose members may use the control socket too
                                  (besides root and berth's own user).
          --drain-timeout <seconds>
                                  Seconds a removed port's open connections get to
                                  finish before they are reset. (default: 10)
          --metrics <address:port>
                                  Also serve GET /metrics (Prometheus text) on this
                                  TCP address, to anyone who reaches it.
          --allow-target <cidr>   Let the API publish towards these addresses too
                                  (repeatable). Loopback, unspecified, multicast and
                                  broadcast targets are refused without it: a port
                                  towards 127.0.0.1 exposes the host's own
                                  loopback-only services.
          --default-target <address>
                                  Where a rootlesskit add without childIP goes.
                                  Without it such an add is refused.
          --max-ports <n>         Host ports published at once, over every add.
                                  (default: 16384)
          --max-control-clients <n>
                                  Connections served at once, on the control socket
                                  and on --metrics each; others wait. (default: 64)
          --client-timeout <seconds>
                                  What one control client has for its whole request
                                  and answer. (default: 10)
          -p, --publish <spec>    Ports to publish from the start, towards <target-ip>.
          Every other option of `berth run` (--threads, --mode, timeouts ...) works
          the same; see `berth help run`.

        API (curl --unix-socket /run/berth/berth.sock http://berth/...):
          GET    /v1/berth/ports[?owner=ID]   what is published
          POST   /v1/berth/ports              {"target":"172.17.0.2",
                                               "publish":["8080:80","53:53/udp"],
                                               "owner":"<container id>"}
          DELETE /v1/berth/ports/ID           one add's ports
          DELETE /v1/berth/ports?owner=ID     all of an owner's ports
          GET    /v1/info, GET|POST /v1/ports, DELETE /v1/ports/ID
                                              rootlesskit's port API
          GET    /metrics                     Prometheus text, per mapping

        Whoever may use the control socket may make the daemon listen on host ports
        and connect to any target it allows: give access accordingly.

        """
}

/// An option and the value joined to it, as `berth run` spells them: `--name=value`, `-pSPEC`, `-p=SPEC`.
private func optionParts(_ arg: String) -> (name: String, inline: String?) {
    if arg.hasPrefix("--"), let equals = arg.firstIndex(of: "=") {
        return (String(arg[..<equals]), String(arg[arg.index(after: equals)...]))
    }
    if arg.hasPrefix("-p"), arg != "-p" { return ("-p", String(arg.dropFirst(arg.hasPrefix("-p=") ? 3 : 2))) }
    return (arg, nil)
}

/// `berth port add|ls|rm`: the daemon's client.
package enum PortCommand: Sendable, Equatable {
    /// `berth port add [--owner NAME] -p SPEC ... TARGET`
    case add(control: String, specs: [String], target: String, owner: String?)
    /// `berth port ls [--owner NAME] [--json]`
    case list(control: String, owner: String?, json: Bool)
    /// `berth port rm ID ... | --owner NAME`
    case remove(control: String, ids: [Int], owner: String?)
    case help

    package static func parse(_ args: [String]) throws(RunArgumentError) -> PortCommand {
        guard let verb = args.first else { throw RunArgumentError("missing a port command: add, ls or rm") }
        if verb == "-h" || verb == "--help" { return .help }
        var control = DaemonArguments.defaultControl
        var owner: String?
        var json = false
        var specs: [String] = []
        var positional: [String] = []
        var index = 1
        while index < args.count {
            let arg = args[index]
            index += 1
            let (name, inline) = optionParts(arg)
            func value() throws(RunArgumentError) -> String {
                if let inline { return inline }
                guard index < args.count else { throw RunArgumentError("missing value for \(name)") }
                index += 1
                return args[index - 1]
            }
            switch name {
            case "--control": control = try value()
            case "--owner": owner = try value()
            case "-p", "--publish": specs.append(try value())
            case "--json": json = true
            case "-h", "--help": return .help
            default:
                if arg.hasPrefix("-") && arg != "-" { throw RunArgumentError("unknown option \(quoted(arg))") }
                positional.append(arg)
            }
        }
        switch verb {
        case "add":
            guard !specs.isEmpty else { throw RunArgumentError("nothing to publish: give at least one -p") }
            guard positional.count == 1 else {
                throw RunArgumentError(
                    positional.isEmpty ? "missing the target IP, the container's address" : "give one target IP"
                )
            }
            guard IPAddress(positional[0]) != nil else {
                throw RunArgumentError("target IP \(quoted(positional[0])) is not an IPv4 or IPv6 address")
            }
            return .add(control: control, specs: specs, target: positional[0], owner: owner)
        case "ls", "list":
            guard positional.isEmpty, specs.isEmpty else {
                throw RunArgumentError("berth port ls takes only --owner, --json and --control")
            }
            return .list(control: control, owner: owner, json: json)
        case "rm", "remove":
            var ids: [Int] = []
            for p in positional {
                guard let id = Int(p), id > 0 else {
                    throw RunArgumentError("\(quoted(p)) is not a port id (berth port ls shows them)")
                }
                ids.append(id)
            }
            guard ids.isEmpty != (owner == nil) else {
                throw RunArgumentError("give port ids or --owner, one of the two")
            }
            return .remove(control: control, ids: ids, owner: owner)
        default:
            throw RunArgumentError("unknown port command \(quoted(verb)): add, ls or rm")
        }
    }

    package static let usage = """
        OVERVIEW: Add, list and remove ports of a running berth daemon.

        USAGE: berth port add [--owner <name>] -p <spec> ... <target-ip>
               berth port ls [--owner <name>] [--json]
               berth port rm <id> ... | --owner <name>

        OPTIONS:
          --control <path>        The daemon's control socket.
                                  (default: /run/berth/berth.sock)
          --owner <name>          Who the ports belong to (a container id); rm
                                  --owner removes all of them at once.
          --json                  ls: the daemon's JSON, as it is.

        """
}
