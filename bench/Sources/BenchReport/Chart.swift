// One SVG per figure group: for every scenario and figure of the group, a bar per target as
// the ratio of its median to the figure's base (direct; docker-proxy for memory), a whisker
// from its smallest to its largest repetition on the same scale, and berth in its own colour.
// Written by hand: a few rectangles, lines and texts need no plotting tool on the machine.

public enum Chart {
    /// The charts of a run: (group, SVG text), in the order the groups first appear.
    public static func render(_ document: BenchDocument) -> [(group: String, svg: String)] {
        var groups: [String] = []
        for s in document.scenarios {
            for f in s.figures where !groups.contains(f.group ?? "figures") { groups.append(f.group ?? "figures") }
        }
        return groups.compactMap { g in
            let panels = document.scenarios.flatMap { s in
                s.figures.filter { ($0.group ?? "figures") == g }.compactMap { panel(s.name, $0, document.targets) }
            }
            return panels.isEmpty ? nil : (g, svg(group: g, panels: panels))
        }
    }

    struct Bar {
        let target: String
        let value: Double
        let low: Double
        let high: Double
        let label: String
    }

    struct Panel {
        let scenario: String
        let title: String
        let bars: [Bar]
        /// Targets whose measurement failed, with the reason shown beside them.
        let absent: [(String, String)]
        /// Whether bars are ratios (a reference line at 1) or the values themselves.
        let ratioTo: String?
    }

    static func panel(_ scenario: String, _ f: BenchFigure, _ targets: [String]) -> Panel? {
        let base = f.targets[f.ratioTo]?.median
        // A ratio of percentages (loss near 0) says little: those are drawn as values.
        let ratio = base.map { $0 > 0 && f.unit != "%" } ?? false
        var bars: [Bar] = []
        var absent: [(String, String)] = []
        for t in targets {
            guard let c = f.targets[t], let m = c.median else {
                // What a target cannot do by design (UDP on HAProxy) is left out; a failure is shown.
                if let note = f.targets[t]?.note, f.targets[t]?.unsupported != true { absent.append((t, note)) }
                continue
            }
            let d = ratio ? base! : 1
            let text = ratio ? "×\(formatNumber(m / d))  \(formatNumber(m)) \(f.unit)" : "\(formatNumber(m)) \(f.unit)"
            bars.append(Bar(target: t, value: m / d, low: (c.min ?? m) / d, high: (c.max ?? m) / d, label: text))
        }
        if bars.isEmpty { return nil }
        let how =
            ratio
            ? "ratio to \(f.ratioTo)" : f.unit == "%" ? "values" : "values (no \(f.ratioTo) value to divide by)"
        let title = "\(f.title): \(how), \(f.higherIsBetter ? "higher" : "lower") is better"
        return Panel(scenario: scenario, title: title, bars: bars, absent: absent, ratioTo: ratio ? f.ratioTo : nil)
    }

    // MARK: drawing

    static let width = 900.0
    static let labelWidth = 130.0
    static let plotWidth = 520.0
    static let row = 18.0
    static let barHeight = 12.0

    static func colour(_ target: String) -> String {
        switch target {
        case "berth": "#d9480f"
        case _ where target.hasPrefix("berth"): "#f59f00"
        case "direct": "#adb5bd"
        default: "#4c6ef5"
        }
    }

