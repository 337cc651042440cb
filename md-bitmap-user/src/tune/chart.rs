//! The chunk-size trade-off curve as a ratatui [`Chart`], for `tune --tui` and for the TUI to
//! embed: x = log2(chunk size), y = log10 of the bitmap page writes and of the expected
//! crash-resync bytes.
use std::io::IsTerminal;

use anyhow::{Result, bail};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph};

use super::{SizeResult, TuneReport, human};
use crate::units;

/// The curve's points, owned, so that [`TradeoffChart::widget`] can lend them to a frame.
#[derive(Clone, Debug, Default)]
pub struct TradeoffChart {
    /// (log2 chunk bytes, log10 page writes).
    pub page_writes: Vec<(f64, f64)>,
    /// (log2 chunk bytes, log10 expected resync bytes).
    pub resync: Vec<(f64, f64)>,
    /// The recommended size, as a vertical marker.
    pub recommended: Vec<(f64, f64)>,
    labels_x: Vec<String>,
    y_max: f64,
}

impl TradeoffChart {
    /// The points of `r`.
    pub fn new(r: &TuneReport) -> Self {
        let lg = |v: f64| v.max(1.0).log10();
        let page_writes: Vec<(f64, f64)> = r
            .results
            .iter()
            .map(|x| {
                (
                    (x.chunk_bytes as f64).log2(),
                    lg(x.page_writes_total as f64),
                )
            })
            .collect();
        let resync: Vec<(f64, f64)> = r
            .results
            .iter()
            .map(|x| ((x.chunk_bytes as f64).log2(), lg(x.resync_mean_bytes)))
            .collect();
        let y_max = page_writes
            .iter()
            .chain(&resync)
            .map(|p| p.1)
            .fold(1.0, f64::max)
            .ceil();
        let rx = (r.recommended_chunk_bytes as f64).log2();
        // ratatui spaces the labels evenly: between the two ends, as many as fall on whole
        // powers of two (the x axis is log2 of the size).
        let labels_x = match (r.results.first(), r.results.last()) {
            (Some(a), Some(b)) => {
                let (l0, l1) = (a.chunk_bytes.ilog2(), b.chunk_bytes.ilog2());
                let exact = a.chunk_bytes.is_power_of_two() && b.chunk_bytes.is_power_of_two();
                let k = [4, 3, 2]
                    .into_iter()
                    .find(|&k| exact && l1 > l0 && (l1 - l0) % k == 0)
                    .unwrap_or(1);
                (0..=k)
                    .map(|i| match i {
                        0 => human(a.chunk_bytes),
                        _ if i == k => human(b.chunk_bytes),
                        _ => human(1u64 << (l0 + (l1 - l0) / k * i)),
                    })
                    .collect()
            }
            _ => vec![],
        };
        Self {
            page_writes,
            resync,
            recommended: (0..=20).map(|i| (rx, y_max * i as f64 / 20.0)).collect(),
            labels_x,
            y_max,
        }
    }

    /// The chart widget borrowing these points.
    pub fn widget(&self) -> Chart<'_> {
        let (x0, x1) = (
            self.page_writes.first().map_or(12.0, |p| p.0),
            self.page_writes.last().map_or(13.0, |p| p.0),
        );
        let datasets = vec![
            Dataset::default()
                .name("bitmap page writes")
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(Color::Cyan))
                .data(&self.page_writes),
            Dataset::default()
                .name("expected crash resync bytes")
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(Color::Red))
                .data(&self.resync),
            Dataset::default()
                .name("recommended")
                .marker(Marker::Dot)
                .graph_type(GraphType::Scatter)
                .style(Style::default().fg(Color::Green))
                .data(&self.recommended),
        ];
        Chart::new(datasets)
            // The key is in the title too: the legend does not fit a small chart.
            .block(Block::bordered().title(Line::from(vec![
                Span::raw(" chunk size trade-off (log10): "),
                Span::styled("page writes", Style::default().fg(Color::Cyan)),
                Span::raw(", "),
                Span::styled("crash resync bytes", Style::default().fg(Color::Red)),
                Span::raw(", "),
                Span::styled("• recommended", Style::default().fg(Color::Green)),
                Span::raw(" "),
            ])))
            // ratatui hides a legend wider or taller than a quarter of the chart, which hid it
            // on a 120x40 terminal: without it the two curves cannot be told apart.
            .hidden_legend_constraints((Constraint::Percentage(60), Constraint::Percentage(60)))
            .x_axis(
                Axis::default()
                    .title("chunk size")
                    .bounds([x0, x1.max(x0 + 1.0)])
                    .labels(self.labels_x.iter().map(|s| Line::from(s.clone()))),
            )
            .y_axis(
                Axis::default()
                    .title("log10")
                    .bounds([0.0, self.y_max])
                    .labels([
                        Line::from("0"),
                        Line::from(format!("{:.0}", self.y_max / 2.0)),
                        Line::from(format!("{:.0}", self.y_max)),
                    ]),
            )
    }
}

