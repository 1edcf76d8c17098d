// What one plugin call is given: the CNI_* environment and the plugin configuration on stdin.

import Control
import JSON
import Mappings

package enum CNICommand: String, Sendable {
    case add = "ADD"
    case del = "DEL"
    case check = "CHECK"
    case status = "STATUS"
    case gc = "GC"
    case version = "VERSION"
}

/// The CNI_* parameters (SPEC.md section 2), checked for the command at hand.
package struct CNIEnvironment: Sendable, Equatable {
    package var command: CNICommand
    package var containerID: String
    package var netns: String
    package var ifname: String

    package init(command: CNICommand, containerID: String = "", netns: String = "", ifname: String = "") {
        self.command = command
        self.containerID = containerID
        self.netns = netns
        self.ifname = ifname
    }

    /// Reads the parameters through `lookup` (the process environment in the plugin).
    package static func read(_ lookup: (String) -> String?) throws(CNIError) -> CNIEnvironment {
        guard let text = lookup("CNI_COMMAND"), !text.isEmpty else {
            throw CNIError(
                CNIError.invalidEnvironment,
                "CNI_COMMAND is not set",
                details: "berth-cni is a CNI plugin: a container runtime runs it"
            )
        }
        guard let command = CNICommand(rawValue: text) else {
            throw CNIError(
                CNIError.invalidEnvironment,
                "CNI_COMMAND \(quoted(text)) is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"
            )
        }
        var environment = CNIEnvironment(command: command)
        guard [.add, .del, .check].contains(command) else { return environment }
        let id = lookup("CNI_CONTAINERID") ?? ""
        guard Self.isValidIdentifier(id) else {
            throw CNIError(
                CNIError.invalidEnvironment,
                "CNI_CONTAINERID \(quoted(id)) is not a container id",
                details: "it must start with a letter or digit, followed by letters, digits, '_', '.' or '-'"
            )
        }
        environment.containerID = id
        environment.ifname = lookup("CNI_IFNAME") ?? ""
        guard !environment.ifname.isEmpty else { throw CNIError(CNIError.invalidEnvironment, "CNI_IFNAME is not set") }
        guard Self.isInterfaceName(environment.ifname) else {
            throw CNIError(
                CNIError.invalidEnvironment,
                "CNI_IFNAME \(quoted(environment.ifname)) is not an interface name",
                details: "at most 15 bytes, without '/', ':', spaces or control characters"
            )
        }
        environment.netns = lookup("CNI_NETNS") ?? ""
        if command != .del && environment.netns.isEmpty {
            throw CNIError(CNIError.invalidEnvironment, "CNI_NETNS is not set")
        }
        return environment
    }

    /// The kernel's rule for interface names (dev_valid_name), control characters refused too: the
    /// name ends up in owners and nftables comments, and `/` would make one owner read as another.
    static func isInterfaceName(_ text: String) -> Bool {
        guard text.utf8.count < 16, text != ".", text != ".." else { return false }
        return text.unicodeScalars.allSatisfy { scalar in
            scalar != " " && scalar != "/" && scalar != ":" && !breaksLines(scalar)
        }
    }

    /// The spec's rule for container ids and network names.
    static func isValidIdentifier(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, first.isASCIIAlphanumeric else { return false }
        return text.unicodeScalars.allSatisfy { $0.isASCIIAlphanumeric || $0 == "_" || $0 == "." || $0 == "-" }
    }
}

extension Unicode.Scalar {
    fileprivate var isASCIIAlphanumeric: Bool {
        ("a"..."z").contains(self) || ("A"..."Z").contains(self) || ("0"..."9").contains(self)
    }
}

/// One entry of `runtimeConfig.portMappings` (CONVENTIONS.md): hostIP nil for all addresses.
package struct PortMapEntry: Sendable, Hashable, CustomStringConvertible {
    package var hostPort: UInt16
    package var containerPort: UInt16
    package var proto: Proto
    package var hostIP: IPAddress?

    package init(hostPort: UInt16, containerPort: UInt16, proto: Proto, hostIP: IPAddress? = nil) {
        self.hostPort = hostPort
        self.containerPort = containerPort
        self.proto = proto
        self.hostIP = hostIP
    }

    /// `8080/tcp`, `127.0.0.1:8080/tcp`, `[::1]:8080/tcp`: the host side a user publishes.
    package var hostSide: String { "\(hostIP.map { "\($0.bracketed):" } ?? "")\(hostPort)/\(proto)" }

    package var description: String { "\(hostSide) -> \(containerPort)" }

    /// The Docker `-p` spec of this mapping, for the daemon.
    package var spec: String {
        PortSpec(
            hostIP: hostIP,
            hostPorts: PortRange(single: hostPort),
            containerPorts: PortRange(single: containerPort),
            proto: proto
        ).description
    }
}

