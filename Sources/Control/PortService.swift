// What the daemon's control API does: add, list and remove published ports, as rootlesskit's
// port API (so its clients work unchanged) and as berth's own API (Docker `-p` specs towards a
// container, with an owner). Runs on the control thread only; Publisher does the binding.

import LinuxIO
import Mappings
import Publishing

public final class PortService {
    /// One add: what was asked and what was bound.
    struct Entry {
        let id: Int
        let owner: String?
        let target: IPAddress
        let specs: [String]
        let publication: PublicationID
        let ports: [BoundPort]
        /// Set for ports added through rootlesskit's API: its spec, as it lists them.
        let rootlessKitSpec: [(String, JSONValue)]?
    }

    private let publisher: Publisher
    private let drain: Duration
    private var entries: [Int: Entry] = [:]
    private var nextID = 1

    public init(publisher: Publisher, drain: Duration) {
        self.publisher = publisher
        self.drain = drain
    }

    /// The answer to one request.
    public func handle(_ request: HTTPRequest) -> HTTPResponse {
        let parts = request.path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        let method = request.method
        if parts == ["metrics"] {
            guard method == "GET" else { return notAllowed(request) }
            return Self.metrics(publisher)
        }
        if parts.count >= 2, parts[0] == "v1", parts[1] == "info", parts.count == 2 {
            return method == "GET" ? info() : notAllowed(request)
        }
        if parts.count >= 2, parts[0] == "v1", parts[1] == "ports" {
            switch (method, parts.count) {
            case ("GET", 2): return rootlessKitList()
            case ("POST", 2): return rootlessKitAdd(request.body)
            case ("DELETE", 3): return remove(parts[2], rootlessKit: true)
            case (_, 2), (_, 3): return notAllowed(request)
            default: break
            }
        }
        if parts.count >= 3, parts[0] == "v1", parts[1] == "berth", parts[2] == "ports" {
            switch (method, parts.count) {
            case ("GET", 3): return list(owner: request.query["owner"])
            case ("POST", 3): return add(request.body)
            case ("DELETE", 4): return remove(parts[3], rootlessKit: false)
            case ("DELETE", 3):
                guard let owner = request.query["owner"], !owner.isEmpty else {
                    return .error(400, "give an id (DELETE /v1/berth/ports/ID) or an owner (?owner=NAME)")
                }
                return remove(owner: owner)
            case (_, 3), (_, 4): return notAllowed(request)
            default: break
            }
        }
        return .error(404, "no such endpoint: \(plain(method)) \(plain(request.path))")
    }

    private func notAllowed(_ request: HTTPRequest) -> HTTPResponse {
        .error(405, "\(plain(request.method)) is not allowed on \(plain(request.path))")
    }

    /// `GET /metrics`: Prometheus text, scraped through the loops.
    static func metrics(_ publisher: Publisher) -> HTTPResponse {
        HTTPResponse(
            status: 200,
            contentType: "text/plain; version=0.0.4; charset=utf-8",
            body: Array(publisher.metrics().prometheusText().utf8)
        )
    }

    /// What a metrics-only listener (`--metrics ADDRESS:PORT`) answers: `GET /metrics`, nothing else.
    public func handleMetricsOnly(_ request: HTTPRequest) -> HTTPResponse {
        guard request.path == "/metrics" else { return .error(404, "only /metrics is served here") }
        guard request.method == "GET" else { return notAllowed(request) }
        return Self.metrics(publisher)
    }

    /// Removes every entry (the fuzzer's clean slate between inputs).
    public func removeAll() {
        for entry in entries.values { _ = unpublish(entry) }
    }

    // MARK: rootlesskit's API

    private func info() -> HTTPResponse {
        let protos: [JSONValue] = ["tcp", "tcp4", "tcp6", "udp", "udp4", "udp6"].map { .string($0) }
        return HTTPResponse(
            status: 200,
            json: .object([
                ("apiVersion", .string("1.1.1")), ("version", .string(berthAPIVersion)), ("stateDir", .string("")),
                ("childPID", .number(0)),
                (
                    "portDriver",
                    .object([
                        ("driver", .string("berth")), ("protos", .array(protos)),
                        ("disallowLoopbackChildIP", .bool(false)),
                    ])
                ),
            ])
        )
    }

    private func rootlessKitList() -> HTTPResponse {
        let statuses = entries.values.sorted { $0.id < $1.id }.compactMap { entry -> JSONValue? in
            entry.rootlessKitSpec.map { .object([("id", .number(Double(entry.id))), ("spec", .object($0))]) }
        }
        return HTTPResponse(status: 200, json: .array(statuses))
    }

