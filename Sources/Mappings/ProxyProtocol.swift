/// Which PROXY protocol header berth sends to the backend ahead of a client's bytes, so the
/// backend learns the client's address (HAProxy's doc/proxy-protocol.txt).
public enum ProxyProtocol: String, Sendable, CaseIterable {
    /// The human-readable line: `PROXY TCP4 src dst sport dport\r\n`.
    case v1
    /// The binary header with the 12-byte signature; the only one defined for UDP.
    case v2
}
