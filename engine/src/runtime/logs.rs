//! The last lines a consumer group logged, from its plugin and from the engine about it, kept
//! in memory for `sluice plugin logs`. Every line also goes to the engine's own log.

use parking_lot::Mutex;
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Lines kept per group.
const CAPACITY: usize = 2_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub time_ms: i64,
    /// trace, debug, info, warn or error.
    pub level: String,
    /// `plugin` for lines the plugin wrote, `engine` for what the engine did with the group.
    pub source: String,
    /// The plugin version running when the line was written.
    pub version: String,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

#[derive(Default)]
pub struct LogBuffer {
    lines: Mutex<VecDeque<LogLine>>,
}

impl LogBuffer {
    pub fn push(&self, line: LogLine) {
        let mut lines = self.lines.lock();
        if lines.len() == CAPACITY {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The last `limit` lines, oldest first.
    pub fn tail(&self, limit: usize) -> Vec<LogLine> {
        let lines = self.lines.lock();
        lines
            .iter()
            .skip(lines.len().saturating_sub(limit))
            .cloned()
            .collect()
    }
}
