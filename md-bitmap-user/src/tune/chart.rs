//! The chunk-size trade-off curve as a ratatui [`Chart`], for `tune --tui` and for the TUI to
//! embed: x = log2(chunk size), y = log10 of the bitmap page writes and of the expected
//! crash-resync bytes.
use std::io::IsTerminal;

use anyhow::{Result, bail};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph};

use super::{TuneReport, human};

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
        let labels_x = match (r.results.first(), r.results.last()) {
            (Some(a), Some(b)) => vec![human(a.chunk_bytes), human(b.chunk_bytes)],
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
                .name("bitmap page writes (log10)")
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(Color::Cyan))
                .data(&self.page_writes),
            Dataset::default()
                .name("expected crash resync bytes (log10)")
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
            .block(Block::bordered().title(" bitmap chunk size trade-off "))
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

/// Shows the chart and the table in the terminal until q, Esc or Ctrl-C.
pub fn show(r: &TuneReport) -> Result<()> {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
    if !std::io::stdout().is_terminal() {
        bail!("--tui needs a terminal on standard output");
    }
    let chart = TradeoffChart::new(r);
    let table = super::render_table(r);
    let mut term = ratatui::init();
    let res = (|| -> Result<()> {
        loop {
            term.draw(|f| {
                let [top, bottom] = Layout::vertical([
                    Constraint::Min(10),
                    Constraint::Length(table.lines().count() as u16 + 1),
                ])
                .areas(f.area());
                f.render_widget(chart.widget(), top);
                f.render_widget(Paragraph::new(table.as_str()), bottom);
            })?;
            if let Event::Key(k) = event::read()? {
                let ctrl_c =
                    k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                    return Ok(());
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
    }
}
