// What the runner measures: no forwarder (`direct`), berth, and the peers it finds on the
// machine or is given as a command template. A target turns a list of mappings into
// running processes and, for each mapping, the address a client connects to.

import Glibc
import LinuxIO

enum Proto: String, Sendable {
    case tcp, udp
}

struct Mapping: Sendable {
    var proto: Proto
    var hostIP: String
    var hostPort: UInt16
    var target: SocketAddress
}

enum TargetKind: Sendable {
    /// No forwarder: the client talks to the backend. The ceiling every ratio is taken to.
    case direct
    /// berth's userspace relay: the built release binary, `berth run --mode userspace -p ...`
    /// (as root berth's default is hybrid, which would DNAT in the kernel), one process for
    /// all TCP mappings and one for all UDP mappings.
    case berth(path: String)
    /// berth's kernel path, nftables DNAT: `berth run --mode kernel` (berth adds its table
    /// and removes it on SIGTERM). Kernel DNAT does not see loopback traffic, so it has
    /// figures in the netns scenario only.
    case berthKernel(path: String)
    /// One docker-proxy process per mapping, with its fd-3 readiness protocol.
    case dockerProxy(path: String)
    /// One `socat ...-LISTEN,fork` process per mapping.
    case socat(path: String)
    /// One HAProxy process (mode tcp) for all mappings; `splice`: `option splice-auto`.
    case haproxy(path: String, splice: Bool)
    /// One nginx (stream module) master with its workers for all mappings.
    case nginx(path: String, module: String)
    /// A command template per mapping: {proto} {host_ip} {host_port} {target_ip} {target_port}.
    case template(command: String)
    /// bench's own yardstick (Sources/SpliceReference): the least a splice relay can be, two
    /// threads with blocking splice per connection, a process per mapping, TCP only.
    case spliceReference(path: String)
}

struct Target: Sendable {
    let name: String
    let kind: TargetKind

    var isDirect: Bool { if case .direct = kind { true } else { false } }
    /// bench's own splice relay: it measures what splice allows, not what a forwarder costs in memory.
    var isYardstick: Bool { if case .spliceReference = kind { true } else { false } }

    /// Whether it runs one process per mapping (then many ports mean many processes).
    var processPerMapping: Bool {
        switch kind {
        case .dockerProxy, .socat, .template, .spliceReference: true
        default: false
        }
    }

    /// Why this target cannot forward `proto` at all, if it cannot.
    func unsupported(_ proto: Proto) -> String? {
        switch kind {
        case .haproxy where proto == .udp: "HAProxy does not forward UDP"
        case .spliceReference where proto == .udp: "the splice reference is TCP only"
        default: nil
        }
    }
}

/// A running set of forwarder processes for some mappings.
final class Forwarding {
    let target: Target
    var children: [Child] = []
    /// Per mapping: where a client connects, or why it cannot.
    var addresses: [SocketAddress?] = []
    var reasons: [String?] = []
    /// Whether a reason is "cannot do this" (unsupported) rather than a failure.
    var unsupported: [Bool] = []
    /// Seconds from the first spawn until every mapping was ready.
    var readySeconds: Double = 0

    init(target: Target, count: Int) {
        self.target = target
        addresses = Array(repeating: nil, count: count)
        reasons = Array(repeating: nil, count: count)
        unsupported = Array(repeating: false, count: count)
    }

    var groups: Set<pid_t> { Set(children.map(\.pid)) }

    func memory() -> Memory { ProcFS.memory(groups: groups) }

    /// CPU seconds its processes have spent so far.
    func cpuSeconds() -> Double { ProcFS.cpuSeconds(groups: groups) }

    func stop() {
        stopAll(children)
        children.removeAll()
    }
}

/// Where forwarders run and keep their files.
struct Placement {
    /// The namespace forwarders run in (nil: the runner's own).
    var namespace: String?
    var workDirectory: String
    var readyTimeout: Double = 120

    func argv(_ command: [String]) -> [String] {
        guard let namespace else { return command }
        return ["ip", "netns", "exec", namespace] + command
    }
}

