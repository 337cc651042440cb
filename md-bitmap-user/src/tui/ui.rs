//! The screen: array list, heatmap, legend, side panel, help and status line, and the keys.
use std::path::PathBuf;

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, List, ListItem, ListState, Paragraph, Widget, Wrap};

use super::view::{ArrayView, CellState, LEVELS, intensity_color, light_background};
use crate::mirror::snapshot::Snapshot;
use crate::units;

/// Where the data comes from, as the side panel says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceInfo {
    /// The live eBPF mirror.
    Live,
    /// The on-disk bitmap and sysfs only, with the reason.
    OnDisk(String),
}

/// What a key asks the run loop to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing more than a redraw.
    None,
    /// Quit.
    Quit,
    /// Write the current snapshot as JSON.
    WriteSnapshot,
}

/// The TUI's state.
pub struct App {
    /// Arrays, in name order.
    pub views: Vec<ArrayView>,
    /// Index of the selected array.
    pub selected: usize,
    /// Chunks per cell, `None` = fit the whole array.
    pub zoom: Option<u64>,
    /// First chunk shown (a multiple of the row length in chunks).
    pub offset: u64,
    /// Sampling paused.
    pub paused: bool,
    /// Help shown.
    pub help: bool,
    /// Last status message.
    pub status: String,
    /// Data source.
    pub source: SourceInfo,
    /// The last snapshot taken (what `s` writes).
    pub last_snapshot: Option<Snapshot>,
    /// Folder `s` writes snapshots to.
    pub snapshot_dir: PathBuf,
    /// Heatmap cells (width, height) at the last draw (for paging and zoom limits).
    pub grid: (u16, u16),
}

impl App {
    /// An empty app.
    pub fn new(source: SourceInfo, snapshot_dir: PathBuf) -> Self {
        Self {
            views: Vec::new(),
            selected: 0,
            zoom: None,
            offset: 0,
            paused: false,
            help: false,
            status: "? help · q quit".into(),
            source,
            last_snapshot: None,
            snapshot_dir,
            grid: (0, 0),
        }
    }

    /// The selected array.
    pub fn current(&self) -> Option<&ArrayView> {
        self.views.get(self.selected)
    }

    /// Replaces the arrays, keeping the selection by name.
    pub fn set_views(&mut self, views: Vec<ArrayView>) {
        let name = self.current().map(|v| v.snap.name.clone());
        self.views = views;
        self.selected = name
            .and_then(|n| self.views.iter().position(|v| v.snap.name == n))
            .unwrap_or(0);
    }

    fn cells(&self) -> u64 {
        (self.grid.0 as u64 * self.grid.1 as u64).max(1)
    }

    /// Chunks per cell that fits the whole array on the grid.
    /// Rounded up to whole buckets of chunks, so that a frame reads the per-bucket states.
    pub fn fit_zoom(&self) -> u64 {
        let Some(v) = self.current() else { return 1 };
        let fit = v.chunks().div_ceil(self.cells()).max(1);
        fit.div_ceil(v.bucket) * v.bucket
    }

    /// Chunks per cell now.
    pub fn per_cell(&self) -> u64 {
        let fit = self.fit_zoom();
        self.zoom.map(|z| z.min(fit)).unwrap_or(fit).max(1)
    }

    fn row_chunks(&self) -> u64 {
        self.per_cell() * self.grid.0.max(1) as u64
    }

    /// Keeps the offset on a row boundary and the last row reachable.
    pub fn clamp_offset(&mut self) {
        let chunks = self.current().map(|v| v.chunks()).unwrap_or(0);
        let row = self.row_chunks();
        let rows = chunks.div_ceil(row);
        let max_first_row = rows.saturating_sub(self.grid.1.max(1) as u64);
        self.offset = (self.offset / row).min(max_first_row) * row;
    }

    fn zoom_in(&mut self) {
        self.zoom = Some((self.per_cell() / 2).max(1));
    }

    fn zoom_out(&mut self) {
        let per = self.per_cell();
        let fit = self.fit_zoom();
        let z = per.saturating_mul(2);
        self.zoom = if z >= fit { None } else { Some(z) };
    }

