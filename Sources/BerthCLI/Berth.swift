import Glibc
import LogSinks
import Mappings

/// berth's own command line: `run`, help and version. docker-proxy's flags never get here (main.swift).
enum Berth {
    /// The exit code: 0, 1 for a failed start, 2 for a bad command line.
    static func main(_ arguments: [String]) -> Int32 {
        switch arguments.first {
        case "run"?:
            return Run.main(Array(arguments.dropFirst()))
        case "daemon"?:
            return Daemon.main(Array(arguments.dropFirst()))
        case "port"?:
            return PortClient.main(Array(arguments.dropFirst()))
        case "-h"?, "--help"?, "help"?:
            switch arguments.dropFirst().first {
            case "run"?: say(RunArguments.help, newline: false)
            case "daemon"?: say(DaemonArguments.help, newline: false)
            case "port"?: say(PortCommand.usage, newline: false)
            default: say(help, newline: false)
            }
            return 0
        case "--version"?:
            say(berthVersion)
            return 0
        case nil:
            writeStderr(usage)
            return 2
        case let other?:
            complain("\(other.hasPrefix("-") ? "unknown option" : "unknown command") \(quoted(other))")
            writeStderr(usage)
            return 2
        }
    }

    static let usage = """
        USAGE: berth run [-p <spec> ...] [<options>] <target-ip>
               berth daemon [<options>] [-p <spec> ... <target-ip>]
               berth port add|ls|rm ...
               berth --help | --version
          See 'berth --help' for more information.

        """

    static let help = """
        OVERVIEW: Publish container ports: listen on host addresses and forward TCP and
        UDP to a container.

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
        it as its userland-proxy-path. There the environment variable BERTH_LOG
        (file:PATH, syslog, syslog:PATH, stderr, level=LEVEL, separated by commas) says where
        log lines go, since dockerd sends stderr to /dev/null.

        USAGE: berth <subcommand>

        OPTIONS:
          --version               Show the version.
          -h, --help              Show help information.

        SUBCOMMANDS:
          run                     Publish ports of one container address until SIGINT
                                  or SIGTERM.
          daemon                  Publish ports added and removed at run time through
                                  a control API on a unix socket.
          port                    Add, list and remove a daemon's ports.

          See 'berth help <subcommand>' for detailed help.

        """
}

let berthVersion = BerthVersion.line()

/// One line on stderr, prefixed like other Unix tools.
func complain(_ message: String) {
    writeStderr("berth: \(message)\n")
}

/// stdout may be a pipe read by a script: every reported line goes out at once.
func say(_ line: String, newline: Bool = true) { Console.say(line, newline: newline) }

func writeStderr(_ text: String) { Console.writeStderr(text) }