enum Launcher {
    /// `berthThreads`: `--threads` for the built-in berth's userspace relay (nil: its default).
    static func start(
        _ target: Target,
        _ mappings: [Mapping],
        at placement: Placement,
        berthThreads: Int? = nil
    ) -> Forwarding {
        let f = Forwarding(target: target, count: mappings.count)
        let begin = nowNanos()
        for (i, m) in mappings.enumerated() {
            if let why = target.unsupported(m.proto) {
                f.reasons[i] = why
                f.unsupported[i] = true
            }
        }
        let todo = mappings.indices.filter { f.reasons[$0] == nil }
        do {
            switch target.kind {
            case .direct:
                for i in todo { f.addresses[i] = mappings[i].target }
            case .berthKernel(let path):
                if placement.namespace == nil {
                    for i in todo {
                        f.reasons[i] = "kernel DNAT does not see loopback traffic (netns scenario only)"
                        f.unsupported[i] = true
                    }
                    break
                }
                for proto in [Proto.tcp, .udp] {
                    let group = todo.filter { mappings[$0].proto == proto }
                    if !group.isEmpty { startBerth(path, mode: "kernel", threads: nil, mappings, group, f, placement) }
                }
            case .berth(let path):
                for proto in [Proto.tcp, .udp] {
                    let group = todo.filter { mappings[$0].proto == proto }
                    if !group.isEmpty {
                        startBerth(path, mode: "userspace", threads: berthThreads, mappings, group, f, placement)
                    }
                }
            case .dockerProxy(let path):
                var waiting: [(Int, Child)] = []
                for i in todo {
                    let m = mappings[i]
                    let argv = placement.argv([
                        path, "-proto", m.proto.rawValue, "-host-ip", m.hostIP, "-host-port", "\(m.hostPort)",
                        "-container-ip", m.target.ipText, "-container-port", "\(m.target.port)",
                    ])
                    let child = try Child.spawn(
                        argv,
                        name: target.name,
                        readinessFD3: true,
                        workDirectory: placement.workDirectory
                    )
                    f.children.append(child)
                    waiting.append((i, child))
                }
                let deadline = nowNanos() + UInt64(placement.readyTimeout * 1e9)
                for (i, child) in waiting {
                    do {
                        try child.waitReadyFD3(deadline: deadline)
                        f.addresses[i] = address(mappings[i])
                    } catch {
                        f.reasons[i] = "\(error)"
                    }
                }
            case .socat(let path):
                var spawned: [Int] = []
                for i in todo {
                    let m = mappings[i]
                    let listen =
                        m.proto == .tcp
                        ? "TCP4-LISTEN:\(m.hostPort),bind=\(m.hostIP),reuseaddr,fork,nodelay,backlog=4096"
                        : "UDP4-LISTEN:\(m.hostPort),bind=\(m.hostIP),reuseaddr,fork"
                    let connect =
                        m.proto == .tcp ? "TCP4:\(m.target.description),nodelay" : "UDP4:\(m.target.description)"
                    f.children.append(
                        try Child.spawn(
                            placement.argv([path, listen, connect]),
                            name: target.name,
                            workDirectory: placement.workDirectory
                        )
                    )
                    spawned.append(i)
                }
                waitBound(f, mappings, spawned, placement)
            case .spliceReference(let path):
                for i in todo {
                    let m = mappings[i]
                    f.children.append(
                        try Child.spawn(
                            placement.argv([path, m.hostIP, "\(m.hostPort)", m.target.ipText, "\(m.target.port)"]),
                            name: target.name,
                            workDirectory: placement.workDirectory
                        )
                    )
                }
                waitBound(f, mappings, todo, placement)
            case .template(let command):
                var spawned: [Int] = []
                for i in todo {
                    let m = mappings[i]
                    let text =
                        command
                        .replacingAll("{proto}", m.proto.rawValue)
                        .replacingAll("{host_ip}", m.hostIP)
                        .replacingAll("{host_port}", "\(m.hostPort)")
                        .replacingAll("{target_ip}", m.target.ipText)
                        .replacingAll("{target_port}", "\(m.target.port)")
                    f.children.append(
                        try Child.spawn(
                            placement.argv(["/bin/sh", "-c", "exec \(text)"]),
                            name: target.name,
                            workDirectory: placement.workDirectory
                        )
                    )
                    spawned.append(i)
                }
                waitBound(f, mappings, spawned, placement)
            case .haproxy(let path, let splice):
                let config =
                    "\(placement.workDirectory)/haproxy-\(target.name)-\(UInt32.random(in: 0..<UInt32.max)).cfg"
                try writeFile(config, haproxyConfig(mappings, todo, splice: splice))
                defer { unlink(config) }
                f.children.append(
                    try Child.spawn(
                        placement.argv([path, "-f", config, "-db"]),
                        name: target.name,
                        workDirectory: placement.workDirectory
                    )
                )
                waitBound(f, mappings, todo, placement)
            case .nginx(let path, let module):
                let directory = "\(placement.workDirectory)/nginx-\(target.name)-\(UInt32.random(in: 0..<UInt32.max))"
                mkdir(directory, 0o755)
                try writeFile(
                    "\(directory)/nginx.conf",
                    nginxConfig(mappings, todo, module: module, directory: directory)
                )
                f.children.append(
                    try Child.spawn(
                        placement.argv([
                            path, "-p", directory, "-c", "\(directory)/nginx.conf", "-e", "\(directory)/error.log",
                        ]),
                        name: target.name,
                        workDirectory: placement.workDirectory
                    )
                )
                waitBound(f, mappings, todo, placement)
            }
        } catch {
            for i in todo where f.addresses[i] == nil && f.reasons[i] == nil { f.reasons[i] = "\(error)" }
        }
        f.readySeconds = Double(nowNanos() - begin) / 1e9
        return f
    }