    /// Applies a key; returns what the run loop must do.
    pub fn key(&mut self, key: ratatui::crossterm::event::KeyEvent) -> Action {
        use ratatui::crossterm::event::{KeyCode, KeyEventKind, KeyModifiers};
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        if self.help && !matches!(key.code, KeyCode::Char('q')) {
            self.help = false;
            return Action::None;
        }
        let n = self.views.len().max(1);
        let page = self.row_chunks() * self.grid.1.max(1) as u64;
        match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                return Action::Quit;
            }
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Tab | KeyCode::Down => {
                self.selected = (self.selected + 1) % n;
                self.offset = 0;
            }
            KeyCode::BackTab | KeyCode::Up => {
                self.selected = (self.selected + n - 1) % n;
                self.offset = 0;
            }
            KeyCode::Char('+') | KeyCode::Char('=') => self.zoom_in(),
            KeyCode::Char('-') | KeyCode::Char('_') => self.zoom_out(),
            KeyCode::Char('0') => self.zoom = None,
            KeyCode::Char('j') => self.offset = self.offset.saturating_add(self.row_chunks()),
            KeyCode::Char('k') => self.offset = self.offset.saturating_sub(self.row_chunks()),
            KeyCode::Char('l') | KeyCode::Right | KeyCode::PageDown => {
                self.offset = self.offset.saturating_add(page)
            }
            KeyCode::Char('h') | KeyCode::Left | KeyCode::PageUp => {
                self.offset = self.offset.saturating_sub(page)
            }
            KeyCode::Char('g') | KeyCode::Home => self.offset = 0,
            KeyCode::Char('G') | KeyCode::End => self.offset = u64::MAX / 2,
            KeyCode::Char('p') => {
                self.paused = !self.paused;
                self.status = if self.paused {
                    "paused (p resumes)".into()
                } else {
                    "resumed".into()
                };
            }
            KeyCode::Char('s') => return Action::WriteSnapshot,
            _ => {}
        }
        self.clamp_offset();
        Action::None
    }

    /// Draws the whole screen.
    pub fn draw(&mut self, f: &mut Frame) {
        let area = f.area();
        self.render(area, f.buffer_mut());
    }

    /// Renders the whole screen into `buf` (the same as [`App::draw`], for tests and benches).
    pub fn render(&mut self, area: Rect, buf: &mut Buffer) {
        let [main, legend, status] = Layout::vertical([
            Constraint::Min(3),
            Constraint::Length(3),
            Constraint::Length(1),
        ])
        .areas(area);
        let side_w = if main.width >= 100 { 38 } else { 32 };
        let [left, side] = if main.width >= 72 {
            Layout::horizontal([Constraint::Min(30), Constraint::Length(side_w)]).areas(main)
        } else {
            [main, Rect::new(main.x, main.y, 0, 0)]
        };
        let list_h = (self.views.len() as u16 + 2).clamp(3, 8);
        let [list, heat] =
            Layout::vertical([Constraint::Length(list_h), Constraint::Min(3)]).areas(left);
        self.render_list(list, buf);
        self.render_heatmap(heat, buf);
        render_legend(self.current(), legend, buf);
        if side.width > 0 {
            self.render_side(side, buf);
        }
        let pause = if self.paused { " [PAUSED]" } else { "" };
        Paragraph::new(Line::from(vec![
            Span::styled(
                format!(" md-bitmap{pause} "),
                Style::default().add_modifier(Modifier::REVERSED),
            ),
            Span::raw(format!(" {}", self.status)),
        ]))
        .render(status, buf);
        if self.help {
            render_help(area, buf);
        }
    }

    fn render_list(&self, area: Rect, buf: &mut Buffer) {
        let items: Vec<ListItem> = self
            .views
            .iter()
            .map(|v| {
                let s = &v.snap;
                ListItem::new(format!(
                    "{:<6} {:<6} ×{:<2} {:<9} dirty {}  in flight {}  NEEDED {}",
                    s.name,
                    s.level,
                    s.raid_disks,
                    s.array_state,
                    s.counts.dirty_on_disk_chunks,
                    s.counts.in_flight_chunks,
                    s.counts.needed_chunks
                ))
            })
            .collect();
        let title = if self.views.is_empty() {
            " arrays: none found ".to_string()
        } else {
            format!(" arrays ({}) · Tab switches ", self.views.len())
        };
        let list = List::new(items)
            .block(Block::default().borders(Borders::ALL).title(title))
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED))
            .highlight_symbol("> ");
        let mut st = ListState::default().with_selected(Some(self.selected));
        ratatui::widgets::StatefulWidget::render(list, area, buf, &mut st);
    }

    fn render_heatmap(&mut self, area: Rect, buf: &mut Buffer) {
        let Some(v) = self.current() else {
            Block::default()
                .borders(Borders::ALL)
                .title(" heatmap ")
                .render(area, buf);
            return;
        };
        let chunks = v.chunks();
        let gutter = (format!("{}", chunks.max(1)).len() as u16 + 1).min(area.width / 3);
        let inner_w = area.width.saturating_sub(2 + gutter);
        let inner_h = area.height.saturating_sub(2);
        self.grid = (inner_w, inner_h);
        self.clamp_offset();
        let Some(v) = self.current() else { return };
        let per = self.per_cell();
        let chunk_bytes = v.snap.bitmap.as_ref().map(|b| b.chunk_size_bytes);
        let title = match chunk_bytes {
            None => format!(" {}: no bitmap ", v.snap.name),
            Some(cb) => {
                let shown_end = (self.offset + per * inner_w as u64 * inner_h as u64).min(chunks);
                format!(
                    " {} · 1 cell = {} chunk{} ({}) · chunks {}–{} of {}{} ",
                    v.snap.name,
                    per,
                    if per == 1 { "" } else { "s" },
                    units::bytes(per.saturating_mul(cb)),
                    self.offset,
                    shown_end.saturating_sub(1),
                    chunks,
                    if self.zoom.is_none() { " · fit" } else { "" }
                )
            }
        };
        let block = Block::default().borders(Borders::ALL).title(title);
        let inner = block.inner(area);
        block.render(area, buf);
        if chunk_bytes.is_none() || inner_w == 0 || inner_h == 0 {
            return;
        }
        let n = inner_w as usize * inner_h as usize;
        let states = v.cell_states(self.offset, per, n);
        let gutter_style = Style::default().fg(Color::DarkGray);
        for row in 0..inner_h {
            let y = inner.y + row;
            let first = self.offset + row as u64 * inner_w as u64 * per;
            if first < chunks && gutter > 0 {
                let label = format!("{:>w$} ", first, w = gutter as usize - 1);
                buf.set_stringn(inner.x, y, &label, gutter as usize, gutter_style);
            }
            for col in 0..inner_w {
                let i = row as usize * inner_w as usize + col as usize;
                let Some(st) = states[i] else { continue };
                let c0 = first + col as u64 * per;
                let level = v.intensity.level(c0..(c0 + per).min(chunks));
                let cell = &mut buf[(inner.x + gutter + col, y)];
                cell.set_char(st.glyph());
                let fg = if light_background(level) {
                    Color::Black
                } else {
                    st.color()
                };
                cell.set_fg(fg);
                cell.set_bg(intensity_color(level).unwrap_or(Color::Reset));
            }
        }
    }

    fn render_side(&self, area: Rect, buf: &mut Buffer) {
        let mut lines: Vec<Line> = Vec::new();
        let head = |t: &str| {
            Line::from(Span::styled(
                t.to_string(),
                Style::default().add_modifier(Modifier::BOLD),
            ))
        };
        let kv = |k: &str, v: String| Line::from(vec![Span::raw(format!("{k:<16}")), Span::raw(v)]);
        match self.current() {
            None => lines.push(Line::from("no md array found")),
            Some(v) => {
                let s = &v.snap;
                lines.push(head("geometry"));
                lines.push(kv(
                    "array",
                    format!("{} {} ({} disks)", s.name, s.level, s.raid_disks),
                ));
                lines.push(kv(
                    "state",
                    format!(
                        "{}{}",
                        s.array_state,
                        if s.degraded > 0 {
                            format!(", {} missing", s.degraded)
                        } else {
                            String::new()
                        }
                    ),
                ));
                let sync = match v.sync_completed {
                    Some((d, t)) if t > 0 => {
                        format!("{} {:.1}%", s.sync_action, d as f64 * 100.0 / t as f64)
                    }
                    _ => s.sync_action.clone(),
                };
                lines.push(kv("sync", sync));
                if s.chunk_size_bytes > 0 {
                    lines.push(kv("raid chunk", units::bytes(s.chunk_size_bytes)));
                }
                match &s.bitmap {
                    Some(b) => {
                        lines.push(kv(
                            "bitmap",
                            format!("{} × {}", b.chunks, units::bytes(b.chunk_size_bytes)),
                        ));
                        lines.push(kv(
                            "covers",
                            units::bytes(b.sync_size_sectors.saturating_mul(512)),
                        ));
                        lines.push(kv("daemon", format!("every {}s", b.time_base_secs)));
                        lines.push(kv("location", format!("{} {}", b.metadata, b.location)));
                    }
                    None => lines.push(kv("bitmap", "none".into())),
                }
                lines.push(head("counts (chunks)"));
                let c = &s.counts;
                lines.push(kv(
                    "dirty disk/mem",
                    format!("{} / {}", c.dirty_on_disk_chunks, c.dirty_cached_chunks),
                ));
                lines.push(kv(
                    "in flight",
                    format!("{} ({} writes)", c.in_flight_chunks, c.in_flight_writes),
                ));
                lines.push(kv(
                    "NEEDED/RESYNC",
                    format!("{} / {}", c.needed_chunks, c.resync_chunks),
                ));
                if c.blocked_writers > 0 {
                    lines.push(kv("blocked", c.blocked_writers.to_string()));
                }
                lines.push(kv(
                    "counter pages",
                    format!("{}/{}", c.allocated_counter_pages, c.counter_pages),
                ));
                lines.push(kv(
                    "oldest write",
                    s.oldest_pending_write_age_secs
                        .map(|a| format!("{a:.1}s"))
                        .unwrap_or_else(|| "-".into()),
                ));
                // Fields other features add to the snapshot are shown as they come.
                let extra = &v.json;
                lines.push(head("predicted resync"));
                match &s.prediction {
                    Some(p) => lines.extend(prediction_lines(p)),
                    None => lines.extend(json_lines(extra.get("prediction"), "not available")),
                }
                lines.push(head("alerts"));
                lines.extend(json_lines(extra.get("alerts"), "not available"));
                lines.push(head("feed health"));
                match &self.source {
                    SourceInfo::Live => lines.push(kv("source", "live (eBPF)".into())),
                    SourceInfo::OnDisk(why) => {
                        lines.push(kv("source", "on-disk only".into()));
                        lines.push(Line::from(format!("  {why}")));
                    }
                }
                let fh = &s.feed;
                lines.push(kv("events/drops", format!("{} / {}", fh.events, fh.drops)));
                lines.push(kv(
                    "drift",
                    format!(
                        "{} chunks, {}",
                        fh.drift_chunks,
                        fh.last_reconcile_age_secs
                            .map(|a| format!("at -{a:.0}s"))
                            .unwrap_or_else(|| "unchecked".into())
                    ),
                ));
                lines.push(kv(
                    "reseed/anom/fix",
                    format!(
                        "{} / {} / {}",
                        fh.reseeds, fh.anomalies, fh.repaired_end_writes
                    ),
                ));
            }
        }
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" details "))
            .render(area, buf);
    }
}

