//! The chunk-size trade-off curve as a small self-contained SVG: bitmap page writes and the
//! expected crash-resync bytes against the chunk size (log scales).
use std::fmt::Write;

use super::{TuneReport, human};
use crate::units;

const W: f64 = 720.0;
const H: f64 = 420.0;
const L: f64 = 80.0;
const R: f64 = 80.0;
const T: f64 = 40.0;
const B: f64 = 60.0;

fn log_scale(vals: &[f64]) -> (f64, f64) {
    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min).max(1.0);
    let hi = vals.iter().copied().fold(1.0, f64::max);
    let (a, b) = (lo.log10().floor(), hi.log10().ceil());
    (a, if b > a { b } else { a + 1.0 })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the report's curve.
pub fn tradeoff_svg(r: &TuneReport) -> String {
    let mut s = String::new();
    let n = r.results.len();
    let xs: Vec<f64> = r
        .results
        .iter()
        .map(|x| (x.chunk_bytes as f64).log2())
        .collect();
    let (x0, x1) = (
        xs.first().copied().unwrap_or(0.0),
        xs.last().copied().unwrap_or(1.0),
    );
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let px = |v: f64| L + (v - x0) / (x1 - x0) * (W - L - R);
    let pw: Vec<f64> = r
        .results
        .iter()
        .map(|x| (x.page_writes_total as f64).max(1.0))
        .collect();
    let rs: Vec<f64> = r
        .results
        .iter()
        .map(|x| x.resync_mean_bytes.max(1.0))
        .collect();
    let (pa, pb) = log_scale(&pw);
    let (ra, rb) = log_scale(&rs);
    let py = |v: f64, a: f64, b: f64| H - B - (v.max(1.0).log10() - a) / (b - a) * (H - T - B);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}: bitmap chunk size trade-off ({} writes, {:.0} s)</text>"#,
        W / 2.0,
        esc(&r.array),
        r.writes,
        r.span_secs
    );
    // Axes.
    let _ = writeln!(
        s,
        r#"<path d="M{L} {T} V{} H{} V{T}" fill="none" stroke="black"/>"#,
        H - B,
        W - R
    );
    for (i, x) in r.results.iter().enumerate() {
        let cx = px(xs[i]);
        let _ = writeln!(
            s,
            r#"<text x="{cx:.1}" y="{}" text-anchor="middle">{}</text>"#,
            H - B + 16.0,
            human(x.chunk_bytes)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">bitmap chunk size</text>"#,
        W / 2.0,
        H - 18.0
    );
    for d in (pa as i64)..=(pb as i64) {
        let y = py(10f64.powi(d as i32), pa, pb);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{y:.1}" text-anchor="end" fill="steelblue">1e{d}</text>"#,
            L - 6.0
        );
    }
    for d in (ra as i64)..=(rb as i64) {
        let y = py(10f64.powi(d as i32), ra, rb);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{y:.1}" fill="firebrick">{}</text>"#,
            W - R + 6.0,
            units::bytes_f(10f64.powi(d as i32))
        );
    }
    let line = |vals: &[f64], a: f64, b: f64| -> String {
        (0..n)
            .map(|i| format!("{:.1},{:.1}", px(xs[i]), py(vals[i], a, b)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        s,
        r#"<polyline points="{}" fill="none" stroke="steelblue" stroke-width="2"/>"#,
        line(&pw, pa, pb)
    );
    let _ = writeln!(
        s,
        r#"<polyline points="{}" fill="none" stroke="firebrick" stroke-width="2"/>"#,
        line(&rs, ra, rb)
    );
    for (i, x) in r.results.iter().enumerate() {
        let cx = px(xs[i]);
        let _ = writeln!(
            s,
            r#"<circle cx="{cx:.1}" cy="{:.1}" r="3" fill="steelblue"/><circle cx="{cx:.1}" cy="{:.1}" r="3" fill="firebrick"/>"#,
            py(pw[i], pa, pb),
            py(rs[i], ra, rb)
        );
        if x.chunk_bytes == r.recommended_chunk_bytes {
            let _ = writeln!(
                s,
                r#"<line x1="{cx:.1}" x2="{cx:.1}" y1="{T}" y2="{}" stroke="green" stroke-dasharray="4 3"/><text x="{cx:.1}" y="{}" text-anchor="middle" fill="green">recommended</text>"#,
                H - B,
                T + 12.0
            );
        }
        if x.in_use {
            let _ = writeln!(
                s,
                r#"<text x="{cx:.1}" y="{}" text-anchor="middle" fill="gray">in use</text>"#,
                H - B - 6.0
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" fill="steelblue">— bitmap page writes</text><text x="{}" y="{}" fill="firebrick">— expected crash resync</text>"#,
        L + 8.0,
        T + 14.0,
        L + 8.0,
        T + 30.0
    );
    s.push_str("</svg>\n");
    s
}
