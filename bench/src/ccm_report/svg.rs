//! The latency CDF plots, as standalone SVG.

use std::fmt::Write as _;

/// A latency CDF as a standalone SVG: x = seconds (linear, 0 to the largest value), y = fraction of objects.
pub fn cdf_svg(title: &str, series: &[(String, Vec<f64>)]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 420.0;
    const L: f64 = 60.0;
    const R: f64 = 20.0;
    const T: f64 = 40.0;
    const B: f64 = 50.0;
    const COLORS: [&str; 4] = ["#d62728", "#1f77b4", "#2ca02c", "#7f7f7f"];
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let step = nice_step(max / 6.0);
    let x_max = (max / step).ceil() * step;
    let px = |v: f64| L + v / x_max * (W - L - R);
    let py = |f: f64| H - B - f * (H - T - B);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        W / 2.0,
        escape(title)
    );
    // Grid and axes.
    let mut tick = 0.0;
    while tick <= x_max + step / 2.0 {
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{}\" \
             text-anchor=\"middle\">{}</text>",
            py(0.0),
            py(1.0),
            py(0.0) + 16.0,
            trim_float(tick),
            x = px(tick)
        );
        tick += step;
    }
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" \
             text-anchor=\"end\">{}</text>",
            px(0.0),
            px(x_max),
            px(0.0) - 6.0,
            py(f) + 4.0,
            trim_float(f),
            y = py(f)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">seconds</text>\n<text x=\"16\" y=\"{}\" \
         text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">fraction done</text>",
        (L + W - R) / 2.0,
        H - 12.0,
        H / 2.0,
        H / 2.0
    );
    for (i, (name, values)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len().max(1) as f64;
        // At most ~600 points per line: the CDF is monotone, so sampling loses nothing visible.
        let every = (sorted.len() / 600).max(1);
        let mut points = format!("{:.1},{:.1}", px(0.0), py(0.0));
        for (k, v) in sorted.iter().enumerate() {
            if k % every == 0 || k + 1 == sorted.len() {
                let _ = write!(points, " {:.1},{:.1}", px(*v), py((k + 1) as f64 / n));
            }
        }
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{points}\"/>\n\
             <rect x=\"{}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            W - R - 230.0,
            py(0.0) - 20.0 - 18.0 * i as f64 - 4.0,
            W - R - 212.0,
            py(0.0) - 20.0 - 18.0 * i as f64,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

pub(crate) fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let f = raw / magnitude;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

pub(crate) fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
