//! Drawing the TUI: a pure function of [`App`].

use std::fmt::Write as _;

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style, Stylize as _},
    text::Line as TextLine,
    widgets::{Block, Cell, Paragraph, Row, Sparkline, Table, TableState, Tabs},
};

use super::{App, Prompt, Tab};
use crate::render::copies::human_bytes;

fn opt(v: Option<f64>, fmt: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), fmt)
}

fn rate(v: f64) -> String {
    format!("{}/s", human_bytes(v))
}

fn us(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(us) if us >= 10_000 => format!("{}ms", us / 1000),
        Some(us) => format!("{us}us"),
    }
}

pub fn draw(f: &mut Frame<'_>, app: &App) {
    let [head, tabs, sparks, table, footer] = Layout::vertical([
        Constraint::Length(1),
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
    if app.uncounted > 0 {
        let _ = write!(title, "  uncounted (maps full) {}", app.uncounted);
    }
    if !app.selection.pids.is_empty() {
        let pids: Vec<String> = app.selection.pids.iter().map(u32::to_string).collect();
        let _ = write!(title, "  pid={}", pids.join(","));
    }
    if let Some(c) = &app.selection.comm {
        let _ = write!(title, "  comm~{c}");
    }
    if app.threads {
        title.push_str("  [threads]");
    }
    f.render_widget(Paragraph::new(title).bold(), head);
    let selected_tab = Tab::ALL.iter().position(|t| *t == app.tab).unwrap_or(0);
    f.render_widget(
        Tabs::new(Tab::ALL.map(Tab::title))
            .select(selected_tab)
            .highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        tabs,
    );

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

    match app.tab {
        Tab::Switches => switches_table(f, app, table),
        Tab::Zombies => zombies_table(f, app, table),
        Tab::Copies => copies_table(f, app, table),
    }

    let help = match &app.prompt {
        Some(Prompt::Pid(b)) => format!(" pid: {b}_   (Enter apply, Esc cancel)"),
        Some(Prompt::Comm(b)) => format!(" command contains: {b}_   (Enter apply, Esc cancel)"),
        None => " q quit  1/2/3/Tab views  ↑↓/j/k select  s sort  p pid filter  / command filter  Esc clear filters  t threads".into(),
    };
    f.render_widget(Paragraph::new(TextLine::from(help)).reversed(), footer);
}

fn header(cols: &[&'static str]) -> Row<'static> {
    Row::new(cols.iter().map(|c| Cell::from(*c)))
        .style(Style::new().add_modifier(Modifier::REVERSED))
}

fn render_table<'a>(
    f: &mut Frame<'_>,
    area: Rect,
    app: &App,
    head: Row<'a>,
    rows: Vec<Row<'a>>,
    widths: &[Constraint],
) {
    let mut state =
        TableState::default().with_selected(Some(app.selected.min(rows.len().saturating_sub(1))));
    f.render_stateful_widget(
        Table::new(rows, widths.to_vec())
            .header(head)
            .row_highlight_style(Style::new().add_modifier(Modifier::BOLD).reversed()),
        area,
        &mut state,
    );
}

fn switches_table(f: &mut Frame<'_>, app: &App, area: Rect) {
    let lines = app.visible();
    let id = if app.threads { "TID" } else { "PID" };
    let head = header(&[
        id,
        "COMMAND",
        "cswch/s",
        "nvcswch/s",
        "same%",
        "cross%",
        "%cpu",
        "runq-p99",
        "sysc/s",
        "bytes/s",
        "zomb",
    ]);
    let rows = lines
        .iter()
        .map(|l| {
            Row::new([
                l.tid.unwrap_or(l.pid).to_string(),
                l.comm.clone(),
                format!("{:.1}", l.voluntary_s),
                format!("{:.1}", l.involuntary_s),
                format!("{:.1}", l.same_pct),
                format!("{:.1}", l.cross_pct),
                format!("{:.1}", l.cpu_pct),
                us(l.runq_p99_us),
                opt(l.syscalls_s, |v| format!("{v:.0}")),
                if app.has_copies {
                    opt(l.bytes_s, rate)
                } else {
                    "-".into()
                },
                l.zombies.map_or_else(|| "-".into(), |z| z.to_string()),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(8),
        Constraint::Min(16),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(11),
        Constraint::Length(5),
    ];
    render_table(f, area, app, head, rows, &widths);
}

fn zombies_table(f: &mut Frame<'_>, app: &App, area: Rect) {
    let [summary, table] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(2)]).areas(area);
    let lines = app.visible_zombies();
    let parents: std::collections::BTreeSet<u32> = lines.iter().map(|z| z.ppid).collect();
    let text = if app.has_zombies {
        format!(
            " {} zombies (dead >= 1 s, not waited for) held by {} parents",
            lines.len(),
            parents.len()
        )
    } else {
        " the process table is not kept".into()
    };
    f.render_widget(Paragraph::new(text), summary);
    let head = header(&["PID", "COMMAND", "STATUS", "AGE", "PPID", "PARENT"]);
    let rows = lines
        .iter()
        .map(|z| {
            Row::new([
                z.pid.to_string(),
                z.comm.clone(),
                z.status.clone(),
                format!("{:.1}s", z.age_s),
                z.ppid.to_string(),
                z.parent_comm.clone(),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(8),
        Constraint::Min(16),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Min(16),
    ];
    render_table(f, table, app, head, rows, &widths);
}

fn copies_table(f: &mut Frame<'_>, app: &App, area: Rect) {
    let [summary, table] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(2)]).areas(area);
    let lines = app.visible_copies();
    let text = if !app.has_syscalls {
        " syscalls are not counted (start with --syscalls)".to_string()
    } else if !app.has_copies {
        " copy paths are not accounted on this kernel; syscalls only".to_string()
    } else {
        " bytes copied through user memory, copied inside the kernel, and moved without a copy (pages referenced)".to_string()
    };
    f.render_widget(Paragraph::new(text), summary);
    let head = header(&[
        "PID",
        "COMMAND",
        "sysc/s",
        "user-copy",
        "in-kernel",
        "zero-copy",
        "zero%",
        "BUSIEST PATH",
    ]);
    let rows = lines
        .iter()
        .map(|l| {
            Row::new([
                l.pid.to_string(),
                l.comm.clone(),
                format!("{:.0}", l.syscalls_s),
                rate(l.user_copy_s),
                rate(l.in_kernel_s),
                rate(l.zero_copy_s),
                format!("{:.1}", l.zero_copy_pct),
                if l.io_uring {
                    format!("{} (io_uring: not counted)", l.top_path)
                } else {
                    l.top_path.clone()
                },
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(8),
        Constraint::Min(16),
        Constraint::Length(8),
        Constraint::Length(12),
        Constraint::Length(12),
        Constraint::Length(12),
        Constraint::Length(6),
        Constraint::Min(24),
    ];
    render_table(f, table, app, head, rows, &widths);
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

    #[test]
    fn renders_the_zombies_and_copies_views() {
        let mut app = App::new(false);
        app.has_copies = true;
        app.on_snapshot(&snapshot());
        let s = screen(&app);
        assert!(s.contains("1 Switches") && s.contains("2 Zombies") && s.contains("3 Copies"));
        assert!(
            s.contains("sysc/s") && s.contains("bytes/s") && s.contains("zomb"),
            "{s}"
        );
        let row10 = s.lines().find(|l| l.contains("proc10")).unwrap();
        assert!(
            row10.contains("500") && row10.contains("4.0MiB/s"),
            "{row10}"
        );
        app.on_key(Key::Char('2'));
        let s = screen(&app);
        assert!(
            s.contains("3 zombies (dead >= 1 s, not waited for) held by 2 parents"),
            "{s}"
        );
        let kid = s.lines().find(|l| l.contains("kid42")).unwrap();
        assert!(
            kid.contains("exit 3") && kid.contains("9.0s") && kid.contains("proc20"),
            "{kid}"
        );
        app.on_key(Key::Char('3'));
        let s = screen(&app);
        let row = s.lines().find(|l| l.contains("proc10")).unwrap();
        assert!(
            row.contains("sendfile file->socket") && row.contains("100.0"),
            "{row}"
        );
    }
}
