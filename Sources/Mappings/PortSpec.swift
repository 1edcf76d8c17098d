// Docker's `-p` grammar: `[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]`.

/// One `-p` argument, as Docker's `docker run -p` reads it.
///
/// The grammar is `[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]`, split the way Docker's
/// `nat.ParsePortSpec` (github.com/docker/go-connections) splits it: on colons, the last field is the
/// container port (with its protocol), the one before it the host port, and everything before that the
/// host IP.
///
/// | spec | meaning |
/// | --- | --- |
/// | `80` | an ephemeral host port on all addresses, to container port 80/tcp |
/// | `8080:80` | host port 8080 on all addresses |
/// | `:80`, `::80` | as `80` (an empty host port or host IP field means "not given", as in Docker) |
/// | `127.0.0.1:8080:80` | host port 8080 on 127.0.0.1 only |
/// | `127.0.0.1::80` | an ephemeral host port on 127.0.0.1 |
/// | `[::1]:8080:80`, `[::1]::80` | the same on an IPv6 address, in brackets |
/// | `8000-8010:80-90` | 11 mappings, pairwise: 8000→80, 8001→81, … |
/// | `8000-8010:80` | one mapping whose host port is the first free port of 8000-8010 (`HostPort.anyOf`) |
/// | `80-90` | 11 mappings, each to an ephemeral host port |
/// | `80/udp`, `80/UDP`, `80/sctp` | the protocol, any case (Docker lower-cases it); tcp when absent |
///
/// Decisions where Docker is lenient, ambiguous or silent:
/// - Host port `0` means an ephemeral port, as in Docker (libnetwork allocates a free port for 0):
///   `0:80` is `80`. A host port *range* may not include 0. Container port 0 is never allowed.
/// - Ports are ASCII decimal; leading zeros are accepted (`080` is 80, as Docker's `strconv.ParseUint`
///   reads it). A range has exactly one dash (Docker silently ignores anything after a second one).
/// - An empty protocol (`80/`) is an error; Docker silently takes it as tcp.
/// - A host IP must be a literal IPv4 or IPv6 address: no host names, no zone index (`%eth0`), no
///   empty brackets (`[]`, which Docker takes as all addresses).
/// - IPv6 in brackets is always unambiguous: `[ADDR]:HOST_PORT:CONTAINER_PORT` or `[ADDR]::CONTAINER_PORT`
///   (the host-port field must be present, possibly empty). IPv4 in brackets (`[1.2.3.4]:80:80`) is
///   accepted, as Docker accepts it.
/// - Bare IPv6 (no brackets): like Docker, the last two colon-separated fields are the host port and the
///   container port, and everything before them is the address; the host-port field must be present. So an
///   address always needs at least two colons of its own, and a four-field spec (`::1:80`, `fe80::1:80`)
///   is never a bare IPv6 form: it is rejected. Such a form is accepted only when it is unambiguous, that
///   is when no reader could take the host-port field as the last group of the address (having forgotten
///   the host port):
///   - accepted: an empty host-port field, `::1::80`, `2001:db8::1::80`, `::::80` (ephemeral port on `::`),
///     since an address never ends in a single colon;
///   - accepted: a host port after an address that cannot take one more group, e.g. `:::8080:80` (`::`),
///     `::ffff:10.0.0.1:8080:80`, `1:2:3:4:5:6:7:8:8080:80`;
///   - rejected as ambiguous: `::1:8080:80`, `fe80::1:8080:80`, because `::1:8080` and `fe80::1:8080` are
///     addresses too. Docker reads them as `[::1]:8080:80`; the error says to write exactly that.
public struct PortSpec: Sendable, Hashable, CustomStringConvertible {
    /// nil means all addresses (both `0.0.0.0` and `::`).
    package var hostIP: IPAddress?
    /// nil means an ephemeral host port for each container port.
    package var hostPorts: PortRange?
    package var containerPorts: PortRange
    package var proto: Proto

    package init(hostIP: IPAddress? = nil, hostPorts: PortRange? = nil, containerPorts: PortRange, proto: Proto = .tcp)
    {
        self.hostIP = hostIP
        self.hostPorts = hostPorts
        self.containerPorts = containerPorts
        self.proto = proto
    }

    /// Parses one `-p` argument; see the type's documentation for the grammar.
    public init(parsing text: String) throws(PortSpecError) {
        self = try PortSpecParser(spec: text).parse()
    }