    static func address(_ m: Mapping) -> SocketAddress { SocketAddress(ip: m.hostIP, port: m.hostPort)! }

    private static func startBerth(
        _ path: String,
        mode: String,
        threads: Int?,
        _ mappings: [Mapping],
        _ group: [Int],
        _ f: Forwarding,
        _ placement: Placement
    ) {
        let targetIP = mappings[group[0]].target.ipText
        var argv = [path, "run", "--mode", mode]
        if let threads { argv += ["--threads", "\(threads)"] }
        // A table of its own: the TCP and the UDP berth run side by side.
        if mode == "kernel" { argv += ["--nft-table", "bbench_\(getpid())_\(UInt16.random(in: 0...UInt16.max))"] }
        for i in group {
            let m = mappings[i]
            let host = m.hostIP.contains(":") ? "[\(m.hostIP)]" : m.hostIP
            argv += ["-p", "\(host):\(m.hostPort):\(m.target.port)" + (m.proto == .udp ? "/udp" : "")]
        }
        argv.append(targetIP)
        let child: Child
        do {
            child = try Child.spawn(
                placement.argv(argv),
                name: f.target.name,
                captureStdout: true,
                workDirectory: placement.workDirectory
            )
        } catch {
            for i in group { f.reasons[i] = "\(error)" }
            return
        }
        f.children.append(child)
        // One line per listener, `80/tcp -> 127.0.0.1:20000`, printed once it is bound.
        let deadline = nowNanos() + UInt64(placement.readyTimeout * 1e9)
        var pending = Dictionary(uniqueKeysWithValues: group.map { ("\(mappings[$0].hostPort)", $0) })
        while !pending.isEmpty, let line = child.readLine(deadline: deadline) {
            guard let arrow = line.range(of: " -> "), let colon = line.lastIndex(of: ":") else { continue }
            _ = arrow
            let port = String(line[line.index(after: colon)...])
            if let i = pending.removeValue(forKey: port) { f.addresses[i] = address(mappings[i]) }
        }
        if !pending.isEmpty {
            _ = child.hasExited
            let text = child.stderrTail()
            let isUnsupported = text.contains("not supported")
            for i in pending.values {
                f.reasons[i] = text.isEmpty ? "berth did not report its listeners" : text
                f.unsupported[i] = isUnsupported
            }
        }
    }

    /// Waits until every mapping's host port is bound in the forwarder's namespace.
    private static func waitBound(_ f: Forwarding, _ mappings: [Mapping], _ indices: [Int], _ placement: Placement) {
        guard !f.children.isEmpty else { return }
        let deadline = nowNanos() + UInt64(placement.readyTimeout * 1e9)
        var pending = Set(indices)
        while !pending.isEmpty {
            for proto in [Proto.tcp, .udp] where pending.contains(where: { mappings[$0].proto == proto }) {
                let bound = ProcFS.boundPorts(ns: placement.namespace, udp: proto == .udp)
                for i in pending where mappings[i].proto == proto && bound.contains(mappings[i].hostPort) {
                    pending.remove(i)
                    f.addresses[i] = address(mappings[i])
                }
            }
            if pending.isEmpty { break }
            if nowNanos() > deadline || f.children.contains(where: { $0.hasExited }) {
                let dead = f.children.first { $0.hasExited }
                let why =
                    dead.map { "\(f.target.name) exited: \($0.stderrTail())" }
                    ?? "\(f.target.name): ports not bound within \(Int(placement.readyTimeout)) s"
                for i in pending { f.reasons[i] = why }
                return
            }
            sleepSeconds(0.001)
        }
    }