/// The plugin configuration (the plugin's object of the network list, as the runtime derives it).
package struct PluginConfig: Sendable {
    package static let supportedVersions = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    package static let defaultControl = "/run/berth/berth.sock"
    package static let defaultTable = "berth_cni"

    package var cniVersion: String
    package var name: String
    package var portMappings: [PortMapEntry] = []
    package var prevResult: JSONValue?
    /// The berth daemon's control socket; when nobody answers there, the plugin programs nftables.
    package var control: String = defaultControl
    /// The shared nftables table (inet family) for calls without a daemon.
    package var table: String = defaultTable
    /// GC's `cni.dev/valid-attachments`: `containerID/ifname` each.
    package var validAttachments: Set<String>?

    /// The `cniVersion` a call's stdin asks for, "1.1.0" where it says none: what VERSION answers
    /// with, and the version an error is written in.
    package static func askedVersion(_ stdin: [UInt8]) -> String {
        guard case .success(let value) = JSONValue.parse(stdin),
            case .string(let version)? = value[member: "cniVersion"]
        else { return "1.1.0" }
        return version
    }

    package init(cniVersion: String, name: String) {
        self.cniVersion = cniVersion
        self.name = name
    }

    /// Parses the configuration. `cniVersion` is checked first, so a caller of a version berth does
    /// not speak gets code 1 whatever else is wrong.
    package static func parse(_ bytes: [UInt8]) throws(CNIError) -> PluginConfig {
        let value: JSONValue
        switch JSONValue.parse(bytes) {
        case .success(let v): value = v
        case .failure(let e):
            throw CNIError(
                CNIError.decodeFailure,
                "the network configuration on stdin is not JSON",
                details: e.description
            )
        }
        guard case .object = value else {
            throw CNIError(CNIError.decodeFailure, "the network configuration on stdin is not a JSON object")
        }
        guard case .string(let version)? = value[member: "cniVersion"] else {
            throw CNIError(CNIError.invalidConfig, "cniVersion is missing from the network configuration")
        }
        guard supportedVersions.contains(version) else {
            throw CNIError(
                CNIError.incompatibleVersion,
                "CNI version \(quoted(version)) is not supported",
                details: "berth-cni speaks \(supportedVersions.joined(separator: ", "))"
            )
        }
        if let place = firstInfinity(value) {
            // cJSON reads a number beyond a double as infinity, which no JSON can spell again.
            throw CNIError(
                CNIError.decodeFailure,
                "a number in the network configuration is out of range",
                details: "\(place.path) is \(place.negative ? "-" : "")infinite"
            )
        }
        var name = ""
        if case .string(let text)? = value[member: "name"] { name = text }
        guard CNIEnvironment.isValidIdentifier(name) else {
            throw CNIError(CNIError.invalidConfig, "the network name \(quoted(name)) is not valid")
        }
        var config = PluginConfig(cniVersion: version, name: name)
        if let control = value[member: "control"] {
            guard case .string(let path) = control, path.hasPrefix("/"),
                !path.unicodeScalars.contains(where: breaksLines)
            else {
                throw CNIError(CNIError.invalidConfig, "control must be the absolute path of a berth daemon's socket")
            }
            config.control = path
        }
        if let named = value[member: "table"] {
            guard case .string(let table) = named, !table.isEmpty, table.utf8.count < 64,
                table.unicodeScalars.allSatisfy({ $0.isASCIIAlphanumeric || $0 == "_" })
            else {
                throw CNIError(CNIError.invalidConfig, "table must be an nftables table name (letters, digits, '_')")
            }
            config.table = table
        }
        if let previous = value[member: "prevResult"], previous != .null {
            guard case .object = previous else {
                throw CNIError(CNIError.invalidConfig, "prevResult must be an object")
            }
            config.prevResult = previous
        }
        if let mappings = value[member: "runtimeConfig"]?[member: "portMappings"] {
            config.portMappings = try portMappings(mappings)
        }
        if let valid = value[member: "cni.dev/valid-attachments"] {
            config.validAttachments = try attachments(valid)
        }
        return config
    }

    private static func portMappings(_ value: JSONValue) throws(CNIError) -> [PortMapEntry] {
        guard case .array(let items) = value else {
            throw CNIError(CNIError.invalidConfig, "runtimeConfig.portMappings must be a list")
        }
        var entries: [PortMapEntry] = []
        for item in items {
            guard case .object = item else {
                throw CNIError(CNIError.invalidConfig, "each port mapping must be an object")
            }
            func port(_ key: String) throws(CNIError) -> UInt16 {
                guard let port = Self.port(item[member: key]) else {
                    throw CNIError(
                        CNIError.invalidConfig,
                        "\(key) must be a port number from 1 to 65535 in \(item.serialized())"
                    )
                }
                return port
            }
            var proto = Proto.tcp
            if case .string(let text)? = item[member: "protocol"] {
                switch text.lowercased() {
                case "tcp", "": proto = .tcp
                case "udp": proto = .udp
                default:
                    throw CNIError(
                        CNIError.invalidConfig,
                        "protocol \(quoted(text)) is not published by berth",
                        details: "tcp and udp are"
                    )
                }
            }
            var host: IPAddress?
            if case .string(let text)? = item[member: "hostIP"], !text.isEmpty {
                guard let ip = IPAddress(text) else {
                    throw CNIError(CNIError.invalidConfig, "hostIP \(quoted(text)) is not an IP address")
                }
                host = ip.unmapped
            }
            entries.append(
                PortMapEntry(
                    hostPort: try port("hostPort"),
                    containerPort: try port("containerPort"),
                    proto: proto,
                    hostIP: host
                )
            )
        }
        return entries
    }

    /// A port number from 1 to 65535; nil for anything else (fractions, -1e19, 1e300, not a number).
    static func port(_ value: JSONValue?) -> UInt16? {
        guard case .number(let n)? = value, let port = UInt16(exactly: n), port != 0 else { return nil }
        return port
    }

    /// Where the document holds an infinite number (`prevResult.ips[0].interface`), if anywhere.
    private static func firstInfinity(_ value: JSONValue, at path: String = "") -> (path: String, negative: Bool)? {
        switch value {
        case .number(let n) where n.isInfinite:
            return (path, n < 0)
        case .object(let members):
            for (name, member) in members {
                if let found = firstInfinity(member, at: path.isEmpty ? name : "\(path).\(name)") { return found }
            }
        case .array(let elements):
            for (index, element) in elements.enumerated() {
                if let found = firstInfinity(element, at: "\(path)[\(index)]") { return found }
            }
        default:
            break
        }
        return nil
    }

    private static func attachments(_ value: JSONValue) throws(CNIError) -> Set<String> {
        guard case .array(let items) = value else {
            throw CNIError(CNIError.invalidConfig, "cni.dev/valid-attachments must be a list")
        }
        var result: Set<String> = []
        for item in items {
            guard case .string(let id)? = item[member: "containerID"],
                case .string(let ifname)? = item[member: "ifname"]
            else {
                throw CNIError(CNIError.invalidConfig, "each valid attachment needs containerID and ifname")
            }
            result.insert("\(id)/\(ifname)")
        }
        return result
    }

    /// The container's addresses on `ifname`, read from prevResult as portmap reads them: IPs
    /// whose interface index names `ifname` inside a sandbox, or IPs with no interface index. An
    /// index that is no integer (1.5, 1e300) is an error; an integer that names no interface is
    /// skipped.
    package func containerAddresses(ifname: String) throws(CNIError) -> (v4: IPAddress?, v6: IPAddress?) {
        var interfaces: [JSONValue] = []
        if case .array(let list)? = prevResult?[member: "interfaces"] { interfaces = list }
        guard case .array(let ips)? = prevResult?[member: "ips"] else { return (nil, nil) }
        var v4: IPAddress?
        var v6: IPAddress?
        for (position, ip) in ips.enumerated() {
            guard case .string(let cidr)? = ip[member: "address"],
                let address = IPAddress(String(cidr.split(separator: "/").first ?? ""))
            else { continue }
            if let given = ip[member: "interface"], given != .null {
                guard case .number(let n) = given, let index = Int(exactly: n) else {
                    throw CNIError(
                        CNIError.invalidConfig,
                        "prevResult.ips[\(position)].interface must be an index into prevResult.interfaces, not \(given.serialized())"
                    )
                }
                guard index >= 0, index < interfaces.count else { continue }
                let interface = interfaces[index]
                guard case .string(ifname)? = interface[member: "name"] else { continue }
                guard case .string(let sandbox)? = interface[member: "sandbox"], !sandbox.isEmpty else { continue }
            }
            let plain = address.unmapped
            if plain.isV6 { v6 = v6 ?? plain } else { v4 = v4 ?? plain }
        }
        return (v4, v6)
    }
}
