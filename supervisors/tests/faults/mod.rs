//! Helpers of the fault-injection tests: a TCP proxy that can cut a node off from its
//! store, a document server that stalls a download, and API calls as the first-start admin.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;

/// A one-page PDF with a line of text.
pub fn one_page_pdf() -> Vec<u8> {
    let text = "BT /F1 28 Tf 72 700 Td (faxd fault test) Tj ET";
    let objs = [
        "<</Type/Catalog/Pages 2 0 R>>".to_string(),
        "<</Type/Pages/Kids[4 0 R]/Count 1>>".to_string(),
        "<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>".to_string(),
        "<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]/Resources<</Font<</F1 3 0 R>>>>/Contents 5 0 R>>".to_string(),
        format!("<</Length {}>>stream\n{text}\nendstream", text.len()),
    ];
    let mut out = String::from("%PDF-1.4\n");
    for (i, o) in objs.iter().enumerate() {
        out.push_str(&format!("{} 0 obj{o}endobj\n", i + 1));
    }
    out.push_str("trailer<</Root 1 0 R>>\n%%EOF\n");
    out.into_bytes()
}

/// `GET url` as the logged-in user: the JSON answer, `None` when there is none.
pub async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Option<Value> {
    http.get(url)
        .header("X-Auth-Token", token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Job `id` in the outbox of `faxes` (`…/accounts/<id>/faxes`): its document, when there.
pub async fn in_outbox(
    http: &reqwest::Client,
    faxes: &str,
    token: &str,
    id: &str,
) -> Option<Value> {
    let list = get_json(http, &format!("{faxes}/outbox?paginate=false"), token).await?;
    let outbox_id = list["data"]
        .as_array()?
        .iter()
        .filter_map(|f| f["id"].as_str())
        .find(|x| x.ends_with(id))?
        .to_string();
    let detail = get_json(http, &format!("{faxes}/outbox/{outbox_id}"), token).await?;
    Some(detail["data"].clone())
}

/// A TCP proxy on 127.0.0.1 in front of `target`: while cut, every connection (open or
/// new) is closed at once, as when the server is unreachable.
pub struct Proxy {
    pub addr: String,
    /// Connections accepted so far (cut or not).
    pub accepted: Arc<AtomicUsize>,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (c, list, target) = (cut.clone(), conns.clone(), target.to_string());
        let n = accepted.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                n.fetch_add(1, Ordering::SeqCst);
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                let mut l = list.lock().expect("proxy list");
                l.retain(|t| !t.is_finished());
                l.push(task);
            }
        });
        Proxy {
            addr,
            accepted,
            cut,
            conns,
            accept,
        }
    }

    /// Cuts the link: open connections are closed, new ones refused.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for t in self.conns.lock().expect("proxy list").drain(..) {
            t.abort();
        }
    }

    /// Restores the link.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// A document server on 127.0.0.1 (a thread per connection). The first request for each
/// path gets the headers and a few bytes, then nothing more (a download in progress);
/// later requests get the document whole, or a 404 for a path containing `/gone`.
pub struct DocServer {
    pub base: String,
    /// Requests received, by path.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Downloads now stalled.
    pub stalled: Arc<AtomicUsize>,
}

impl DocServer {
    pub fn start(doc: Vec<u8>, content_type: &'static str) -> DocServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("doc server bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stalled = Arc::new(AtomicUsize::new(0));
        let (reqs, st) = (requests.clone(), stalled.clone());
        let doc = Arc::new(doc);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (reqs, st, doc) = (reqs.clone(), st.clone(), doc.clone());
                std::thread::spawn(move || serve(conn, &reqs, &st, &doc, content_type));
            }
        });
        DocServer {
            base,
            requests,
            stalled,
        }
    }

    pub fn count(&self, path: &str) -> usize {
        self.requests
            .lock()
            .expect("requests")
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

fn serve(
    mut conn: TcpStream,
    reqs: &Mutex<Vec<String>>,
    stalled: &AtomicUsize,
    doc: &[u8],
    content_type: &str,
) {
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => return,
            Ok(_) if h == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let first = {
        let mut r = reqs.lock().expect("requests");
        let first = !r.contains(&path);
        r.push(path.clone());
        first
    };
    let head = |status: &str, len: usize| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )
    };
    if first {
        // Headers and a few bytes, then the download hangs until the client goes away.
        let _ = conn.write_all(head("200 OK", doc.len()).as_bytes());
        let _ = conn.write_all(&doc[..8]);
        let _ = conn.flush();
        stalled.fetch_add(1, Ordering::SeqCst);
        let mut sink = [0u8; 64];
        let _ = conn.set_read_timeout(Some(Duration::from_secs(600)));
        while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
        stalled.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    if path.contains("/gone") {
        let _ = conn.write_all(head("404 Not Found", 0).as_bytes());
        return;
    }
    let _ = conn.write_all(head("200 OK", doc.len()).as_bytes());
    let _ = conn.write_all(doc);
}