    /// Expands to one PortMapping per container port, forwarding to `target`.
    ///
    /// With no host ports every mapping gets an ephemeral port; with as many host ports as container ports
    /// they pair up in order; a host range for a single container port becomes `HostPort.anyOf`. (A host
    /// range whose length differs from a container range cannot be parsed; set by hand, each mapping gets
    /// `.anyOf` of the whole host range.)
    package func mappings(to target: IPAddress) -> [PortMapping] {
        (0..<containerPorts.count).map { offset in
            let hostPort: HostPort
            if let hostPorts {
                if hostPorts.count == containerPorts.count {
                    hostPort = .fixed(UInt16(Int(hostPorts.first) + offset))
                } else {
                    hostPort = .anyOf(hostPorts)
                }
            } else {
                hostPort = .ephemeral
            }
            return PortMapping(
                proto: proto,
                hostIP: hostIP,
                hostPort: hostPort,
                containerIP: target,
                containerPort: UInt16(Int(containerPorts.first) + offset)
            )
        }
    }

    /// The canonical spelling, which parses back to the same value: `80/tcp`, `8080:80/tcp`,
    /// `127.0.0.1::80/udp`, `[::1]:8000-8001:80-81/tcp`.
    public var description: String {
        let port = "\(containerPorts)/\(proto)"
        switch (hostIP, hostPorts) {
        case (nil, nil): return port
        case (nil, let hostPorts?): return "\(hostPorts):\(port)"
        case (let hostIP?, let hostPorts): return "\(hostIP.bracketed):\(hostPorts?.description ?? ""):\(port)"
        }
    }
}

/// A `-p` argument that does not parse. `description` quotes the spec and names the part that is wrong:
/// `invalid port spec "300.1.1.1:80:80": host IP "300.1.1.1" is not an IPv4 or IPv6 address`.
public struct PortSpecError: Error, Sendable, Equatable, CustomStringConvertible {
    package let spec: String
    /// What is wrong, lowercase, one line.
    package let reason: String

    package init(spec: String, reason: String) {
        self.spec = spec
        self.reason = reason
    }

    public var description: String { "invalid port spec \(quoted(spec)): \(reason)" }
}

private struct PortSpecParser {
    let spec: String

    func fail(_ reason: String) -> PortSpecError { PortSpecError(spec: spec, reason: reason) }

    func parse() throws(PortSpecError) -> PortSpec {
        guard !spec.isEmpty else { throw fail("spec is empty") }
        let (hostIP, hostText, containerText) = try splitFields()
        let hostPorts = try parseHostPorts(hostText)

        let slash = containerText.firstIndex(of: "/")
        let containerPorts = try parsePorts(
            containerText[..<(slash ?? containerText.endIndex)],
            part: "container port",
            lowest: 1
        )
        var proto = Proto.tcp
        if let slash {
            let protoText = containerText[containerText.index(after: slash)...]
            guard !protoText.isEmpty else {
                throw fail("protocol after \"/\" is empty (expected tcp, udp or sctp)")
            }
            guard let known = Proto(rawValue: protoText.lowercased()) else {
                throw fail("unknown protocol \(quoted(protoText)) (expected tcp, udp or sctp)")
            }
            proto = known
        }

        if let hostPorts, hostPorts.count != containerPorts.count, !containerPorts.isSingle {
            func describe(_ range: PortRange, _ side: String) -> String {
                range.isSingle ? "\(side) port \(range) (1 port)" : "\(side) port range \(range) (\(range.count) ports)"
            }
            throw fail("\(describe(hostPorts, "host")) and \(describe(containerPorts, "container")) differ in length")
        }
        return PortSpec(hostIP: hostIP, hostPorts: hostPorts, containerPorts: containerPorts, proto: proto)
    }

