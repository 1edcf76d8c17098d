// Numbers as every table and chart shows them: three significant digits or so, no locale.

/// 1234 → "1234", 12.34 → "12.3", 1.234 → "1.23"; NaN → "-".
public func formatNumber(_ v: Double) -> String {
    if v.isNaN { return "-" }
    if v.isInfinite { return v > 0 ? "inf" : "-inf" }
    let a = abs(v)
    if a >= 100 { return Int(exactly: v.rounded()).map { String($0) } ?? "\(v.rounded())" }
    return fixed(v, a >= 10 ? 1 : 2)
}

/// `v` with exactly `decimals` digits after the point.
public func fixed(_ v: Double, _ decimals: Int) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let r = (v * scale).rounded() / scale
    var text = "\(r == 0 ? 0 : r)"
    if text.contains("e") { return "\(r)" }
    if let dot = text.firstIndex(of: ".") {
        let have = text.distance(from: dot, to: text.endIndex) - 1
        if have < decimals { text += String(repeating: "0", count: decimals - have) }
        if decimals == 0 { text.removeSubrange(dot...) }
    } else if decimals > 0 {
        text += "." + String(repeating: "0", count: decimals)
    }
    return text
}

/// A setting or a duration as given: 5 → "5", 0.25 → "0.25".
public func plainNumber(_ v: Double) -> String {
    if let whole = Int(exactly: v) { return String(whole) }
    return formatNumber(v)
}
