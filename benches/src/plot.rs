//! A latency-vs-throughput plot as a standalone SVG (no plotting dependency).

use std::fmt::Write;

/// One step of a sweep.
#[derive(Debug, Clone, Copy)]
pub struct SweepPoint {
    /// The rate asked for (calls/s).
    pub target: f64,
    /// The rate achieved (calls/s).
    pub qps: f64,
    /// Latency percentiles in microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile, microseconds.
    pub p999_us: f64,
}

/// Renders `points` as an SVG: achieved calls/s on x, latency (log scale) on y, one line
/// per percentile.
pub fn sweep_svg(title: &str, points: &[SweepPoint]) -> String {
    const W: f64 = 800.0;
    const H: f64 = 500.0;
    const L: f64 = 80.0; // margins
    const R: f64 = 30.0;
    const T: f64 = 50.0;
    const B: f64 = 60.0;
    let max_x = points.iter().map(|p| p.qps).fold(1.0, f64::max) * 1.05;
    let lat = points
        .iter()
        .flat_map(|p| [p.p50_us, p.p99_us, p.p999_us])
        .filter(|v| *v > 0.0);
    let (lo, hi) = lat.fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo_exp, hi_exp) = (
        lo.max(0.1).log10().floor(),
        hi.log10().ceil().max(lo.max(0.1).log10().floor() + 1.0),
    );
    let x = |v: f64| L + v / max_x * (W - L - R);
    let y = |v: f64| {
        let e = v.max(0.1).log10().clamp(lo_exp, hi_exp);
        H - B - (e - lo_exp) / (hi_exp - lo_exp) * (H - T - B)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="25" font-size="16" text-anchor="middle">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    // Axes and grid.
    let _ = writeln!(
        s,
        r#"<line x1="{L}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        H - B,
        W - R,
        H - B
    );
    let _ = writeln!(
        s,
        r#"<line x1="{L}" y1="{T}" x2="{L}" y2="{}" stroke="black"/>"#,
        H - B
    );
    let mut e = lo_exp;
    while e <= hi_exp {
        let v = 10f64.powf(e);
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{yy}" x2="{}" y2="{yy}" stroke="#ddd"/>"##,
            W - R
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            L - 6.0,
            yy + 4.0,
            fmt_us(v)
        );
        e += 1.0;
    }
    for i in 0..=5 {
        let v = max_x * i as f64 / 5.0;
        let xx = x(v);
        let _ = writeln!(
            s,
            r#"<text x="{xx}" y="{}" text-anchor="middle">{}</text>"#,
            H - B + 18.0,
            fmt_rate(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">achieved calls/s</text>"#,
        W / 2.0,
        H - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">latency (log scale)</text>"#,
        H / 2.0,
        H / 2.0
    );
    // One line per percentile.
    type Series = (&'static str, &'static str, fn(&SweepPoint) -> f64);
    let series: [Series; 3] = [
        ("p50", "#1f77b4", |p| p.p50_us),
        ("p99", "#ff7f0e", |p| p.p99_us),
        ("p99.9", "#d62728", |p| p.p999_us),
    ];
    for (i, (name, color, get)) in series.iter().enumerate() {
        let pts: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.qps), y(get(p))))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        for p in points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                x(p.qps),
                y(get(p))
            );
        }
        let ly = T + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/>"#,
            L + 15.0,
            L + 40.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{name}</text>"#,
            L + 46.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_us(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.0} s", v / 1e6)
    } else if v >= 1000.0 {
        format!("{:.0} ms", v / 1e3)
    } else if v >= 1.0 {
        format!("{v:.0} us")
    } else {
        format!("{v:.1} us")
    }
}

fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_point() {
        let pts: Vec<SweepPoint> = (1..=4)
            .map(|i| SweepPoint {
                target: i as f64 * 1e5,
                qps: i as f64 * 1e5,
                p50_us: 20.0 * i as f64,
                p99_us: 90.0 * i as f64,
                p999_us: 400.0 * i as f64,
            })
            .collect();
        let svg = sweep_svg("echo <128 B>", &pts);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<circle").count(), 12);
        assert!(svg.contains("echo &lt;128 B&gt;"));
    }
}
