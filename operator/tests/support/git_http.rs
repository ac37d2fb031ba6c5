//! A tiny smart-HTTP Git server for tests: std::net in front of Debian's
//! `git-http-backend` CGI, with basic auth.
//!
//! Every request needs `Authorization: Basic` with the configured user and
//! password (401 otherwise); authenticated requests get `REMOTE_USER`, which
//! is what lets `git-http-backend` accept pushes. Request bodies may be sent
//! with `Content-Length` or `Transfer-Encoding: chunked` (libgit2 chunks its
//! pushes). Each response closes its connection.
//!
//! Use from a test crate with `#[path = "support/git_http.rs"] mod git_http;`.
#![allow(dead_code)]

use std::{
    io::{self, BufRead, BufReader, Write},
    net::{Shutdown, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
};

use base64::Engine as _;

pub const BACKEND: &str = "/usr/lib/git-core/git-http-backend";

/// A running server; stopped on drop.
pub struct GitHttpServer {
    pub port: u16,
    root: PathBuf,
    user: String,
    password: String,
    stop: Arc<AtomicBool>,
    /// Requests served (any status), for assertions and curiosity.
    pub requests: Arc<AtomicUsize>,
    /// Requests whose body came with `Transfer-Encoding: chunked`.
    pub chunked: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl GitHttpServer {
    /// Serve the repositories under `root` on a random loopback port.
    pub fn start(root: &Path, user: &str, password: &str) -> io::Result<Self> {
        Self::start_on(root, 0, user, password)
    }

    /// Serve on `port` (0: any), e.g. to restart a stopped server.
    pub fn start_on(root: &Path, port: u16, user: &str, password: &str) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let chunked = Arc::new(AtomicUsize::new(0));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let thread = {
            let (stop, requests, chunked, root, user) = (
                stop.clone(),
                requests.clone(),
                chunked.clone(),
                root.to_path_buf(),
                user.to_string(),
            );
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (root, user, expected, requests, chunked) = (
                        root.clone(),
                        user.clone(),
                        expected.clone(),
                        requests.clone(),
                        chunked.clone(),
                    );
                    std::thread::spawn(move || {
                        requests.fetch_add(1, Ordering::SeqCst);
                        if let Err(e) = serve(stream, &root, &user, &expected, &chunked) {
                            eprintln!("git-http test server: {e}");
                        }
                    });
                }
            })
        };
        Ok(GitHttpServer {
            port,
            root: root.to_path_buf(),
            user: user.to_string(),
            password: password.to_string(),
            stop,
            requests,
            chunked,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>/<repo>`
    pub fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}", self.port)
    }

    /// Stop accepting connections and free the port.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the accept loop.
            let _ = TcpStream::connect(("127.0.0.1", self.port));
            let _ = thread.join();
        }
    }

    /// Start again on the same port.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let next = Self::start_on(&self.root, self.port, &self.user, &self.password)?;
        *self = next;
        Ok(())
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn read_request(r: &mut impl BufRead) -> io::Result<Request> {
    let line = read_line(r)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(bad(format!("bad request line {line:?}")));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: Vec::new(),
    };
    if req
        .header("Transfer-Encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = read_line(r)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailers, then the blank line.
                while !read_line(r)?.is_empty() {}
                break;
            }
            let start = req.body.len();
            req.body.resize(start + size, 0);
            r.read_exact(&mut req.body[start..])?;
            read_line(r)?; // CRLF after the chunk
        }
    } else if let Some(len) = req.header("Content-Length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        req.body.resize(len, 0);
        r.read_exact(&mut req.body)?;
    }
    Ok(req)
}

fn serve(
    stream: TcpStream,
    root: &Path,
    user: &str,
    expected_auth: &str,
    chunked: &AtomicUsize,
) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let req = read_request(&mut reader)?;
    if req
        .header("Transfer-Encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        chunked.fetch_add(1, Ordering::SeqCst);
    }
    let mut out = stream;
    if req.header("Authorization") != Some(expected_auth) {
        out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return out.shutdown(Shutdown::Write);
    }
    let mut cmd = Command::new(BACKEND);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", &req.method)
        .env("PATH_INFO", &req.path)
        .env("QUERY_STRING", &req.query)
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(ct) = req.header("Content-Type") {
        cmd.env("CONTENT_TYPE", ct);
    }
    for (name, var) in [
        ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
        ("Git-Protocol", "HTTP_GIT_PROTOCOL"),
    ] {
        if let Some(v) = req.header(name) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| bad("no stdin"))?;
    let body = req.body;
    let feeder = std::thread::spawn(move || stdin.write_all(&body));
    let output = child.wait_with_output()?;
    let _ = feeder.join();

    let raw = output.stdout;
    let (head, body) = split_cgi(&raw);
    let mut status = "200 OK".to_string();
    let mut headers = String::new();
    for line in String::from_utf8_lossy(head).lines() {
        match line.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("Status") => status = v.trim().to_string(),
            Some(_) => {
                headers.push_str(line);
                headers.push_str("\r\n");
            }
            None => {}
        }
    }
    write!(
        out,
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(body)?;
    out.flush()?;
    out.shutdown(Shutdown::Write)
}

/// Split CGI output into its header block and body.
fn split_cgi(raw: &[u8]) -> (&[u8], &[u8]) {
    let find = |sep: &[u8]| {
        raw.windows(sep.len())
            .position(|w| w == sep)
            .map(|i| (i, sep.len()))
    };
    match (find(b"\r\n\r\n"), find(b"\n\n")) {
        (Some(a), Some(b)) => {
            let (i, len) = if a.0 <= b.0 { a } else { b };
            (&raw[..i], &raw[i + len..])
        }
        (Some((i, len)), None) | (None, Some((i, len))) => (&raw[..i], &raw[i + len..]),
        (None, None) => (raw, &[]),
    }
}