    // MARK: configuration files

    private static func grouped(
        _ mappings: [Mapping],
        _ indices: [Int]
    ) -> [(target: SocketAddress, proto: Proto, members: [Int])] {
        var order: [String] = []
        var groups: [String: (SocketAddress, Proto, [Int])] = [:]
        for i in indices {
            let key = "\(mappings[i].proto) \(mappings[i].target)"
            if groups[key] == nil {
                order.append(key)
                groups[key] = (mappings[i].target, mappings[i].proto, [])
            }
            groups[key]!.2.append(i)
        }
        return order.map { groups[$0]! }
    }

    /// The hard descriptor limit forwarders inherit.
    static var descriptorLimit: Int {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return Int(min(limit.rlim_max, 1 << 20))
    }

    static func haproxyConfig(_ mappings: [Mapping], _ indices: [Int], splice: Bool) -> String {
        // HAProxy refuses to start unless maxconn fits the descriptor limit: two sockets
        // and (with splice) a pipe per connection, plus the listeners.
        let maxconn = max(100, min(100_000, (descriptorLimit - indices.count - 200) / 3))
        var text = """
            global
                maxconn \(maxconn)
                log stderr format raw local0 emerg
            defaults
                mode tcp
                timeout connect 5s
                timeout client 1h
                timeout server 1h
                option tcp-smart-accept
                option tcp-smart-connect

            """
        if splice { text += "    option splice-auto\n" }
        for (n, g) in grouped(mappings, indices).enumerated() {
            text += "frontend f\(n)\n"
            for i in g.members {
                text += "    bind \(mappings[i].hostIP):\(mappings[i].hostPort)\n"
            }
            text += "    default_backend b\(n)\nbackend b\(n)\n    server s \(g.target.description)\n"
        }
        return text
    }

    static func nginxConfig(_ mappings: [Mapping], _ indices: [Int], module: String, directory: String) -> String {
        var text = """
            load_module \(module);
            daemon off;
            master_process on;
            worker_processes auto;
            worker_rlimit_nofile \(descriptorLimit);
            pid \(directory)/nginx.pid;
            error_log \(directory)/error.log warn;
            events { worker_connections \(max(1024, descriptorLimit - 64)); }
            stream {
                tcp_nodelay on;

            """
        for i in indices {
            let m = mappings[i]
            if m.proto == .tcp {
                text +=
                    "    server { listen \(m.hostIP):\(m.hostPort) backlog=4096; proxy_pass \(m.target.description); proxy_timeout 1h; }\n"
            } else {
                text +=
                    "    server { listen \(m.hostIP):\(m.hostPort) udp; proxy_pass \(m.target.description); proxy_timeout 10s; }\n"
            }
        }
        return text + "}\n"
    }
}

func writeFile(_ path: String, _ text: String) throws {
    guard let f = fopen(path, "w") else { throw BenchError("write \(path): \(errnoText())") }
    defer { fclose(f) }
    var copy = text
    copy.withUTF8 { _ = fwrite($0.baseAddress, 1, $0.count, f) }
}

extension String {
    func replacingAll(_ what: String, _ with: String) -> String {
        guard !what.isEmpty else { return self }
        var result = ""
        var rest = self[...]
        while let r = rest.range(of: what) {
            result += rest[..<r.lowerBound]
            result += with
            rest = rest[r.upperBound...]
        }
        return result + rest
    }
}

// MARK: finding targets