/// One column of the terminal table: header, width, priority (lower is kept first when the
/// terminal is narrow) and the cell of a result.
type Column = (&'static str, usize, u8, fn(&SizeResult) -> String);

const COLUMNS: [Column; 10] = [
    ("chunk", 7, 0, |x| human(x.chunk_bytes)),
    ("bits set", 10, 3, |x| x.bits_set.to_string()),
    ("page wr", 11, 1, |x| x.page_writes_total.to_string()),
    ("wr/s", 8, 4, |x| format!("{:.2}", x.page_writes_per_sec)),
    ("dirty avg", 10, 6, |x| units::bytes_f(x.dirty_mean_bytes)),
    ("dirty p99", 10, 8, |x| {
        units::bytes_f(x.dirty_p99_bytes as f64)
    }),
    ("dirty max", 10, 7, |x| {
        units::bytes_f(x.dirty_max_bytes as f64)
    }),
    ("resync avg", 10, 2, |x| units::duration(x.resync_mean_secs)),
    ("resync max", 10, 9, |x| units::duration(x.resync_max_secs)),
    ("memory", 10, 5, |x| {
        units::bytes_f(x.memory_peak_bytes as f64)
    }),
];

/// The table for a terminal `width` columns wide: as many columns as fit, the most telling
/// first (chunk, page writes, expected crash-resync time, bits set, ...), in the order of the
/// text report; a row ends with ` *` (in use) and/or ` <` (recommended).
pub fn table_lines(r: &TuneReport, width: u16) -> Vec<String> {
    let mut by_prio: Vec<usize> = (0..COLUMNS.len()).collect();
    by_prio.sort_by_key(|&i| COLUMNS[i].2);
    let mut keep = [false; COLUMNS.len()];
    let mut used = 3; // the marks
    for i in by_prio {
        let w = COLUMNS[i].1 + usize::from(used > 3);
        if used + w <= usize::from(width) || i == 0 {
            keep[i] = true;
            used += w;
        }
    }
    let line = |cells: &mut dyn Iterator<Item = String>| -> String {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            let col = COLUMNS.iter().enumerate().filter(|(k, _)| keep[*k]).nth(i);
            let w = col.map_or(0, |(_, c)| c.1);
            if i > 0 {
                s.push(' ');
            }
            s += &format!("{c:>w$}");
        }
        s
    };
    let mut out = vec![line(
        &mut COLUMNS
            .iter()
            .enumerate()
            .filter(|(k, _)| keep[*k])
            .map(|(_, c)| c.0.to_string()),
    )];
    for x in &r.results {
        let mark = match (x.in_use, x.chunk_bytes == r.recommended_chunk_bytes) {
            (true, true) => " *<",
            (true, false) => " *",
            (false, true) => " <",
            _ => "",
        };
        out.push(
            line(
                &mut COLUMNS
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| keep[*k])
                    .map(|(_, c)| (c.3)(x)),
            ) + mark,
        );
    }
    out
}

/// The lines under the table: the recommendation, the commands and the keys.
fn footer_lines(r: &TuneReport) -> Vec<String> {
    let mut v = vec![format!(
        "* in use, < recommended ({}): {}",
        match r.objective {
            super::Objective::Balanced => "balanced",
            super::Objective::MinResync => "min-resync",
            super::Objective::MinOverhead => "min-overhead",
        },
        human(r.recommended_chunk_bytes)
    )];
    if r.commands.is_empty() {
        v.push("the chunk size in use is already the recommended one".into());
    } else {
        v.extend(r.commands.iter().map(|c| format!("  {c}")));
    }
    v.push("q quit   ↑/↓ scroll the table".into());
    v
}

/// Draws the chart, the table (scrolled by `scroll` rows when it does not fit; clamped here)
/// and the recommendation on `f`. The recommendation and the keys always stay on screen, the
/// table gets the rows it needs as long as the chart keeps 8.
pub fn draw(f: &mut Frame, chart: &TradeoffChart, r: &TuneReport, scroll: &mut u16) {
    let area = f.area();
    let table = table_lines(r, area.width);
    let footer = footer_lines(r);
    let foot_h = (footer.len() as u16).min(area.height);
    let avail = area.height - foot_h;
    let table_h = (table.len() as u16).min(avail.saturating_sub(8.min(avail)).max(avail.min(2)));
    let [top, mid, bottom] = Layout::vertical([
        Constraint::Min(0),
        Constraint::Length(table_h),
        Constraint::Length(foot_h),
    ])
    .areas(area);
    // The header stays; the rows scroll.
    let rows = table.len().saturating_sub(1) as u16;
    let shown = table_h.saturating_sub(1);
    *scroll = (*scroll).min(rows.saturating_sub(shown));
    let text: Vec<Line> = table
        .iter()
        .take(1)
        .chain(table.iter().skip(1 + usize::from(*scroll)))
        .map(|l| Line::from(l.as_str()))
        .collect();
    if top.height >= 3 {
        f.render_widget(chart.widget(), top);
    }
    f.render_widget(Paragraph::new(text), mid);
    f.render_widget(
        Paragraph::new(
            footer
                .iter()
                .map(|l| Line::from(l.as_str()))
                .collect::<Vec<_>>(),
        ),
        bottom,
    );
}

