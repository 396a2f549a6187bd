//! `sluice top` in a pseudo-terminal, its screen read back through a VT100 parser as a user
//! would see it: topics, the plugin group's status and lag refreshed live, the last error
//! (with the token), and `q` giving the terminal back.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use sluice::cli::client::PluginAction;
use sluice::server::api::RollbackRequest;

use crate::common::plugins::{admin, paused_trap_group, record, token};
use crate::common::{BIN, Server};

const ROWS: u16 = 40;
const COLUMNS: u16 = 160;

/// The screen as text, a line per row.
fn contents(parser: &Mutex<vt100::Parser>) -> String {
    parser.lock().unwrap().screen().contents()
}

/// Waits until the screen shows what `done` looks for (30 s at most).
fn wait_for_screen(
    parser: &Mutex<vt100::Parser>,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let screen = contents(parser);
        if done(&screen) {
            return screen;
        }
        assert!(
            Instant::now() < deadline,
            "the screen never showed {what}:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The line of the screen whose first cell (after the border) is `first_cell` and which holds
/// `containing`.
fn row<'a>(screen: &'a str, first_cell: &str, containing: &str) -> Option<&'a str> {
    screen.lines().find(|line| {
        let cells = line.trim_start_matches(['│', ' ']);
        cells.split_whitespace().next() == Some(first_cell) && cells.contains(containing)
    })
}

/// The last cell of a table row.
fn last_cell(line: &str) -> &str {
    line.trim_end_matches(['│', ' '])
        .rsplit(' ')
        .next()
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_topics_and_lag_live_and_gives_the_terminal_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    paused_trap_group(&client, "clicks", 2, 1).await;
    let records: Vec<_> = (0..120).map(|i| record(&format!("u{i}"), "view")).collect();
    client.produce("clicks", Some(0), &records).await.unwrap();
    client
        .produce("clicks", Some(1), &[record("u0", "bad")])
        .await
        .unwrap();

    let pty = native_pty_system()
        .openpty(PtySize {
            rows: ROWS,
            cols: COLUMNS,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut command = CommandBuilder::new(BIN);
    command.args(["top", "--url", &server.url, "--token", &token(&server)]);
    command.args(["--interval-ms", "200"]);
    command.env("TERM", "xterm-256color");
    let mut child = pty.slave.spawn_command(command).unwrap();
    drop(pty.slave);
    let parser = Arc::new(Mutex::new(vt100::Parser::new(ROWS, COLUMNS, 0)));
    let mut reader = pty.master.try_clone_reader().unwrap();
    let screen_parser = parser.clone();
    let reading = std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buffer) {
            if n == 0 {
                break;
            }
            screen_parser.lock().unwrap().process(&buffer[..n]);
        }
    });

    // Paused, it lags by everything produced.
    let screen = wait_for_screen(&parser, "the topic and the paused group", |s| {
        row(s, "clicks", "").is_some() && row(s, "copy", "paused").is_some()
    });
    assert!(
        parser.lock().unwrap().screen().alternate_screen(),
        "{screen}"
    );
    let clicks = row(&screen, "clicks", "").unwrap();
    assert!(
        clicks.contains(" 121 "),
        "records of clicks: {clicks}\n{screen}"
    );
    let group = row(&screen, "copy", "plugin").unwrap();
    assert_eq!(last_cell(group), "121", "{screen}");

    // Resumed through the API: the screen follows, lag to 0, the trap as last error.
    client
        .plugin_action("copy", PluginAction::Resume, &RollbackRequest::default())
        .await
        .unwrap();
    let screen = wait_for_screen(&parser, "the group caught up, with its error", |s| {
        row(s, "copy", "plugin").is_some_and(|r| last_cell(r) == "0")
            && row(s, "copy", "running").is_some_and(|r| r.contains("trapped"))
    });
    let plugin = row(&screen, "copy", "running").unwrap();
    assert!(plugin.contains("v1"), "{plugin}");

    // q quits and gives the terminal back.
    pty.master.take_writer().unwrap().write_all(b"q").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", contents(&parser));
    drop(pty.master);
    reading.join().unwrap();
    assert!(
        !parser.lock().unwrap().screen().alternate_screen(),
        "the terminal was left in the alternate screen"
    );
}