enum Discovery {
    static func which(_ name: String) -> String? {
        if name.contains("/") { return access(name, X_OK) == 0 ? name : nil }
        let path = String(
            cString: getenv("PATH") ?? strdup("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        )
        for dir in (path + ":/usr/sbin:/usr/libexec/docker").split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    static let nginxModules = [
        "/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/lib64/nginx/modules/ngx_stream_module.so",
    ]

    /// The built-in target named `name`, or why it is not here.
    static func builtin(_ name: String, berthPath: String) -> Result<Target, BenchError> {
        switch name {
        case "direct": return .success(Target(name: name, kind: .direct))
        case "berth":
            guard access(berthPath, X_OK) == 0 else {
                return .failure(BenchError("no berth binary at \(berthPath) (swift build -c release, or --berth PATH)"))
            }
            return .success(Target(name: name, kind: .berth(path: berthPath)))
        case "berth-kernel":
            guard access(berthPath, X_OK) == 0 else { return .failure(BenchError("no berth binary at \(berthPath)")) }
            return .success(Target(name: name, kind: .berthKernel(path: berthPath)))
        case "docker-proxy":
            guard let p = which("docker-proxy") else {
                return .failure(BenchError("docker-proxy is not installed (make bench-peers)"))
            }
            return .success(Target(name: name, kind: .dockerProxy(path: p)))
        case "socat":
            guard let p = which("socat") else {
                return .failure(BenchError("socat is not installed (make bench-peers)"))
            }
            return .success(Target(name: name, kind: .socat(path: p)))
        case "haproxy", "haproxy-splice":
            guard let p = which("haproxy") else {
                return .failure(BenchError("haproxy is not installed (make bench-peers)"))
            }
            return .success(Target(name: name, kind: .haproxy(path: p, splice: name == "haproxy-splice")))
        case "nginx":
            guard let p = which("nginx") else {
                return .failure(BenchError("nginx is not installed (make bench-peers)"))
            }
            guard let module = nginxModules.first(where: { access($0, R_OK) == 0 }) else {
                return .failure(
                    BenchError("nginx's stream module is not installed (make bench-peers: libnginx-mod-stream)")
                )
            }
            return .success(Target(name: name, kind: .nginx(path: p, module: module)))
        case "splice-reference":
            // Built with the runner: it sits next to it.
            let path = "\(executableDirectory())/splice-reference"
            guard access(path, X_OK) == 0 else {
                return .failure(BenchError("no \(path) (swift build -c release --package-path bench)"))
            }
            return .success(Target(name: name, kind: .spliceReference(path: path)))
        default:
            return .failure(BenchError("unknown target \(name)"))
        }
    }

    static let builtinNames = [
        "direct", "berth", "berth-kernel", "docker-proxy", "socat", "haproxy", "haproxy-splice", "nginx",
        "splice-reference",
    ]

    /// The directory of the running executable.
    static func executableDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return "." }
        let path = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
    }

    /// Output of a command (stdout and stderr), trimmed; empty when it cannot run.
    static func output(_ command: String) -> String {
        guard let p = popen("\(command) 2>&1", "r") else { return "" }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&chunk, 1, chunk.count, p)
            if n <= 0 { break }
            bytes += chunk[..<n]
        }
        pclose(p)
        return String(decoding: bytes, as: UTF8.self).trimmingWhitespace()
    }

    /// The commit checked out at `root`, or nil outside a git checkout (or without git).
    static func commit(_ root: String) -> String? {
        let text = output("git -C '\(root)' rev-parse HEAD")
        return text.count == 40 && text.allSatisfy(\.isHexDigit) ? text : nil
    }

    static func version(of target: Target, root: String) -> String {
        switch target.kind {
        case .direct: return "-"
        case .berth(let path), .berthKernel(let path):
            guard let head = commit(root) else { return "\(output("'\(path)' --version")) at an unknown commit" }
            let dirty =
                output("git -C '\(root)' status --porcelain --untracked-files=no -- Sources Package.swift").isEmpty
                ? "" : " (modified)"
            return "\(output("'\(path)' --version")) at \(head.prefix(7))\(dirty)"
        case .dockerProxy(let path):
            let file = ProcFS.read("/usr/local/share/berth-bench/docker-proxy.version")?.trimmingWhitespace()
            return "docker-proxy from docker.io \(file ?? "(version unknown)") (\(path))"
        case .socat(let path):
            return output("'\(path)' -V").split(separator: "\n").first { $0.hasPrefix("socat version") }.map(
                String.init
            ) ?? "socat"
        case .haproxy(let path, _):
            return output("'\(path)' -v").split(separator: "\n").first.map { String($0.prefix(40)) } ?? "haproxy"
        case .nginx(let path, _):
            return output("'\(path)' -v").replacingAll("nginx version: ", "") + " with the stream module"
        case .template(let command):
            return "template: \(command)"
        case .spliceReference:
            return "bench/Sources/SpliceReference (two threads, blocking splice, 1 MiB pipes)"
        }
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = self[...]
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
