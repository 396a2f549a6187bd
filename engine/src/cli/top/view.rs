//! Draws a [`Screen`] with ratatui: a title line, the topics, the groups, the plugin groups,
//! and a line of keys (or what went wrong reaching the engine).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Row, Table};

use super::model::Screen;

/// Rows of borders and a header around each table's rows.
const TABLE_CHROME_ROWS: u16 = 3;

pub fn draw(frame: &mut Frame, url: &str, screen: Option<&Screen>, problem: Option<&str>) {
    let Some(screen) = screen else {
        let text = problem.map_or_else(
            || format!("sluice top: reading {url} ..."),
            |p| format!("sluice top: cannot read {url}: {p}"),
        );
        frame.render_widget(Line::from(text), frame.area());
        return;
    };
    let tables = screen.tables();
    let height = |rows: usize| rows as u16 + TABLE_CHROME_ROWS;
    let areas = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(height(tables.topics.1.len())),
        Constraint::Length(height(tables.groups.1.len())),
        Constraint::Min(height(tables.plugins.1.len())),
        Constraint::Length(1),
    ])
    .split(frame.area());
    let time = chrono_free_time(screen.time_ms);
    frame.render_widget(
        Line::from(format!("sluice top · {url} · {time} UTC"))
            .style(Style::new().add_modifier(Modifier::BOLD)),
        areas[0],
    );
    for (area, title, (headers, rows)) in [
        (areas[1], "Topics", tables.topics),
        (areas[2], "Consumer and plugin groups", tables.groups),
        (areas[3], "Plugin groups", tables.plugins),
    ] {
        frame.render_widget(table(title, &headers, &rows), area);
    }
    let footer = match problem {
        Some(problem) => format!("cannot read {url} (showing the last figures): {problem}"),
        None => "q quit · refreshed every interval (--interval-ms)".to_string(),
    };
    frame.render_widget(Line::from(footer), areas[4]);
}

fn table<'a>(title: &'a str, headers: &[&'a str], rows: &'a [Vec<String>]) -> Table<'a> {
    let widths: Vec<Constraint> = (0..headers.len())
        .map(|i| {
            let widest = rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(1);
            Constraint::Length(widest as u16)
        })
        .collect();
    let header = Row::new(headers.to_vec()).style(Style::new().add_modifier(Modifier::BOLD));
    let rows = rows.iter().map(|r| Row::new(r.iter().map(String::as_str)));
    Table::new(rows, widths)
        .header(header)
        .column_spacing(2)
        .block(Block::bordered().title(title))
}

/// `HH:MM:SS` of a Unix time in milliseconds (UTC), without a date crate.
fn chrono_free_time(ms: i64) -> String {
    let seconds = ms.div_euclid(1000).rem_euclid(86_400);
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}
