//! Output building blocks shared by the commands: aligned tables, kubectl-style ages,
//! short container ids, published ports, and warnings on stderr.

use std::io::Write;
use std::time::{Duration, SystemTime};

use rtm_core::model::{PublishedPort, Timestamp};

/// Spaces between columns (kubectl's tabwriter uses 3).
const COLUMN_GAP: usize = 3;

/// How many characters of a container id tables show (as `docker ps`).
pub(crate) const SHORT_ID: usize = 12;

/// A table whose columns are as wide as their widest cell. The widths are kept, so rows
/// printed later (`get -w`) line up with the ones printed first.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    widths: Vec<usize>,
}

impl Table {
    pub(crate) fn new<const N: usize>(headers: [&str; N]) -> Table {
        Table::with_headers(headers.iter().map(|h| (*h).to_owned()).collect())
    }

    pub(crate) fn with_headers(headers: Vec<String>) -> Table {
        let widths = headers.iter().map(|h| h.chars().count()).collect();
        Table {
            headers,
            rows: Vec::new(),
            widths,
        }
    }

    /// Makes column `index` at least `width` wide (so rows printed later fit without shifting).
    pub(crate) fn min_width(&mut self, index: usize, width: usize) {
        if let Some(w) = self.widths.get_mut(index) {
            *w = (*w).max(width);
        }
    }

    pub(crate) fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        let cells: Vec<String> = cells.into_iter().collect();
        self.grow(&cells);
        self.rows.push(cells);
    }

    fn grow(&mut self, cells: &[String]) {
        for (i, cell) in cells.iter().enumerate() {
            let width = cell.chars().count();
            match self.widths.get_mut(i) {
                Some(w) => *w = (*w).max(width),
                None => self.widths.push(width),
            }
        }
    }

    /// The header and every row, each line ending in a newline.
    pub(crate) fn render(&self) -> String {
        let mut text = self.line(&self.headers);
        for row in &self.rows {
            text.push_str(&self.line(row));
        }
        text
    }

    /// The rows without the header.
    pub(crate) fn render_rows(&self) -> String {
        self.rows.iter().map(|row| self.line(row)).collect()
    }

    /// [`Table::render`], or [`Table::render_rows`] for `--no-headers`.
    pub(crate) fn render_as(&self, no_headers: bool) -> String {
        if no_headers {
            self.render_rows()
        } else {
            self.render()
        }
    }

    /// One more row, laid out with the widths so far (growing them if it is wider), not kept.
    pub(crate) fn render_row(&mut self, cells: &[String]) -> String {
        self.grow(cells);
        self.line(cells)
    }

    fn line(&self, cells: &[String]) -> String {
        let mut line = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            line.push_str(cell);
            if i < last {
                let width = self.widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count()) + COLUMN_GAP;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        // An empty last cell leaves the padding of the one before it.
        line.truncate(line.trim_end().len());
        line.push('\n');
        line
    }
}

/// A duration the way kubectl prints ages: `45s`, `3m20s`, `25m`, `5h10m`, `20h`, `3d4h`,
/// `30d`, `2y45d`, `9y`: precise when young, coarse when old.
pub(crate) fn format_age(age: Duration) -> String {
    let seconds = age.as_secs();
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

/// The age of something created at `since`, or `<unknown>`. A time slightly in the future
/// (clock skew between machines) counts as now.
pub(crate) fn age_since(since: Option<Timestamp>, now: SystemTime) -> String {
    match since {
        Some(since) => format_age(
            now.duration_since(since.system_time())
                .unwrap_or(Duration::ZERO),
        ),
        None => "<unknown>".to_owned(),
    }
}

/// The first [`SHORT_ID`] characters of a container id.
pub(crate) fn short_id(id: &str) -> &str {
    match id.char_indices().nth(SHORT_ID) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// The published ports the way `docker ps` shows them, `17000->7000/tcp`, with the host
/// address only when Docker bound one rather than all (`127.0.0.1:17000->7000/tcp`). Each
/// shows once: Docker lists a port published on every address once per IP family
/// (`0.0.0.0` and `::`), which reads the same here.
pub(crate) fn published_ports(ports: &[PublishedPort]) -> Vec<String> {
    let mut shown: Vec<String> = Vec::with_capacity(ports.len());
    for port in ports {
        let host = match port.host_ip.as_deref() {
            None | Some("" | "0.0.0.0" | "::" | "[::]") => String::new(),
            // An IPv6 address is bracketed so its colons do not run into the port's.
            Some(ip) if ip.contains(':') && !ip.starts_with('[') => format!("[{ip}]:"),
            Some(ip) => format!("{ip}:"),
        };
        let text = format!(
            "{host}{}->{}/{}",
            port.host_port,
            port.container_port,
            port.protocol.as_str().to_ascii_lowercase()
        );
        if !shown.contains(&text) {
            shown.push(text);
        }
    }
    shown
}

/// Prints a failure of one object among several (`error: …`, one line) on stderr, the run
/// going on with the others; a closed stderr is not worth failing for.
pub(crate) fn error_line(error: &crate::error::CliError) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "error: {}",
        super::error::one_line(&error.to_string())
    );
}