/// The prediction in a few lines: a crash now, each re-add, the running sync.
pub(crate) fn prediction_lines(p: &crate::predict::Prediction) -> Vec<Line<'static>> {
    use crate::predict::CostKind;
    let kv = |k: &str, v: String| Line::from(vec![Span::raw(format!("{k:<16}")), Span::raw(v)]);
    let cost = |label: String, c: &crate::predict::Cost| -> Line<'static> {
        let secs = c
            .duration
            .as_ref()
            .map(|d| format!(", ~{}", units::duration(d.expected_secs)))
            .unwrap_or_default();
        let what = match c.kind {
            CostKind::None => "nothing to sync".to_string(),
            CostKind::Bitmap => format!(
                "{} chunks, {}/member{secs}",
                c.chunks,
                units::bytes(c.sync_bytes_per_member)
            ),
            CostKind::Full => format!(
                "FULL {}/member{secs}",
                units::bytes(c.sync_bytes_per_member)
            ),
            CostKind::Refused => format!("refused: {}", c.reason),
            CostKind::Unmodelled => format!("not modelled: {}", c.reason),
        };
        kv(&label, what)
    };
    let mut out = vec![cost("crash now".into(), &p.crash_now)];
    for c in &p.re_add {
        let who = c
            .member
            .clone()
            .or_else(|| c.slot.map(|s| format!("slot {s}")))
            .unwrap_or_else(|| "member".into());
        out.push(cost(format!("re-add {who}"), c));
    }
    if let Some(r) = &p.running {
        out.push(kv(
            &r.action,
            format!(
                "{} left{}",
                units::bytes(r.remaining_bytes),
                r.eta_secs
                    .map(|e| format!(", ETA {}", units::duration(e)))
                    .unwrap_or_default()
            ),
        ));
    }
    out
}