/// Shows the chart and the table in the terminal until q, Esc or Ctrl-C; redraws on resize.
pub fn show(r: &TuneReport) -> Result<()> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    if !std::io::stdout().is_terminal() {
        bail!("--tui needs a terminal on standard output");
    }
    let chart = TradeoffChart::new(r);
    let mut scroll = 0u16;
    let mut term = ratatui::init();
    let res = (|| -> Result<()> {
        loop {
            term.draw(|f| draw(f, &chart, r, &mut scroll))?;
            if let Event::Key(k) = event::read()?
                && k.kind != KeyEventKind::Release
            {
                let ctrl_c =
                    k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    _ if ctrl_c => return Ok(()),
                    KeyCode::Up | KeyCode::Char('k') => scroll = scroll.saturating_sub(1),
                    KeyCode::Down | KeyCode::Char('j') => scroll = scroll.saturating_add(1),
                    _ => {}
                }
            }
        }
    })();
    ratatui::restore();
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    #[test]
    fn chart_renders_both_curves() {
        let mk = |c: u64, pw: u64, rs: f64| super::super::SizeResult {
            chunk_bytes: c,
            in_use: c == 65536,
            chunks: 1,
            bits_set: 0,
            sync_waits: 0,
            page_writes: pw,
            page_writes_total: pw,
            page_writes_per_sec: 0.0,
            dirty_mean_bytes: rs,
            dirty_p99_bytes: 0,
            dirty_max_bytes: 0,
            resync_mean_bytes: rs,
            resync_max_bytes: 0,
            resync_mean_secs: 0.0,
            resync_max_secs: 0.0,
            memory_static_bytes: 0,
            memory_peak_bytes: 0,
            daemon_passes: 0,
            end_dirty: vec![],
            anomalies: 0,
        };
        let r = TuneReport {
            array: "md0".into(),
            kernel_release: "t".into(),
            writes: 1,
            writes_without_latency: 0,
            span_secs: 1.0,
            trace_loss: Default::default(),
            daemon: super::super::DaemonMode::Recorded,
            resync_bytes_per_sec: 1.0,
            results: vec![
                mk(4096, 10_000, 1e4),
                mk(65536, 1_000, 1e6),
                mk(1 << 20, 100, 1e8),
            ],
            objective: super::super::Objective::Balanced,
            recommended_chunk_bytes: 65536,
            commands: vec![],
        };
        let c = TradeoffChart::new(&r);
        assert_eq!(c.page_writes, vec![(12.0, 4.0), (16.0, 3.0), (20.0, 2.0)]);
        assert_eq!(c.resync[2], (20.0, 8.0));
        let mut t = Terminal::new(TestBackend::new(80, 20)).unwrap();
        t.draw(|f| f.render_widget(c.widget(), f.area())).unwrap();
        let text: String = t
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect();
        assert!(text.contains("trade-off"));
        assert!(text.contains("4K") && text.contains("1M"));
        // The legend tells the curves apart (ratatui's default hid it on such a chart).
        assert!(text.contains("bitmap page writes"), "{text}");
        assert!(text.contains("expected crash resync bytes"), "{text}");

        // The table fits the terminal's width, the chunk column always there, all ten
        // columns on a wide one; each size has its row, the recommended one marked.
        for w in [40u16, 60, 80, 120, 200] {
            let t = table_lines(&r, w);
            assert_eq!(t.len(), 4);
            for l in &t {
                assert!(l.chars().count() <= usize::from(w), "{w}: {l:?}");
            }
            assert!(t[0].trim_start().starts_with("chunk"), "{:?}", t[0]);
            assert!(t[2].trim_start().starts_with("64K") && t[2].ends_with(" *<"));
        }
        assert_eq!(table_lines(&r, 200)[0].split_whitespace().count(), 17);

        // A short terminal: the recommendation and the keys stay, the table scrolls.
        let mut t = Terminal::new(TestBackend::new(80, 12)).unwrap();
        let mut scroll = 5;
        t.draw(|f| draw(f, &c, &r, &mut scroll)).unwrap();
        let text: Vec<String> = (0..12)
            .map(|y| {
                (0..80)
                    .map(|x| t.backend().buffer()[(x, y)].symbol().to_string())
                    .collect()
            })
            .collect();
        assert!(text[9].contains("recommended (balanced): 64K"), "{text:#?}");
        assert!(text[11].contains("q quit"), "{text:#?}");
        assert!(scroll <= 2, "scroll clamped to the rows: {scroll}");
    }
}
