import ArgumentParser
import Glibc
import Logging
import Publishing

struct Berth: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "berth",
        abstract: "Publish container ports: listen on host addresses and forward TCP and UDP to a container.",
        discussion: """
            Does what `docker run -p` and docker-proxy do, in one process for many ports.

            Port specs use Docker's -p grammar:
              [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]
              -p 80:80            host port 80, all addresses (0.0.0.0 and ::)
              -p 80               a free host port the system picks
              -p 127.0.0.1:80:80  host port 80 on 127.0.0.1 only
              -p 8000-8010:80-90  eleven ports, pairwise
              -p 8000-8010:80     one free port of the host range
              -p [::1]:8080:80    an IPv6 host address
              -p 53:53/udp        UDP

            Example:
              berth run -p 8080:80 -p 80 -p 127.0.0.1:8081:80 172.17.0.2

            berth also takes docker-proxy's flags (-proto, -host-ip, -host-port,
            -container-ip, -container-port, -use-listen-fd), so dockerd can run
            it as its userland-proxy-path.
            """,
        version: berthVersion,
        subcommands: [Run.self],
        defaultSubcommand: nil
    )
}

let berthVersion = "berth 0.1.0"

/// One line on stderr, prefixed like other Unix tools.
func complain(_ message: String) {
    var line = "berth: \(message)\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

/// stdout may be a pipe read by a script: every reported line goes out at once.
func say(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(1, $0.baseAddress, $0.count) }
}

/// Log lines go to stderr; the level comes from `--log-level`.
func bootstrapLogging(_ level: Logger.Level) {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension Mode: ExpressibleByArgument {}
