//! Drawing the TUI: a pure function of [`App`].

use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Modifier, Style, Stylize as _},
    text::Line as TextLine,
    widgets::{Block, Cell, Paragraph, Row, Sparkline, Table, TableState},
};

use super::{App, Prompt};

fn us(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(us) if us >= 10_000 => format!("{}ms", us / 1000),
        Some(us) => format!("{us}us"),
    }
}

pub fn draw(f: &mut Frame<'_>, app: &App) {
    let [head, sparks, table, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(4),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());

    let mut title = format!(
        " proclens top  {}  {:.0} switches/s  cross-process {:.1}%  lost events {}  sort: {}",
        app.clock,
        app.switches_per_s,
        app.cross_pct,
        app.lost_events,
        app.sort.label()
    );
    if let Some(p) = app.pid_filter {
        title.push_str(&format!("  pid={p}"));
    }
    if let Some(c) = &app.comm_filter {
        title.push_str(&format!("  comm~{c}"));
    }
    if app.threads {
        title.push_str("  [threads]");
    }
    f.render_widget(Paragraph::new(title).bold(), head);

    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(sparks);
    let rates: Vec<u64> = app.rate_history.iter().copied().collect();
    f.render_widget(
        Sparkline::default()
            .block(Block::bordered().title("switches/s"))
            .data(&rates),
        left,
    );
    let cross: Vec<u64> = app.cross_history.iter().copied().collect();
    f.render_widget(
        Sparkline::default()
            .block(Block::bordered().title("address-space switches (cross-process %)"))
            .max(1000)
            .data(&cross),
        right,
    );

    let lines = app.visible();
    let id = if app.threads { "TID" } else { "PID" };
    let header = Row::new(
        [
            id,
            "COMMAND",
            "cswch/s",
            "nvcswch/s",
            "same%",
            "cross%",
            "%cpu",
            "runq-p99",
        ]
        .map(Cell::from),
    )
    .style(Style::new().add_modifier(Modifier::REVERSED));
    let rows = lines.iter().map(|l| {
        Row::new([
            l.tid.unwrap_or(l.pid).to_string(),
            l.comm.clone(),
            format!("{:.1}", l.voluntary_s),
            format!("{:.1}", l.involuntary_s),
            format!("{:.1}", l.same_pct),
            format!("{:.1}", l.cross_pct),
            format!("{:.1}", l.cpu_pct),
            us(l.runq_p99_us),
        ])
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Min(16),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(9),
    ];
    let mut state =
        TableState::default().with_selected(Some(app.selected.min(lines.len().saturating_sub(1))));
    f.render_stateful_widget(
        Table::new(rows, widths)
            .header(header)
            .row_highlight_style(Style::new().add_modifier(Modifier::BOLD).reversed()),
        table,
        &mut state,
    );

    let help = match &app.prompt {
        Some(Prompt::Pid(b)) => format!(" pid: {b}_   (Enter apply, Esc cancel)"),
        Some(Prompt::Comm(b)) => format!(" command contains: {b}_   (Enter apply, Esc cancel)"),
        None => " q quit  ↑↓/j/k select  s sort  p pid filter  / command filter  Esc clear filters  t threads".into(),
    };
    f.render_widget(Paragraph::new(TextLine::from(help)).reversed(), footer);
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::render::tui::{Key, tests::snapshot};

    fn screen(app: &App) -> String {
        let mut t = Terminal::new(TestBackend::new(110, 20)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn renders_a_recorded_snapshot() {
        let mut app = App::new(false);
        app.on_snapshot(&snapshot());
        let s = screen(&app);
        assert!(s.contains("2000 switches/s"), "{s}");
        assert!(s.contains("cross-process 25.0%"), "{s}");
        assert!(
            s.contains("PID") && s.contains("nvcswch/s") && s.contains("runq-p99"),
            "{s}"
        );
        let row10 = s
            .lines()
            .find(|l| l.contains("proc10"))
            .unwrap_or_else(|| panic!("{s}"));
        assert!(
            row10.contains("900.0") && row10.contains("100.0") && row10.contains("88.9"),
            "{row10}"
        );
        assert!(!s.contains("proc30"), "idle process hidden: {s}");
        assert!(s.contains("q quit"), "{s}");
        let first = s.lines().position(|l| l.contains("proc10")).unwrap();
        let second = s.lines().position(|l| l.contains("proc20")).unwrap();
        assert!(first < second, "busiest first");
        app.on_key(Key::Char('s'));
        app.on_key(Key::Char('s'));
        let s = screen(&app);
        assert!(s.contains("sort: nvcswch/s"));
        let first = s.lines().position(|l| l.contains("proc20")).unwrap();
        let second = s.lines().position(|l| l.contains("proc10")).unwrap();
        assert!(first < second, "sorted by involuntary");
        app.on_key(Key::Char('p'));
        assert!(screen(&app).contains("pid: _"));
    }
}
