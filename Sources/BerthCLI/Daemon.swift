import Control
import Glibc
import JSON
import Logging
import Mappings
import Publishing

/// `berth daemon`: the loops, and the control API on its own thread, until SIGINT or SIGTERM.
enum Daemon {
    static func main(_ args: [String]) -> Int32 {
        let arguments: DaemonArguments
        do {
            switch try DaemonArguments.parse(args) {
            case .help:
                say(DaemonArguments.help, newline: false)
                return 0
            case .version:
                say(berthVersion)
                return 0
            case .daemon(let parsed):
                arguments = parsed
            }
        } catch {
            complain(error.description)
            return 2
        }
        let run = arguments.run
        let serverOptions: ControlServer.Options
        do { serverOptions = try ControlServer.Options(arguments) } catch {
            complain(error.description)
            return 2
        }
        var exitCode: Int32 = 0
        guard let prepared = Run.prepare(run, exitCode: &exitCode) else { return exitCode }
        let (mappings, logSettings, outputs) = (prepared.mappings, prepared.logSettings, prepared.outputs)
        let logger = Logger(label: "berth")
        do {
            let publisher = try Publisher.start(
                mappings,
                mode: run.mode,
                options: Run.options(run),
                logger: logger,
                notice: complain
            )
            for port in publisher.ports { say(port.line) }
            let service = PortService(
                publisher: publisher,
                drain: .milliseconds(Int(arguments.drainTimeout * 1000)),
                policy: PortService.Policy(arguments)
            )
            let server = try ControlServer(
                path: arguments.control,
                service: service,
                logger: logger,
                options: serverOptions
            )
            say("control \(arguments.control)")
            try server.start()
            defer { server.stop() }
            try publisher.run(onHangup: logSettings.wantsHangup ? { outputs.reopen(logger) } : nil)
            publisher.close()
        } catch {
            complain("\(error)")
            return 1
        }
        return 0
    }
}

/// `berth port add|ls|rm`: asks the daemon, prints what it answered.
enum PortClient {
    static func main(_ args: [String]) -> Int32 {
        let command: PortCommand
        do {
            command = try PortCommand.parse(args)
        } catch {
            complain(error.description)
            return 2
        }
        do {
            switch command {
            case .help:
                say(PortCommand.usage, newline: false)
                return 0
            case .add(let control, let specs, let target, let owner):
                var body: [(String, JSONValue)] = [
                    ("target", .string(target)), ("publish", .array(specs.map { .string($0) })),
                ]
                if let owner { body.append(("owner", .string(owner))) }
                let answer = try ControlClient.request(
                    "POST",
                    "/v1/berth/ports",
                    body: .object(body),
                    socketPath: control
                )
                guard answer.status == 201, let entry = answer.body else { return failed(answer) }
                for line in lines(of: entry) { say(line) }
                return 0
            case .list(let control, let owner, let json):
                let query = owner.map { "?owner=" + ControlClient.percentEncoded($0) } ?? ""
                let answer = try ControlClient.request("GET", "/v1/berth/ports" + query, socketPath: control)
                guard answer.status == 200, case .array(let entries)? = answer.body else { return failed(answer) }
                if json {
                    say(JSONValue.array(entries).serialized())
                    return 0
                }
                for entry in entries {
                    let id = entry[member: "id"]?.serialized() ?? "?"
                    var owner = "-"
                    if case .string(let o)? = entry[member: "owner"] { owner = o }
                    for line in lines(of: entry) { say("\(id)\t\(owner)\t\(line)") }
                }
                return 0
            case .remove(let control, let ids, let owner):
                if let owner {
                    let answer = try ControlClient.request(
                        "DELETE",
                        "/v1/berth/ports?owner=" + ControlClient.percentEncoded(owner),
                        socketPath: control
                    )
                    return answer.status == 200 ? 0 : failed(answer)
                }
                for id in ids {
                    let answer = try ControlClient.request("DELETE", "/v1/berth/ports/\(id)", socketPath: control)
                    if answer.status != 200 { return failed(answer) }
                }
                return 0
            }
        } catch {
            complain("\(error)")
            return 1
        }
    }

    private static func lines(of entry: JSONValue) -> [String] {
        guard case .array(let lines)? = entry[member: "lines"] else { return [] }
        return lines.compactMap { if case .string(let s) = $0 { return s } else { return nil } }
    }

    /// The daemon's one-line reason, as `berth run` would have printed it; exit 1.
    private static func failed(_ answer: (status: Int, body: JSONValue?)) -> Int32 {
        if let body = answer.body, case .string(let message)? = body[member: "message"] {
            complain(message)
        } else {
            complain("the daemon answered \(answer.status)")
        }
        return 1
    }
}
