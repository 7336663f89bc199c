//! Progress of long CLI work (`apply --wait`, `rollout status`, `image
//! push`): live bars on stderr when it is a terminal (indicatif), plain
//! lines when it is not (CI logs, pipes), each printed when it changes.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The lines of one command's progress.
pub struct Progress {
    /// `None`: stderr is not a terminal; plain lines.
    multi: Option<MultiProgress>,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    /// Live when stderr is a terminal.
    pub fn new() -> Progress {
        let live = std::io::stderr().is_terminal();
        Progress { multi: live.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10))) }
    }

    /// Whether lines are drawn live.
    pub fn is_live(&self) -> bool {
        self.multi.is_some()
    }

    /// A line with a bar counting `of` things (replicas, completions).
    pub fn counter(&self, prefix: &str, of: u64) -> Line {
        let style = ProgressStyle::with_template("{prefix:.bold} [{bar:24.green/blue}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> ");
        self.line(prefix, of, style)
    }

    /// A line with a bar counting bytes (an upload).
    pub fn bytes(&self, prefix: &str, of: u64) -> Line {
        let style =
            ProgressStyle::with_template("{prefix} [{bar:24.green/blue}] {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                .expect("a valid template")
                .progress_chars("=> ");
        self.line(prefix, of, style)
    }

    fn line(&self, prefix: &str, of: u64, style: ProgressStyle) -> Line {
        let bar = self.multi.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::new(of).with_style(style).with_prefix(prefix.to_owned()));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Line { bar, prefix: prefix.to_owned(), said: String::new() }
    }

    /// A line said above the live ones (or plainly).
    pub fn say(&self, text: &str) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(text);
            }
            None => eprintln!("{text}"),
        }
    }
}

/// One line of progress.
pub struct Line {
    bar: Option<ProgressBar>,
    prefix: String,
    /// The last plain line printed (plain lines only print changes).
    said: String,
}

impl Line {
    /// `done` of `of`, and what is happening.
    pub fn set(&mut self, done: u64, of: u64, message: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(of);
                bar.set_position(done);
                bar.set_message(message.to_owned());
            }
            None => {
                let line = format!("{}: {done}/{of} {message}", self.prefix);
                if line != self.said {
                    eprintln!("{line}");
                    self.said = line;
                }
            }
        }
    }

    /// Counts `n` more (bytes sent).
    pub fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Ends the line with `message`, kept on screen.
    pub fn finish(&mut self, message: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(message.to_owned()),
            // Said already by the last change (as "N/M <message>").
            None if self.said.ends_with(message) => {}
            None => {
                let line = format!("{}: {message}", self.prefix);
                eprintln!("{line}");
                self.said = line;
            }
        }
    }
}

/// A reader that counts what is read from it on a [`Line`] (an upload's body).
pub struct Counted<'l, R> {
    /// What is read.
    pub inner: R,
    /// Where it is counted.
    pub line: &'l Line,
}

impl<R: std::io::Read> std::io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.line.advance(n as u64);
        Ok(n)
    }
}