    /// `{"proto","parentIP","parentPort","childIP","childPort"}`: one port, as rootlesskit's
    /// builtin driver takes it; `parentIP` empty means all addresses, `parentPort` 0 a free one.
    private func rootlessKitAdd(_ body: [UInt8]) -> HTTPResponse {
        let fields: [String: JSONValue]
        switch JSONValue.parse(body).flatMap({
            $0.fields(allowed: ["proto", "parentIP", "parentPort", "childIP", "childPort"])
        }) {
        case .success(let f): fields = f
        case .failure(let e): return .error(400, e.description)
        }
        guard case .string(let proto)? = fields["proto"] else {
            return .error(400, "proto is required: tcp, tcp4, tcp6, udp, udp4 or udp6")
        }
        let family: String
        switch proto {
        case "tcp", "udp": family = ""
        case "tcp4", "udp4": family = "4"
        case "tcp6", "udp6": family = "6"
        case "sctp", "sctp4", "sctp6": return .error(400, "sctp is not supported")
        default: return .error(400, "unknown proto \(quoted(proto)): tcp, tcp4, tcp6, udp, udp4 or udp6")
        }
        var parentIP = ""
        if let value = fields["parentIP"] {
            guard case .string(let text) = value else { return .error(400, "parentIP must be a string") }
            parentIP = text
        }
        guard let parentPort = Self.port(fields["parentPort"], allowZero: true) else {
            return .error(400, "parentPort must be a whole number from 0 to 65535")
        }
        guard let childPort = Self.port(fields["childPort"], allowZero: false) else {
            return .error(400, "childPort must be a whole number from 1 to 65535")
        }
        guard case .string(let childText)? = fields["childIP"], let child = IPAddress(childText) else {
            return .error(400, "childIP must be the container's IPv4 or IPv6 address")
        }
        var host = parentIP
        if host.isEmpty { host = family == "4" ? "0.0.0.0" : (family == "6" ? "::" : "") }
        if !host.isEmpty {
            guard let ip = IPAddress(host) else {
                return .error(400, "parentIP \(quoted(parentIP)) is not an IP address")
            }
            if (family == "4" && ip.isV6) || (family == "6" && !ip.isV6) {
                return .error(400, "parentIP \(plain(parentIP)) is not an IPv\(family) address, as \(proto) asks")
            }
            if ip.isV6 { host = "[\(host)]" }
        }
        let portText = parentPort == 0 ? "" : "\(parentPort)"
        let hostPart = host.isEmpty ? (portText.isEmpty ? "" : portText + ":") : "\(host):\(portText):"
        let spec = "\(hostPart)\(childPort)/\(proto.prefix(3))"
        switch publish([spec], to: child, owner: nil, rootlessKit: true) {
        case .failure(let response):
            return response
        case .success(let entry):
            let bound = Double(entry.ports.first?.address.port ?? UInt16(parentPort))
            let status: [(String, JSONValue)] = [
                ("proto", .string(proto)), ("parentIP", .string(parentIP)), ("parentPort", .number(bound)),
                ("childIP", .string(childText)), ("childPort", .number(Double(childPort))),
            ]
            entries[entry.id] = Entry(
                id: entry.id,
                owner: nil,
                target: child,
                specs: entry.specs,
                publication: entry.publication,
                ports: entry.ports,
                rootlessKitSpec: status
            )
            return HTTPResponse(
                status: 201,
                json: .object([("id", .number(Double(entry.id))), ("spec", .object(status))])
            )
        }
    }

    private static func port(_ value: JSONValue?, allowZero: Bool) -> Int? {
        guard let value else { return allowZero ? 0 : nil }
        guard case .number(let n) = value, n == n.rounded(), n >= (allowZero ? 0 : 1), n <= 65535 else { return nil }
        return Int(n)
    }

    // MARK: berth's own API

    /// `{"target":"172.17.0.2","publish":["8080:80","80","53:53/udp"],"owner":"<container id>"}`:
    /// every spec bound (and its DNAT elements installed) in one change, or nothing.
    private func add(_ body: [UInt8]) -> HTTPResponse {
        let fields: [String: JSONValue]
        switch JSONValue.parse(body).flatMap({
            $0.fields(allowed: ["target", "publish", "owner", "proxyProtocol", "proxyProtocolUDP"])
        }) {
        case .success(let f): fields = f
        case .failure(let e): return .error(400, e.description)
        }
        guard case .string(let targetText)? = fields["target"], let target = IPAddress(targetText) else {
            return .error(400, "target must be the container's IPv4 or IPv6 address")
        }
        guard case .array(let list)? = fields["publish"], !list.isEmpty else {
            return .error(400, "publish must be a list of Docker -p specs, such as [\"8080:80\", \"53:53/udp\"]")
        }
        var specs: [String] = []
        for item in list {
            guard case .string(let spec) = item else {
                return .error(400, "publish must hold strings, such as \"8080:80\"")
            }
            specs.append(spec)
        }
        var owner: String?
        if let value = fields["owner"] {
            guard case .string(let text) = value, !text.isEmpty, text.count <= 256 else {
                return .error(400, "owner must be a string of 1 to 256 characters")
            }
            owner = text
        }
        var proxy: ProxyProtocol?
        if let value = fields["proxyProtocol"] {
            guard case .string(let text) = value, let version = ProxyProtocol(rawValue: text) else {
                return .error(400, "proxyProtocol must be \"v1\" or \"v2\"")
            }
            proxy = version
        }
        var proxyUDP = false
        if let value = fields["proxyProtocolUDP"] {
            guard case .string("v2") = value else { return .error(400, "proxyProtocolUDP must be \"v2\"") }
            proxyUDP = true
        }
        switch publish(specs, to: target, owner: owner, rootlessKit: false, proxy: proxy, proxyUDP: proxyUDP) {
        case .failure(let response): return response
        case .success(let entry):
            entries[entry.id] = entry
            return HTTPResponse(status: 201, json: Self.json(entry))
        }
    }

