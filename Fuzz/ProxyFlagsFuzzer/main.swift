// docker-proxy's flags: no crash; an invocation that parses, written back out as flags, parses to the
// same value; a rejection is one non-empty line. Fuzz bytes become argv, split on NUL or newline.

import FuzzSupport
import Glibc
import Mappings

/// The command line that asks for `invocation`, every flag spelled out.
func flags(_ invocation: ProxyInvocation) -> [String] {
    var args = [
        "-proto", invocation.proto.rawValue,
        "-host-ip", invocation.hostIP.description,
        "-host-port", "\(invocation.hostPort)",
        "-container-ip", invocation.containerIP.description,
        "-container-port", "\(invocation.containerPort)",
    ]
    if invocation.useListenFD { args.append("-use-listen-fd") }
    return args
}

/// One input. Exported under libFuzzer's name too, for a link that takes libFuzzer's own `main`.
@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let args = arguments(bytes(data, size))
    _ = ProxyFlags.looksLikeProxyInvocation(args)
    let command: ProxyCommand
    do {
        command = try ProxyFlags.parse(args)
    } catch {
        expectOneLine(error.message, "ProxyFlags.parse(\(args))")
        return 0
    }
    guard case .run(let invocation) = command else { return 0 }
    let again = flags(invocation)
    do {
        expectEqual(try ProxyFlags.parse(again), command, "round trip of \(args) as \(again)")
    } catch {
        fatalError("\(args) parses, but \(again) does not: \(error)")
    }
    expectEqual(ProxyFlags.looksLikeProxyInvocation(again), true, "looksLikeProxyInvocation(\(again))")
    _ = invocation.mapping.description
    return 0
}

exit(runFuzzer(testOneInput))