/// Prints a warning line on stderr; a closed stderr is not worth failing for.
pub(crate) fn warn(message: &str) {
    let _ = writeln!(
        std::io::stderr().lock(),
        "warning: {}",
        super::error::one_line(message)
    );
}

/// Prints a note for people on stderr (e.g. "No gameruntimes found"), keeping stdout for data.
pub(crate) fn note(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// `<none>` for an empty cell.
pub(crate) fn or_none(text: &str) -> String {
    if text.is_empty() {
        "<none>".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::Protocol;

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (25 * 60, "25m"),
            (3 * 3600 + 5, "3h"),
            (5 * 3600 + 10 * 60, "5h10m"),
            (20 * 3600, "20h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (4 * 86400, "4d"),
            (30 * 86400, "30d"),
            (800 * 86400, "2y70d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(
                format_age(Duration::from_secs(seconds)),
                expected,
                "{seconds}s"
            );
        }
    }

    #[test]
    fn an_age_from_the_future_is_zero_and_a_missing_one_unknown() {
        let now = SystemTime::now();
        let later = Timestamp::from(now + Duration::from_secs(30));
        assert_eq!(age_since(Some(later), now), "0s");
        assert_eq!(age_since(None, now), "<unknown>");
    }

    #[test]
    fn table_columns_are_as_wide_as_their_widest_cell() {
        let mut table = Table::new(["NAME", "PHASE", "AGE"]);
        table.row(["arena-1".into(), "Running".into(), "5s".into()]);
        table.row(["g".into(), "CrashLoopBackOff".into(), "4d".into()]);
        assert_eq!(
            table.render(),
            "NAME      PHASE              AGE\n\
             arena-1   Running            5s\n\
             g         CrashLoopBackOff   4d\n"
        );
        // A later, wider row grows its column instead of breaking the layout.
        assert_eq!(
            table.render_row(&["a-much-longer-name".into(), "Stopped".into(), "1m".into()]),
            "a-much-longer-name   Stopped            1m\n"
        );
    }

    fn port(container: u16, protocol: Protocol, ip: Option<&str>, host: u16) -> PublishedPort {
        PublishedPort {
            container_port: container,
            protocol,
            host_ip: ip.map(str::to_owned),
            host_port: host,
        }
    }

    #[test]
    fn published_ports_read_like_docker_ps_without_wildcard_addresses() {
        let ports = [
            port(7000, Protocol::Tcp, Some("0.0.0.0"), 17000),
            port(7000, Protocol::Tcp, Some("::"), 17000),
            port(7001, Protocol::Udp, None, 17001),
            port(7002, Protocol::Tcp, Some("127.0.0.1"), 17002),
            port(7003, Protocol::Udp, Some("::1"), 17003),
        ];
        assert_eq!(
            published_ports(&ports),
            [
                "17000->7000/tcp",
                "17001->7001/udp",
                "127.0.0.1:17002->7002/tcp",
                "[::1]:17003->7003/udp"
            ]
        );
        assert!(published_ports(&[]).is_empty());
    }

    #[test]
    fn short_ids_are_twelve_characters() {
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
    }
}
