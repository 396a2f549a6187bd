//! `sluice top`: the engine at a glance in a terminal, refreshed live: topics with their
//! produce rates, groups with their lag, plugin groups with status, rates and errors. It
//! reads `GET /v1/overview` (and, with the admin token, each plugin group's last error).
//!
//! - `model.rs`: the screen computed from two successive overviews (rates), and `--once`.
//! - `view.rs`: drawing it with ratatui.

mod model;
mod view;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use super::client::Client;
use crate::server::api::Overview;

#[derive(Args, Debug)]
pub struct TopArgs {
    /// How often to read the engine, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Print the tables once as plain text (rates need two readings: they show `-`) and exit.
    #[arg(long)]
    pub once: bool,
}

/// Least time between readings, so a mistyped interval does not flood the engine.
const INTERVAL_MIN_MS: u64 = 100;

pub async fn run(client: &Client, args: TopArgs) -> anyhow::Result<()> {
    if args.once {
        let now = client.overview().await?;
        let errors = last_errors(client).await;
        print!("{}", model::screen(&now, None, &errors).plain());
        return Ok(());
    }
    let mut terminal = ratatui::try_init().context("cannot take over the terminal")?;
    let result = live(client, &args, &mut terminal).await;
    ratatui::restore();
    result
}

/// Whether a key quits: q, Esc, Ctrl-C.
fn quits(key: &event::KeyEvent) -> bool {
    key.kind == KeyEventKind::Press
        && (matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)
            || (key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL)))
}

async fn live(
    client: &Client,
    args: &TopArgs,
    terminal: &mut ratatui::DefaultTerminal,
) -> anyhow::Result<()> {
    // Terminal events are read by a thread of their own (the read blocks); a resize or a key
    // wakes the loop, which redraws or quits.
    let (events_sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(event) = event::read() {
            if events_sender.send(event).is_err() {
                break;
            }
        }
    });
    let mut ticks =
        tokio::time::interval(Duration::from_millis(args.interval_ms.max(INTERVAL_MIN_MS)));
    let (mut previous, mut shown, mut problem): (Option<Overview>, _, Option<String>) =
        (None, None, None);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Key(key)) if quits(&key) => return Ok(()),
                None => return Ok(()),
                Some(_) => {}
            },
            _ = ticks.tick() => match client.overview().await {
                Ok(now) => {
                    let errors = last_errors(client).await;
                    shown = Some(model::screen(&now, previous.as_ref(), &errors));
                    previous = Some(now);
                    problem = None;
                }
                Err(error) => problem = Some(error.to_string()),
            },
        }
        terminal
            .draw(|frame| view::draw(frame, client.url(), shown.as_ref(), problem.as_deref()))?;
    }
}

/// Each plugin group's last error, when the client has the admin token (else none).
async fn last_errors(client: &Client) -> BTreeMap<String, String> {
    let Ok(list) = client.list_plugins().await else {
        return BTreeMap::new();
    };
    list.plugins
        .into_iter()
        .filter_map(|p| Some((p.group, p.last_error?)))
        .collect()
}