/// Lines for a JSON value another feature put in the snapshot (`prediction`, `alerts`).
pub(crate) fn json_lines(v: Option<&serde_json::Value>, missing: &str) -> Vec<Line<'static>> {
    use serde_json::Value;
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.2}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    };
    match v {
        None | Some(Value::Null) => vec![Line::from(Span::styled(
            format!("  {missing}"),
            Style::default().fg(Color::DarkGray),
        ))],
        Some(Value::Array(a)) if a.is_empty() => vec![Line::from("  none")],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                let text = match x {
                    Value::Object(o) => o
                        .get("message")
                        .or_else(|| o.get("summary"))
                        .map(scalar)
                        .unwrap_or_else(|| x.to_string()),
                    other => scalar(other),
                };
                Line::from(format!("  • {text}"))
            })
            .collect(),
        Some(Value::Object(o)) => o
            .iter()
            .filter(|(_, v)| !v.is_object() && !v.is_array())
            .map(|(k, v)| Line::from(format!("  {k}: {}", scalar(v))))
            .collect(),
        Some(other) => vec![Line::from(format!("  {}", scalar(other)))],
    }
}

fn render_legend(v: Option<&ArrayView>, area: Rect, buf: &mut Buffer) {
    let mut states = vec![];
    for st in CellState::ALL {
        states.push(Span::styled(
            st.glyph().to_string(),
            Style::default().fg(st.color()),
        ));
        states.push(Span::raw(format!(" {}  ", st.label())));
    }
    let mut scale = vec![Span::raw("recent writes (half-life 10 s): none ")];
    for l in 1..=LEVELS {
        scale.push(Span::styled(
            " ",
            Style::default().bg(intensity_color(l).unwrap()),
        ));
    }
    let top = v.map(|v| v.intensity.max_density()).unwrap_or(0.0);
    scale.push(Span::raw(format!(" most ({top:.2} per chunk)")));
    Paragraph::new(vec![Line::from(states), Line::from(scale)])
        .block(Block::default().borders(Borders::TOP).title(" legend "))
        .render(area, buf);
}

