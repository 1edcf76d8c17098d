// What the daemon's control API does: add, list and remove published ports, as rootlesskit's
// port API (so its clients work unchanged) and as berth's own API (Docker `-p` specs towards a
// container, with an owner). Runs on the control thread only; Publisher does the binding.

import JSON
import LinuxIO
import Mappings
import Publishing

package final class PortService {
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
        /// How many mappings (host ports) it holds, for `maxPorts`.
        let mappings: Int
        /// The docker-proxy shim whose socket this is (its pid): removed when the shim's
        /// connection ends, never through the API.
        var heldBy: Int32? = nil
    }

    /// What the API may do, beside what Publisher checks (descriptors, binds).
    package struct Policy: Sendable {
        /// Targets refused unless allowed (loopback, unspecified, multicast).
        package var targets = TargetPolicy()
        /// Where a rootlesskit add without `childIP` goes; nil: such an add is refused.
        package var defaultTarget: IPAddress?
        /// Mappings published at once, over every entry.
        package var maxPorts = DaemonArguments.defaultMaxPorts
        package init() {}
    }

    private let publisher: Publisher
    private let drain: Duration
    private let policy: Policy
    private var entries: [Int: Entry] = [:]
    private var nextID = 1
    private var mappingCount = 0

    package init(publisher: Publisher, drain: Duration, policy: Policy = Policy()) {
        self.publisher = publisher
        self.drain = drain
        self.policy = policy
    }

    /// The answer to one request.
    package func handle(_ request: HTTPRequest) -> HTTPResponse {
        let parts = request.path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        let method = request.method
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
        if parts == ["v1", "berth", "shims"] {
            // The control connection routes a shim's request, with its socket, to adoptShim.
            return method == "POST" ? adoptShim(request, socket: nil, pid: 0).response : notAllowed(request)
        }
        return .error(404, "no such endpoint: \(plain(method)) \(plain(request.path))")
    }

    private func notAllowed(_ request: HTTPRequest) -> HTTPResponse {
        .error(405, "\(plain(request.method)) is not allowed on \(plain(request.path))")
    }

    /// `GET /metrics`'s body: Prometheus text, scraped through the loops. ControlServer calls it
    /// on its metrics thread (Publisher.metrics may be called beside the control thread's adds
    /// and removes); it reads nothing of this service's own state.
    package func metricsText() -> [UInt8] {
        Array(publisher.metrics().prometheusText().utf8)
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
        switch JSONValue.parse(body, limits: .request).flatMap({
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
        let child: IPAddress
        var childText = ""
        switch fields["childIP"] {
        case .string(let text)? where !text.isEmpty:
            guard let ip = IPAddress(text) else {
                return .error(400, "childIP must be the container's IPv4 or IPv6 address")
            }
            child = ip
            childText = text
        case nil, .string?, .null?:
            // rootlesskit's usual form (`rootlessctl add-ports 127.0.0.1:8080:80/tcp`): its child
            // is a network namespace; berth's must be named.
            guard let fallback = policy.defaultTarget else {
                return .error(
                    400,
                    "childIP is required: berth forwards to an address, so give one, or start the daemon with --default-target ADDRESS"
                )
            }
            child = fallback
        default:
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
                rootlessKitSpec: status,
                mappings: entry.mappings
            )
            return HTTPResponse(
                status: 201,
                json: .object([("id", .number(Double(entry.id))), ("spec", .object(status))])
            )
        }
    }

    private static func port(_ value: JSONValue?, allowZero: Bool) -> Int? {
        guard let value else { return allowZero ? 0 : nil }
        guard case .number(let n) = value, let port = Int(exactly: n), port >= (allowZero ? 0 : 1), port <= 65535
        else { return nil }
        return port
    }

    // MARK: berth's own API

    /// `{"target":"172.17.0.2","publish":["8080:80","80","53:53/udp"],"owner":"<container id>"}`:
    /// every spec bound (and its DNAT elements installed) in one change, or nothing.
    private func add(_ body: [UInt8]) -> HTTPResponse {
        let fields: [String: JSONValue]
        switch JSONValue.parse(body, limits: .request).flatMap({
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
        if let held = chosen.first(where: { $0.heldBy != nil }) { return Self.heldRefusal(held) }
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
        if entry.heldBy != nil { return Self.heldRefusal(entry) }
        if let failure = unpublish(entry) { return failure }
        return rootlessKit
            ? HTTPResponse(status: 200, body: [])
            : HTTPResponse(status: 200, json: .object([("removed", .array([.number(Double(id))]))]))
    }

    // MARK: docker-proxy shims

    /// `POST /v1/berth/shims`, `{"proto","hostIP","hostPort","containerIP","containerPort"}`
    /// with the shim's bound socket attached (SCM_RIGHTS): served from now on, as its own entry
    /// owned by `docker-proxy/PID/TARGET`. The answer's second value is the entry's id: the
    /// caller keeps the shim's connection and calls `shimGone` when it ends.
    package func adoptShim(
        _ request: HTTPRequest,
        socket: consuming Descriptor?,
        pid: Int32
    ) -> (response: HTTPResponse, entry: Int?) {
        let fields: [String: JSONValue]
        switch JSONValue.parse(request.body, limits: .request).flatMap({
            $0.fields(allowed: ["proto", "hostIP", "hostPort", "containerIP", "containerPort"])
        }) {
        case .success(let f): fields = f
        case .failure(let e): return (.error(400, e.description), nil)
        }
        guard case .string(let protoText)? = fields["proto"], let proto = Proto(rawValue: protoText), proto != .sctp
        else {
            return (.error(400, "proto must be tcp or udp"), nil)
        }
        guard case .string(let hostText)? = fields["hostIP"], let hostIP = IPAddress(hostText) else {
            return (.error(400, "hostIP must be the address the shim bound"), nil)
        }
        guard case .string(let targetText)? = fields["containerIP"], let containerIP = IPAddress(targetText) else {
            return (.error(400, "containerIP must be the container's IPv4 or IPv6 address"), nil)
        }
        guard let hostPort = Self.port(fields["hostPort"], allowZero: false),
            let containerPort = Self.port(fields["containerPort"], allowZero: false)
        else {
            return (.error(400, "hostPort and containerPort must be whole numbers from 1 to 65535"), nil)
        }
        if let refusal = policy.targets.refusal(containerIP) { return (.error(400, refusal), nil) }
        guard mappingCount < policy.maxPorts else {
            return (.error(400, "\(policy.maxPorts) ports are published already: see berth daemon --max-ports"), nil)
        }
        guard let socket = socket.take() else {
            return (.error(400, "no socket came with the request: pass the bound socket with SCM_RIGHTS"), nil)
        }
        let mapping = PortMapping(
            proto: proto,
            hostIP: hostIP,
            hostPort: .fixed(UInt16(hostPort)),
            containerIP: containerIP,
            containerPort: UInt16(containerPort)
        )
        let owner = "docker-proxy/\(pid)/\(SocketAddress(ip: containerIP.bytes, port: UInt16(containerPort)))"
        let adopted: (id: PublicationID, port: BoundPort)
        do {
            adopted = try publisher.adopt(socket, mapping: mapping, owner: owner)
        } catch {
            return (.error(400, error.description), nil)
        }
        let id = nextID
        nextID += 1
        mappingCount += 1
        var entry = Entry(
            id: id,
            owner: owner,
            target: containerIP,
            specs: ["\(hostIP.bracketed):\(hostPort):\(containerPort)/\(proto)"],
            publication: adopted.id,
            ports: [adopted.port],
            rootlessKitSpec: nil,
            mappings: 1
        )
        entry.heldBy = pid
        entries[id] = entry
        return (HTTPResponse(status: 201, json: Self.json(entry)), id)
    }

    /// The shim of entry `id` is gone (its connection ended: it stopped, or was killed): the
    /// port stops accepting at once and its connections drain.
    package func shimGone(_ id: Int) {
        guard let entry = entries[id] else { return }
        _ = unpublish(entry)
    }

    private static func heldRefusal(_ entry: Entry) -> HTTPResponse {
        .error(
            409,
            "ports \(entry.id) belong to the docker-proxy shim pid \(entry.heldBy ?? 0): they go when it stops (docker stop, docker rm)"
        )
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
        if let refusal = policy.targets.refusal(target) { return .failure(.error(400, refusal)) }
        var mappings: [PortMapping] = []
        for spec in specs {
            do {
                mappings += try PortSpec(parsing: spec).mappings(to: target)
            } catch {
                return .failure(.error(400, "\(error)"))
            }
            if mappingCount + mappings.count > policy.maxPorts {
                return .failure(
                    .error(
                        400,
                        "this add would publish more than \(policy.maxPorts) ports at once (\(mappingCount) are published): see berth daemon --max-ports"
                    )
                )
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
        mappingCount += mappings.count
        return .success(
            Entry(
                id: id,
                owner: owner,
                target: target,
                specs: specs,
                publication: added.id,
                ports: added.ports,
                rootlessKitSpec: nil,
                mappings: mappings.count
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
        mappingCount -= entry.mappings
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
        if let pid = entry.heldBy { members.append(("shim", .number(Double(pid)))) }
        return .object(members)
    }
}

extension PortService.Policy {
    /// What `berth daemon`'s command line asks. `--default-target` is allowed as a target too:
    /// its operator named it.
    package init(_ arguments: DaemonArguments) {
        self.init()
        targets = arguments.targets
        if let target = arguments.defaultTarget, let range = AddressRange(target.description) {
            targets.allowed.append(range)
        }
        defaultTarget = arguments.defaultTarget
        maxPorts = arguments.maxPorts
    }
}

extension HTTPResponse: Error {}

/// The version the API reports.
package let berthAPIVersion = BerthVersion.line()