    static func svg(group: String, panels: [Panel]) -> String {
        var body = ""
        var y = 46.0
        var scenario = ""
        for p in panels {
            if p.scenario != scenario {
                scenario = p.scenario
                body += text(10, y, "scenario: \(scenario)", size: 14, bold: true)
                y += 22
            }
            body += text(10, y, p.title, size: 12, bold: true)
            y += 8
            let top = p.bars.map { max($0.value, $0.high) }.max() ?? 1
            let scale = niceMax(max(top, p.ratioTo == nil ? 0 : 1))
            let x0 = labelWidth + 10
            func x(_ v: Double) -> Double { x0 + plotWidth * max(0, v) / scale }
            let rows = Double(p.bars.count + p.absent.count)
            // Gridlines and their values.
            for tick in ticks(scale) {
                body += line(x(tick), y, x(tick), y + rows * row, stroke: "#e9ecef")
                body += text(x(tick), y + rows * row + 12, plainNumber(tick), size: 10, anchor: "middle")
            }
            if p.ratioTo != nil {
                body += line(x(1), y - 2, x(1), y + rows * row + 2, stroke: "#495057", dash: true)
            }
            for b in p.bars {
                let highlight = b.target.hasPrefix("berth")
                body += text(labelWidth, y + row - 5, b.target, size: 12, anchor: "end", bold: highlight)
                body +=
                    "<rect class=\"bar\" data-target=\"\(escape(b.target))\" x=\"\(n(x0))\" y=\"\(n(y + (row - barHeight) / 2))\" "
                    + "width=\"\(n(x(b.value) - x0))\" height=\"\(n(barHeight))\" fill=\"\(colour(b.target))\"/>\n"
                let mid = y + row / 2
                body += "<g class=\"whisker\" stroke=\"#212529\">"
                body += line(x(b.low), mid, x(b.high), mid, stroke: nil)
                body += line(x(b.low), mid - 4, x(b.low), mid + 4, stroke: nil)
                body += line(x(b.high), mid - 4, x(b.high), mid + 4, stroke: nil)
                body += "</g>\n"
                body += text(x0 + plotWidth + 10, y + row - 5, b.label, size: 11, bold: highlight)
                y += row
            }
            for (t, why) in p.absent {
                body += text(labelWidth, y + row - 5, t, size: 12, anchor: "end")
                body += text(x0 + 4, y + row - 5, "n/a: \(String(why.prefix(90)))", size: 11, fill: "#868e96")
                y += row
            }
            y += 30
        }
        let height = y
        var svg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        svg +=
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(n(width))\" height=\"\(n(height))\" "
            + "viewBox=\"0 0 \(n(width)) \(n(height))\" font-family=\"sans-serif\">\n"
        svg += "<title>berth-bench: \(escape(group))</title>\n"
        svg += "<rect x=\"0\" y=\"0\" width=\"\(n(width))\" height=\"\(n(height))\" fill=\"#ffffff\"/>\n"
        svg += text(10, 20, "\(group): median of the repetitions, whiskers min–max", size: 15, bold: true)
        return svg + body + "</svg>\n"
    }

    /// The axis end: 1, 2 or 5 times a power of ten at or above `v`.
    static func niceMax(_ v: Double) -> Double {
        guard v.isFinite, v > 0 else { return 1 }
        var p = 1.0
        while p * 10 <= v { p *= 10 }
        while p > v { p /= 10 }
        for m in [1.0, 2, 5, 10] where m * p >= v { return m * p }
        return 10 * p
    }

    /// Ticks from 0 to `scale` (a niceMax): steps of 0.2, 0.5 or 1 times its power of ten.
    static func ticks(_ scale: Double) -> [Double] {
        var mantissa = scale
        while mantissa >= 10 { mantissa /= 10 }
        while mantissa < 1 { mantissa *= 10 }
        let parts = (mantissa - 2).magnitude < 0.01 ? 4 : 5
        return (0...parts).map { scale * Double($0) / Double(parts) }
    }

    static func n(_ v: Double) -> String { fixed(v, 1) }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }

    static func text(
        _ x: Double,
        _ y: Double,
        _ s: String,
        size: Int,
        anchor: String = "start",
        bold: Bool = false,
        fill: String = "#212529"
    ) -> String {
        "<text x=\"\(n(x))\" y=\"\(n(y))\" font-size=\"\(size)\" text-anchor=\"\(anchor)\" fill=\"\(fill)\""
            + (bold ? " font-weight=\"bold\"" : "") + ">\(escape(s))</text>\n"
    }

    static func line(
        _ x1: Double,
        _ y1: Double,
        _ x2: Double,
        _ y2: Double,
        stroke: String?,
        dash: Bool = false
    ) -> String {
        "<line x1=\"\(n(x1))\" y1=\"\(n(y1))\" x2=\"\(n(x2))\" y2=\"\(n(y2))\""
            + (stroke.map { " stroke=\"\($0)\"" } ?? "") + (dash ? " stroke-dasharray=\"4 3\"" : "") + "/>"
    }
}
