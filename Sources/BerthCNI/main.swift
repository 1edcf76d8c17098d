// berth-cni: a chained CNI plugin that publishes a container's ports (runtimeConfig.portMappings)
// through a berth daemon, or with nftables DNAT when no daemon answers. The runtime runs it with
// the CNI_* environment and the configuration on stdin (SPEC.md); see the README.

import CNI
import Control
import Glibc
import LinuxIO
import Mappings

signal(SIGPIPE, SIG_IGN)

func printOut(_ text: String) { File.writeAll(.output, text + "\n") }
func printErr(_ text: String) { File.writeAll(.error, "berth-cni: \(text)\n") }

/// The spec's error JSON on stdout, one line on stderr, exit 1.
func fail(_ error: CNIError, cniVersion: String = "1.1.0") -> Never {
    printOut(error.json(cniVersion: cniVersion).serialized())
    printErr(error.description)
    exit(1)
}

let arguments = Array(CommandLine.arguments.dropFirst())
// As the reference plugins answer `--version`: the build, then the spec versions VERSION lists.
if arguments.contains("--version") && !arguments.contains("--help") && !arguments.contains("-h") {
    printOut(BerthVersion.line("berth-cni"))
    printOut("CNI protocol versions supported: " + PluginConfig.supportedVersions.joined(separator: ", "))
    exit(0)
}
if arguments.contains("--help") || arguments.contains("-h") {
    printOut(
        """
        OVERVIEW: A chained CNI plugin (spec 0.3.0 to 1.1.0) that publishes a container's
        runtimeConfig.portMappings.

        A container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC,
        VERSION), CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and the plugin configuration
        on stdin, after the plugin that made the interface (bridge, ptp ...).

        USAGE: CNI_COMMAND=<command> ... berth-cni < <configuration>
               berth-cni --help | --version

        CONFIGURATION:
          "control"               A berth daemon's socket. When it answers, the daemon
                                  serves the ports (loopback and IPv6-to-IPv4 too),
                                  owned by cni/<network>/<container id>/<ifname>.
                                  (default: /run/berth/berth.sock)
          "table"                 The nftables table (inet family) used when no daemon
                                  answers. (default: berth_cni)

        OPTIONS:
          --version               Show the version and the CNI versions it speaks.
          -h, --help              Show help information.
        """
    )
    exit(0)
}

let environment: CNIEnvironment
let stdinBytes: [UInt8]
do throws(CNIError) {
    environment = try CNIEnvironment.read { ThisProcess.environment($0) }
} catch {
    fail(error)
}
do {
    stdinBytes = try File.readAll(.input)
} catch {
    fail(CNIError(CNIError.ioFailure, "cannot read the configuration on stdin", details: "\(error)"))
}

switch Plugin.run(environment, stdin: stdinBytes) {
case .success(let output):
    for notice in output.notices { printErr(notice) }
    if let text = output.stdout { printOut(text) }
    exit(0)
case .failure(let error):
    fail(error, cniVersion: PluginConfig.askedVersion(stdinBytes))
}
