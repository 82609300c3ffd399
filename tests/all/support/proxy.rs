//! A fault-injecting HTTP/1.1 proxy on loopback, put in front of a real server.
//!
//! [`FaultProxy::start`] listens on a free loopback port and forwards each request to the
//! upstream server, one upstream connection per request. Every request is logged (method and
//! path, never headers or bodies) with its index, counted from 0 since the start or the last
//! [`FaultProxy::reset`]. A [`Fault`] rule makes the proxy misbehave on chosen requests instead
//! of forwarding them plainly: answer a status itself, reset the connection before or after
//! forwarding, or delay.
//!
//! Each client connection carries one request: every answer says `Connection: close`. The
//! proxy runs on its own thread and runtime, so it serves sync tests (a child process talking
//! to it) and async tests alike; it stops when dropped.
//!
//! ```ignore
//! let proxy = FaultProxy::start(&server.url());
//! proxy.inject(Fault::new(At::PathContains("runs/create".into()), FaultKind::ResetAfterForward));
//! let client = MlflowClient::new(proxy.url(), Auth::Anonymous)?;
//! // ... then proxy.log(), proxy.count("runs/create"), proxy.reset()
//! ```

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// The longest request or response head read.
const MAX_HEAD: usize = 64 * 1024;
/// How long the proxy waits for the upstream server's answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);

/// Which requests a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum At {
    /// Requests whose index (0-based, see [`Request::index`]) is at least this: the rule fires
    /// on request `n` and, with `times > 1`, on the ones that follow it.
    Nth(usize),
    /// Requests whose path (with its query string) contains this.
    PathContains(String),
}

/// What the proxy does instead of forwarding a request plainly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Read the request head only, then reset the connection without forwarding: the client
    /// is cut off while it may still be sending the body.
    Refuse,
    /// Read the whole request, then reset the connection without forwarding.
    ResetBeforeForward,
    /// Forward the request, wait for the whole answer (so the server has applied it), then
    /// reset the connection instead of answering.
    ResetAfterForward,
    /// Forward the request, then pass on the answer's head and half its body and reset the
    /// connection: the client sees the answer cut off mid-body.
    ResetMidAnswer,
    /// Answer this status without forwarding, with an MLflow-style JSON error body
    /// (`error_code` `TEMPORARILY_UNAVAILABLE`).
    Status(u16),
    /// Answer this status without forwarding, with an HTML page as a proxy or gateway would.
    Html(u16),
    /// Answer 429 with `Retry-After: <seconds>` without forwarding.
    TooManyRequests {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
    /// Wait this long, then forward the request plainly.
    Delay(Duration),
}

/// A rule: on the requests `at` selects, do `kind`, `times` times (then the rule is spent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Which requests the rule applies to.
    pub at: At,
    /// What to do.
    pub kind: FaultKind,
    /// On how many matching requests to do it.
    pub times: usize,
}

impl Fault {
    /// A rule that fires once.
    pub fn new(at: At, kind: FaultKind) -> Self {
        Self { at, kind, times: 1 }
    }

    /// The same rule, firing on this many matching requests.
    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }
}

/// One request the proxy received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Its position among the requests since the start or the last reset, from 0.
    pub index: usize,
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target: the path with its query string.
    pub path: String,
    /// The fault injected into it, if any.
    pub fault: Option<FaultKind>,
}

#[derive(Default)]
struct State {
    rules: Vec<(Fault, usize)>,
    log: Vec<Request>,
}

impl State {
    /// Logs a request and returns the fault of the first live rule that selects it.
    fn admit(&mut self, method: &str, path: &str) -> Option<FaultKind> {
        let index = self.log.len();
        let fault = self.rules.iter_mut().find_map(|(rule, fired)| {
            let selected = match &rule.at {
                At::Nth(n) => index >= *n,
                At::PathContains(part) => path.contains(part.as_str()),
            };
            (selected && *fired < rule.times).then(|| {
                *fired += 1;
                rule.kind.clone()
            })
        });
        self.log.push(Request {
            index,
            method: method.to_owned(),
            path: path.to_owned(),
            fault: fault.clone(),
        });
        fault
    }
}