fn render_help(area: Rect, buf: &mut Buffer) {
    let text = vec![
        Line::from("md-bitmap: the live write-intent bitmap of md arrays"),
        Line::from(""),
        Line::from("  ?            this help (any key closes it)"),
        Line::from("  Tab / ↓ ↑    next / previous array"),
        Line::from("  + / -        zoom in / out (down to one cell per chunk)"),
        Line::from("  0            zoom to fit the whole array"),
        Line::from("  j / k        pan one row down / up"),
        Line::from("  l h → ←      pan one page forward / back (PgDn PgUp)"),
        Line::from("  g / G        first / last chunks"),
        Line::from("  p            pause / resume sampling"),
        Line::from("  s            write the current snapshot as JSON"),
        Line::from("  q / Esc      quit"),
        Line::from(""),
        Line::from("Each cell shows the most urgent state of its chunks:"),
        Line::from("  syncing now > RESYNC > NEEDED > writes in flight > dirty > clean;"),
        Line::from("its background, how many writes landed there recently."),
    ];
    let w = 70.min(area.width);
    let h = (text.len() as u16 + 2).min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    Clear.render(r, buf);
    Paragraph::new(text)
        .block(Block::default().borders(Borders::ALL).title(" help "))
        .render(r, buf);
}

/// A buffer as plain text, one line per row (trailing spaces trimmed).
pub fn buffer_text(buf: &Buffer) -> String {
    let a = buf.area;
    let mut s = String::new();
    for y in a.y..a.y + a.height {
        let mut line = String::new();
        for x in a.x..a.x + a.width {
            line.push_str(buf[(x, y)].symbol());
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}
