//! A fault-injecting HTTP/1.1 proxy for table-driven tests: it listens on 127.0.0.1,
//! forwards each request to an upstream (the real registry) on a fresh connection, and
//! applies the first [`Rule`] that matches the request. Every request is recorded with
//! the `Authorization` it carried, so a test can prove where credentials went.
//!
//! Each connection carries one exchange and is closed (`Connection: close`), which keeps
//! the proxy simple and is valid HTTP. Every loop is bounded: faults that hold a connection
//! end when the proxy is dropped, endless bodies stop at a cap.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Bytes an endless body sends at most (far beyond any size a test's client accepts).
const ENDLESS_CAP: u64 = 1 << 30;
/// The longest a held connection is kept even if the proxy is never dropped.
const HOLD_CAP: Duration = Duration::from_secs(300);

/// What the proxy does to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Read the request, never answer.
    Stall,
    /// Read the request head only: never read its body, never answer.
    NoReadBody,
    /// Close the connection without an answer.
    Drop,
    /// Answer this status (with an empty body) instead of forwarding.
    Status(u16),
    /// Answer 200 with no length and a body of zeros that never ends.
    EndlessBody,
    /// Forward, then send the response body one byte per interval.
    Trickle(Duration),
    /// Forward, then send the headers and this many body bytes, then hold.
    StallBody(usize),
    /// Forward, replacing (or adding) a response header.
    Header(String, String),
    /// Forward, moving the response's `Location` to this origin (`http://host:port`).
    LocationTo(String),
    /// Answer `307` to this origin with the same path and query.
    Redirect(String),
}

/// A fault for the requests whose method is `method` (any if empty) and whose path and
/// query contain `path` (equal it, if it starts with `=`); applied `times` times (0: always).
#[derive(Clone, Debug)]
pub struct Rule {
    pub method: String,
    pub path: String,
    pub times: usize,
    pub fault: Fault,
}

impl Rule {
    pub fn new(method: &str, path: &str, fault: Fault) -> Rule {
        Rule { method: method.to_owned(), path: path.to_owned(), times: 0, fault }
    }

    pub fn times(self, times: usize) -> Rule {
        Rule { times, ..self }
    }
}

/// One request the proxy received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
}

struct Shared {
    rules: Mutex<Vec<(Rule, usize)>>,
    seen: Mutex<Vec<Seen>>,
    stop: AtomicBool,
    upstream: u16,
    /// Added to every forwarded request (a storage backend's own credentials).
    upstream_authorization: Option<String>,
}

