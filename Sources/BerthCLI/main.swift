import Glibc
import Mappings

// dockerd execs its userland proxy with Go-style single-dash flags; anything else is
// berth's own command line.
let arguments = Array(CommandLine.arguments.dropFirst())
if ProxyFlags.looksLikeProxyInvocation(arguments) {
    exit(ProxyMode.main(arguments))
}
Berth.main()