    private func list(owner: String?) -> HTTPResponse {
        let chosen = entries.values.filter { owner == nil || $0.owner == owner }.sorted { $0.id < $1.id }
        return HTTPResponse(status: 200, json: .array(chosen.map(Self.json)))
    }

    private func remove(owner: String) -> HTTPResponse {
        let chosen = entries.values.filter { $0.owner == owner }.sorted { $0.id < $1.id }
        var removed: [JSONValue] = []
        for entry in chosen {
            if let failure = unpublish(entry) { return failure }
            removed.append(.number(Double(entry.id)))
        }
        return HTTPResponse(status: 200, json: .object([("removed", .array(removed))]))
    }

    private func remove(_ idText: String, rootlessKit: Bool) -> HTTPResponse {
        guard let id = Int(idText), let entry = entries[id], !rootlessKit || entry.rootlessKitSpec != nil else {
            return .error(rootlessKit ? 400 : 404, "no ports with id \(plain(idText))")
        }
        if let failure = unpublish(entry) { return failure }
        return rootlessKit
            ? HTTPResponse(status: 200, body: [])
            : HTTPResponse(status: 200, json: .object([("removed", .array([.number(Double(id))]))]))
    }

    // MARK: doing it

    private func publish(
        _ specs: [String],
        to target: IPAddress,
        owner: String?,
        rootlessKit: Bool,
        proxy: ProxyProtocol? = nil,
        proxyUDP: Bool = false
    ) -> Result<Entry, HTTPResponse> {
        var mappings: [PortMapping] = []
        for spec in specs {
            do {
                mappings += try PortSpec(parsing: spec).mappings(to: target)
            } catch {
                return .failure(.error(400, "\(error)"))
            }
        }
        let added: (id: PublicationID, ports: [BoundPort])
        do {
            added = try publisher.add(mappings, owner: owner, proxyProtocol: proxy, proxyProtocolUDP: proxyUDP)
        } catch {
            return .failure(.error(Self.status(of: error), error.description))
        }
        let id = nextID
        nextID += 1
        return .success(
            Entry(
                id: id,
                owner: owner,
                target: target,
                specs: specs,
                publication: added.id,
                ports: added.ports,
                rootlessKitSpec: nil
            )
        )
    }

    private func unpublish(_ entry: Entry) -> HTTPResponse? {
        do {
            try publisher.remove(entry.publication, drain: drain)
        } catch {
            return .error(500, error.description)
        }
        entries[entry.id] = nil
        return nil
    }

    /// The status for a failed bind: a port someone holds is a conflict, a privileged port a
    /// permission matter, nftables refusing berth's change the server's problem.
    static func status(of error: PublishError) -> Int {
        if error.isKernelPathFailure { return 500 }
        if error.bindErrno == .addressInUse { return 409 }
        if error.bindErrno == .permissionDenied { return 403 }
        return 400
    }

    static func json(_ entry: Entry) -> JSONValue {
        var members: [(String, JSONValue)] = [("id", .number(Double(entry.id)))]
        members.append(("owner", entry.owner.map { .string($0) } ?? .null))
        members.append(("target", .string(entry.target.description)))
        members.append(("publish", .array(entry.specs.map { .string($0) })))
        members.append(
            (
                "ports",
                .array(
                    entry.ports.map { port in
                        .object([
                            ("proto", .string(port.mapping.proto.rawValue)), ("hostIP", .string(port.address.ipText)),
                            ("hostPort", .number(Double(port.address.port))),
                            ("containerPort", .number(Double(port.mapping.containerPort))),
                        ])
                    }
                )
            )
        )
        members.append(("lines", .array(entry.ports.map { .string($0.line) })))
        return .object(members)
    }
}

extension HTTPResponse: Error {}

/// The version the API reports.
public let berthAPIVersion = BerthVersion.line()