/// A running proxy; dropping it stops it.
pub struct FaultProxy {
    url: Url,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (an `http://host:port` URL; its path is ignored:
    /// request paths are forwarded as they come).
    pub fn start(upstream: &Url) -> Self {
        let host = upstream
            .host_str()
            .expect("an upstream url with a host")
            .to_owned();
        let port = upstream
            .port_or_known_default()
            .expect("an upstream url with a port");
        let upstream = Upstream { host, port };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let address = listener.local_addr().expect("the listener's address");
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the proxy");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("register the listener");
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => {
                                let Ok((client, _)) = accepted else { continue };
                                let state = Arc::clone(&shared);
                                let upstream = upstream.clone();
                                tokio::spawn(async move {
                                    // A connection that goes wrong is the client's to notice.
                                    let _ = serve(client, &upstream, &state).await;
                                });
                            }
                        }
                    }
                });
            })
            .expect("start the proxy thread");
        Self {
            url: Url::parse(&format!("http://{address}")).expect("a loopback url"),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The proxy's base URL, to give to a client instead of the server's.
    pub fn url(&self) -> Url {
        self.url.clone()
    }

    /// Adds a rule; rules are tried in the order added and the first live one that selects a
    /// request fires.
    pub fn inject(&self, fault: Fault) {
        self.state().rules.push((fault, 0));
    }

    /// Removes every rule; the log is kept.
    pub fn clear_faults(&self) {
        self.state().rules.clear();
    }

    /// Removes every rule and empties the log: request indices start again from 0.
    pub fn reset(&self) {
        let mut state = self.state();
        state.rules.clear();
        state.log.clear();
    }

    /// The requests received so far, in order.
    pub fn log(&self) -> Vec<Request> {
        self.state().log.clone()
    }

    /// How many requests were received.
    pub fn requests(&self) -> usize {
        self.state().log.len()
    }

    /// How many requests were received whose path contains `part`.
    pub fn count(&self, part: &str) -> usize {
        self.state()
            .log
            .iter()
            .filter(|r| r.path.contains(part))
            .count()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Clone)]
struct Upstream {
    host: String,
    port: u16,
}

