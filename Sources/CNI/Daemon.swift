// The berth daemon as the plugin drives it: berth's own port API over the control socket.

import Control
import JSON
import Mappings

package struct Daemon {
    let path: String

    /// One port the daemon serves, as its list reports it.
    package struct Port {
        package var owner: String?
        package var proto: Proto
        package var hostIP: IPAddress?
        package var hostPort: UInt16
        package var containerPort: UInt16
        package var target: IPAddress
    }

    var answers: Bool { ControlClient.answers(path) }

    /// Publishes the mappings as one owner, each host address family towards the container's
    /// address of that family where it has one (DNAT can serve those), else towards the other (the
    /// daemon relays across families in userspace); all addresses of a dual-stack container become
    /// `0.0.0.0` and `::`. All of them, or none: a failed second request undoes the first.
    func add(_ entries: [PortMapEntry], addresses: (v4: IPAddress?, v6: IPAddress?), owner: String) throws(CNIError) {
        var groups: [(target: IPAddress, specs: [String])] = []
        func append(_ entry: PortMapEntry, to target: IPAddress) {
            if let index = groups.firstIndex(where: { $0.target == target }) {
                groups[index].specs.append(entry.spec)
            } else {
                groups.append((target, [entry.spec]))
            }
        }
        for entry in entries {
            if entry.hostIP == nil, let v4 = addresses.v4, let v6 = addresses.v6 {
                var each = entry
                each.hostIP = .anyV4
                append(each, to: v4)
                each.hostIP = .anyV6
                append(each, to: v6)
                continue
            }
            let preferred = entry.hostIP?.isV6 == true ? addresses.v6 ?? addresses.v4 : addresses.v4 ?? addresses.v6
            if let target = preferred { append(entry, to: target) }
        }
        for group in groups {
            let body = JSONValue.object([
                ("target", .string(group.target.description)), ("publish", .array(group.specs.map { .string($0) })),
                ("owner", .string(owner)),
            ])
            let answer = try request("POST", "/v1/berth/ports", body: body)
            if answer.status == 201 { continue }
            try? remove(owner: owner)
            let code: Int
            switch answer.status {
            case 409: code = CNIError.hostPortTaken
            case 400, 403: code = CNIError.invalidConfig
            default: code = CNIError.ioFailure
            }
            let reason = Self.message(answer.body) ?? "status \(answer.status)"
            var msg = "the berth daemon refused the ports"
            if code == CNIError.hostPortTaken {
                // The daemon names the address it could not bind: `80/tcp: bind 0.0.0.0:8080: ...`.
                let taken = entries.first { reason.contains(":\($0.hostPort): ") }
                msg = taken.map { "host port \($0.hostSide) is taken" } ?? "a host port is taken"
            }
            throw CNIError(code, msg, details: "\(reason) (daemon on \(path))")
        }
    }

    func remove(owner: String) throws(CNIError) {
        let answer = try request("DELETE", "/v1/berth/ports?owner=" + ControlClient.percentEncoded(owner))
        guard answer.status == 200 else {
            throw CNIError(
                CNIError.ioFailure,
                "the berth daemon did not remove the ports of \(owner)",
                details: Self.message(answer.body) ?? "status \(answer.status)"
            )
        }
    }

    /// The ports of `owner`, or of everyone.
    func ports(owner: String?) throws(CNIError) -> [Port] {
        let query = owner.map { "?owner=" + ControlClient.percentEncoded($0) } ?? ""
        let answer = try request("GET", "/v1/berth/ports" + query)
        guard answer.status == 200, case .array(let entries)? = answer.body else {
            throw CNIError(
                CNIError.ioFailure,
                "the berth daemon's port list does not read",
                details: "status \(answer.status)"
            )
        }
        do throws(CNIError) {
            return try Self.ports(entries)
        } catch {
            throw CNIError(error.code, error.msg, details: "\(error.details) (daemon on \(path))")
        }
    }

    /// The daemon's list, read: an entry without a target or ports list is skipped, a port number
    /// out of range (the daemon's bug, or not a daemon) fails the whole list.
    package static func ports(_ entries: [JSONValue]) throws(CNIError) -> [Port] {
        var result: [Port] = []
        for entry in entries {
            var owner: String?
            if case .string(let text)? = entry[member: "owner"] { owner = text }
            guard case .string(let targetText)? = entry[member: "target"],
                let target = IPAddress(targetText),
                case .array(let ports)? = entry[member: "ports"]
            else { continue }
            for port in ports {
                guard case .string(let protoText)? = port[member: "proto"],
                    let proto = Proto(rawValue: protoText)
                else { continue }
                func number(_ key: String) throws(CNIError) -> UInt16 {
                    guard let number = PluginConfig.port(port[member: key]) else {
                        throw CNIError(
                            CNIError.ioFailure,
                            "the berth daemon's port list does not read",
                            details: "\(key) must be a port number from 1 to 65535 in \(port.serialized())"
                        )
                    }
                    return number
                }
                var host: IPAddress?
                if case .string(let text)? = port[member: "hostIP"] {
                    host = IPAddress(text)?.unmapped
                }
                result.append(
                    Port(
                        owner: owner,
                        proto: proto,
                        hostIP: host,
                        hostPort: try number("hostPort"),
                        containerPort: try number("containerPort"),
                        target: target.unmapped
                    )
                )
            }
        }
        return result
    }

    private func request(
        _ method: String,
        _ path: String,
        body: JSONValue? = nil
    ) throws(CNIError) -> (
        status: Int, body: JSONValue?
    ) {
        do {
            return try ControlClient.request(method, path, body: body, socketPath: self.path)
        } catch {
            throw CNIError(
                CNIError.ioFailure,
                "the berth daemon on \(self.path) did not answer",
                details: error.description
            )
        }
    }

    private static func message(_ body: JSONValue?) -> String? {
        guard case .string(let text)? = body?[member: "message"] else { return nil }
        return text
    }
}
