//! Just enough of PostgreSQL's frontend protocol (v3: start-up with trust
//! authentication, simple queries, text results) for the end-to-end tests
//! to look into a cloud's hospital databases, hold a lock on one, and drop
//! them afterwards, without a PostgreSQL client library in this crate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The server of the tests: `HMS_TEST_PG` (libpq-style `key=value` pairs),
/// by default the local server with trust authentication.
pub fn admin() -> String {
    std::env::var("HMS_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".into())
}

/// A row of text values (`None` for NULL).
pub type Row = Vec<Option<String>>;

/// One session.
pub struct Pg {
    stream: TcpStream,
}

impl Pg {
    /// Connects to database `db` of the server named by `conn` (its
    /// `host`, `port` and `user`; other keys are ignored).
    pub fn connect(conn: &str, db: &str) -> Result<Pg, String> {
        let key = |k: &str, default: &str| {
            conn.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .unwrap_or(default)
                .trim_matches('\'')
                .to_owned()
        };
        let addr = format!("{}:{}", key("host", "127.0.0.1"), key("port", "5432"));
        let stream = TcpStream::connect(&addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let mut pg = Pg { stream };
        let mut body = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
        for (k, v) in [
            ("user", key("user", "postgres")),
            ("database", db.to_owned()),
        ] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&body);
        pg.stream.write_all(&msg).map_err(|e| e.to_string())?;
        loop {
            let (kind, body) = pg.message()?;
            match kind {
                b'R' if body.get(..4) == Some(&[0, 0, 0, 0]) => {}
                b'R' => return Err("the server asks for a password (only trust is spoken)".into()),
                b'E' => return Err(error_text(&body)),
                b'Z' => return Ok(pg),
                _ => {}
            }
        }
    }

    fn message(&mut self) -> Result<(u8, Vec<u8>), String> {
        let mut head = [0u8; 5];
        self.stream
            .read_exact(&mut head)
            .map_err(|e| format!("reading from PostgreSQL: {e}"))?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| format!("reading from PostgreSQL: {e}"))?;
        Ok((head[0], body))
    }

    /// Runs `sql` (one or more statements) and returns the rows of the last
    /// one that returned any; an error of any statement is the error.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Row>, String> {
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        msg.extend_from_slice(sql.as_bytes());
        msg.push(0);
        self.stream.write_all(&msg).map_err(|e| e.to_string())?;
        let (mut rows, mut error) = (vec![], None);
        loop {
            let (kind, body) = self.message()?;
            match kind {
                b'T' => rows.clear(),
                b'D' => rows.push(data_row(&body)),
                b'E' => error = Some(error_text(&body)),
                b'Z' => return error.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }

    /// The first column of the first row of `sql`, as a number.
    pub fn count(&mut self, sql: &str) -> Result<u64, String> {
        self.query(sql)?
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no number from {sql}"))
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self.stream.write_all(&[b'X', 0, 0, 0, 4]);
    }
}

fn data_row(body: &[u8]) -> Row {
    let n = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    let mut row = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        at += 4;
        if len < 0 {
            row.push(None);
        } else {
            let end = at + len as usize;
            row.push(Some(String::from_utf8_lossy(&body[at..end]).into_owned()));
            at = end;
        }
    }
    row
}

fn error_text(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find_map(|f| f.strip_prefix(b"M"))
        .map_or_else(
            || "PostgreSQL error".to_owned(),
            |m| String::from_utf8_lossy(m).into_owned(),
        )
}
