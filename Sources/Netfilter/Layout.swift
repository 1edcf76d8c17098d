// The layout of berth's nftables table, built natively with libnftnl (never by running `nft`).
//
// One table of the `inet` family serves IPv4 and IPv6: inet nat chains accept `dnat ip` and
// `dnat ip6` statements (each guarded by `meta nfproto`), so one table, one owner socket and one
// batch cover both families, and `nft list table inet NAME` shows everything berth did.
//
//   table inet berth_<pid> {                                       flags owner: dies with our socket
//     map dnat4 { ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; counter }
//     map wild4 { inet_proto . inet_service : ipv4_addr . inet_service; counter }
//     map dnat6, wild6                                             the same for IPv6
//     set hairpin4 { ipv4_addr . ipv4_addr . inet_proto . inet_service }   container . itself . proto . port
//     set hairpin6
//     chain prerouting  { type nat hook prerouting priority -100   from the network and from containers
//       dnat ip to ip daddr . meta l4proto . th dport map @dnat4
//       ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @wild4
//       (the same two for ip6, `ip6 daddr != ::1`) }
//     chain output      { type nat hook output priority -100       host-originated, the same four rules }
//     chain postrouting { type nat hook postrouting priority 100
//       ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin4 masquerade   (and ip6) }
//   }
//
// - One map lookup per packet, whatever the number of published ports; no rule per port.
// - Host addresses are never loopback (NatTable refuses them) and the wildcard rules skip
//   127.0.0.0/8 and ::1: loopback stays with the userspace relay, route_localnet stays off, and a
//   packet from the network addressed to 127.0.0.1 is not DNATed into a container.
// - Hairpin: a container reaching its own published port through a host address gets DNATed
//   back to itself; without masquerade it would see a SYN from its own address and the reply
//   would never return through the host. The hairpin set holds exactly "source and destination
//   are this container, to this published target", which nft cannot say as `saddr == daddr`.
// - Counters: every map element has a counter (the maps declare `counter`, the kernel gives each
//   new element one). A nat chain sees only the first packet of a connection (or UDP flow), so
//   these count new connections/flows and their first packets' bytes, not the whole stream.
import CNetfilter
import Mappings

/// nftables data type ids (nft's `datatype.h`); a concatenation's id packs them 6 bits each.
/// The kernel ignores these; `nft list` needs them to print keys as addresses and ports.
enum NftType: UInt32 {
    case ipv4Addr = 7
    case ipv6Addr = 8
    case inetProto = 12
    case inetService = 13

    /// Bytes the value occupies in a register (each part of a concatenation starts on 4 bytes).
    var size: Int { self == .ipv4Addr ? 4 : self == .ipv6Addr ? 16 : 4 }

    static func concat(_ types: [NftType]) -> (type: UInt32, length: UInt32) {
        (types.reduce(0) { $0 << 6 | $1.rawValue }, UInt32(types.reduce(0) { $0 + $1.size }))
    }
}

/// The sets and maps of a berth table.
enum BerthMap: CaseIterable, Hashable, CustomStringConvertible {
    case dnat4, wild4, dnat6, wild6, hairpin4, hairpin6

    var description: String {
        switch self {
        case .dnat4: "dnat4"
        case .wild4: "wild4"
        case .dnat6: "dnat6"
        case .wild6: "wild6"
        case .hairpin4: "hairpin4"
        case .hairpin6: "hairpin6"
        }
    }

    /// NFTA_SET_ID: lets rules of the same batch refer to a set that is not committed yet.
    var id: UInt32 { UInt32(Self.allCases.firstIndex(of: self)! + 1) }

    var key: [NftType] {
        switch self {
        case .dnat4: [.ipv4Addr, .inetProto, .inetService]
        case .dnat6: [.ipv6Addr, .inetProto, .inetService]
        case .wild4, .wild6: [.inetProto, .inetService]
        case .hairpin4: [.ipv4Addr, .ipv4Addr, .inetProto, .inetService]
        case .hairpin6: [.ipv6Addr, .ipv6Addr, .inetProto, .inetService]
        }
    }

    /// The DNAT target (address . port) for maps; nil for the hairpin sets.
    var data: [NftType]? {
        switch self {
        case .dnat4, .wild4: [.ipv4Addr, .inetService]
        case .dnat6, .wild6: [.ipv6Addr, .inetService]
        case .hairpin4, .hairpin6: nil
        }
    }