    /// Splits the spec into host IP, host-port text and container text (port and protocol).
    func splitFields() throws(PortSpecError) -> (IPAddress?, Substring, Substring) {
        if spec.hasPrefix("[") {
            guard let close = spec.firstIndex(of: "]") else {
                throw fail("host IP has no closing \"]\"")
            }
            let inner = spec[spec.index(after: spec.startIndex)..<close]
            let after = spec[spec.index(after: close)...]
            guard after.first == ":" else {
                if after.isEmpty {
                    throw fail("bracketed host IP must be followed by \":HOST_PORT:CONTAINER_PORT\"")
                }
                throw fail("unexpected \(quoted(after.prefix { $0 != ":" })) after the bracketed host IP")
            }
            let rest = after.dropFirst().split(separator: ":", omittingEmptySubsequences: false)
            switch rest.count {
            case 2:
                guard !inner.isEmpty else { throw fail("host IP in brackets is empty") }
                return (try parseHostIP(inner), rest[0], rest[1])
            case 1:
                throw fail(
                    "missing host port field after the bracketed host IP; "
                        + "write \(quoted("[\(inner)]::\(rest[0])")) for an ephemeral host port"
                )
            default:
                throw fail("too many colons after the bracketed host IP (expected [IP]:HOST_PORT:CONTAINER_PORT)")
            }
        }

        let fields = spec.split(separator: ":", omittingEmptySubsequences: false)
        switch fields.count {
        case 1:
            return (nil, "", fields[0])
        case 2:
            return (nil, fields[0], fields[1])
        case 3:
            let hostIP = fields[0].isEmpty ? nil : try parseHostIP(fields[0])
            return (hostIP, fields[1], fields[2])
        default:
            let hostText = fields[fields.count - 2]
            let containerText = fields[fields.count - 1]
            let ipText = fields[..<(fields.count - 2)].joined(separator: ":")
            guard let address = IPAddress(ipText) else {
                if IPAddress(String(fields[0]))?.isV6 == false {
                    throw fail("too many colons for an IPv4 host IP (expected IP:HOST_PORT:CONTAINER_PORT)")
                }
                throw hostIPError(Substring(ipText))
            }
            // The one reading besides Docker's: the host port was forgotten and the host-port field is
            // the address's last group.
            if DecimalPort(hostText) != .notANumber, IPAddress(ipText + ":" + hostText) != nil {
                throw fail(
                    "ambiguous bare IPv6 host IP: \(quoted(ipText + ":" + hostText)) is an address too; "
                        + "write \(quoted("[\(ipText)]:\(hostText):\(containerText)")) for host port \(hostText)"
                )
            }
            return (address, hostText, containerText)
        }
    }

    func parseHostIP(_ text: Substring) throws(PortSpecError) -> IPAddress {
        guard let address = IPAddress(String(text)) else { throw hostIPError(text) }
        return address
    }

    func hostIPError(_ text: Substring) -> PortSpecError {
        if let percent = text.firstIndex(of: "%"), IPAddress(String(text[..<percent]))?.isV6 == true {
            return fail("host IP \(quoted(text)) has a zone index, which is not supported")
        }
        return fail("host IP \(quoted(text)) is not an IPv4 or IPv6 address")
    }

    /// nil for an ephemeral host port: an empty field or `0`.
    func parseHostPorts(_ text: Substring) throws(PortSpecError) -> PortRange? {
        if text.isEmpty || DecimalPort(text) == .value(0) { return nil }
        return try parsePorts(text, part: "host port", lowest: 0)
    }

    /// A port or a `START-END` range whose ports lie in `lowest...65535`.
    func parsePorts(_ text: Substring, part: String, lowest: UInt16) throws(PortSpecError) -> PortRange {
        guard !text.isEmpty else { throw fail("\(part) is empty") }
        guard text.contains("-") else {
            switch DecimalPort(text) {
            case .value(let port) where port >= lowest:
                return PortRange(single: port)
            case .value, .tooLarge:
                throw fail("\(part) \(quoted(text)) is out of range (\(lowest)-65535)")
            case .notANumber:
                throw fail("\(part) \(quoted(text)) is not a number")
            }
        }
        let ends = text.split(separator: "-", omittingEmptySubsequences: false)
        guard ends.count == 2, case .value(let first) = DecimalPort(ends[0]),
            case .value(let last) = DecimalPort(ends[1])
        else {
            if ends.count == 2, DecimalPort(ends[0]) != .notANumber, DecimalPort(ends[1]) != .notANumber {
                throw fail("\(part) range \(quoted(text)) is out of range (1-65535)")
            }
            throw fail("\(part) range \(quoted(text)) is not of the form START-END")
        }
        guard first >= 1 else { throw fail("\(part) range \(quoted(text)) is out of range (1-65535)") }
        guard first <= last else { throw fail("\(part) range \(quoted(text)) is reversed") }
        return PortRange(first, last)
    }
}
