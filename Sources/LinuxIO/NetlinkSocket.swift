// The netlink socket the kernel paths (nftables, conntrack) talk through: made and bound here,
// so that it is an owned descriptor like every other, and its calls are LinuxIO's.

import CBerthLinux
import Glibc
import SystemPackage

/// struct sockaddr_nl (linux/netlink.h), which Glibc's module does not export: same layout.
private struct NetlinkAddress {
    var family = UInt16(AF_NETLINK)
    var pad: UInt16 = 0
    /// The port id: 0 in a bind asks the kernel to pick one.
    var portID: UInt32 = 0
    var groups: UInt32 = 0
}

extension Socket {
    /// A netlink socket of `netlinkProtocol` (NETLINK_NETFILTER), blocking and close-on-exec,
    /// bound to a port id the kernel picks (`netlinkPortID`).
    package static func netlink(_ netlinkProtocol: Int32) throws(SyscallError) -> Descriptor {
        let socket = Descriptor(
            taking: try syscall("socket") {
                Glibc.socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), netlinkProtocol)
            }
        )
        var address = NetlinkAddress()
        let fd = socket.raw
        _ = try withUnsafePointer(to: &address) { (p) throws(SyscallError) in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (a) throws(SyscallError) in
                try syscall("bind") { Glibc.bind(fd, a, socklen_t(MemoryLayout<NetlinkAddress>.size)) }
            }
        }
        return socket
    }

    /// The port id a bound netlink socket has: replies to it carry it.
    package static func netlinkPortID(_ fd: borrowing Descriptor) throws(SyscallError) -> UInt32 {
        var address = NetlinkAddress()
        var length = socklen_t(MemoryLayout<NetlinkAddress>.size)
        let fd = fd.raw
        _ = try withUnsafeMutablePointer(to: &address) { (p) throws(SyscallError) in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (a) throws(SyscallError) in
                try syscall("getsockname") { getsockname(fd, a, &length) }
            }
        }
        return address.portID
    }
}