    var isMap: Bool { data != nil }
    var kind: String { isMap ? "map" : "set" }
}

/// One element of one of our sets, as the kernel stores its key.
struct ElementKey: Hashable {
    var map: BerthMap
    var key: [UInt8]
}

// Encoding of keys and data: every part of a concatenation fills whole 4-byte words.
private func word(_ byte: UInt8) -> [UInt8] { [byte, 0, 0, 0] }
private func portWord(_ port: UInt16) -> [UInt8] { [UInt8(port >> 8), UInt8(port & 0xff), 0, 0] }

extension Proto {
    var ipProtocol: UInt8 { self == .udp ? 17 : self == .tcp ? 6 : 132 }
}

extension DNATRule {
    var map: BerthMap {
        switch (hostIP == nil, family) {
        case (false, .v4): .dnat4
        case (true, .v4): .wild4
        case (false, .v6): .dnat6
        case (true, .v6): .wild6
        }
    }

    var element: ElementKey {
        ElementKey(map: map, key: (hostIP?.bytes ?? []) + word(proto.ipProtocol) + portWord(hostPort))
    }

    var elementData: [UInt8] { containerIP.bytes + portWord(containerPort) }

    /// The hairpin set element this rule needs: container . container . proto . port.
    var hairpin: ElementKey {
        ElementKey(
            map: family == .v4 ? .hairpin4 : .hairpin6,
            key: containerIP.bytes + containerIP.bytes + word(proto.ipProtocol) + portWord(containerPort)
        )
    }

    /// The element as `nft` prints it: `198.18.0.1 . tcp . 8080 : 198.18.0.2 . 80`.
    var elementText: String {
        let host = hostIP.map { "\($0) . " } ?? ""
        return "\(host)\(proto) . \(hostPort) : \(containerIP) . \(containerPort)"
    }

    var hairpinText: String { "\(containerIP) . \(containerIP) . \(proto) . \(containerPort)" }
}

/// The base chains: name, hook number, priority.
enum BerthChain: CaseIterable {
    case prerouting, output, postrouting

    var name: String {
        switch self {
        case .prerouting: "prerouting"
        case .output: "output"
        case .postrouting: "postrouting"
        }
    }
    // NF_INET_* from <linux/netfilter.h>, which CNetfilter leaves out.
    var hook: UInt32 {
        switch self {
        case .prerouting: 0
        case .output: 3
        case .postrouting: 4
        }
    }
    var priority: Int32 { self == .postrouting ? 100 : -100 }
}

/// A rule of the layout: where it goes, how `nft` prints it (for error text), its expressions.
struct LayoutRule {
    var chain: BerthChain
    var text: String
    var expressions: () -> [OpaquePointer]
}