/// A parsed message head: the start line, the header lines as received.
struct Head {
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The head again, without hop-by-hop connection headers, with `Connection: close` and
    /// the given extra headers.
    fn rewritten(&self, replace: &[(&str, String)]) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.start);
        for (name, value) in &self.headers {
            let dropped = ["connection", "keep-alive", "proxy-connection"]
                .iter()
                .chain(replace.iter().map(|(n, _)| n))
                .any(|d| name.eq_ignore_ascii_case(d));
            if !dropped {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        for (name, value) in replace {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("connection: close\r\n\r\n");
        out.into_bytes()
    }
}

type Io = std::io::Result<()>;

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

async fn serve(client: TcpStream, upstream: &Upstream, state: &Mutex<State>) -> Io {
    let mut client = BufReader::new(client);
    let Some(head) = read_head(&mut client).await? else {
        return Ok(());
    };
    let mut parts = head.start.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let fault = state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .admit(&method, &path);

    if fault == Some(FaultKind::Refuse) {
        return reset(client.into_inner());
    }
    let body = read_body(&mut client, &head).await?;
    let mut client = client.into_inner();
    match fault {
        Some(FaultKind::ResetBeforeForward) => reset(client),
        Some(FaultKind::Status(status)) => {
            let body = r#"{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected by the test proxy"}"#;
            answer(&mut client, status, "application/json", &[], body).await
        }
        Some(FaultKind::Html(status)) => {
            let body = format!(
                "<html><head><title>{status}</title></head><body><h1>{status} Bad Gateway</h1><hr><center>fault-proxy</center></body></html>\n"
            );
            answer(&mut client, status, "text/html", &[], &body).await
        }
        Some(FaultKind::TooManyRequests { retry_after_secs }) => {
            let body = r#"{"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "injected by the test proxy"}"#;
            let retry_after = ("retry-after", retry_after_secs.to_string());
            answer(&mut client, 429, "application/json", &[retry_after], body).await
        }
        Some(FaultKind::ResetAfterForward) => {
            forward(&head, &body, upstream).await?;
            reset(client)
        }
        Some(FaultKind::ResetMidAnswer) => {
            let response = forward(&head, &body, upstream).await?;
            let (head, body) = split_answer(&response)?;
            client.write_all(&head.rewritten(&[])).await?;
            client.write_all(&body[..body.len() / 2]).await?;
            client.flush().await?;
            reset(client)
        }
        Some(FaultKind::Delay(wait)) => {
            tokio::time::sleep(wait).await;
            let response = forward(&head, &body, upstream).await?;
            relay(&mut client, &response).await
        }
        Some(FaultKind::Refuse) | None => {
            let response = forward(&head, &body, upstream).await?;
            relay(&mut client, &response).await
        }
    }
}

/// Reads a message head; `None` when the peer closed before sending anything.
async fn read_head(stream: &mut BufReader<TcpStream>) -> std::io::Result<Option<Head>> {
    let mut raw = Vec::new();
    while !raw.ends_with(b"\r\n\r\n") {
        if raw.len() > MAX_HEAD {
            return Err(invalid("head too long"));
        }
        match stream.read_u8().await {
            Ok(byte) => raw.push(byte),
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && raw.is_empty() => {
                return Ok(None);
            }
            Err(err) => return Err(err),
        }
    }
    let text = String::from_utf8(raw).map_err(|_| invalid("head not utf-8"))?;
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let start = lines
        .next()
        .ok_or_else(|| invalid("empty head"))?
        .to_owned();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').ok_or_else(|| invalid("bad header"))?;
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect::<std::io::Result<_>>()?;
    Ok(Some(Head { start, headers }))
}

/// Reads a request body as framed by `Content-Length` or chunked encoding, as received.
async fn read_body(stream: &mut BufReader<TcpStream>, head: &Head) -> std::io::Result<Vec<u8>> {
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let line = read_line(stream, &mut body).await?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size =
                usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to an empty line.
                while !read_line(stream, &mut body).await?.is_empty() {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            stream.read_exact(&mut body[start..]).await?;
        }
    }
    let length = match head.header("content-length") {
        Some(value) => value
            .parse::<usize>()
            .map_err(|_| invalid("bad content-length"))?,
        None => 0,
    };
    body.resize(length, 0);
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// Reads one CRLF-terminated line, appending it to `raw`; returns it without the CRLF.
async fn read_line(
    stream: &mut BufReader<TcpStream>,
    raw: &mut Vec<u8>,
) -> std::io::Result<String> {
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        if line.len() > MAX_HEAD {
            return Err(invalid("line too long"));
        }
        line.push(stream.read_u8().await?);
    }
    raw.extend_from_slice(&line);
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| invalid("line not utf-8"))
}

/// Sends the request upstream on a new connection and returns the whole answer, as received.
async fn forward(head: &Head, body: &[u8], upstream: &Upstream) -> std::io::Result<Vec<u8>> {
    let exchange = async {
        let mut server = TcpStream::connect((upstream.host.as_str(), upstream.port)).await?;
        let host = ("host", format!("{}:{}", upstream.host, upstream.port));
        server.write_all(&head.rewritten(&[host])).await?;
        server.write_all(body).await?;
        server.flush().await?;
        let mut response = Vec::new();
        server.read_to_end(&mut response).await?;
        Ok(response)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream timed out"))?
}

/// Passes the upstream answer to the client, marked `Connection: close`, and closes.
async fn relay(client: &mut TcpStream, response: &[u8]) -> Io {
    let (head, body) = split_answer(response)?;
    client.write_all(&head.rewritten(&[])).await?;
    client.write_all(body).await?;
    client.shutdown().await
}

/// An upstream answer's head and body.
fn split_answer(response: &[u8]) -> std::io::Result<(Head, &[u8])> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("upstream answer without a head"))?;
    let text = std::str::from_utf8(&response[..split]).map_err(|_| invalid("head not utf-8"))?;
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok((Head { start, headers }, &response[split + 4..]))
}

/// Answers with a status and body of the proxy's own, and closes.
async fn answer(
    client: &mut TcpStream,
    status: u16,
    content_type: &str,
    extra: &[(&str, String)],
    body: &str,
) -> Io {
    let mut head = format!(
        "HTTP/1.1 {status} Injected\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    client.write_all(head.as_bytes()).await?;
    client.write_all(body.as_bytes()).await?;
    client.shutdown().await
}

/// Closes the connection with a TCP reset.
fn reset(client: TcpStream) -> Io {
    client.set_zero_linger()?;
    drop(client);
    Ok(())
}