/// A running proxy; stopped (and every held connection released) on drop.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy in front of `127.0.0.1:upstream` applying `rules`.
    pub fn start(upstream: u16, rules: Vec<Rule>) -> io::Result<FaultProxy> {
        Self::start_with(upstream, rules, None)
    }

    /// [`FaultProxy::start`], adding `authorization` to each forwarded request: a second
    /// host that can complete an upload by itself, to which the client must send nothing.
    pub fn start_with(
        upstream: u16,
        rules: Vec<Rule>,
        authorization: Option<String>,
    ) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            rules: Mutex::new(rules.into_iter().map(|r| (r, 0)).collect()),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            upstream,
            upstream_authorization: authorization,
        });
        let s = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                thread::spawn(move || {
                    let _ = handle(&s, conn);
                });
            }
        });
        Ok(FaultProxy { port, shared })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.host())
    }

    /// Replaces the rules (counts start again).
    pub fn set_rules(&self, rules: Vec<Rule>) {
        *self.shared.rules.lock().unwrap() = rules.into_iter().map(|r| (r, 0)).collect();
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

struct Head {
    method: String,
    target: String,
    /// Header lines as received, without the request line.
    lines: Vec<String>,
}

impl Head {
    fn header(&self, name: &str) -> Option<String> {
        self.lines.iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Reads up to the blank line; `None` on EOF or an oversized head.
fn read_head(conn: &mut impl Read) -> io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 65536 || conn.read(&mut byte)? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

fn parse_request(text: &str) -> Option<Head> {
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let mut first = lines.next()?.split(' ');
    Some(Head {
        method: first.next()?.to_owned(),
        target: first.next()?.to_owned(),
        lines: lines.map(str::to_owned).collect(),
    })
}

/// Holds a connection open until the proxy stops (or the cap passes).
fn hold(s: &Shared) {
    let start = Instant::now();
    while !s.stop.load(Ordering::SeqCst) && start.elapsed() < HOLD_CAP {
        thread::sleep(Duration::from_millis(20));
    }
}

fn matching_fault(s: &Shared, head: &Head) -> Option<Fault> {
    let mut rules = s.rules.lock().unwrap();
    for (rule, used) in rules.iter_mut() {
        let method_ok = rule.method.is_empty() || rule.method == head.method;
        let path_ok = match rule.path.strip_prefix('=') {
            Some(exact) => head.target == exact,
            None => head.target.contains(&rule.path),
        };
        if method_ok && path_ok && (rule.times == 0 || *used < rule.times) {
            *used += 1;
            return Some(rule.fault.clone());
        }
    }
    None
}

fn handle(s: &Shared, mut conn: TcpStream) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let Some(text) = read_head(&mut conn)? else { return Ok(()) };
    let Some(head) = parse_request(&text) else { return Ok(()) };
    s.seen.lock().unwrap().push(Seen {
        method: head.method.clone(),
        path: head.target.clone(),
        authorization: head.header("Authorization"),
    });
    let fault = matching_fault(s, &head);
    if matches!(fault, Some(Fault::NoReadBody)) {
        hold(s);
        return Ok(());
    }
    let len: u64 = head.header("Content-Length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = Vec::new();
    (&mut conn).take(len).read_to_end(&mut body)?;
    match fault {
        Some(Fault::Stall) => {
            hold(s);
            return Ok(());
        }
        Some(Fault::Drop) => {
            let _ = conn.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::Status(code)) => {
            let body = format!(r#"{{"errors":[{{"code":"INJECTED","message":"injected {code}"}}]}}"#);
            write!(
                conn,
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return Ok(());
        }
        Some(Fault::Redirect(origin)) => {
            write!(
                conn,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {origin}{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                head.target
            )?;
            return Ok(());
        }
        Some(Fault::EndlessBody) => {
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
            )?;
            let zeros = vec![0u8; 64 << 10];
            let mut sent = 0;
            while sent < ENDLESS_CAP && !s.stop.load(Ordering::SeqCst) {
                conn.write_all(&zeros)?;
                sent += zeros.len() as u64;
            }
            return Ok(());
        }
        _ => {}
    }
    let (mut resp_head, resp_body) = forward(s, &head, &body)?;
    match &fault {
        Some(Fault::Header(name, value)) => set_header(&mut resp_head, name, value),
        Some(Fault::LocationTo(origin)) => {
            if let Some(loc) = header_of(&resp_head, "Location") {
                let path = match loc.find("://") {
                    Some(i) => loc[i + 3..].find('/').map_or("/".to_owned(), |j| loc[i + 3 + j..].to_owned()),
                    None => loc.clone(),
                };
                set_header(&mut resp_head, "Location", &format!("{origin}{path}"));
            }
        }
        _ => {}
    }
    let mut out = resp_head.join("\r\n");
    out.push_str("\r\n\r\n");
    conn.write_all(out.as_bytes())?;
    match fault {
        Some(Fault::Trickle(every)) => {
            for b in &resp_body {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                conn.write_all(std::slice::from_ref(b))?;
                thread::sleep(every);
            }
        }
        Some(Fault::StallBody(n)) => {
            conn.write_all(&resp_body[..n.min(resp_body.len())])?;
            hold(s);
        }
        _ => conn.write_all(&resp_body)?,
    }
    Ok(())
}

fn header_of(lines: &[String], name: &str) -> Option<String> {
    lines.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

fn set_header(lines: &mut Vec<String>, name: &str, value: &str) {
    lines.retain(|l| !l.split_once(':').is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(name)));
    lines.push(format!("{name}: {value}"));
}

/// Sends the request upstream on a fresh connection; returns the response's status and
/// header lines (with `Connection: close`) and its whole body.
fn forward(s: &Shared, head: &Head, body: &[u8]) -> io::Result<(Vec<String>, Vec<u8>)> {
    let mut up = TcpStream::connect(("127.0.0.1", s.upstream))?;
    up.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{} {} HTTP/1.1\r\n", head.method, head.target);
    for l in &head.lines {
        let name = l.split_once(':').map_or("", |(k, _)| k.trim());
        let replaced = name.eq_ignore_ascii_case("connection")
            || (s.upstream_authorization.is_some() && name.eq_ignore_ascii_case("authorization"));
        if !replaced {
            req.push_str(l);
            req.push_str("\r\n");
        }
    }
    if let Some(a) = &s.upstream_authorization {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    up.write_all(req.as_bytes())?;
    up.write_all(body)?;
    let text = read_head(&mut up)?.ok_or_else(|| io::Error::other("upstream closed"))?;
    let mut lines: Vec<String> = text.split("\r\n").filter(|l| !l.is_empty()).map(str::to_owned).collect();
    let status: u16 = lines[0].split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut resp_body = Vec::new();
    let no_body = head.method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
    if !no_body {
        match header_of(&lines, "Content-Length").and_then(|l| l.parse::<u64>().ok()) {
            Some(n) => {
                (&mut up).take(n).read_to_end(&mut resp_body)?;
            }
            None => {
                up.read_to_end(&mut resp_body)?;
            }
        }
    }
    // Chunked answers are passed on decoded, with their length.
    if header_of(&lines, "Transfer-Encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        resp_body = dechunk(&resp_body);
        lines.retain(|l| !l.to_ascii_lowercase().starts_with("transfer-encoding:"));
        set_header(&mut lines, "Content-Length", &resp_body.len().to_string());
    }
    set_header(&mut lines, "Connection", "close");
    Ok((lines, resp_body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..i]).split(';').next().unwrap_or("").trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 || b.len() < i + 2 + size {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + size]);
        b = &b[(i + 4 + size).min(b.len())..];
    }
    out
}