enum Layout {
    static func rules() -> [LayoutRule] {
        var rules: [LayoutRule] = []
        for chain in [BerthChain.prerouting, .output] {
            rules.append(
                LayoutRule(chain: chain, text: "dnat ip to ip daddr . meta l4proto . th dport map @dnat4") {
                    Expr.nfproto(NFPROTO_IPV4_VALUE)
                        + [
                            Expr.payload(.network, offset: 16, length: 4, into: 0),
                            Expr.meta(NFT_META_L4PROTO, into: 1),
                            Expr.payload(.transport, offset: 2, length: 2, into: 2),
                            Expr.lookup(.dnat4, from: 0, into: 0),
                            Expr.dnat(NFPROTO_IPV4_VALUE, address: 0, port: 1),
                        ]
                }
            )
            rules.append(
                LayoutRule(
                    chain: chain,
                    text: "ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @wild4"
                ) {
                    Expr.nfproto(NFPROTO_IPV4_VALUE)
                        + [
                            Expr.payload(.network, offset: 16, length: 1, into: 0),
                            Expr.cmp(NFT_CMP_NEQ, 0, [127]),
                        ]
                        + Expr.fibDaddrIsLocal()
                        + [
                            Expr.meta(NFT_META_L4PROTO, into: 0),
                            Expr.payload(.transport, offset: 2, length: 2, into: 1),
                            Expr.lookup(.wild4, from: 0, into: 0),
                            Expr.dnat(NFPROTO_IPV4_VALUE, address: 0, port: 1),
                        ]
                }
            )
            rules.append(
                LayoutRule(chain: chain, text: "dnat ip6 to ip6 daddr . meta l4proto . th dport map @dnat6") {
                    Expr.nfproto(NFPROTO_IPV6_VALUE)
                        + [
                            Expr.payload(.network, offset: 24, length: 16, into: 0),
                            Expr.meta(NFT_META_L4PROTO, into: 4),
                            Expr.payload(.transport, offset: 2, length: 2, into: 5),
                            Expr.lookup(.dnat6, from: 0, into: 0),
                            Expr.dnat(NFPROTO_IPV6_VALUE, address: 0, port: 4),
                        ]
                }
            )
            rules.append(
                LayoutRule(
                    chain: chain,
                    text: "ip6 daddr != ::1 fib daddr type local dnat ip6 to meta l4proto . th dport map @wild6"
                ) {
                    Expr.nfproto(NFPROTO_IPV6_VALUE)
                        + [
                            Expr.payload(.network, offset: 24, length: 16, into: 0),
                            Expr.cmp(NFT_CMP_NEQ, 0, [UInt8](repeating: 0, count: 15) + [1]),
                        ]
                        + Expr.fibDaddrIsLocal()
                        + [
                            Expr.meta(NFT_META_L4PROTO, into: 0),
                            Expr.payload(.transport, offset: 2, length: 2, into: 1),
                            Expr.lookup(.wild6, from: 0, into: 0),
                            Expr.dnat(NFPROTO_IPV6_VALUE, address: 0, port: 4),
                        ]
                }
            )
        }
        rules.append(
            LayoutRule(
                chain: .postrouting,
                text: "ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin4 masquerade"
            ) {
                Expr.ctStatusDNAT() + Expr.nfproto(NFPROTO_IPV4_VALUE)
                    + [
                        Expr.payload(.network, offset: 12, length: 4, into: 0),
                        Expr.payload(.network, offset: 16, length: 4, into: 1),
                        Expr.meta(NFT_META_L4PROTO, into: 2),
                        Expr.payload(.transport, offset: 2, length: 2, into: 3),
                        Expr.lookup(.hairpin4, from: 0, into: nil),
                        Expr.masquerade(),
                    ]
            }
        )
        rules.append(
            LayoutRule(
                chain: .postrouting,
                text: "ct status dnat ip6 saddr . ip6 daddr . meta l4proto . th dport @hairpin6 masquerade"
            ) {
                Expr.ctStatusDNAT() + Expr.nfproto(NFPROTO_IPV6_VALUE)
                    + [
                        Expr.payload(.network, offset: 8, length: 16, into: 0),
                        Expr.payload(.network, offset: 24, length: 16, into: 4),
                        Expr.meta(NFT_META_L4PROTO, into: 8),
                        Expr.payload(.transport, offset: 2, length: 2, into: 9),
                        Expr.lookup(.hairpin6, from: 0, into: nil),
                        Expr.masquerade(),
                    ]
            }
        )
        return rules
    }
}

/// Builders for the libnftnl expressions the layout uses. Registers are numbered as 32-bit
/// words (NFT_REG32_00 + n), which is what concatenations need.
enum Expr {
    enum PayloadBase { case network, transport }

    private static func make(_ name: String, _ configure: (OpaquePointer) -> Void) -> OpaquePointer {
        guard let expr = nftnl_expr_alloc(name) else { fatalError("libnftnl: cannot allocate expression \(name)") }
        configure(expr)
        return expr
    }

    private static func register(_ word: Int) -> UInt32 { NFT_REG32_00.rawValue + UInt32(word) }

    private static func set(_ expr: OpaquePointer, _ attribute: Int, _ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { nftnl_expr_set(expr, UInt16(attribute), $0.baseAddress, UInt32($0.count)) }
    }

    private static func u32Bytes(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }

    static func meta(_ key: nft_meta_keys, into word: Int) -> OpaquePointer {
        make("meta") {
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_META_KEY), key.rawValue)
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_META_DREG), register(word))
        }
    }

    static func payload(_ base: PayloadBase, offset: UInt32, length: UInt32, into word: Int) -> OpaquePointer {
        make("payload") {
            let b = base == .network ? NFT_PAYLOAD_NETWORK_HEADER : NFT_PAYLOAD_TRANSPORT_HEADER
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_PAYLOAD_BASE), b.rawValue)
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_PAYLOAD_OFFSET), offset)
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_PAYLOAD_LEN), length)
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_PAYLOAD_DREG), register(word))
        }
    }

    static func cmp(_ op: nft_cmp_ops, _ word: Int, _ data: [UInt8]) -> OpaquePointer {
        make("cmp") {
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_CMP_SREG), register(word))
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_CMP_OP), op.rawValue)
            set($0, NFTNL_EXPR_CMP_DATA, data)
        }
    }

    /// `meta nfproto ipv4|ipv6`: an inet chain sees both families.
    static func nfproto(_ family: UInt8) -> [OpaquePointer] {
        [meta(NFT_META_NFPROTO, into: 0), cmp(NFT_CMP_EQ, 0, [family])]
    }

    /// `fib daddr type local`.
    static func fibDaddrIsLocal() -> [OpaquePointer] {
        let fib = make("fib") {
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_FIB_FLAGS), NFTA_FIB_F_DADDR.rawValue)
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_FIB_RESULT), NFT_FIB_RESULT_ADDRTYPE.rawValue)
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_FIB_DREG), register(0))
        }
        return [fib, cmp(NFT_CMP_EQ, 0, u32Bytes(2))]  // RTN_LOCAL, host order
    }

    /// `ct status dnat`.
    static func ctStatusDNAT() -> [OpaquePointer] {
        let ct = make("ct") {
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_CT_KEY), NFT_CT_STATUS.rawValue)
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_CT_DREG), register(0))
        }
        let mask = make("bitwise") {
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_BITWISE_SREG), register(0))
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_BITWISE_DREG), register(0))
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_BITWISE_LEN), 4)
            set($0, NFTNL_EXPR_BITWISE_MASK, u32Bytes(UInt32(IPS_DST_NAT.rawValue)))
            set($0, NFTNL_EXPR_BITWISE_XOR, u32Bytes(0))
        }
        return [ct, mask, cmp(NFT_CMP_NEQ, 0, u32Bytes(0))]
    }

    static func lookup(_ map: BerthMap, from word: Int, into data: Int?) -> OpaquePointer {
        make("lookup") {
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_LOOKUP_SREG), register(word))
            if let data { nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_LOOKUP_DREG), register(data)) }
            _ = nftnl_expr_set_str($0, UInt16(NFTNL_EXPR_LOOKUP_SET), map.description)
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_LOOKUP_SET_ID), map.id)
        }
    }

    static func dnat(_ family: UInt8, address: Int, port: Int) -> OpaquePointer {
        make("nat") {
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_NAT_TYPE), NFT_NAT_DNAT.rawValue)
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_NAT_FAMILY), UInt32(family))
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_NAT_REG_ADDR_MIN), register(address))
            nftnl_expr_set_u32($0, UInt16(NFTNL_EXPR_NAT_REG_PROTO_MIN), register(port))
        }
    }

    static func masquerade() -> OpaquePointer { make("masq") { _ in } }
}

extension DNATRule {
    /// The rule a map element stands for, read back from its key and data; nil for the hairpin
    /// sets and for anything that does not parse.
    init?(map: BerthMap, key: [UInt8], data: [UInt8]?) {
        guard map.isMap, let data else { return nil }
        let addressLength = map == .dnat4 ? 4 : map == .dnat6 ? 16 : 0
        let targetLength = map == .dnat4 || map == .wild4 ? 4 : 16
        guard key.count == addressLength + 8, data.count == targetLength + 4 else { return nil }
        let proto: Proto
        switch key[addressLength] {
        case 6: proto = .tcp
        case 17: proto = .udp
        default: return nil
        }
        func port(_ bytes: ArraySlice<UInt8>) -> UInt16 {
            UInt16(bytes[bytes.startIndex]) << 8 | UInt16(bytes[bytes.startIndex + 1])
        }
        guard let container = IPAddress(bytes: Array(data[0..<targetLength])) else { return nil }
        var host: IPAddress?
        if addressLength > 0 {
            guard let address = IPAddress(bytes: Array(key[0..<addressLength])) else { return nil }
            host = address
        }
        self.init(
            proto: proto,
            hostIP: host,
            family: targetLength == 4 ? .v4 : .v6,
            hostPort: port(key[(addressLength + 4)...]),
            containerIP: container,
            containerPort: port(data[targetLength...])
        )
    }
}
